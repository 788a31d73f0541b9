"""Photo I/O (load_photo / save_photo), tiled inference and the ``derain.derain`` API.

The corpus builders here (``make_*``) are also used by ``test_cli_run.py``.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from PIL import Image, ImageCms, ImageOps

import derain
from derain.inference.derainer import Derainer
from derain.inference.precision import autocast
from derain.inference.tiling import derain_array, derain_tiled, resolve_tile, tile_spans, tile_starts
from derain.io.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    encode_photo,
    load_photo,
    photo_from_pil,
    read_image,
    resolve_format,
    save_photo,
)

torch.set_num_threads(1)

# ----------------------------------------------------------------------------- corpus builders


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16_bytes(arr: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot), rows cycling through the None/Sub/Up filters."""
    a = arr if arr.ndim == 3 else arr[:, :, None]
    h, w, c = a.shape
    rows = np.ascontiguousarray(a, dtype=">u2").reshape(h, w * c).view(np.uint8).astype(np.int16)
    bpp = 2 * c
    raw = bytearray()
    for y in range(h):
        f = y % 3
        r = rows[y]
        if f == 1:
            r = r - np.concatenate([np.zeros(bpp, np.int16), r[:-bpp]])
        elif f == 2:
            r = r - rows[y - 1]
        raw += bytes([f]) + (r % 256).astype(np.uint8).tobytes()
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(bytes(raw)))
        + _png_chunk(b"IEND", b"")
    )


def bomb_png_bytes(width: int = 30000, height: int = 30000) -> bytes:
    """A valid tiny PNG whose IHDR (with a correct CRC) claims ``width × height`` pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def image_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gradient(width: int, height: int) -> np.ndarray:
    """A smooth RGB test picture, ``H×W×3`` uint8."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=2).astype(np.uint8)


