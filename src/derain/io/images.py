"""Reading images as ``H×W×3`` uint8 RGB arrays.

Every mode Pillow opens becomes 8-bit RGB: grey, palette and CMYK are converted; alpha is
dropped (as ``cv2.imread`` does, no compositing); 16-bit grey (``I;16``/``I``) is scaled by
1/257 with rounding. The EXIF orientation tag is applied (:func:`PIL.ImageOps.exif_transpose`),
so a phone photo comes out the way it is displayed.

Missing, unreadable, truncated, non-image and over-large files (more pixels than Pillow's
``PIL.Image.MAX_IMAGE_PIXELS``) raise :class:`ImageReadError` naming the file.

Photos to derain and write back like the input: :func:`load_photo` / :func:`save_photo` (and
:func:`photo_from_pil` / :func:`photo_to_pil` for in-memory images) keep what is needed to write
the result in the input's mode, bit depth and format:

* greyscale (``1``, ``L``, ``I;16``, ``I``, ``F``) is derained as RGB and written back grey
  (``L``, or 16-bit ``I;16``);
* alpha (``RGBA``, ``LA``, ``PA``, palette transparency) is kept untouched and re-attached;
* palette images become RGB(A); CMYK, YCbCr, LAB and HSV become RGB;
* 16-bit PNG and TIFF (grey, grey+alpha, RGB, RGBA) keep full 16-bit precision (values
  0..65535 → float) and are written back as 16-bit PNG/TIFF (other formats get 8 bits);
* the EXIF orientation is applied; the EXIF (orientation reset to 1), the ICC profile (when its
  colour space still fits the output) and the DPI are carried to the output;
* animated images (GIF, APNG, WebP) and multi-page TIFFs are rejected with a clear
  :class:`ImageReadError` (deraining only the first frame would silently drop the animation);
  multi-picture JPEGs (MPO, e.g. phone photos with a depth/gain map) use their main picture;
* images with more pixels than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 100 MP) are
  rejected from the header, before any pixel is decoded; Pillow's own decompression-bomb
  warnings never leak.

:func:`save_photo` writes atomically: a temporary file in the target folder, then ``os.replace``;
on any error no partial file is left.

>>> import tempfile, pathlib
>>> from PIL import Image
>>> path = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
>>> Image.new("L", (5, 4), 200).save(path)
>>> img = read_image(path)
>>> img.shape, img.dtype, int(img[0, 0, 1])
((4, 5, 3), dtype('uint8'), 200)
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError
from .atomic import write_atomic
from .pixels import PIXEL_TOP, to_float, to_pixels
from .sixteen import low_byte_rawmode, low_byte_tiles, rawmode_of_tile, write_png16, write_tiff16

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "PIXEL_TOP",
    "PHOTO_EXTENSIONS",
    "ImageReadError",
    "Photo",
    "encode_photo",
    "is_image_file",
    "load_photo",
    "photo_from_pil",
    "photo_to_pil",
    "quantize_pixels",
    "read_image",
    "unit_float",
    "image_size",
    "extension_for",
    "FORMAT_EXTENSIONS",
    "ReadErrorKind",
    "resolve_format",
    "save_image",
    "save_photo",
]

#: File extensions treated as images (compared case-insensitively).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


ReadErrorKind = Literal["missing", "unreadable", "empty", "not_image", "corrupt", "too_large", "unsupported"]


class ImageReadError(UserError, ValueError):
    """A file cannot be read as an image.

    ``path`` and ``reason`` hold the file's name and the bare reason, so a caller can print
    ``PATH: reason`` lines; ``kind`` says which failure it is, for callers that map failures to
    statuses (the service's HTTP codes): ``missing`` (no such file, not a file), ``unreadable``
    (permissions), ``empty`` (0 bytes), ``not_image`` (no format recognises it), ``corrupt`` (a known
    format with a broken header or data), ``too_large`` (over the pixel limit, or out of memory) or
    ``unsupported`` (an animation or a multi-page file).
    """

    def __init__(
        self, message: str, *, path: str | None = None, reason: str | None = None, kind: ReadErrorKind = "corrupt"
    ) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason if reason is not None else message
        self.kind = kind


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


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Read ``path`` as an ``H×W×3`` uint8 RGB array: :func:`load_photo` (EXIF orientation applied, the
    pixel limit ``max_pixels``, default :data:`DEFAULT_MAX_PIXELS`), grey repeated into three channels,
    16-bit scaled to 8, alpha dropped. The reader of training, evaluation and the benchmarks.

    Raises :class:`ImageReadError` (a ``ValueError``) naming the file when it is missing, not an
    image, corrupt or truncated, or larger than the limit.
    """
    photo = load_photo(path, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
    pixels = quantize_pixels(photo.pixels, 8)
    return pixels if pixels.flags.writeable else pixels.copy()  # the caller's to change (Pillow's are read-only)


def image_size(path: str | os.PathLike[str], max_pixels: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` as displayed (EXIF orientation applied), from its header.

    Raises :class:`ImageReadError` like :func:`read_image` for files it cannot open or over the limit.
    """
    name = str(path)
    if not Path(path).is_file():
        raise _fail(name, "no such file" if not Path(path).exists() else "not a file", "missing")
    img = _open(lambda: str(path), name, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
    try:
        width, height = img.size
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # displayed rotated by 90°: the sides swap
            width, height = height, width
    except Exception as err:  # noqa: BLE001 - a broken EXIF block is a broken header
        raise _fail(name, f"corrupt or truncated image header ({type(err).__name__}: {err})") from None
    finally:
        img.close()
    return width, height


#: File extension written for each Pillow output format.
FORMAT_EXTENSIONS: dict[str, str] = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tiff", "BMP": ".bmp", "GIF": ".gif"}


def extension_for(fmt: str) -> str:
    """The file extension for Pillow format ``fmt``.

    >>> extension_for("JPEG"), extension_for("TIFF"), extension_for("PPM")
    ('.jpg', '.tiff', '.ppm')
    """
    return FORMAT_EXTENSIONS.get(fmt, "." + fmt.lower())


# --------------------------------------------------------------------------------------------
# Photos: read for the model, write back like the input
# --------------------------------------------------------------------------------------------

#: Default pixel limit of :func:`load_photo` (``--max-pixels`` on the command line).
DEFAULT_MAX_PIXELS = 100_000_000

#: Extensions picked up when a folder is scanned for photos.
PHOTO_EXTENSIONS: frozenset[str] = IMAGE_EXTENSIONS | {".gif"}

_OPEN_LOCK = threading.Lock()  # guards the brief change of Image.MAX_IMAGE_PIXELS
# EXIF tags carried to outputs: description, make, model, orientation, software, date, artist,
# copyright, and the Exif and GPS sub-IFDs.
_EXIF_KEEP = (0x010E, 0x010F, 0x0110, 0x0112, 0x0131, 0x0132, 0x013B, 0x8298, 0x8769, 0x8825)


@dataclass(frozen=True)
class Photo:
    """A decoded photo plus what is needed to write a result back like it.

    Attributes:
        pixels: ``H×W×3`` as decoded (grey images repeated into 3 channels): uint8 (8-bit sources),
            uint16 (16-bit), float32 in [0, 1] (float sources). :attr:`rgb` is the float32 view of them.
        alpha: the alpha channel, ``H×W`` uint8 (``bits == 8``) or uint16 (``bits == 16``), or None.
        grey: the source is greyscale; results are written back grey.
        bits: 8 or 16 (16-bit PNG/TIFF sources).
        format: Pillow format name of the source (``"JPEG"``, ``"PNG"``, ...), or None.
        icc_profile, exif, dpi: metadata carried to the output (EXIF orientation reset to 1).
        name: the file name (or ``<stdin>``) used in messages.
        source_mode: Pillow mode of the source image.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    grey: bool = False
    bits: int = 8
    format: str | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    name: str = "<image>"
    source_mode: str = "RGB"

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` like Pillow."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    @property
    def rgb(self) -> np.ndarray:
        """:attr:`pixels` as ``H×W×3`` float32 in [0, 1] (a new array, unless they are float32 already)."""
        return unit_float(self.pixels)

    @property
    def mode(self) -> str:
        """The mode results are written in: ``L``, ``LA``, ``RGB``, ``RGBA``; 16-bit: ``I;16``, ``LA;16``, ``RGB;16``, ``RGBA;16``."""
        base = ("L" if self.grey else "RGB") + ("A" if self.alpha is not None else "")
        if self.bits == 16:
            return "I;16" if base == "L" else base + ";16"
        return base

    def without_pixels(self) -> Photo:
        """This photo without its input pixels (a zero-memory stand-in of the same shape): all that writing a
        result like it needs, so a caller can free the input (480 MB for a 40 MP photo) before encoding.

        >>> p = Photo(np.zeros((4, 6, 3), np.float32))
        >>> q = p.without_pixels()
        >>> q.size, q.pixels.strides
        ((6, 4), (0, 0, 0))
        """
        return replace(self, pixels=np.broadcast_to(np.zeros(1, self.pixels.dtype), self.pixels.shape))


def _fail(name: str, reason: str, kind: ReadErrorKind = "corrupt") -> ImageReadError:
    return ImageReadError(f"cannot read image {name}: {reason}", path=name, reason=reason, kind=kind)


def _open(make_source: Any, name: str, max_pixels: int | None) -> Image.Image:
    """``Image.open`` (header only) with our pixel limit instead of Pillow's warnings.

    ``make_source()`` returns a fresh path or file object each time it is called.
    """
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(make_source())
        except Image.DecompressionBombError:
            # Over twice Pillow's limit: read the header with Pillow's check off, then apply ours.
            with _OPEN_LOCK:
                saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    img = Image.open(make_source())
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        raise _fail(name, "not an image file (or a format Pillow cannot read)", "not_image") from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as err:
        raise _fail(name, f"cannot open ({err.strerror or err})", "unreadable") from None
    except Exception as err:  # noqa: BLE001 - any header parsing failure is a bad file
        raise _fail(name, f"corrupt or truncated image header ({type(err).__name__}: {err})") from None
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        img.close()
        raise _fail(
            name,
            f"image too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (raise it with --max-pixels / max_pixels= if the file is trusted)",
            "too_large",
        )
    if width < 1 or height < 1:
        img.close()
        raise _fail(name, f"empty image ({width}x{height})")
    try:
        frames = int(getattr(img, "n_frames", 1) or 1)
    except Exception as err:  # noqa: BLE001 - counting frames reads the file
        img.close()
        raise _fail(name, f"corrupt or truncated image data ({type(err).__name__}: {err})") from None
    if frames > 1 and img.format != "MPO":
        kind = "multi-page" if img.format == "TIFF" else "animated"
        img.close()
        raise _fail(name, f"{kind} {img.format} with {frames} frames is not supported (extract one frame first)", "unsupported")
    return img


def _transpose(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as stored
        return img


def _metadata(img: Image.Image) -> tuple[bytes | None, bytes | None, tuple[float, float] | None]:
    icc = img.info.get("icc_profile") or None
    exif_bytes = None
    try:
        source = img.getexif()
        # Only descriptive tags and the Exif/GPS sub-IFDs: a TIFF's own layout tags (strips,
        # photometric, colour map, ...) must not be written into the output.
        exif = Image.Exif()
        for tag in _EXIF_KEEP:
            if tag in source:
                exif[tag] = source.get_ifd(tag) if tag in (0x8769, 0x8825) else source[tag]
        if len(exif):
            if 0x0112 in exif:
                exif[0x0112] = 1
            exif_bytes = exif.tobytes()
    except Exception:  # noqa: BLE001 - unreadable EXIF is dropped, the pixels still count
        exif_bytes = None
    dpi = img.info.get("dpi")
    try:
        dpi = (float(dpi[0]), float(dpi[1])) if dpi else None
    except (TypeError, ValueError, IndexError):
        dpi = None
    return icc if isinstance(icc, bytes) else None, exif_bytes, dpi


def unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 / uint16 pixels → float32 in [0, 1]; float pixels as float32."""
    return to_float(pixels, "reciprocal")  # derain.io.pixels


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """``H×W`` → ``H×W×3``, a read-only view (no copy)."""
    return np.broadcast_to(grey[:, :, None], (*grey.shape, 3))


def _pixels(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool, int]:
    """A Pillow image → (pixels: uint8, uint16 or float32 in [0, 1]; alpha, grey, bits)."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.clip(np.asarray(img), 0, 65535)
        return _grey_to_rgb(grey.astype(np.uint16)), None, True, 16
    if mode == "F":
        grey = np.asarray(img, dtype=np.float32)
        finite = grey[np.isfinite(grey)]  # an inf or NaN pixel must not set the scale (or darken the image)
        top = float(finite.max()) if finite.size else 1.0
        scale = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        unit = np.clip(np.nan_to_num(grey / np.float32(scale), nan=0.0, posinf=1.0, neginf=0.0), 0, 1).astype(np.float32)
        return _grey_to_rgb(unit), None, True, 16 if scale == 65535.0 else 8
    if mode == "1":
        img, mode = img.convert("L"), "L"
    if mode == "La":
        img, mode = img.convert("LA"), "LA"
    if mode in ("L", "LA"):
        arr = np.asarray(img, dtype=np.uint8)
        if mode == "L":
            return _grey_to_rgb(arr), None, True, 8
        return _grey_to_rgb(arr[:, :, 0]), arr[:, :, 1].copy(), True, 8
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or img.has_transparency_data
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("RGBa", "RGBA"):
        img = img.convert("RGBA") if mode == "RGBa" else img
    elif mode != "RGB":
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
    arr = np.asarray(img, dtype=np.uint8)
    if img.mode == "RGBA":
        return arr[:, :, :3].copy(), arr[:, :, 3].copy(), False, 8
    return arr, None, False, 8


def _read16(open_image: Any, hi: Image.Image, rawmode: str) -> tuple[np.ndarray, np.ndarray | None, bool] | None:
    """Full 16-bit samples of a PNG/TIFF that Pillow decodes to 8 bits, via a second decode of the low bytes
    (:mod:`derain.io.sixteen`)."""
    if low_byte_rawmode(rawmode) is None:
        return None
    with open_image() as lo_img:
        lo_img.tile = low_byte_tiles(lo_img.tile, rawmode)
        lo_img.load()
        lo = np.asarray(_transpose(lo_img), dtype=np.uint8)
    if rawmode == "LA;16B":  # bytes: L high, L low, A high, A low
        lo16 = lo.astype(np.uint16)
        grey = (lo16[:, :, 0] << 8) | lo16[:, :, 1]
        alpha = (lo16[:, :, 2] << 8) | lo16[:, :, 3]
        return _grey_to_rgb(grey), alpha, True
    high = np.asarray(hi, dtype=np.uint8)
    if high.shape != lo.shape:
        return None
    full = (high.astype(np.uint16) << 8) | lo
    alpha = full[:, :, 3].copy() if full.shape[2] == 4 else None
    return full[:, :, :3].copy(), alpha, False


def photo_from_pil(img: Image.Image, name: str = "<image>", *, exif_transpose: bool = False) -> Photo:
    """A :class:`Photo` from an in-memory Pillow image (mode rules as :func:`load_photo`).

    >>> p = photo_from_pil(Image.new("LA", (3, 2), (100, 50)))
    >>> p.rgb.shape, p.grey, int(p.alpha[0, 0]), p.mode
    ((2, 3, 3), True, 50, 'LA')
    """
    icc, exif, dpi = _metadata(img)
    source_mode, fmt = img.mode, img.format
    if exif_transpose:
        img = _transpose(img)
    rgb, alpha, grey, bits = _pixels(img)
    return Photo(rgb, alpha, grey, bits, fmt, icc, exif, dpi, name, source_mode)


def _rawmode_of(img: Image.Image) -> str | None:
    return rawmode_of_tile(img.tile[0]) if getattr(img, "tile", None) else None


def load_photo(
    source: str | os.PathLike[str] | bytes | IO[bytes],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Photo:
    """Decode a photo file (path, bytes or binary file object) into a :class:`Photo`.

    Raises :class:`ImageReadError` (with ``.path`` and ``.reason``) naming the file for a missing,
    empty, corrupt, truncated, non-image, animated or too large (``> max_pixels``; None: no limit)
    file.

    >>> import io
    >>> buf = io.BytesIO(); Image.new("RGBA", (4, 3), (255, 0, 0, 128)).save(buf, "PNG")
    >>> p = load_photo(buf.getvalue())
    >>> p.size, p.mode, p.format, float(p.rgb[0, 0, 0]), int(p.alpha[0, 0])
    ((4, 3), 'RGBA', 'PNG', 1.0, 128)
    """
    make_source: Any
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
        if not data:
            raise _fail(label, "empty file (0 bytes)", "empty")

        def make_source() -> Any:
            return io.BytesIO(data)

    elif hasattr(source, "read"):
        return load_photo(source.read(), max_pixels, name or str(getattr(source, "name", "<stream>")))  # type: ignore[union-attr]
    else:
        file = Path(source)
        label = name or str(source)
        if not file.exists():
            raise _fail(label, "no such file", "missing")
        if not file.is_file():
            raise _fail(label, "not a file", "missing")
        try:
            if file.stat().st_size == 0:
                raise _fail(label, "empty file (0 bytes)", "empty")
        except OSError as err:
            raise _fail(label, f"cannot access ({err.strerror or err})", "unreadable") from None

        def make_source() -> Any:
            return str(file)

    def open_image() -> Image.Image:
        return _open(make_source, label, max_pixels)

    with warnings.catch_warnings():
        # Pillow's notes about odd files (corrupt EXIF, malformed MPO, ...) are not the caller's business.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        return _decode(open_image, label)


def _decode(open_image: Any, label: str) -> Photo:
    img = open_image()
    try:
        fmt = "JPEG" if img.format == "MPO" else img.format
        rawmode = _rawmode_of(img)
        try:
            img.load()
            icc, exif, dpi = _metadata(img)
            source_mode = img.mode
            shown = _transpose(img)
            full = _read16(open_image, shown, rawmode) if rawmode and ";16" in rawmode else None
            if full is not None:
                rgb, alpha, grey = full
                bits = 16
            else:
                rgb, alpha, grey, bits = _pixels(shown)
        except ImageReadError:
            raise
        except MemoryError:
            raise _fail(label, "not enough memory to decode it", "too_large") from None
        except Exception as err:  # noqa: BLE001 - truncated / corrupt pixel data, whatever the codec raises
            raise _fail(label, f"corrupt or truncated image data ({type(err).__name__}: {err})") from None
    finally:
        img.close()
    return Photo(rgb, alpha, grey, bits, fmt, icc, exif, dpi, label, source_mode)


# ----------------------------------------------------------------------------- writing

_SAVE_MODES: dict[str, frozenset[str]] = {
    "JPEG": frozenset({"L", "RGB"}),
    "PNG": frozenset({"L", "LA", "RGB", "RGBA", "I;16", "LA;16", "RGB;16", "RGBA;16"}),
    "TIFF": frozenset({"L", "LA", "RGB", "RGBA", "I;16", "RGB;16", "RGBA;16"}),  # Pillow cannot read LA;16 TIFF
    "WEBP": frozenset({"RGB", "RGBA"}),
    "BMP": frozenset({"L", "RGB", "RGBA"}),
    "GIF": frozenset({"L", "RGB", "RGBA"}),
}
_FALLBACKS: dict[str, tuple[str, ...]] = {
    "RGBA;16": ("RGBA", "RGB"),
    "RGB;16": ("RGB",),
    "LA;16": ("LA", "RGBA", "L", "RGB"),
    "I;16": ("L", "RGB"),
    "LA": ("RGBA", "L", "RGB"),
    "RGBA": ("RGB",),
    "L": ("RGB",),
    "RGB": (),
}
_EXIF_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})
_ICC_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})
_DPI_FORMATS = frozenset({"JPEG", "PNG", "TIFF", "BMP"})


def resolve_format(path: str | os.PathLike[str] | None, format: str | None = None, fallback: str | None = None) -> str:
    """Pillow format to write: ``format`` (``jpg``/``png``/...), else by ``path``'s extension, else ``fallback`` if Pillow can write it, else PNG.

    >>> resolve_format("a.jpg"), resolve_format(None, "tiff"), resolve_format("x.unknown", fallback="MPO")
    ('JPEG', 'TIFF', 'JPEG')
    """
    Image.init()
    if format:
        name = format.upper()
        name = {"JPG": "JPEG", "TIF": "TIFF"}.get(name, name)
        if name not in Image.SAVE:
            raise ValueError(f"cannot write format {format!r}")
        return name
    if path is not None:
        by_ext = Image.registered_extensions().get(Path(path).suffix.lower())
        if by_ext == "MPO":
            by_ext = "JPEG"
        if by_ext and by_ext in Image.SAVE:
            return by_ext
    if fallback == "MPO":
        fallback = "JPEG"
    if fallback and fallback in Image.SAVE:
        return fallback
    return "PNG"


def quantize_pixels(x: np.ndarray, bits: int) -> np.ndarray:
    """Float in [0, 1] → uint8/uint16 (``bits`` 8 or 16), rounded half up, NaN as 0; uint8/uint16 pixels as
    they are, or rescaled to the other depth. In row blocks: no full-size temporary.

    >>> quantize_pixels(np.array([[0.0, 0.5, 1.0, np.nan]], np.float32), 8), quantize_pixels(np.array([[255, 65535]], np.uint16), 8)
    (array([[  0, 128, 255,   0]], dtype=uint8), array([[  1, 255]], dtype=uint8))
    """
    dtype = np.dtype(np.uint16 if bits == 16 else np.uint8)
    if x.dtype == dtype:
        return x
    out = np.empty(x.shape, dtype)
    for r0 in range(0, x.shape[0], 256):
        src = x[r0 : r0 + 256]
        if src.dtype in PIXEL_TOP:  # the other integer depth
            out[r0 : r0 + 256] = src.astype(np.uint16) * np.uint16(257) if bits == 16 else (src.astype(np.uint32) + 128) // 257
            continue
        out[r0 : r0 + 256] = to_pixels(src, bits, "half-up")  # derain.io.pixels
    return out


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    """The mean of the three channels, float32 in [0, 1] (one channel repeated as a view: that channel)."""
    rgb = np.asarray(rgb)
    if rgb.strides[2] == 0:
        return unit_float(rgb[:, :, 0])
    grey = rgb.mean(axis=2, dtype=np.float32)
    top = PIXEL_TOP.get(rgb.dtype)
    return grey if top is None else grey * np.float32(1.0 / top)


def _output_mode(photo: Photo, fmt: str) -> str:
    allowed = _SAVE_MODES.get(fmt, frozenset({"RGB"}))
    mode = photo.mode
    for candidate in (mode, *_FALLBACKS[mode]):
        if candidate in allowed:
            return candidate
    return "RGB"


def _channels(photo: Photo, derained: np.ndarray, mode: str) -> np.ndarray:
    """Derained RGB (float in [0, 1], uint8 or uint16) → the integer array of ``mode`` (alpha re-attached)."""
    bits = 16 if mode.endswith(";16") else 8
    grey = mode.startswith(("L", "I"))
    colour = quantize_pixels(_to_grey(derained) if grey else derained, bits)
    if not mode.replace(";16", "").endswith("A"):
        return colour
    alpha = photo.alpha
    if alpha is None:
        alpha = np.full(colour.shape[:2], 65535 if bits == 16 else 255)
    elif photo.bits != bits:  # 16-bit alpha into 8 bits or back
        alpha = (alpha.astype(np.uint32) + 128) // 257 if bits == 8 else alpha.astype(np.uint32) * 257
    alpha = alpha.astype(colour.dtype)
    if grey:
        return np.stack([colour, alpha], axis=2)
    return np.concatenate([colour, alpha[:, :, None]], axis=2)


def _icc_fits(icc: bytes | None, mode: str) -> bool:
    if not icc or len(icc) < 20:
        return False
    space = icc[16:20]
    return space == (b"GRAY" if mode.startswith(("L", "I")) else b"RGB ")


def _pil(arr: np.ndarray, mode: str) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(arr))  # uint8 H×W(×2/3/4) → L/LA/RGB/RGBA; uint16 H×W → I;16
    if img.mode != mode:
        raise ValueError(f"internal error: built a {img.mode} image for mode {mode}")
    return img


