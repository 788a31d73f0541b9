"""A generated corpus of unusual and malformed image files (no shared data needed) for the fuzz tests.

Every file is made here, deterministically, from small synthetic pictures: valid files in every mode,
format and odd size the product accepts, then malformed ones: truncated at several points, corrupted
headers, other file types behind image extensions, decompression bombs, animations and byte flips.

Each entry says what a correct program does with it: ``ok`` (derained; same size), ``corrupt``
(HTTP 400), ``not_image`` (415), ``too_large`` (413), ``unsupported`` (an image the product refuses
on purpose, e.g. an animation: 415 by the service, an error line by the CLI), or ``either`` (a
mutation a decoder may tolerate: ok with the right size, or a clear error, never a crash).
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["FuzzFile", "corpus", "write_corpus"]


@dataclass(frozen=True)
class FuzzFile:
    name: str
    data: bytes
    expect: str  # ok | corrupt | not_image | too_large | unsupported | either
    size: tuple[int, int] | None = None  # (width, height) of the derained output, for ok


def _picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with some texture, uint8 RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) * 127 // max(width + height - 2, 1)], -1)
    return np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int, bad_crc: bool = False) -> bytes:
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if bad_crc:
        ihdr = ihdr[:-4] + b"\x00\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + ihdr


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG of ``width × height`` black pixels: tiny on disk, huge decoded."""
    row = b"\x00" + b"\x00" * (3 * width)
    idat = zlib.compress(row * height, 9)
    return _png_header_only(width, height) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _jpeg_with_size(jpg: bytes, width: int, height: int) -> bytes:
    """``jpg`` with its SOF0 frame size rewritten (the scan data no longer fits it)."""
    at = jpg.index(b"\xff\xc0")
    return jpg[: at + 5] + struct.pack(">HH", height, width) + jpg[at + 9 :]


def _flip(data: bytes, at: float, count: int = 8) -> bytes:
    """``data`` with ``count`` bytes inverted from the fraction ``at`` of its length on."""
    b = bytearray(data)
    start = int(len(b) * at)
    for i in range(start, min(start + count, len(b))):
        b[i] ^= 0xFF
    return bytes(b)


