"""One request's work, run in a worker thread: decode the upload, derain it, encode the result.

Decoding and encoding are the photo I/O of ``derain run`` (:func:`derain.io.images.load_photo`,
:func:`derain.io.images.encode_photo`: EXIF orientation, grey/alpha/16-bit kept, metadata carried,
the pixel limit checked from the header before any pixel is decoded); deraining is
:meth:`~derain.inference.derainer.DerainerBase.derain_photo` on the held :class:`~derain.inference.derainer.Derainer`, tiled like the CLI.

The result is written in the input's format unless ``format`` is given.

Memory stays bounded whatever the client asks: :func:`server_tile` never lets one model pass see
more than ``max_tile × max_tile`` pixels (nor more than the automatic-tiling threshold,
:data:`~derain.inference.tiling.AUTO_TILE_PIXELS`). Images up to that size follow ``tile`` as
``derain run`` does (``0``: one pass); larger ones are always tiled, with tiles of at most
``max_tile`` (``tile=0`` or a tile larger than that is capped; no tile: the automatic 512).

>>> output_format("JPEG", None), output_format("PNG", "webp"), output_format(None, None)
('JPEG', 'WEBP', 'PNG')
>>> media_type("JPEG"), media_type("WEBP")
('image/jpeg', 'image/webp')
>>> download_name("holiday photo.JPG", "JPEG"), download_name(None, "PNG")
('holiday_photo_derained.jpg', 'derained.png')
>>> server_tile(0, 600, 800, 1024), server_tile(None, 5200, 7700, 1024), server_tile(0, 5200, 7700, 1024)
(0, 512, 1024)
>>> server_tile(8000, 5200, 7700, 1024), server_tile(300, 5200, 7700, 1024), server_tile(None, 150, 200, 96)
(1024, 300, 96)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath

from PIL import Image

from ..inference.derainer import Derainer, Strength
from ..inference.tiling import AUTO_TILE, AUTO_TILE_PIXELS, resolve_tile
from ..io.images import ImageReadError, encode_photo, extension_for, load_photo, resolve_format
from .errors import ApiError
from .limits import DEFAULT_MAX_TILE

__all__ = [
    "DerainedImage",
    "derain_upload",
    "download_name",
    "media_type",
    "output_format",
    "server_tile",
    "status_for_read_error",
]

#: HTTP status of each :class:`~derain.io.images.ImageReadError` kind (any other: 400).
READ_ERROR_STATUS: dict[str, int] = {"too_large": 413, "not_image": 415}


@dataclass
class DerainedImage:
    """The encoded result and what the response and the log say about it."""

    data: bytes
    format: str
    width: int
    height: int
    tile: int  # tile side used; 0: one pass over the whole image
    timings_ms: dict[str, float] = field(default_factory=dict)


def output_format(source_format: str | None, requested: str | None) -> str:
    """Pillow format of the result: ``requested`` (``png``/``jpeg``/``webp``...), else the input's, else PNG."""
    return resolve_format(None, requested, source_format)


def media_type(fmt: str) -> str:
    """The content type of a Pillow format."""
    Image.init()
    return Image.MIME.get(fmt, "application/octet-stream")


def download_name(filename: str | None, fmt: str) -> str:
    """``<stem>_derained.<ext>`` from the client's file name (any folders dropped, unusual characters replaced)."""
    stem = PureWindowsPath(PurePosixPath(filename or "").name).stem if filename else ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:100]
    ext = extension_for(fmt)
    return f"{stem}_derained{ext}" if stem else f"derained{ext}"


def server_tile(tile: int | None, height: int, width: int, max_tile: int = DEFAULT_MAX_TILE) -> int:
    """The tile side the server uses for a ``width × height`` image when the client asks for ``tile``; 0: one pass.

    Images of at most ``min(AUTO_TILE_PIXELS, max_tile²)`` pixels follow ``tile`` like
    :func:`~derain.inference.tiling.resolve_tile` (None: automatic, 0: one pass). Larger ones are
    always tiled, with tiles of at most ``max_tile``: ``tile=None`` gives the automatic
    :data:`~derain.inference.tiling.AUTO_TILE` (capped), ``0`` gives ``max_tile``, ``N`` gives
    ``min(N, max_tile)``.
    """
    if height * width <= min(AUTO_TILE_PIXELS, max_tile * max_tile):
        return resolve_tile(tile, height, width) or 0
    wanted = AUTO_TILE if tile is None else tile or max_tile
    return resolve_tile(min(wanted, max_tile), height, width) or 0


def status_for_read_error(err: ImageReadError) -> int:
    """HTTP status for an upload :func:`load_photo` refused (:data:`READ_ERROR_STATUS` by the error's kind)."""
    return READ_ERROR_STATUS.get(err.kind, 400)


def derain_upload(
    derainer: Derainer,
    data: bytes,
    *,
    max_pixels: int | None,
    format: str | None = None,
    quality: int = 95,
    tile: int | None = None,
    max_tile: int = DEFAULT_MAX_TILE,
    name: str = "<upload>",
    strength: Strength | str | None = None,
) -> DerainedImage:
    """Decode ``data``, derain it (tiled per :func:`server_tile`; ``strength`` as
    :class:`~derain.inference.derainer.DerainerBase` takes it) and encode the result.

    Unreadable uploads raise :class:`ApiError` (400/413/415).
    """
    t0 = time.perf_counter()
    try:
        photo = load_photo(data, max_pixels=max_pixels, name=name)
    except ImageReadError as err:
        raise ApiError(status_for_read_error(err), f"cannot read the image: {err.reason}") from None
    t1 = time.perf_counter()
    width, height = photo.size
    used = server_tile(tile, height, width, max_tile)
    result = derainer.derain_photo(photo, used, strength=strength)
    photo = photo.without_pixels()  # the input is not needed to encode: bounded memory for big uploads
    t2 = time.perf_counter()
    fmt = output_format(photo.format, format)
    encoded = encode_photo(photo, result, fmt, quality)
    t3 = time.perf_counter()
    timings = {"decode": (t1 - t0) * 1000.0, "derain": (t2 - t1) * 1000.0, "encode": (t3 - t2) * 1000.0}
    return DerainedImage(encoded, fmt, width, height, used, timings)