def _write(photo: Photo, derained: np.ndarray, fp: IO[bytes], fmt: str, quality: int) -> None:
    derained = np.asarray(derained)
    if derained.ndim != 3 or derained.shape[2] != 3 or derained.shape[:2] != photo.pixels.shape[:2]:
        raise ValueError(f"derained image has shape {derained.shape}, expected {photo.pixels.shape}")
    mode = _output_mode(photo, fmt)
    arr = _channels(photo, derained, mode)
    icc = photo.icc_profile if fmt in _ICC_FORMATS and _icc_fits(photo.icc_profile, mode) else None
    exif = photo.exif if fmt in _EXIF_FORMATS else None
    dpi = photo.dpi if fmt in _DPI_FORMATS else None
    if mode in ("LA;16", "RGB;16", "RGBA;16"):
        if fmt == "PNG":
            write_png16(fp, arr, icc, exif, dpi)
        else:
            write_tiff16(fp, arr, icc, dpi)
        return
    pil = _pil(arr, mode)
    options: dict[str, Any] = {}
    if icc:
        options["icc_profile"] = icc
    if exif:
        options["exif"] = exif
    if dpi:
        options["dpi"] = dpi
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = int(quality)
    pil.save(fp, format=fmt, **options)


def encode_photo(photo: Photo, derained: np.ndarray, format: str | None = None, quality: int = 95) -> bytes:
    """The derained image written like ``photo`` (format: ``format``, else the source's, else PNG), as bytes."""
    fmt = resolve_format(None, format, photo.format)
    buf = io.BytesIO()
    _write(photo, derained, buf, fmt, quality)
    return buf.getvalue()


