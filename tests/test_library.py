"""rembg's library call (service/library.py): ``from service import remove, new_session`` takes and
answers what rembg's does, and a script written for rembg runs with its import line changed."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tools.evaluate import iou

from .support import ROOT, SAMPLES


@pytest.fixture(scope="module")
def session(base_env, monkeypatch_module):
    for name, value in base_env.items():
        monkeypatch_module.setenv(name, value)
    from service import new_session

    return new_session("u2netp")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_answer_is_of_the_kind_the_photo_came_in_at_its_own_size(session, sample_photo):
    from service import remove

    data = sample_photo.read_bytes()
    photo = Image.open(io.BytesIO(data))
    as_bytes = Image.open(io.BytesIO(remove(data, session=session)))
    assert as_bytes.format == "PNG" and as_bytes.mode == "RGBA" and as_bytes.size == photo.size
    as_image = remove(photo, session=session)
    assert isinstance(as_image, Image.Image) and as_image.mode == "RGBA" and as_image.size == photo.size
    as_array = remove(np.asarray(photo), session=session)
    assert as_array.shape == (photo.height, photo.width, 4) and as_array.dtype == np.uint8
    assert np.array_equal(as_array, np.asarray(as_image))
    forced = remove(photo, session=session, force_return_bytes=True)
    assert isinstance(forced, bytes) and Image.open(io.BytesIO(forced)).mode == "RGBA"
    alpha = np.asarray(as_image)[..., 3]
    assert 0.1 < (alpha == 0).mean() < 0.9  # a subject and a background
    assert not np.asarray(as_image)[alpha == 0][:, :3].any()  # clear pixels are (0, 0, 0, 0), as rembg's


def test_only_mask_post_process_and_bgcolor(session, sample_photo):
    from service import remove

    with Image.open(sample_photo) as opened:
        photo = opened.copy()
    mask = remove(photo, session=session, only_mask=True)
    assert mask.mode == "L" and mask.size == photo.size
    assert remove(np.asarray(photo), session=session, only_mask=True).shape == (photo.height, photo.width)
    cleaned = np.asarray(remove(photo, session=session, only_mask=True, post_process_mask=True))
    assert set(np.unique(cleaned)) <= {0, 255} and iou(cleaned, np.asarray(mask)) > 0.97
    on_green = np.asarray(remove(photo, session=session, bgcolor=(0, 255, 0, 255)))
    assert on_green[..., 3].min() == 255 and tuple(on_green[0, -1]) == (0, 255, 0, 255)  # a background corner


def test_a_model_this_service_cannot_serve_is_refused_naming_those_it_can(session):
    from service import new_session, remove

    with pytest.raises(ValueError, match="no model 'u2net_human_seg' here: new_session takes isnet-general-use "
                                         r"\(as isnet-general-tiny\), .*u2netp"):
        new_session("u2net_human_seg")
    with pytest.raises(ValueError, match="is not supported"):
        remove("a path, not an image", session=session)


RembgScript = """
import sys
from pathlib import Path
from service import remove, new_session  # the one line changed: from rembg import remove, new_session
from PIL import Image

session = new_session("u2netp")
out = Path(sys.argv[2])
for path in sorted(Path(sys.argv[1]).glob("*.jpg")):
    output = remove(Image.open(path), session=session, only_mask=True)
    output.save(out / (path.stem + ".png"))
    print(path.name, output.mode, output.size)
"""


@pytest.mark.skipif(not (SAMPLES / "rembg-2.0.86-u2netp").is_dir(), reason="needs ../shared/samples")
def test_a_rembg_script_runs_with_its_import_changed_and_gives_rembgs_masks(base_env, tmp_path):
    """Issue 32's first goal: the masks against rembg 2.0.86's on the same weights (u2netp)."""
    script = tmp_path / "cut.py"
    script.write_text(RembgScript)
    out = tmp_path / "out"
    out.mkdir()
    run = subprocess.run([sys.executable, str(script), str(SAMPLES / "images"), str(out)], cwd=ROOT,
                         env={**base_env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    scores = []
    for path in sorted((SAMPLES / "images").glob("*.jpg")):
        with Image.open(out / f"{path.stem}.png") as ours, Image.open(SAMPLES / "rembg-2.0.86-u2netp" /
                                                                       f"{path.stem}.png") as theirs, \
                Image.open(path) as photo:
            assert ours.mode == "L" and ours.size == theirs.size == photo.size
            scores.append(iou(np.asarray(ours), np.asarray(theirs)))
    assert len(scores) >= 10 and float(np.mean(scores)) >= 0.99, scores
