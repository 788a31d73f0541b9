"""16-bit PNG and TIFF where Pillow falls short: reading the low bytes of 16-bit colour, and writing 16-bit files.

Pillow decodes 16-bit-per-channel colour (``RGB;16B``, ``RGBA;16B``, ``LA;16B``) to 8-bit modes, keeping
only the high byte of each sample. :func:`low_byte_tiles` rewrites the decoder's tile descriptors so a
second decode of the same file yields the low bytes; :mod:`derain.io.images` combines both. Pillow
describes tiles as ``ImageFile._Tile`` named tuples (``codec_name, extents, offset, args``; Pillow
11 and later) or, before, as plain 4-tuples in the same order: both layouts are handled here.

Pillow cannot write 16-bit colour PNG or TIFF either: :func:`write_png16` and :func:`write_tiff16`
write them (grey + alpha, RGB, RGBA), streamed in row blocks.

>>> low_byte_rawmode("RGB;16B"), low_byte_rawmode("LA;16B"), low_byte_rawmode("L")
('RGB;16L', 'RGBA', None)
>>> rawmode_of_tile(("zip", (0, 0, 5, 4), 41, "RGB;16B")), rawmode_of_tile(("raw", (0, 0, 5, 4), 8, ("RGB;16B", 0, 1)))
('RGB;16B', 'RGB;16B')
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from typing import IO, Any

import numpy as np

__all__ = ["low_byte_rawmode", "low_byte_tiles", "png_chunk", "rawmode_of_tile", "with_rawmode", "write_png16", "write_tiff16"]


def _args(tile: Any) -> Any:
    return tile.args if hasattr(tile, "args") else tile[3]


def rawmode_of_tile(tile: Any) -> str | None:
    """The raw mode a Pillow tile descriptor decodes (its ``args`` is the mode or a tuple starting with it)."""
    args = _args(tile)
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def low_byte_rawmode(rawmode: str) -> str | None:
    """A rawmode that decodes the low bytes of 16-bit samples (Pillow keeps only the high byte); None if none."""
    if rawmode == "LA;16B":  # 4 bytes per pixel: decoded verbatim as 8-bit RGBA
        return "RGBA"
    for base in ("RGB;16", "RGBA;16"):
        if rawmode.startswith(base) and len(rawmode) == len(base) + 1:
            order = rawmode[-1]
            if order == "N":
                order = "L" if sys.byteorder == "little" else "B"
            return base + ("B" if order == "L" else "L")
    return None


def with_rawmode(tile: Any, rawmode: str) -> Any:
    """``tile`` decoding ``rawmode`` instead (the same layout: named tuple or plain tuple).

    >>> with_rawmode(("raw", (0, 0, 5, 4), 8, ("RGB;16B", 0, 1)), "RGB;16L")
    ('raw', (0, 0, 5, 4), 8, ('RGB;16L', 0, 1))
    """
    args = _args(tile)
    new = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    if hasattr(tile, "_replace"):
        return tile._replace(args=new)
    return (*tuple(tile)[:3], new, *tuple(tile)[4:])


def low_byte_tiles(tiles: list[Any], rawmode: str) -> list[Any] | None:
    """The tile descriptors that decode the low bytes of a 16-bit image read as ``rawmode`` (None: not one)."""
    low = low_byte_rawmode(rawmode)
    return None if low is None else [with_rawmode(t, low) for t in tiles]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _exif_payload(exif: bytes) -> bytes:
    return exif[6:] if exif.startswith(b"Exif\x00\x00") else exif


def write_png16(fp: IO[bytes], arr: np.ndarray, icc: bytes | None, exif: bytes | None, dpi: Any) -> None:
    """16-bit PNG (``H×W×C`` uint16, C = 2 grey+alpha, 3 RGB, 4 RGBA); 'Up' filter, streamed in row blocks."""
    h, w, c = arr.shape
    colour_type = {2: 4, 3: 2, 4: 6}[c]
    fp.write(b"\x89PNG\r\n\x1a\n")
    fp.write(png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)))
    if icc:
        fp.write(png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [int(round(d / 0.0254)) for d in dpi]
        fp.write(png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        fp.write(png_chunk(b"eXIf", _exif_payload(exif)))
    rows = np.ascontiguousarray(arr, dtype=">u2").reshape(h, w * c).view(np.uint8)
    comp = zlib.compressobj(6)
    prev = np.zeros(w * c * 2, np.uint8)
    block = 256
    for r0 in range(0, h, block):
        cur = rows[r0 : r0 + block]
        above = np.concatenate([prev[None], cur[:-1]], axis=0)
        filtered = np.empty((cur.shape[0], cur.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # Up
        np.subtract(cur, above, out=filtered[:, 1:])  # uint8 arithmetic wraps mod 256, as PNG wants
        prev = cur[-1]
        data = comp.compress(filtered.tobytes())
        if data:
            fp.write(png_chunk(b"IDAT", data))
    fp.write(png_chunk(b"IDAT", comp.flush()))
    fp.write(png_chunk(b"IEND", b""))


def write_tiff16(fp: IO[bytes], arr: np.ndarray, icc: bytes | None, dpi: Any) -> None:
    """16-bit TIFF (``H×W×C`` uint16, C = 2, 3, 4; little-endian, Adobe deflate, 64-row strips)."""
    h, w, c = arr.shape
    rows_per_strip = 64
    strips = []
    data = arr.astype("<u2")
    for r0 in range(0, h, rows_per_strip):
        strips.append(zlib.compress(data[r0 : r0 + rows_per_strip].tobytes(), 6))
    out = io.BytesIO()  # offsets are relative to the start of the file
    out.write(b"II*\x00\x00\x00\x00\x00")
    offsets = []
    for s in strips:
        offsets.append(out.tell())
        out.write(s)
        if out.tell() % 2:
            out.write(b"\x00")

    def put_array(fmt: str, values: list[int] | bytes) -> int:
        if out.tell() % 2:
            out.write(b"\x00")
        pos = out.tell()
        out.write(values if isinstance(values, bytes) else struct.pack("<" + fmt * len(values), *values))
        return pos

    SHORT, LONG, RATIONAL, UNDEFINED = 3, 4, 5, 7
    entries: list[tuple[int, int, int, Any]] = []  # tag, type, count, value-or-offset
    entries.append((256, LONG, 1, w))
    entries.append((257, LONG, 1, h))
    entries.append((258, SHORT, c, put_array("H", [16] * c) if c > 2 else (16 | (16 << 16) if c == 2 else 16)))
    entries.append((259, SHORT, 1, 8))
    entries.append((262, SHORT, 1, 2 if c >= 3 else 1))
    entries.append((273, LONG, len(offsets), put_array("I", offsets) if len(offsets) > 1 else offsets[0]))
    entries.append((277, SHORT, 1, c))
    entries.append((278, LONG, 1, rows_per_strip))
    counts = [len(s) for s in strips]
    entries.append((279, LONG, len(counts), put_array("I", counts) if len(counts) > 1 else counts[0]))
    if dpi:
        entries.append((282, RATIONAL, 1, put_array("I", [int(round(dpi[0] * 100)), 100])))
        entries.append((283, RATIONAL, 1, put_array("I", [int(round(dpi[1] * 100)), 100])))
    entries.append((284, SHORT, 1, 1))
    if dpi:
        entries.append((296, SHORT, 1, 2))
    if c in (2, 4):
        entries.append((338, SHORT, 1, 2))  # unassociated alpha
    entries.append((339, SHORT, c, put_array("H", [1] * c) if c > 2 else (1 | (1 << 16) if c == 2 else 1)))
    if icc:
        entries.append((34675, UNDEFINED, len(icc), put_array("B", icc)))
    if out.tell() % 2:
        out.write(b"\x00")
    ifd = out.tell()
    out.write(struct.pack("<H", len(entries)))
    for tag, kind, count, value in sorted(entries):
        out.write(struct.pack("<HHI", tag, kind, count))
        out.write(struct.pack("<H", value) + b"\x00\x00" if kind == SHORT and count == 1 else struct.pack("<I", value))
    out.write(b"\x00\x00\x00\x00")
    buf = out.getbuffer()
    buf[4:8] = struct.pack("<I", ifd)
    fp.write(buf)