def rotated_jpeg_bytes() -> bytes:
    """40×20 stored, EXIF orientation 6 (displayed 20×40), a red block at the stored top-left; Make=TestCam."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 6))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"
    return image_bytes(img, "JPEG", exif=exif, quality=95)


def animated_gif_bytes() -> bytes:
    frames = [Image.new("RGB", (8, 8), (80 * i, 255 - 80 * i, 40)) for i in range(3)]
    return image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def good_corpus(folder: Path) -> dict[str, Path]:
    """Unusual but valid photos: RGBA, grey, palette, 16-bit RGB, 16-bit grey, CMYK, EXIF-rotated, 1×1, 1×20000."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        "rgba": ("rgba.png", image_bytes(Image.fromarray(np.dstack([gradient(24, 16), np.full((16, 24), 77, np.uint8)])), "PNG")),
        "grey": ("grey.png", image_bytes(Image.fromarray(gradient(24, 16)[:, :, 0]), "PNG")),
        "palette": ("palette.png", image_bytes(Image.fromarray(gradient(24, 16)).convert("P"), "PNG")),
        "rgb16": ("rgb16.png", png16_bytes(rng.integers(0, 65536, (16, 24, 3)).astype(np.uint16))),
        "grey16": ("grey16.png", image_bytes(Image.fromarray(rng.integers(0, 65536, (16, 24)).astype(np.uint16)), "PNG")),
        "cmyk": ("cmyk.jpg", image_bytes(Image.new("CMYK", (24, 16), (0, 128, 255, 20)), "JPEG")),
        "rotated": ("rotated.jpg", rotated_jpeg_bytes()),
        "one": ("one.png", image_bytes(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")),
        "thin": ("thin.png", image_bytes(Image.new("RGB", (1, 20000), (90, 90, 90)), "PNG")),
    }
    out = {}
    for key, (name, data) in files.items():
        (folder / name).write_bytes(data)
        out[key] = folder / name
    return out


def bad_corpus(folder: Path) -> dict[str, Path]:
    """Files that must fail with one clear error each."""
    folder.mkdir(parents=True, exist_ok=True)
    png = image_bytes(Image.fromarray(gradient(64, 48)), "PNG")
    jpg = image_bytes(Image.fromarray(gradient(64, 48)), "JPEG")
    files = {
        "truncated_png": ("truncated.png", png[: len(png) // 2]),
        "truncated_jpg": ("truncated.jpg", jpg[: len(jpg) // 2]),
        "zero": ("zero.png", b""),
        "text": ("text.jpg", b"this is not an image\n" * 5),
        "animated": ("animated.gif", animated_gif_bytes()),
        "bomb": ("bomb.png", bomb_png_bytes()),
    }
    out = {}
    for key, (name, data) in files.items():
        (folder / name).write_bytes(data)
        out[key] = folder / name
    return out


@pytest.fixture(autouse=True)
def _no_warnings():
    """Pillow's decompression-bomb and other warnings must not leak."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------- load_photo


def test_read_image_still_works(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(gradient(8, 6)).save(path)
    assert read_image(path).shape == (6, 8, 3)


def test_modes_and_round_trips(tmp_path):
    files = good_corpus(tmp_path)
    expected = {
        "rgba": ("RGBA", "PNG"), "grey": ("L", "PNG"), "palette": ("RGB", "PNG"), "rgb16": ("RGB;16", "PNG"),
        "grey16": ("I;16", "PNG"), "cmyk": ("RGB", "JPEG"), "rotated": ("RGB", "JPEG"), "one": ("RGB", "PNG"),
        "thin": ("RGB", "PNG"),
    }
    for key, path in files.items():
        photo = load_photo(path)
        assert (photo.mode, photo.format) == expected[key], key
        assert photo.rgb.dtype == np.float32 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
        assert 0.0 <= photo.rgb.min() and photo.rgb.max() <= 1.0
        out = tmp_path / "out" / path.name
        out.parent.mkdir(exist_ok=True)
        save_photo(photo, photo.rgb, out)
        back = load_photo(out)
        assert back.mode == photo.mode and back.size == photo.size, key
        if photo.format == "PNG":  # lossless: writing the input back gives the input
            np.testing.assert_array_equal(back.rgb, photo.rgb, err_msg=key)
    assert load_photo(files["thin"]).size == (1, 20000)
    assert load_photo(files["one"]).size == (1, 1)


def test_alpha_is_kept_exactly(tmp_path):
    alpha = np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)
    path = tmp_path / "a.png"
    Image.fromarray(np.dstack([gradient(24, 16), alpha])).save(path)
    photo = load_photo(path)
    save_photo(photo, 1.0 - photo.rgb, tmp_path / "b.png")
    out = np.asarray(Image.open(tmp_path / "b.png"))
    np.testing.assert_array_equal(out[:, :, 3], alpha)
    np.testing.assert_array_equal(out[:, :, :3], 255 - gradient(24, 16))
    la = tmp_path / "la.png"
    Image.fromarray(np.dstack([gradient(24, 16)[:, :, 0], alpha])).save(la)
    photo = load_photo(la)
    assert photo.mode == "LA" and photo.grey
    save_photo(photo, photo.rgb, tmp_path / "la_out.png")
    with Image.open(tmp_path / "la_out.png") as img:
        assert img.mode == "LA"
        np.testing.assert_array_equal(np.asarray(img)[:, :, 1], alpha)


def test_grey_is_written_grey_and_palette_transparency_kept(tmp_path):
    photo = load_photo(image_bytes(Image.new("L", (5, 4), 200), "JPEG"))
    assert photo.grey and photo.mode == "L"
    assert Image.open(io.BytesIO(encode_photo(photo, photo.rgb))).mode == "L"
    pal = Image.new("P", (6, 6), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    pal.putpixel((0, 0), 0)
    photo = load_photo(image_bytes(pal, "PNG"))
    assert photo.mode == "RGBA" and photo.alpha[0, 0] == 0 and photo.alpha[1, 1] == 255
    assert tuple(np.rint(photo.rgb[1, 1] * 255)) == (255, 0, 0)


def test_sixteen_bit_precision(tmp_path):
    rng = np.random.default_rng(1)
    for channels in (1, 2, 3, 4):
        arr = rng.integers(0, 65536, (9, 11, channels)).astype(np.uint16).squeeze()
        photo = load_photo(png16_bytes(arr), name=f"c{channels}.png")
        assert photo.bits == 16
        colour = arr if arr.ndim == 2 else arr[:, :, :3] if channels >= 3 else arr[:, :, 0]
        got = np.rint(photo.rgb * 65535).astype(np.uint16)
        np.testing.assert_array_equal(got[:, :, 0] if colour.ndim == 2 else got, colour)
        if channels in (2, 4):
            np.testing.assert_array_equal(photo.alpha, arr[:, :, -1])
        for fmt in ("png", "tiff"):  # written back at 16 bits, exactly (LA;16 TIFF falls back to 8 bits)
            back = load_photo(encode_photo(photo, photo.rgb, fmt))
            if not (fmt == "tiff" and channels == 2):
                assert back.bits == 16 and back.mode == photo.mode, (channels, fmt)
                np.testing.assert_array_equal(back.rgb, photo.rgb)
        assert load_photo(encode_photo(photo, photo.rgb, "jpg")).bits == 8


def test_sixteen_bit_tiff_input():
    tifffile = pytest.importorskip("tifffile")
    arr = np.random.default_rng(2).integers(0, 65536, (12, 10, 3)).astype(np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="rgb", compression="zlib", rowsperstrip=5)
    photo = load_photo(buf.getvalue())
    assert photo.mode == "RGB;16"
    np.testing.assert_array_equal(np.rint(photo.rgb * 65535).astype(np.uint16), arr)
    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(encode_photo(photo, photo.rgb, "tiff"))), arr)


def test_cmyk_becomes_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    photo = load_photo(image_bytes(cmyk, "JPEG"))
    assert photo.mode == "RGB" and photo.source_mode == "CMYK"
    r, g, b = np.rint(photo.rgb[4, 4] * 255)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_applied_and_reset(tmp_path):
    photo = load_photo(rotated_jpeg_bytes())
    assert photo.size == (20, 40)  # rotated 90° as displayed
    # Orientation 6 = rotate 90° clockwise to display: the stored top-left goes to the top-right.
    assert photo.rgb[2, 17, 0] > 0.8 and photo.rgb[2, 17, 2] < 0.2
    assert photo.rgb[2, 2, 2] > 0.8
    out = tmp_path / "r.jpg"
    save_photo(photo, photo.rgb, out)
    with Image.open(out) as img:
        assert img.size == (20, 40)
        exif = img.getexif()
        assert exif.get(0x0112) == 1 and exif.get(0x010F) == "TestCam"


def test_icc_and_dpi_carried(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = image_bytes(Image.fromarray(gradient(8, 8)), "PNG", icc_profile=icc, dpi=(300, 300))
    photo = load_photo(data)
    for fmt in ("png", "jpg", "tiff", "webp"):
        with Image.open(io.BytesIO(encode_photo(photo, photo.rgb, fmt))) as img:
            assert img.info.get("icc_profile") == icc, fmt
            if fmt != "webp":
                assert round(img.info["dpi"][0]) == 300, fmt
    # An RGB profile does not belong on a grey output.
    grey = load_photo(image_bytes(Image.new("L", (4, 4), 9), "PNG", icc_profile=icc))
    with Image.open(io.BytesIO(encode_photo(grey, grey.rgb))) as img:
        assert img.mode == "L" and "icc_profile" not in img.info


@pytest.mark.parametrize(
    "key, reason",
    [
        ("truncated_png", "corrupt or truncated"),
        ("truncated_jpg", "corrupt or truncated"),
        ("zero", "empty file"),
        ("text", "not an image"),
        ("animated", "animated GIF with 3 frames"),
        ("bomb", "too large"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path, key, reason):
    path = bad_corpus(tmp_path)[key]
    with pytest.raises(ImageReadError) as info:
        load_photo(path)
    assert reason in str(info.value) and str(path) in str(info.value)
    assert info.value.path == str(path) and reason in info.value.reason


def test_pixel_limit(tmp_path):
    data = image_bytes(Image.new("RGB", (20, 10)), "PNG")
    assert load_photo(data, max_pixels=200).size == (20, 10)
    with pytest.raises(ImageReadError, match="200 pixels exceeds the limit of 199"):
        load_photo(data, max_pixels=199)
    assert DEFAULT_MAX_PIXELS == 100_000_000
    # Between Pillow's warning threshold (~89 MP) and ours: no warning leaks, the header is accepted,
    # and the (missing) pixel data is then reported as truncated.
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        load_photo(bomb_png_bytes(9500, 10000))
    with pytest.raises(ImageReadError, match="too large"):
        load_photo(bomb_png_bytes(30000, 30000))
    with pytest.raises(ImageReadError, match="no such file"):
        load_photo(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="not a file"):
        load_photo(tmp_path)


def test_save_is_atomic(tmp_path):
    photo = load_photo(image_bytes(Image.fromarray(gradient(8, 6)), "PNG"))
    out = tmp_path / "out.png"
    with pytest.raises(ValueError):
        save_photo(photo, np.zeros((3, 3, 3), np.float32), out)  # wrong size: nothing written
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous")
    with pytest.raises(ValueError):
        save_photo(photo, np.zeros((3, 3, 3), np.float32), out)
    assert out.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [out]
    save_photo(photo, photo.rgb, out)
    with Image.open(out) as img:
        assert img.size == (8, 6) and list(tmp_path.iterdir()) == [out]


def test_formats():
    assert resolve_format("x.JPG") == "JPEG" and resolve_format("x.tif") == "TIFF"
    assert resolve_format("noext", fallback="WEBP") == "WEBP" and resolve_format(None) == "PNG"
    photo = load_photo(image_bytes(Image.fromarray(np.dstack([gradient(8, 8), np.full((8, 8), 5, np.uint8)])), "PNG"))
    with Image.open(io.BytesIO(encode_photo(photo, photo.rgb, "jpg"))) as img:
        assert img.format == "JPEG" and img.mode == "RGB"  # JPEG has no alpha
    with Image.open(io.BytesIO(encode_photo(photo, photo.rgb, "webp"))) as img:
        assert img.format == "WEBP" and img.mode == "RGBA"


def test_photo_from_pil():
    photo = photo_from_pil(Image.new("I;16", (3, 2), 1000))
    assert photo.mode == "I;16" and abs(photo.rgb[0, 0, 0] * 65535 - 1000) < 0.01


# ----------------------------------------------------------------------------- tiling


def test_tile_grid():
    for length in (1, 100, 512, 513, 1000, 4000, 6000):
        starts = tile_starts(length, 512, 32)
        size = min(512, length)
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= 512 - 32 for a, b in zip(starts, starts[1:]))  # overlap >= 32
    assert resolve_tile(None, 1024, 1024) is None and resolve_tile(None, 1025, 1024) == 512
    assert resolve_tile(0, 9999, 9999) is None and resolve_tile(100, 50, 80) is None and resolve_tile(100, 50, 180) == 100


def test_aligned_tiles_start_on_the_models_grid_and_agree_with_one_pass():
    """``align``: every tile starts at a multiple of it (the last one shorter by less than it; ``congruent``: every
    tile as long as the image modulo it), overlaps hold, the image is covered; a network that halves its input
    (here: 2×2 average pooling and back) gives tiled output equal to one pass only with tiles on its grid.
    Derainers align to their model's padding multiple."""
    for length in range(600, 3000, 37):
        spans = tile_spans(length, 512, 32, align=32)
        assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
        assert all(s % 32 == 0 for s, _ in spans) and all(n == 512 for _, n in spans[:-1]) and 480 < spans[-1][1] <= 512
        assert all(a + n - b >= 32 for (a, n), (b, _) in zip(spans, spans[1:]))
        spans = tile_spans(length, 512, 32, align=32, congruent=True)
        assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
        assert all(s % 32 == 0 and (n - length) % 32 == 0 and 480 < n <= 512 for s, n in spans)
        assert all(a + n - b >= 32 for (a, n), (b, _) in zip(spans, spans[1:]))

    def pooled(t: torch.Tensor) -> torch.Tensor:  # each 2×2 block's mean: exact only on the 2-pixel grid
        return torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(t, 2), scale_factor=2.0)

    x = torch.rand(1, 3, 70, 150)
    one = pooled(x)
    assert torch.allclose(derain_tiled(pooled, x, tile=40, overlap=8, align=2), one, atol=1e-6)
    assert not torch.allclose(derain_tiled(pooled, x, tile=40, overlap=8), one, atol=1e-3)
    runner = derain.load_derainer(derain.create_model("efderain-tiny"), precision="fp32")
    assert runner.tile_align == derain.create_model("efderain-tiny").config.multiple > 1
    img = (np.random.default_rng(3).random((70, 150, 3)) * 255).astype(np.uint8)  # the array path: the same tiles
    tiled = derain_tiled(pooled, torch.from_numpy(img).permute(2, 0, 1).float() / 255, tile=40, overlap=8, align=2)
    array = derain_array(pooled, img, tile=40, overlap=8, align=2)
    assert np.abs(array.astype(float) - tiled.permute(1, 2, 0).numpy() * 255).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("centre", [False, True])
def test_aligned_tiles_sit_on_the_canvas_as_the_whole_image_does(centre: bool):
    """A tile of :func:`tile_spans` as a derainer plans it (start on the grid; for a network that centres its input on
    its canvas, size equal to the image's modulo the multiple) gives the whole image's pixels where it holds their
    context; the other size works for a network that puts its input at the canvas's top-left, not for a centring one."""
    torch.manual_seed(0)
    model = derain.create_model("efderain-tiny", centre_canvas=centre).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.rand(1, 3, 1100, 24)
        one, context = model(x), 176
        runner = derain.load_derainer(model, precision="fp32")
        assert (runner.tile_align, runner.tile_congruent) == (model.config.multiple, centre)
        start, size = tile_spans(1100, 480, 300, align=runner.tile_align, congruent=runner.tile_congruent)[1]
        assert size == (476 if centre else 480)
        for n, close in ((size, True), (476 if not centre else 480, not centre)):
            tile = model(x[..., start : start + n, :])[..., context : n - context, :]
            gap = (tile - one[..., start + context : start + n - context, :]).abs().max().item()
            assert (gap <= 1e-4) if close else (gap > 1e-3), (n, gap)


def test_tiled_exact_for_pointwise_functions():
    x = torch.rand(2, 3, 77, 131)
    calls = []

    def fn(t):
        calls.append(tuple(t.shape))
        return t * 0.5 + 0.1

    for tile, overlap in ((32, 8), (40, 0), (64, 31), (200, 32)):
        calls.clear()
        out = derain_tiled(fn, x, tile, overlap)
        torch.testing.assert_close(out, x * 0.5 + 0.1, rtol=0, atol=1e-6)
        assert all(h <= tile and w <= tile for _, _, h, w in calls)
    assert derain_tiled(fn, x[0], 32, 8).shape == (3, 77, 131)
    with pytest.raises(ValueError, match="overlap"):
        derain_tiled(fn, x, 32, 16)


def _contextual_model() -> Derainer:
    """efderain-tiny starting as the identity, with PyTorch's default conv init so kernels depend on context."""
    torch.manual_seed(0)
    model = derain.create_model("efderain-tiny", identity_init=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m is not model.outc and m is not model.conv_final:
                m.reset_parameters()
        model.outc.weight.mul_(100)
    return Derainer(model, precision="fp32")


def test_tiled_matches_untiled_model():
    d = _contextual_model()
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(1, 3, 25, 38, generator=g), size=(200, 300), mode="bilinear")
    x = (x + 0.05 * torch.rand(1, 3, 200, 300, generator=g)).clamp(0, 1)
    full = d.run_tensor(x)
    assert (full - x).abs().mean() > 0.02  # the model really changes the image
    tiled = d.run_tiled(x, tile=128, overlap=32)
    diff = (tiled - full).abs()[..., 16:-16, 16:-16]
    assert diff.mean() < 2e-3 and diff.max() < 2e-2, (diff.mean().item(), diff.max().item())
    # Cross-fading beats hard seams with small tiles.
    seams = (derain_tiled(d.run_tensor, x, 64, 0) - full).abs()[..., 16:-16, 16:-16].max()
    blended = (derain_tiled(d.run_tensor, x, 64, 16) - full).abs()[..., 16:-16, 16:-16].max()
    assert blended < seams


class TestDerainArray:
    """derain_array: tiles from an H×W×3 array of any pixel type, output band by band in the input's dtype."""

    @staticmethod
    def image(dtype, shape=(150, 230, 3)):
        g = np.random.default_rng(0)
        if dtype == np.float32:
            return g.random(shape, dtype=np.float32)
        top = np.iinfo(dtype).max
        return g.integers(0, top + 1, shape).astype(dtype)

    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
    @pytest.mark.parametrize("tile", [None, 64, 100])
    def test_equals_the_tensor_path_then_rounding(self, dtype, tile):
        d = _contextual_model()
        img = self.image(dtype)
        top = {np.uint8: 255, np.uint16: 65535}.get(dtype)
        x = torch.from_numpy(img.astype(np.float32) * np.float32(1 / top if top else 1)).permute(2, 0, 1)
        ref = (d.run_tensor(x[None])[0] if tile is None else derain_tiled(d.run_tensor, x, tile, 16)).permute(1, 2, 0).numpy()
        out = derain_array(d.run_tensor, img, tile, 16)
        assert out.dtype == np.dtype(dtype) and out.shape == img.shape
        if top is None:
            np.testing.assert_array_equal(out, ref)
        else:
            np.testing.assert_array_equal(out, np.floor(np.clip(ref, 0, 1) * np.float32(top) + np.float32(0.5)).astype(dtype))

    def test_the_model_sees_tiles_and_read_only_input_is_fine(self):
        seen = []

        def fn(t):
            seen.append(tuple(t.shape))
            return 1 - t

        img = self.image(np.uint8, (300, 200, 3))
        img.flags.writeable = False  # as Pillow's arrays
        out = derain_array(fn, img, 64, 8)
        np.testing.assert_array_equal(out, 255 - img)
        assert max(h for _, _, h, _ in seen) == 64 and len(seen) == 6 * 4

    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
    def test_grey_is_the_channel_mean_rounded_once(self, dtype):
        d = _contextual_model()
        grey = self.image(dtype, (150, 230, 1))
        img = np.broadcast_to(grey, (150, 230, 3))  # read-only, as a grey photo's pixels
        top = np.iinfo(dtype).max
        x = torch.from_numpy(img.astype(np.float32) * np.float32(1 / top)).permute(2, 0, 1)
        ref = derain_tiled(d.run_tensor, x, 64, 16).permute(1, 2, 0).numpy().mean(axis=2, keepdims=True, dtype=np.float32)
        out = derain_array(d.run_tensor, img, 64, 16, grey=True)
        assert out.shape == (150, 230, 1) and out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, np.floor(ref * np.float32(top) + np.float32(0.5)).astype(dtype))

    def test_grey_photo_through_the_photo_path(self, tmp_path):
        d = _contextual_model()
        Image.fromarray(self.image(np.uint8, (40, 50, 3))[:, :, 0]).save(tmp_path / "g.png")
        photo = load_photo(tmp_path / "g.png")
        assert photo.grey and photo.pixels.strides[2] == 0  # three channels, one in memory
        out = d.derain_photo(photo)
        assert out.shape == (40, 50, 3) and (out == out[:, :, :1]).all()
        with Image.open(io.BytesIO(encode_photo(photo, out))) as back:
            assert back.mode == "L" and np.array_equal(np.asarray(back), out[:, :, 0])

    def test_float64_comes_back_float32_and_bad_input_is_refused(self):
        out = derain_array(lambda t: t, self.image(np.float32).astype(np.float64), 64, 8)
        assert out.dtype == np.float32
        with pytest.raises(TypeError, match="uint8, uint16 or float"):
            derain_array(lambda t: t, np.zeros((8, 8, 3), np.int32), 64, 8)
        with pytest.raises(ValueError, match="H×W×3"):
            derain_array(lambda t: t, np.zeros((8, 8), np.uint8), 64, 8)


# ----------------------------------------------------------------------------- derain.derain


@pytest.fixture(scope="module")
def identity_model():
    return derain.create_model("efderain-tiny", identity_init=True)


def test_api_pil_modes(identity_model):
    for mode, colour in (("RGB", (90, 120, 200)), ("RGBA", (90, 120, 200, 33)), ("L", 120), ("LA", (120, 40)), ("I;16", 30000), ("P", None)):
        img = Image.new(mode, (40, 30), colour) if colour is not None else Image.fromarray(gradient(40, 30)).convert("P")
        out = derain.derain(img, model=identity_model, precision="fp32")
        assert isinstance(out, Image.Image) and out.mode == mode and out.size == (40, 30), mode
        if mode in ("RGBA", "LA"):
            assert np.asarray(out)[..., -1].min() == np.asarray(img)[..., -1].min()


def test_api_numpy_dtypes_and_shapes(identity_model):
    rgb = gradient(48, 32)
    for arr in (rgb, rgb[:, :, 0], rgb[:, :, :1], np.dstack([rgb, np.full((32, 48), 7, np.uint8)]),
                rgb.astype(np.uint16) * 257, rgb.astype(np.float32) / 255, rgb.astype(np.float64) / 255):
        out = derain.derain(arr, model=identity_model, precision="fp32")
        assert out.dtype == arr.dtype and out.shape == arr.shape
        scale = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(arr.dtype, 1)
        assert np.abs(out.astype(np.float64) - arr).mean() / scale < 0.02  # identity-initialised
    np.testing.assert_array_equal(derain.derain(np.dstack([rgb, np.full((32, 48), 7, np.uint8)]), model=identity_model)[..., 3], 7)
    with pytest.raises(ValueError):
        derain.derain(np.zeros((4, 4, 2), np.uint8), model=identity_model)
    with pytest.raises(TypeError):
        derain.derain(np.zeros((4, 4, 3), np.int32), model=identity_model)


def test_api_tensor_and_tiling(identity_model):
    x = torch.rand(2, 3, 40, 56, dtype=torch.float64)
    out = derain.derain(x, model=identity_model, precision="fp32")
    assert out.shape == x.shape and out.dtype == torch.float64
    tiled = derain.derain(x[0], model=identity_model, precision="fp32", tile=32, tile_overlap=8)
    assert tiled.shape == (3, 40, 56)
    with pytest.raises(TypeError):
        derain.derain([[0.5]], model=identity_model)


def test_api_reads_image_files(tmp_path, identity_model):
    """A path (str or PathLike) is read by ``load_photo`` (EXIF applied) and gives what passing the image gives."""
    (tmp_path / "r.jpg").write_bytes(rotated_jpeg_bytes())
    Image.fromarray(gradient(40, 30)).convert("P").save(tmp_path / "p.png")
    for name in ("r.jpg", "p.png"):
        path = tmp_path / name
        with Image.open(path) as img:
            expected = derain.derain(ImageOps.exif_transpose(img), model=identity_model, precision="fp32")
        for given in (str(path), path):
            out = derain.derain(given, model=identity_model, precision="fp32")
            assert isinstance(out, Image.Image) and (out.mode, out.size) == (expected.mode, expected.size), (name, given)
            assert np.array_equal(np.asarray(out), np.asarray(expected)), (name, given)
    assert derain.derain(tmp_path / "r.jpg", model=identity_model).size == (20, 40)  # shown upright
    (tmp_path / "notes.jpg").write_text("not a photo")
    for bad, kind in (("missing.jpg", "missing"), ("notes.jpg", "not_image")):
        with pytest.raises(ImageReadError) as caught:
            derain.derain(tmp_path / bad, model=identity_model)
        assert caught.value.kind == kind and str(tmp_path / bad) in str(caught.value)


def test_multi_frame_files(tmp_path):
    first, second = Image.new("RGB", (16, 12), (250, 10, 10)), Image.new("RGB", (16, 12), (10, 10, 250))
    mpo = image_bytes(first, "MPO", save_all=True, append_images=[second])  # phone JPEG with a second picture
    photo = load_photo(mpo)
    assert photo.format == "JPEG" and photo.rgb[6, 8, 0] > 0.9  # the main (first) picture
    pages = [Image.new("RGB", (16, 12), (0, 0, 9 * i)) for i in range(2)]  # fresh: Pillow keeps JPEG encoder state on saved images
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(ImageReadError, match="multi-page TIFF with 2 frames"):
        load_photo(tmp_path / "pages.tif")


def test_float_image_with_inf_and_nan_keeps_its_scale(tmp_path):
    """A float TIFF with one inf (or NaN) is scaled by its finite range, not darkened by the inf."""
    values = np.full((8, 10), 120.0, np.float32)
    values[0, 0], values[0, 1], values[0, 2] = np.inf, np.nan, -np.inf
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    photo = load_photo(tmp_path / "f.tif")
    assert photo.rgb[5, 5, 0] == pytest.approx(120 / 255, abs=1e-6)  # the finite range is 0..255
    assert (photo.rgb[0, 0], photo.rgb[0, 1], photo.rgb[0, 2]) == (pytest.approx(1.0), pytest.approx(0.0), pytest.approx(0.0))


class TestDerainerInputs:
    def test_names_and_integer_images(self):
        d = Derainer("default", precision="fp32")
        img = gradient(48, 40)
        out8 = d(img)
        assert out8.dtype == np.uint8 and out8.shape == img.shape
        ref = d(img.astype(np.float32) / 255)
        assert np.abs(out8.astype(float) - ref * 255).max() <= 0.5 + 1e-3  # the same picture, not white
        out16 = d(img.astype(np.uint16) * 257)
        assert out16.dtype == np.uint16 and np.abs(out16 / 257.0 - ref * 255).max() < 0.6
        with pytest.raises(TypeError, match="uint8, uint16 or float"):
            d(img.astype(np.int32))
        with pytest.raises(TypeError, match="numpy array"):
            d([[1, 2, 3]])
        with pytest.raises(TypeError, match="registered name or an nn.Module"):
            Derainer(3)


class TestDerainerLeavesTheModuleAlone:
    """A module given to ``Derainer`` or ``derain.derain`` keeps its mode, dtype, layout and device."""

    @staticmethod
    def module() -> torch.nn.Module:
        torch.manual_seed(0)
        return derain.create_model("efderain-tiny", identity_init=True).train()

    @pytest.mark.precision
    @pytest.mark.parametrize("precision", ["fp32", "bf16"])
    def test_mode_and_layout_are_kept(self, precision):
        model = self.module()
        before = {k: (v.dtype, v.stride(), v.clone()) for k, v in model.state_dict().items()}
        img = gradient(40, 32).astype(np.float32) / 255
        out = Derainer(model, precision=precision)(img)
        assert model.training and all(m.training for m in model.modules())
        for k, v in model.state_dict().items():
            assert (v.dtype, v.stride()) == before[k][:2] and torch.equal(v, before[k][2]), k
        # it ran in eval mode all the same: the same result as from an eval-mode copy
        reference = Derainer(self.module().eval(), precision=precision)(img)
        np.testing.assert_allclose(out, reference, atol=1e-6)

    def test_a_submodule_in_its_own_mode_keeps_it(self):
        model = self.module().eval()
        model.conv1.train()
        Derainer(model, precision="fp32")(gradient(16, 16).astype(np.float32) / 255)
        assert not model.training and model.conv1.training

    def test_derain_api_does_not_flip_the_module(self):
        model = self.module()
        derain.derain(gradient(24, 16), model=model, precision="fp32")
        assert model.training

    def test_a_module_on_the_device_is_used_as_it_is(self):
        model = self.module()
        assert Derainer(model, device="cpu", precision="fp32").model is model  # no copy

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_a_cuda_module_run_on_the_cpu_is_copied(self):
        on_gpu = self.module().cuda()
        d = Derainer(on_gpu, device="cpu", precision="fp32")
        assert d.model is not on_gpu
        d(gradient(16, 16).astype(np.float32) / 255)
        assert next(on_gpu.parameters()).is_cuda and on_gpu.training

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_a_cpu_module_run_on_cuda_stays_on_the_cpu(self):
        model = self.module()
        d = Derainer(model, device="cuda", precision="fp32")
        d(gradient(16, 16).astype(np.float32) / 255)
        assert not next(model.parameters()).is_cuda and model.training

    def test_an_owned_module_is_prepared(self):
        model = self.module()
        d = Derainer(model, precision="bf16", owned=True)
        assert d.model is model and not model.training

    def test_a_named_model_is_prepared(self):
        d = Derainer("fast", precision="bf16")
        weight = next(p for p in d.model.parameters() if p.dim() == 4)
        assert not d.model.training and weight.is_contiguous(memory_format=torch.channels_last)

    # |stored bf16 - autocast| on this test's input, measured (max / mean): AMX 0 / 0 (Sapphire Rapids, v7);
    # AVX-512 without bf16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE) 0 / 0; AVX-512-BF16 (AMD EPYC) default (v11)
    # 9.0e-5 / 4.6e-8, fast 3.4e-3 / 3.3e-5; AVX2 default (v11) 3.5e-3 / 2.6e-5, fast 3.4e-3 / 5.7e-6. Both
    # paths round the same bf16 products, but oneDNN reorders pre-cast weights into another blocking, so a
    # few sums round one bf16 step apart (fast: 25 of 36,864 conv1 outputs) and carry on. Tolerances: 2x
    # the largest of these; truncating the weights to bf16 instead of rounding gives a mean of 5e-4 / 1e-3.
    PREPARED_BF16_TOLERANCE = {"default": (7.0e-3, 5.3e-5), "fast": (6.7e-3, 6.6e-5)}  # (max, mean)

    @pytest.mark.precision
    @pytest.mark.parametrize("name", ["default", "fast"])
    def test_prepared_weights_in_the_compute_dtype_give_the_same_result(self, name):
        """Under bf16 the KPN's and gates' weights are stored in bf16 once (autocast would cast them at every
        call), the fusion stays fp32; the result is that of the model with fp32 weights within the tolerance
        of bf16 sums rounded in another order (the same bits on AMX and where no bf16 instructions run)."""
        d = Derainer(name, precision="bf16")
        dtypes = {k: v.dtype for k, v in d.model.state_dict().items()}
        assert dtypes["conv1.conv1.0.weight"] == dtypes["outc.weight"] == dtypes["gate_global.weight"] == torch.bfloat16
        assert dtypes["conv_final.weight"] == torch.float32
        fp32_weights = derain.create_model(name, pretrained=True)  # the same model, weights as loaded
        assert {v.dtype for v in fp32_weights.state_dict().values()} == {torch.float32}
        reference = Derainer(fp32_weights, precision="bf16")  # not owned: run as it is, autocast casting per call
        x = torch.rand(2, 3, 70, 90, generator=torch.Generator().manual_seed(1))
        diff = (d.run_tensor(x) - reference.run_tensor(x)).abs()
        largest, mean = self.PREPARED_BF16_TOLERANCE[name]
        assert diff.max() <= largest and diff.mean() <= mean, (diff.max().item(), diff.mean().item())
        assert {v.dtype for v in fp32_weights.state_dict().values()} == {torch.float32}

    @pytest.mark.precision
    @pytest.mark.parametrize("name", ["default", "fast", "efderain-tiny"])
    def test_efderain_takes_its_input_in_the_plain_layout_with_the_same_bits(self, name):
        """Reduced precision: an EfDeRain model's input stays in the plain layout (its padding, pixel-unshuffle
        and the fused kernel's image copy are faster on it) and gives the bits the channels_last input gives;
        a model without the attribute gets channels_last."""
        from derain.inference.precision import input_layout

        d = Derainer(name if name != "efderain-tiny" else derain.create_model(name), precision="bf16", owned=True)
        x = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(2))
        assert input_layout(x, d.model, "bf16") is x
        with torch.inference_mode(), autocast("bf16"):
            plain, last = d.model(x), d.model(x.contiguous(memory_format=torch.channels_last))
        assert torch.equal(plain, last)
        other = nn.Sequential(nn.Conv2d(3, 3, 1))
        assert input_layout(x, other, "bf16").is_contiguous(memory_format=torch.channels_last)
        assert not input_layout(x, other, "bf16").is_contiguous() and input_layout(x, other, "fp32") is x
        for module, plain in ((d.model, True), (other, False)):  # what Derainer hands the module
            seen = []
            hook = module.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous()))
            try:
                Derainer(module, precision="bf16").run_tensor(x)
            finally:
                hook.remove()
            assert seen == [plain]