def _exif_rotated_jpeg(width: int, height: int) -> bytes:
    img = Image.fromarray(_picture(width, height, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return _encode(img, "JPEG", exif=exif.tobytes(), quality=92)


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(_picture(20, 14, s)) for s in range(3)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    frames = [Image.fromarray(_picture(20, 14, s)) for s in range(2)]
    return _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def corpus() -> list[FuzzFile]:
    """The whole corpus, in a fixed order."""
    rgb = _picture(40, 30)
    img = Image.fromarray(rgb)
    alpha = Image.fromarray(np.dstack([rgb, np.full((30, 40), 200, np.uint8)]))
    grey = img.convert("L")
    rng = np.random.default_rng(7)
    png, jpg = _encode(img, "PNG"), _encode(img, "JPEG", quality=90)
    webp, tif, gif = _encode(img, "WEBP", quality=80), _encode(img, "TIFF"), _encode(img.convert("P"), "GIF")
    bmp = _encode(img, "BMP")
    floats = rgb.astype(np.float32)[..., 0] / 255
    with_inf = floats.copy()
    with_inf[3, 4] = np.inf
    with_nan = floats.copy()
    with_nan[5, 6] = np.nan
    palette_trns = img.convert("P")
    palette_trns.info["transparency"] = 0
    size = (40, 30)
    files = [
        # valid: modes
        FuzzFile("rgb.png", png, "ok", size),
        FuzzFile("rgba.png", _encode(alpha, "PNG"), "ok", size),
        FuzzFile("la.png", _encode(alpha.convert("LA"), "PNG"), "ok", size),
        FuzzFile("grey.png", _encode(grey, "PNG"), "ok", size),
        FuzzFile("palette.png", _encode(img.convert("P"), "PNG"), "ok", size),
        FuzzFile("palette_transparency.png", _encode(palette_trns, "PNG"), "ok", size),
        FuzzFile("bilevel.png", _encode(img.convert("1"), "PNG"), "ok", size),
        FuzzFile("grey16.png", _encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"), "ok", size),
        FuzzFile("text_chunks.png", _encode(img, "PNG", pnginfo=_text_info()), "ok", size),
        FuzzFile("rgb.jpg", jpg, "ok", size),
        FuzzFile("grey.jpg", _encode(grey, "JPEG"), "ok", size),
        FuzzFile("cmyk.jpg", _encode(img.convert("CMYK"), "JPEG"), "ok", size),
        FuzzFile("progressive.jpg", _encode(img, "JPEG", progressive=True), "ok", size),
        FuzzFile("subsampled_444.jpg", _encode(img, "JPEG", subsampling=0, quality=100), "ok", size),
        FuzzFile("exif_rotated.jpg", _exif_rotated_jpeg(40, 30), "ok", (30, 40)),
        FuzzFile("lossy.webp", webp, "ok", size),
        FuzzFile("lossless.webp", _encode(img, "WEBP", lossless=True), "ok", size),
        FuzzFile("alpha.webp", _encode(alpha, "WEBP", lossless=True), "ok", size),
        FuzzFile("rgb.tif", tif, "ok", size),
        FuzzFile("lzw.tif", _encode(img, "TIFF", compression="tiff_lzw"), "ok", size),
        FuzzFile("grey16.tif", _encode(Image.fromarray(rgb[..., 1].astype(np.uint16) * 257), "TIFF"), "ok", size),
        FuzzFile("float.tif", _encode(Image.fromarray(floats), "TIFF"), "ok", size),
        FuzzFile("float_inf.tif", _encode(Image.fromarray(with_inf), "TIFF"), "ok", size),
        FuzzFile("float_nan.tif", _encode(Image.fromarray(with_nan), "TIFF"), "ok", size),
        FuzzFile("rgb.bmp", bmp, "ok", size),
        FuzzFile("static.gif", gif, "ok", size),
        # valid: sizes and names
        FuzzFile("one_pixel.png", _encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), "ok", (1, 1)),
        FuzzFile("two_by_three.jpg", _encode(Image.fromarray(_picture(2, 3)), "JPEG"), "ok", (2, 3)),
        FuzzFile("column.png", _encode(Image.fromarray(_picture(1, 3000)), "PNG"), "ok", (1, 3000)),
        FuzzFile("row.png", _encode(Image.fromarray(_picture(3000, 1)), "PNG"), "ok", (3000, 1)),
        FuzzFile("odd_size.webp", _encode(Image.fromarray(_picture(33, 17)), "WEBP", lossless=True), "ok", (33, 17)),
        FuzzFile("UPPER.PNG", png, "ok", size),
        FuzzFile("png_named.jpg", png, "ok", size),
        FuzzFile("spaces and ünïcode.png", png, "ok", size),
        # malformed: empty and tiny
        FuzzFile("empty.png", b"", "corrupt"),
        FuzzFile("one_byte.jpg", b"\xff", "either", size),
        FuzzFile("nul_bytes.webp", b"\x00" * 512, "not_image"),
        FuzzFile("signature_only.png", b"\x89PNG\r\n\x1a\n", "either", size),
        FuzzFile("header_only.png", _png_header_only(40, 30), "either", size),
        # malformed: truncated
        *(FuzzFile(f"truncated_{int(f * 100)}.png", png[: int(len(png) * f)], "either", size) for f in (0.1, 0.5, 0.9)),
        *(FuzzFile(f"truncated_{int(f * 100)}.jpg", jpg[: int(len(jpg) * f)], "either", size) for f in (0.1, 0.5, 0.9)),
        FuzzFile("truncated.webp", webp[: len(webp) // 2], "either", size),
        FuzzFile("truncated.tif", tif[: len(tif) // 2], "either", size),
        FuzzFile("truncated.gif", gif[: len(gif) // 2], "either", size),
        FuzzFile("truncated.bmp", bmp[: len(bmp) // 2], "either", size),
        # malformed: corrupted headers and data
        FuzzFile("bad_ihdr_crc.png", _png_header_only(40, 30, bad_crc=True) + png[33:], "either", size),
        FuzzFile("zero_width.png", _png_header_only(0, 30) + png[33:], "either", size),
        FuzzFile("flipped_header.png", _flip(png, 0.02), "either", size),
        FuzzFile("flipped_data.png", _flip(png, 0.6), "either", size),
        FuzzFile("flipped_header.jpg", _flip(jpg, 0.01), "either", size),
        FuzzFile("flipped_data.jpg", _flip(jpg, 0.7), "either", size),
        FuzzFile("flipped.webp", _flip(webp, 0.5), "either", size),
        FuzzFile("flipped.tif", _flip(tif, 0.005), "either", size),
        FuzzFile("bad_header.bmp", _flip(bmp, 0.0, 20), "either", size),
        # not images behind image extensions
        FuzzFile("text.jpg", b"this is not an image\n" * 5, "not_image"),
        FuzzFile("page.png", b"<!doctype html><html><body>hello</body></html>\n", "not_image"),
        FuzzFile("random.png", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_image"),
        FuzzFile("random.tif", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not_image"),
        FuzzFile("archive.png", _zip_bytes(png), "not_image"),
        FuzzFile("gzipped.tif", gzip.compress(tif, mtime=0), "not_image"),
        FuzzFile("script.webp", b"#!/bin/sh\necho hello\n", "not_image"),
        # too large or refused on purpose
        FuzzFile("bomb.png", _bomb_png(12000, 12000), "too_large"),
        FuzzFile("huge_header.jpg", _jpeg_with_size(jpg, 65000, 65000), "too_large"),
        FuzzFile("animated.gif", _animated("GIF"), "unsupported"),
        FuzzFile("animated.webp", _animated("WEBP"), "unsupported"),
        FuzzFile("animated.png", _animated("PNG"), "unsupported"),
        FuzzFile("multipage.tif", _multipage_tiff(), "unsupported"),
    ]
    names = [f.name for f in files]
    assert len(set(names)) == len(names), "duplicate names in the fuzz corpus"
    return files


def _text_info():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "x" * 2000)
    info.add_itxt("Title", "rain ☔", zip=True)
    return info


def _zip_bytes(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("photo.png", (2020, 1, 1, 0, 0, 0)), payload)
    return buf.getvalue()


def write_corpus(folder: Path) -> dict[str, FuzzFile]:
    """Write the corpus into ``folder``; name → entry."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for f in corpus():
        (folder / f.name).write_bytes(f.data)
        out[f.name] = f
    return out
