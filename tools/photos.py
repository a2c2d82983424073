"""Sample photos fetched like models: pinned by sha256, from a public package, cached.

The tests and the bench need real photos (people, animals, objects) on a fresh clone with
nothing beside it; scikit-image's wheel ships a few under licences that allow it.
"""
from __future__ import annotations

import os
from pathlib import Path

from service.model.catalog import DataFile, PypiWheel
from service.config import default_model_dir

SKIMAGE = "scikit-image==0.26.0"


def _photo(filename: str, sha256: str, size: int, licence: str) -> DataFile:
    return DataFile(name=Path(filename).stem, filename=filename, checksum=f"sha256:{sha256}", size=size,
                    sources=(PypiWheel(SKIMAGE, f"skimage/data/{filename}"),), licence=licence)


PHOTOS = (
    _photo("astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", 791555,
           "public domain (NASA: the astronaut Eileen Collins)"),
    _photo("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", 240512,
           "CC0 (Stefan van der Walt: Chelsea the cat)"),
    _photo("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", 466706,
           "CC0 (Rachel Michetti: a coffee cup)"),
    _photo("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", 112525,
           "public domain (SpaceX: a Falcon 9 launch)"),
)


def photo_dir(env=None) -> Path:
    """Where fetched photos are kept: $BG_PHOTO_DIR, else ``photos`` in the model cache's folder."""
    env = os.environ if env is None else env
    return Path(env.get("BG_PHOTO_DIR") or default_model_dir(env).parent / "bg-removal-photos")


def fetch_photos(directory: Path | None = None, show_progress: bool = False) -> list[Path]:
    """Paths of the verified sample photos in ``directory`` (default :func:`photo_dir`), fetched if missing.

    Raises :class:`service.model.fetch.FetchError` when one can't be had.
    """
    from service.model.fetch import fetch_model

    directory = directory or photo_dir()
    return [fetch_model(photo, directory, show_progress=show_progress) for photo in PHOTOS]