def test_atomic_outputs_follow_the_umask_whatever_the_writer_did(tmp_path):
    from derain.io.atomic import atomic_output

    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.bin") as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # as safetensors and mkstemp create files
            os.close(fd)
        derain.save_model(derain.create_model("efderain-tiny"), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert oct((tmp_path / "a.bin").stat().st_mode & 0o777) == oct(0o640)
    assert oct((tmp_path / "w.safetensors").stat().st_mode & 0o777) == oct(0o640)


def test_pixels_between_depths_and_read_image_is_writable(tmp_path):
    from derain.io.images import quantize_pixels

    eight = np.arange(256, dtype=np.uint8).reshape(1, 256)
    np.testing.assert_array_equal(quantize_pixels(quantize_pixels(eight, 16), 8), eight)
    assert quantize_pixels(eight, 16)[0, 255] == 65535 and quantize_pixels(eight, 8) is eight
    Image.new("RGB", (5, 4), (10, 20, 30)).save(tmp_path / "a.png")
    pixels = read_image(tmp_path / "a.png")
    pixels[0, 0] = 0  # the caller's own array
    assert pixels.flags.writeable and pixels.dtype == np.uint8


def test_side_by_side_of_mixed_pixel_types():
    from derain.io.images import Photo, side_by_side

    photo = Photo(np.full((2, 3, 3), 255, np.uint8))
    wide, both = side_by_side(photo, np.zeros((2, 3, 3), np.float32))
    assert wide.size == (6, 2) and both.dtype == np.float32 and both[0, 0, 0] == 1.0 and both[0, 3, 0] == 0.0
    wide, both = side_by_side(photo, np.zeros((2, 3, 3), np.uint8))
    assert both.dtype == np.uint8 and both.shape == (2, 6, 3)


class TestAtomicFiles:
    """derain.io.atomic.atomic_files: files that change together (a checkpoint and its weights)."""

    @staticmethod
    def write(folder, text, fail=False):
        from derain.io.atomic import atomic_files

        with atomic_files(folder, ["a.txt", "b.txt"]) as paths:
            paths["a.txt"].write_text(text)
            if fail:
                raise KeyboardInterrupt
            paths["b.txt"].write_text(text)

    def test_every_name_moves_at_once_and_the_previous_group_is_removed(self, tmp_path):
        self.write(tmp_path, "1")
        self.write(tmp_path, "2")
        assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == "2"
        assert os.readlink(tmp_path / "a.txt") == ".current/a.txt"
        assert len(list(tmp_path.glob(".group-*"))) == 1  # the first group is gone

    def test_an_interrupted_write_changes_nothing_and_leaves_nothing(self, tmp_path):
        self.write(tmp_path, "1")
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(KeyboardInterrupt):
            self.write(tmp_path, "2", fail=True)
        assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == "1"
        assert sorted(p.name for p in tmp_path.iterdir()) == before

    def test_groups_a_killed_writer_left_are_removed_by_the_next_write(self, tmp_path):
        self.write(tmp_path, "1")
        for name in (".group-0123abcd.tmp", ".group-89abcdef"):  # half-written; written but never swapped in
            (tmp_path / name).mkdir()
            (tmp_path / name / "a.txt").write_text("x")
            os.utime(tmp_path / name, (0, 0))
        (tmp_path / ".a.txt.0123abcd.lnk").symlink_to(".current/a.txt")  # a link made, never moved into place
        self.write(tmp_path, "2")
        assert len(list(tmp_path.glob(".group-*"))) == 1 and (tmp_path / "b.txt").read_text() == "2"
        assert not list(tmp_path.glob("*.lnk"))

    def test_a_file_written_apart_is_replaced_by_the_link(self, tmp_path):
        self.write(tmp_path, "1")
        (tmp_path / "b.txt").unlink()
        (tmp_path / "b.txt").write_text("by hand")
        self.write(tmp_path, "2")
        assert (tmp_path / "b.txt").is_symlink() and (tmp_path / "b.txt").read_text() == "2"

    def test_without_symlinks_the_files_are_moved_in_order(self, tmp_path, monkeypatch):
        import derain.io.atomic as atomic

        monkeypatch.setattr(atomic, "_symlinks_work", lambda folder: False)
        self.write(tmp_path, "1")
        assert not (tmp_path / "a.txt").is_symlink() and (tmp_path / "b.txt").read_text() == "1"
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    def test_a_name_left_unwritten_is_an_error(self, tmp_path):
        from derain.io.atomic import atomic_files

        with pytest.raises(FileNotFoundError, match="b.txt not written"):
            with atomic_files(tmp_path, ["a.txt", "b.txt"]) as paths:
                paths["a.txt"].write_text("1")
        assert list(tmp_path.iterdir()) == []


class TestSixteen:
    """derain.io.sixteen: both Pillow tile layouts, and 16-bit files round-tripped bit-exactly."""

    @staticmethod
    def tiles(path):
        with Image.open(path) as img:
            return list(img.tile)

    def test_named_tuple_tiles_of_this_pillow(self, tmp_path):
        from derain.io.sixteen import low_byte_tiles, rawmode_of_tile

        path = tmp_path / "rgb16.png"
        path.write_bytes(png16_bytes(np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1000))
        (tile,) = self.tiles(path)
        assert rawmode_of_tile(tile) == "RGB;16B"
        (low,) = low_byte_tiles([tile], "RGB;16B")
        assert type(low) is type(tile) and rawmode_of_tile(low) == "RGB;16L" and low[:3] == tile[:3]

    @pytest.mark.parametrize("args", ["RGBA;16B", ("RGBA;16B", 0, 1)], ids=["mode", "mode-tuple"])
    def test_plain_tuple_tiles_of_older_pillow(self, args):
        from derain.io.sixteen import low_byte_tiles, rawmode_of_tile

        tile = ("raw", (0, 0, 5, 4), 8, args)  # Pillow < 11 described tiles as plain 4-tuples
        assert rawmode_of_tile(tile) == "RGBA;16B"
        (low,) = low_byte_tiles([tile], "RGBA;16B")
        assert low[:3] == tile[:3] and rawmode_of_tile(low) == "RGBA;16L"
        assert isinstance(low[3], type(args))
        assert low_byte_tiles([tile], "RGB") is None  # 8-bit: nothing to add

    @pytest.mark.parametrize(("fmt", "channels"), [("png", 2), ("png", 3), ("png", 4), ("tiff", 3), ("tiff", 4)])
    def test_written_files_read_back_exactly(self, tmp_path, channels, fmt):
        """(A 16-bit grey + alpha TIFF is written too, but Pillow has no mode to read it back with.)"""
        from derain.io.sixteen import write_png16, write_tiff16

        arr = np.random.default_rng(channels).integers(0, 65536, (37, 300, channels)).astype(np.uint16)
        path = tmp_path / f"x.{fmt}"
        with open(path, "wb") as fp:
            (write_png16(fp, arr, None, None, (72.0, 72.0)) if fmt == "png" else write_tiff16(fp, arr, None, (72.0, 72.0)))
        photo = load_photo(path)
        assert photo.bits == 16
        if channels == 2:
            got = np.round(photo.rgb[:, :, 0] * 65535).astype(np.uint16)
            assert np.array_equal(got, arr[:, :, 0]) and np.array_equal(photo.alpha, arr[:, :, 1])
        else:
            got = np.round(photo.rgb * 65535).astype(np.uint16)
            assert np.array_equal(got, arr[:, :, :3])
            if channels == 4:
                assert np.array_equal(photo.alpha, arr[:, :, 3])


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_importing_derain_makes_waiting_threads_sleep_unless_told_otherwise():
    import subprocess
    import sys

    code = "import os, derain; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip() == "ACTIVE"


def test_benchmark_scripts_import_derain_before_torch():
    """A script that loads torch before derain keeps OpenMP's spinning threads: beside a busy process its timings
    come out several times slower (BENCHMARKS.md, "A shared machine"). Every benchmark imports derain before any
    torch package at module level (in ``if``/``try`` blocks too; imports inside functions run after the module's)."""
    import ast

    def imports(nodes: list[ast.stmt]) -> list[str]:
        found: list[str] = []
        for node in nodes:
            if isinstance(node, ast.Import):
                found += [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                found.append((node.module or "").split(".")[0])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody"):
                    found += imports(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    found += imports(handler.body)
        return found

    late = []
    for script in sorted((Path(__file__).parent.parent / "benchmarks").glob("*.py")):
        order = [n for n in imports(ast.parse(script.read_text()).body) if n == "derain" or n.startswith("torch")]
        if order and order[0] != "derain":
            late.append(script.name)
    assert not late, late


class TestAutoPrecision:
    """``auto`` is bf16 only where oneDNN may use native bf16 instructions (BENCHMARKS.md "Precision by CPU")."""

    @pytest.mark.parametrize(
        "avx512_bf16, amx, cap, expected",
        [
            (True, False, None, "bf16"),  # AMD Zen 4, Intel Cooper Lake
            (True, True, None, "bf16"),  # Sapphire Rapids
            (False, True, None, "bf16"),
            (False, False, None, "fp32"),  # AVX-512 without bf16, AVX2: emulated bf16 is slower than fp32
            (True, True, "AVX512_CORE", "fp32"),  # oneDNN capped below the bf16 instructions
            (True, False, "AVX2", "fp32"),
            (True, False, "avx512_core_bf16", "bf16"),  # oneDNN reads the cap case-insensitively
            (False, True, "AVX512_CORE_BF16", "fp32"),  # AMX needs AVX512_CORE_AMX
            (True, True, "ALL", "bf16"),
        ],
    )
    def test_auto_follows_the_cpu_and_the_onednn_cap(self, monkeypatch, avx512_bf16, amx, cap, expected):
        from derain.inference import precision

        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        if cap is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert precision.resolve_precision("auto", "cpu") == expected
        assert precision.resolve_precision("fp32", "cpu") == "fp32" and precision.resolve_precision("bf16", "cpu") == "bf16"

    def test_a_torch_without_the_queries_runs_fp32(self, monkeypatch):
        from derain.inference import precision

        monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
        monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
        assert precision.resolve_precision("auto", "cpu") == "fp32"


class TestProgress:
    """``derain.io.progress``: a tqdm bar on a terminal, plain ``\\n`` lines at most every N seconds elsewhere."""

    class FakeStream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    class Clock:
        def __init__(self) -> None:
            self.now = 0.0

        def __call__(self) -> float:
            return self.now

    def test_a_terminal_gets_a_tqdm_bar(self):
        from derain.io.progress import TerminalProgress, progress_bar

        stream = self.FakeStream(tty=True)
        with progress_bar(4, desc="eval", unit="img", file=stream) as bar:
            assert isinstance(bar, TerminalProgress)
            bar.update(2)
            bar.write("error: a.png: corrupt")
            bar.update(2)
        text = stream.getvalue()
        assert "\r" in text and "4/4" in text and "error: a.png: corrupt\n" in text

    def test_a_log_gets_plain_lines_at_most_every_n_seconds_and_a_final_one(self):
        from derain.io.progress import LineProgress

        stream, clock = self.FakeStream(tty=False), self.Clock()
        with LineProgress(stream, total=100, desc="eval", unit="img", every=10, clock=clock) as bar:
            for _ in range(100):
                clock.now += 0.5  # 2 img/s: 50 s in all
                bar.update(1)
                if bar.n == 30:
                    bar.write("error: b.png: not an image")
            bar.set_postfix(loss="0.0100")
        lines = stream.getvalue().splitlines()
        assert "\r" not in stream.getvalue()
        assert lines == [
            "eval: 20/100 img, 2.0 img/s", "error: b.png: not an image", "eval: 40/100 img, 2.0 img/s", "eval: 60/100 img, 2.0 img/s",
            "eval: 80/100 img, 2.0 img/s", "eval: 100/100 img, 2.0 img/s", "eval: 100/100 img, 2.0 img/s, loss=0.0100",
        ]

    def test_not_a_terminal_and_disabled(self):
        from derain.io.progress import LineProgress, NoProgress, is_terminal, progress_bar, track

        class NoIsatty:
            def write(self, text: str) -> None: ...

        closed = io.StringIO()
        closed.close()  # isatty() raises ValueError
        assert not is_terminal(NoIsatty()) and not is_terminal(closed) and is_terminal(self.FakeStream(tty=True))
        stream = self.FakeStream(tty=False)
        assert isinstance(progress_bar(3, file=stream), LineProgress)
        assert list(track(["a", "b", "c"], desc="run", unit="img", file=stream)) == ["a", "b", "c"]
        assert stream.getvalue().startswith("run: 3/3 img, ") and stream.getvalue().count("\n") == 1
        for tty in (True, False):  # a site's disable (one image only): nothing but its messages
            stream = self.FakeStream(tty=tty)
            with progress_bar(1, file=stream, disable=True) as bar:
                assert isinstance(bar, NoProgress)
                bar.update(1)
                bar.write("error: c.png: empty file")
            assert stream.getvalue() == "error: c.png: empty file\n"
