"""`python -m service`: help without heavy imports, remove, errors with exit codes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .support import ROOT


def test_help_and_version_do_not_import_onnxruntime():
    for flag in ("--help", "--version"):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "service", flag],
                                cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0
        assert "onnxruntime" not in result.stderr and "numpy" not in result.stderr
    assert "remove" in subprocess.run([sys.executable, "-m", "service", "--help"], cwd=ROOT,
                                      capture_output=True, text=True).stdout


def test_remove_writes_a_transparent_png(run_cli, sample_photo, tmp_path):
    out = tmp_path / "out.png"
    result = run_cli("remove", sample_photo, out, "--model", "u2netp")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image, Image.open(sample_photo) as photo:
        assert image.mode == "RGBA" and image.size == photo.size


def test_remove_with_colour_writes_a_jpeg(run_cli, sample_photo, tmp_path):
    out = tmp_path / "out.jpg"
    result = run_cli("remove", sample_photo, out, "--model", "u2netp", "--color", "#ff0000")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        red, green, blue = image.getpixel((508, 3))  # the sky behind the astronaut, now red
        assert red > 200 and green < 60 and blue < 60


def test_remove_to_jpeg_without_colour_is_refused(run_cli, sample_photo, tmp_path):
    result = run_cli("remove", sample_photo, tmp_path / "out.jpg", "--model", "u2netp")
    assert result.returncode == 2 and "--color" in result.stderr
    assert not (tmp_path / "out.jpg").exists()


def test_remove_of_a_non_image_fails_with_a_message(run_cli, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = run_cli("remove", bad, tmp_path / "out.png", "--model", "u2netp")
    assert result.returncode == 1 and "not an image" in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_bad_environment_is_reported_not_raised(run_cli, sample_photo, tmp_path):
    result = run_cli("remove", sample_photo, tmp_path / "o.png", env={"BG_REMOVAL_THREADS": "many"})
    assert result.returncode == 2 and "BG_REMOVAL_THREADS" in result.stderr


def test_remove_into_a_missing_folder_fails_with_a_message(run_cli, sample_photo, tmp_path):
    result = run_cli("remove", sample_photo, tmp_path / "no" / "such" / "out.png", "--model", "u2netp")
    assert result.returncode == 1 and "No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_batch_writes_each_image_of_folders_and_files_and_reports_the_bad_one(run_cli, sample_photo, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(sample_photo.read_bytes())
    (photos / "broken.jpg").write_bytes(b"not an image at all")
    (photos / "notes.txt").write_text("skipped: not an image extension")
    loose = tmp_path / "a.png"
    with Image.open(sample_photo) as photo:
        photo.resize((64, 48)).save(loose)
        size = photo.size
    out = tmp_path / "out"
    result = run_cli("remove", photos, loose, "--out-dir", out, "--model", "u2netp")
    assert result.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["a-2.png", "a.png"]
    with Image.open(out / "a.png") as first, Image.open(out / "a-2.png") as second:
        assert first.mode == "RGBA" and first.size == size
        assert second.size == (64, 48)
    assert "2 of 3 written" in result.stdout
    assert f"{photos / 'broken.jpg'}: " in result.stderr and "not an image" in result.stderr
    assert "3/3 images" in result.stderr  # the progress bar's last line
    assert "Traceback" not in result.stderr


def test_batch_with_a_colour_writes_jpegs_and_succeeds(run_cli, sample_photo, tmp_path):
    result = run_cli("remove", sample_photo, "--out-dir", tmp_path / "out", "--model", "u2netp",
                     "--color", "white", "--quiet")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out" / f"{sample_photo.stem}.jpg") as image:
        assert image.format == "JPEG"
    assert result.stderr == ""


def test_batch_never_overwrites_an_input(run_cli, sample_photo, tmp_path):
    photo = tmp_path / "p.png"
    with Image.open(sample_photo) as image:
        image.save(photo)
    before = photo.read_bytes()
    result = run_cli("remove", photo, "--out-dir", tmp_path, "--model", "u2netp")
    assert result.returncode == 2 and "exists already" in result.stderr
    result = run_cli("remove", photo, "--out-dir", tmp_path, "--model", "u2netp", "--overwrite")
    assert result.returncode == 1 and "overwrite the input" in result.stderr
    assert photo.read_bytes() == before


def test_an_existing_output_is_replaced_only_with_overwrite(run_cli, sample_photo, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"the user's own file")
    result = run_cli("remove", sample_photo, out, "--model", "u2netp")
    assert result.returncode == 2 and f"{out} exists already" in result.stderr and "--overwrite" in result.stderr
    assert out.read_bytes() == b"the user's own file"
    assert run_cli("remove", sample_photo, out, "--model", "u2netp", "--overwrite").returncode == 0
    with Image.open(out) as image:
        assert image.mode == "RGBA"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left beside it


def test_two_photos_without_out_dir_never_replace_the_second(run_cli, sample_photo, tmp_path):
    second = tmp_path / "b.jpg"
    second.write_bytes(sample_photo.read_bytes())
    result = run_cli("remove", sample_photo, second, "--color", "red", "--model", "u2netp")
    assert result.returncode == 2 and "--out-dir" in result.stderr and "--overwrite" in result.stderr
    assert second.read_bytes() == sample_photo.read_bytes()


def test_a_batch_rerun_is_refused_then_resumed_with_skip_existing(run_cli, photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "astronaut.png").write_bytes(b"done earlier")
    result = run_cli("remove", photos["astronaut"], photos["chelsea"], "--out-dir", out, "--model", "u2netp")
    assert result.returncode == 2 and "--skip-existing" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png"]
    result = run_cli("remove", photos["astronaut"], photos["chelsea"], "--out-dir", out, "--model", "u2netp",
                     "--skip-existing", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (out / "astronaut.png").read_bytes() == b"done earlier"
    with Image.open(out / "chelsea.png") as image:
        assert image.mode == "RGBA"


def test_only_mask_writes_the_grey_mask(run_cli, sample_photo, tmp_path):
    out = tmp_path / "mask.png"
    result = run_cli("remove", sample_photo, out, "--model", "u2netp", "--only-mask")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as mask, Image.open(sample_photo) as photo:
        assert mask.mode == "L" and mask.size == photo.size
        values = np.asarray(mask)
        assert values.min() < 20 and values.max() > 235  # background and subject both present
    result = run_cli("remove", sample_photo, tmp_path / "m.png", "--only-mask", "--color", "red")
    assert result.returncode == 2 and "--only-mask" in result.stderr


def test_remove_needs_in_and_out_without_out_dir(run_cli, sample_photo):
    result = run_cli("remove", sample_photo)
    assert result.returncode == 2 and "--out-dir" in result.stderr


def test_remove_refine_changes_only_the_edge(run_cli, sample_photo, tmp_path):
    plain, refined = tmp_path / "plain.png", tmp_path / "refined.png"
    assert run_cli("remove", sample_photo, plain, "--model", "u2netp").returncode == 0
    result = run_cli("remove", sample_photo, refined, "--model", "u2netp", "--refine")
    assert result.returncode == 0, result.stderr
    with Image.open(plain) as a, Image.open(refined) as b:
        changed = np.asarray(a.getchannel("A")) != np.asarray(b.getchannel("A"))
    assert changed.any() and changed.mean() < 0.25


def test_bench_stages_prints_a_row_of_step_times(run_cli, sample_photo, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / sample_photo.name).write_bytes(sample_photo.read_bytes())
    result = run_cli("bench", "--stages", "--models", "u2netp", "--photos", tmp_path / "photos")
    assert result.returncode == 0, result.stderr
    assert "MALLOC_MMAP_THRESHOLD_=65536" in result.stdout  # timed as the server runs
    header, _, row = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert "session.run" in header and "foreground" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0].startswith("u2netp (") and len(cells) == len(header.strip("|").split("|"))
    assert all(float(c) >= 0 for c in cells[1:])  # times only; their values are not asserted


def test_bench_runs_the_server_in_a_memory_cgroup_and_counts_oom_kills(run_cli, sample_photo, tmp_path):
    from tools.cgroup import CgroupUnavailable, MemoryCgroup

    try:
        MemoryCgroup(64).remove()
    except CgroupUnavailable as exc:
        pytest.skip(str(exc))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / sample_photo.name).write_bytes(sample_photo.read_bytes())
    result = run_cli("bench", "--models", "u2netp", "--photos", tmp_path / "photos", "--requests", "6",
                     "--memory-limit", "512")
    assert result.returncode == 0, result.stderr
    assert "AVX" in result.stdout.splitlines()[0] or "no AVX2" in result.stdout.splitlines()[0]  # the CPU's class
    header, _, row = [line for line in result.stdout.splitlines() if line.startswith("|")]
    cells = dict(zip((c.strip() for c in header.strip("|").split("|")), (c.strip() for c in row.strip("|").split("|"))))
    assert cells["OOM kills (512 MB cgroup)"] == "0" and cells["ok/total"] == "6/6"
    assert 0 < float(cells["cgroup peak MB"]) < 512
    # the worker is forked from gunicorn's master and shares its pages: PSS counts them once, RSS twice
    assert 0 < float(cells["peak tree PSS MB"]) < float(cells["peak tree MB"])
    # a cgroup too small for the model: the kill is counted and reported, not hidden
    result = run_cli("bench", "--models", "u2netp", "--photos", tmp_path / "photos", "--requests", "3",
                     "--memory-limit", "30")
    assert result.returncode == 1 and "OOM kill" in result.stderr, result.stdout + result.stderr


def test_a_folder_sent_to_a_busy_server_is_all_written_waiting_as_it_asks(run_cli, photos, base_env, tmp_path):
    from .support import start_server

    # no room to wait: every request beyond the running one gets 503 + Retry-After, and is sent again
    server = start_server({**base_env, "BG_REMOVAL_MODEL": "u2netp", "MAX_WAITING_MB": "0"}, tmp_path / "server.log")
    try:
        folder = tmp_path / "photos"
        folder.mkdir()
        for name, path in photos.items():
            (folder / path.name).write_bytes(path.read_bytes())
        result = run_cli("remove", folder, "--out-dir", tmp_path / "out", "--server", server.url,
                         "--concurrency", "4", "--quiet")
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{n}.png" for n in photos)
        with Image.open(tmp_path / "out" / "chelsea.png") as image:
            assert image.mode == "RGBA"
        assert any('"status": 503' in line for line in server.log.read_text().splitlines())  # it was busy
        again = run_cli("remove", folder, "--out-dir", tmp_path / "out", "--server", server.url, "--skip-existing")
        # resumable: nothing left to do, and it says why
        assert again.returncode == 0 and f"0 of 0 written to {tmp_path / 'out'}" in again.stdout
        assert f"; {len(photos)} already there, skipped" in again.stdout
    finally:
        server.stop()


def test_a_server_error_is_reported_per_image(run_cli, sample_photo, tmp_path, u2netp_server):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    result = run_cli("remove", bad, sample_photo, "--out-dir", tmp_path / "out", "--server", u2netp_server.url)
    assert result.returncode == 1 and "the service answered 400" in result.stderr and "bad.jpg" in result.stderr
    assert (tmp_path / "out" / f"{sample_photo.stem}.png").is_file()


def test_bench_matrix_prints_a_row_per_configuration_with_agreement(run_cli, photos, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "chelsea.png").write_bytes(photos["chelsea"].read_bytes())
    result = run_cli("bench", "--matrix", "--models", "u2netp", "--thread-counts", "1", "2",
                     "--engines", "onnxruntime", "openvino", "--precisions", "float32", "--photos", tmp_path / "photos")
    assert result.returncode == 0, result.stderr
    header, _, *rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [dict(zip(names, (c.strip() for c in row.strip("|").split("|")))) for row in rows]
    assert [(c["model (engine, precision)"], c["threads"], c["device"]) for c in cells] == [
        ("u2netp (onnxruntime, f32)", "1", "cpu"), ("u2netp (onnxruntime, f32)", "2", "cpu"),
        ("u2netp (openvino, f32)", "1", "cpu"), ("u2netp (openvino, f32)", "2", "cpu")]
    assert all(c["reference"] == "u2netp-rembg" and float(c["IoU vs reference, mean"]) > 0.99 for c in cells)


def test_bench_throughput_prints_a_row_per_workers_and_images_at_once(run_cli, sample_photo, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / sample_photo.name).write_bytes(sample_photo.read_bytes())
    result = run_cli("bench", "--throughput", "--models", "u2netp", "--workers", "1", "2", "--server-concurrency", "1",
                     "--thread-counts", "1", "--concurrency", "2", "--requests", "4", "--photos", tmp_path / "photos")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("CPU: ") and "GPU: no GPU" in first  # the CPU's classes and the GPU, named
    header, _, *rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = [dict(zip(names, (c.strip() for c in row.strip("|").split("|")))) for row in rows]
    assert [(c["workers"], c["images at once a worker"], c["ok/total"]) for c in cells] == [("1", "1", "4/4"),
                                                                                          ("2", "1", "4/4")]
    assert all(float(c["photos/s"]) > 0 and c["model"].startswith("u2netp (") for c in cells)
