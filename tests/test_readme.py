"""The README's curl examples and Python client, run against a live server, so the README never lies."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from .support import ROOT

README = (ROOT / "README.md").read_text()
API = README[README.index("## API"):README.index("### Errors")]
CURL_LINES = [line for block in re.findall(r"```sh\n(.*?)```", API, re.S)
              for line in block.splitlines() if line.startswith("curl ") and "/api/bg/jobs" not in line]
JOB_CURL_LINES = [line.split("  #")[0].strip() for block in re.findall(r"```sh\n(.*?)```", API, re.S)
                  for line in block.splitlines() if line.startswith("curl ") and "/api/bg/jobs" in line]
PYTHON_CLIENT = re.search(r"### Python client\n+```python\n(.*?)```", README, re.S).group(1)


@pytest.fixture
def workdir(tmp_path, sample_photo, monkeypatch):
    shutil.copy(sample_photo, tmp_path / "photo.jpg")
    shutil.copy(sample_photo, tmp_path / "another.jpg")
    with zipfile.ZipFile(tmp_path / "more-photos.zip", "w") as archive:
        archive.write(sample_photo, "shop/astronaut.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_a_curl_example_for_every_endpoint():
    for path in ("/api/bg/remove", "/api/bg/change_color", "/api/bg/batch", "/api/remove", "/api/bg/health",
                 "/api/bg/ready", "/api/bg/status", "/metrics", "/api/bg/clear_cache", "/api/bg/openapi.json"):
        assert any(path in line for line in CURL_LINES), path


@pytest.mark.parametrize("line", CURL_LINES)
def test_curl_example_works(u2netp_server, workdir, line):
    command = line.replace("http://localhost:5000", u2netp_server.url).replace("curl ", "curl --fail -sS ", 1)
    result = subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    output = re.search(r"-o (\S+)", line)
    if line.endswith("/metrics"):
        assert any(f.name == "bg_model_info" for f in text_string_to_metric_families(result.stdout.decode()))
    elif output is None:
        json.loads(result.stdout)
    elif output.group(1).endswith(".json"):
        json.loads((workdir / output.group(1)).read_text())
    elif output.group(1).endswith(".zip"):
        with zipfile.ZipFile(workdir / output.group(1)) as archive:
            assert json.loads(archive.read("manifest.json"))["succeeded"] == 3
    else:
        with Image.open(workdir / output.group(1)) as image:
            expected = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}[Path(output.group(1)).suffix]
            assert image.format == expected


def test_python_client_example_works(u2netp_server, workdir, capsys):
    exec(PYTHON_CLIENT.replace("http://localhost:5000", u2netp_server.url), {})
    with Image.open(workdir / "photo-cutout.png") as image:
        assert image.mode == "RGBA"
    assert "u2netp" in capsys.readouterr().out
