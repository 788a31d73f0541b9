"""Folders of photos without ground truth (real rainy photos): which files, read how, at what size.

The real-rain report (:mod:`derain.bench.real`) reads photos this way, and so does anything else that reads real
rainy photos: every image file of the folders, searched recursively in natural order (``2.jpg`` before ``10.jpg``), kept
by :func:`~derain.data.folders.numbered` (``"odd"``/``"even"``: InternetData147's halves), read with
:func:`~derain.io.images.load_photo` (EXIF orientation, grey as three channels, 16 bits rounded to 8, alpha
dropped) and downscaled with Pillow's LANCZOS so the long side is at most ``max_side`` px (real photos come at
any size; one cap keeps the models' receptive fields comparable and the run bounded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import UserError
from ..io.images import is_image_file, load_photo, unit_float
from ..io.pixels import to_u8
from .folders import SELECT, numbered
from .pairs import natural_key

__all__ = ["PhotoFolderError", "downscale", "photo_files", "read_photo"]


class PhotoFolderError(UserError, ValueError):
    """A folder of photos without an image (after the odd/even filter), or a bad filter."""


def photo_files(folders: Sequence[str | os.PathLike[str]], only: str = "all") -> list[Path]:
    """The image files of ``folders`` (recursively, natural order, folder by folder), filtered by ``only``.

    ``only``: ``"all"``, or ``"odd"``/``"even"``: the files whose stem is an odd/even number (others are
    left out). :class:`FileNotFoundError` for a missing folder, :class:`PhotoFolderError` for a folder with
    no image (after the filter).
    """
    if only not in SELECT:
        raise PhotoFolderError(f"only must be one of {', '.join(SELECT)}, got {only!r}")
    if not folders:
        raise PhotoFolderError("no folder given")
    files: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"{folder}: not a folder")
        found = sorted((p for p in root.rglob("*") if p.is_file() and is_image_file(p)), key=lambda p: natural_key(str(p)))
        kept = [p for p in found if numbered(p, only)]
        if not kept:
            what = "no image files" if not found else f"no image file with an {only} number (of {len(found)})"
            raise PhotoFolderError(f"{folder}: {what}")
        files.extend(kept)
    return files


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` (uint8 ``H×W×3``) with its long side at most ``max_side`` px (Pillow LANCZOS); as is if it fits.

    >>> downscale(np.zeros((300, 800, 3), np.uint8), 400).shape
    (150, 400, 3)
    """
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def read_photo(path: str | os.PathLike[str], max_side: int = 640) -> np.ndarray:
    """A photo as uint8 RGB ``H×W×3`` (:func:`~derain.io.images.load_photo`, 8 bits), downscaled (:func:`downscale`).

    Raises :class:`~derain.io.images.ImageReadError` for a file it cannot read.
    """
    pixels = load_photo(path).pixels
    if pixels.dtype != np.uint8:
        pixels = to_u8(unit_float(pixels), "half-even")  # derain.io.pixels: clip(round(255·x)), ties to even
    return downscale(np.ascontiguousarray(pixels), max_side)
