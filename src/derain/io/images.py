"""Reading images as ``H×W×3`` uint8 RGB arrays.

Every mode Pillow opens becomes 8-bit RGB: grey, palette and CMYK are converted; alpha is
dropped (as ``cv2.imread`` does, no compositing); 16-bit grey (``I;16``/``I``) is scaled by
1/257 with rounding. The EXIF orientation tag is applied (:func:`PIL.ImageOps.exif_transpose`),
so a phone photo comes out the way it is displayed.

Missing, unreadable, truncated, non-image and over-large files (more pixels than Pillow's
``PIL.Image.MAX_IMAGE_PIXELS``) raise :class:`ImageReadError` naming the file.

>>> import tempfile, pathlib
>>> from PIL import Image
>>> path = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
>>> Image.new("L", (5, 4), 200).save(path)
>>> img = read_image(path)
>>> img.shape, img.dtype, int(img[0, 0, 1])
((4, 5, 3), dtype('uint8'), 200)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "is_image_file", "read_image"]

#: File extensions treated as images (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


class ImageReadError(ValueError):
    """A file cannot be read as an image (missing, corrupt, truncated, not an image, too large)."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode → ``H×W×3`` uint8 RGB."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit grey: scale 0..65535 → 0..255
        grey = np.asarray(img).astype(np.float64)
        grey8 = np.floor(np.clip(grey, 0, 65535) / 257.0 + 0.5).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if img.mode == "P":  # via RGBA so palette transparency does not warn
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``path`` as an ``H×W×3`` uint8 RGB array (EXIF orientation applied).

    Raises :class:`ImageReadError` (a ``ValueError``) naming the file when it is missing, not an
    image, corrupt or truncated, or larger than ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    file = Path(path)
    if not file.is_file():
        raise ImageReadError(f"cannot read image {file}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                img.load()
                return _to_rgb8(ImageOps.exif_transpose(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(
            f"cannot read image {file}: too many pixels ({err}); raise PIL.Image.MAX_IMAGE_PIXELS "
            f"(now {Image.MAX_IMAGE_PIXELS}) if the file is trusted"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageReadError(f"cannot read image {file}: not an image file Pillow can identify") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated / corrupt data
        raise ImageReadError(f"cannot read image {file}: corrupt or truncated ({err})") from err
