"""The layers of docs/architecture.md, checked by a real contract checker (import-linter, its
contracts in pyproject.toml): the runtime never imports the project's tools, and each layer of
``service`` imports only those below it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept():
    result = lint()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_the_checker_catches_an_arrow_pointing_up(tmp_path):
    """The same checker on a contract the code breaks: the pipeline is put below the imaging it imports."""
    config = tmp_path / "contracts.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["service"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "upside down"\ntype = "layers"\n'
                      'containers = ["service"]\nlayers = ["imaging", "pipeline"]\n')
    result = lint("--config", str(config))
    assert result.returncode == 1 and "service.pipeline is not allowed to import service.imaging" in result.stdout, \
        result.stdout[-3000:]
