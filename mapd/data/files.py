"""Helpers shared by the file-backed loaders: decoding, checks, and download-or-explain."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mapd.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def decode_image(path: str | Path, *, mode: str = "RGB") -> np.ndarray:
    """Decode one image file to uint8 (H, W, C); a clear DataError if it cannot be read."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
    except FileNotFoundError as e:
        raise DataError(f"image file missing: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from e
    return arr if arr.ndim == 3 else arr[..., None]


def check_files_exist(paths: Sequence[str | Path], *, what: str) -> None:
    """Raise one DataError naming the first few files of ``paths`` that do not exist."""
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise DataError(f"{what}: {len(missing)} listed image file(s) do not exist: {shown}{more}")


def check_decodable(
    paths: Sequence[str | Path], *, what: str, sample: int | None = 64, seed: int = 0
) -> None:
    """Decode ``sample`` random files of ``paths`` (all of them if ``sample`` is None)."""
    paths = list(paths)
    if sample is not None and len(paths) > sample:
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in rng.choice(len(paths), size=sample, replace=False)]
    for p in paths:
        try:
            decode_image(p)
        except DataError as e:
            raise DataError(f"{what}: {e}") from e


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_dir(path: str | Path | None, *, dataset: str, expected: str, how_to_get: str) -> Path:
    """``path`` if it is a directory, else a DataError saying what to download and where."""
    if path is None:
        raise DataError(f"{dataset}: no root directory given. Expected {expected}. {how_to_get}")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"{dataset}: {p} is not a directory. Expected {expected}. {how_to_get}")
    return p