def save_photo(
    photo: Photo,
    derained: np.ndarray,
    path: str | os.PathLike[str],
    format: str | None = None,
    quality: int = 95,
) -> Path:
    """Write ``derained`` (``H×W×3`` float in [0, 1], uint8 or uint16) to ``path`` like ``photo``: same grey/alpha/bit depth, metadata.

    The format is ``format`` (``png``, ``jpg``, ``webp``, ``tiff``, ...), else the one ``path``'s
    extension names, else the source's, else PNG. The file appears atomically (temporary file in
    the same folder, then ``os.replace``); on error nothing is left behind. Returns ``path``.
    """
    path = Path(path)
    fmt = resolve_format(path, format, photo.format)
    buf = io.BytesIO()  # encoded in memory: Pillow's encoders ignore a short write to a file, leaving it cut
    _write(photo, derained, buf, fmt, quality)
    return write_atomic(path, buf.getbuffer())


def save_image(image: Image.Image, path: str | os.PathLike[str], format: str = "PNG", **options: Any) -> Path:
    """Write a Pillow image to ``path`` atomically (:func:`~derain.io.atomic.write_atomic`): encoded in memory
    first, because Pillow's encoders writing to a file ignore a short write (a disk filling up) and leave a
    cut file that looks written. Pictures derain makes (contact sheets, samples, predictions) go through here."""
    buf = io.BytesIO()
    image.save(buf, format=format, **options)
    return write_atomic(path, buf.getbuffer())


def photo_to_pil(photo: Photo, derained: np.ndarray) -> Image.Image:
    """The derained image as a Pillow image in the photo's mode (``L``/``LA``/``RGB``/``RGBA``/``I;16``; 16-bit colour becomes 8-bit)."""
    mode = photo.mode
    mode = {"LA;16": "LA", "RGB;16": "RGB", "RGBA;16": "RGBA"}.get(mode, mode)
    arr = _channels(photo, derained, mode)
    img = _pil(arr, mode)
    if photo.icc_profile and _icc_fits(photo.icc_profile, mode):
        img.info["icc_profile"] = photo.icc_profile
    return img


def side_by_side(photo: Photo, derained: np.ndarray) -> tuple[Photo, np.ndarray]:
    """(photo, derained) widened to ``input | derained`` (alpha repeated), for writing a comparison."""
    alpha = None if photo.alpha is None else np.concatenate([photo.alpha, photo.alpha], axis=1)
    left, right = photo.pixels, np.asarray(derained)
    if left.dtype != right.dtype:
        left, right = unit_float(left), unit_float(right)
    return replace(photo, pixels=np.concatenate([left, left], axis=1), alpha=alpha), np.concatenate([left, right], axis=1)
