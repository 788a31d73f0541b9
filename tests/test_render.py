"""Synthetic rain renderer, rain statistics and the real rain-layer bank."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derain.data.rain_layers import RainLayerBank, composite
from derain.data.rainmix import screen_blend
from derain.data.render import (
    PRESETS,
    RainParams,
    RainRenderer,
    dominant_orientation,
    jpeg_round_trip,
    line_kernel,
    rain_statistics,
    y_psnr,
)

from conftest import shared_path as data_dir


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def stamp(canvas: np.ndarray, kernel: np.ndarray, y: int, x: int) -> None:
    kh, kw = kernel.shape
    canvas[y - kh // 2 : y + kh // 2 + 1, x - kw // 2 : x + kw // 2 + 1] += kernel


@pytest.fixture(scope="module")
def clean_photos() -> list[np.ndarray]:
    """Eight real clean photos (fixed choice across the sub-collections), full size."""
    root = data_dir("clean")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    return [read(files[i]) for i in np.linspace(0, len(files) - 1, 8).astype(int)]


def documented_range(preset: str) -> tuple[float, float]:
    """(p5, p95) input Y-PSNR of the preset's calibration (BENCHMARKS.md, "Rendered rain and real rain layers")."""
    table = (Path(__file__).parents[1] / "BENCHMARKS.md").read_text(encoding="utf-8")
    m = re.search(rf"^\| `{preset}` \(rendered\) \| ([\d.]+) / ([\d.]+) / ([\d.]+) \|", table, re.M)
    assert m, f"BENCHMARKS.md does not document preset {preset!r}'s Y-PSNR range"
    return float(m.group(1)), float(m.group(3))


# --------------------------------------------------------------------------- statistics


def test_y_psnr_matlab_convention() -> None:
    a = np.full((8, 8, 3), 100, np.uint8)
    assert y_psnr(a, a) == math.inf
    b = a.copy()
    b[..., 1] += 2  # ΔY = 128.553·2/255
    expected = 10 * math.log10(255**2 / (128.553 * 2 / 255) ** 2)
    assert y_psnr(a, b) == pytest.approx(expected, rel=1e-9)
    assert y_psnr(a.astype(np.float32) / 255, b.astype(np.float32) / 255) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("angle", [70.0, 90.0, 110.0, 60.0])
def test_orientation_of_a_synthetic_streak(angle: float) -> None:
    clean = np.full((160, 160, 3), 0.3, np.float32)
    layer = np.zeros((160, 160), np.float32)
    stamp(layer, line_kernel(angle, 100, 2), 80, 80)
    stats = rain_statistics(np.clip(clean + layer[:, :, None] * 0.5, 0, 1), clean)
    assert stats["orientation"] == pytest.approx(angle, abs=3.0)
    assert stats["coherence"] > 0.8
    assert 0 < stats["coverage"] < 0.05 and stats["mean"] > 0


def test_rain_statistics_values() -> None:
    clean = np.zeros((10, 10, 3), np.float32)
    rainy = clean.copy()
    rainy[:, :5] = 0.2  # half the image +0.2
    s = rain_statistics(rainy, clean)
    assert s["mean"] == pytest.approx(0.1, abs=1e-6) and s["coverage"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rain_statistics(rainy[:5], clean)


def test_line_kernel() -> None:
    k = line_kernel(90, 21, 1, taper=False)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and k.max() == 1.0
    assert k.sum() == pytest.approx(21, abs=0.5)
    assert k.sum(axis=0).argmax() == k.shape[1] // 2  # vertical
    assert line_kernel(0, 21, 3, taper=False).sum() == pytest.approx(63, abs=2)
    assert line_kernel(45, 21, 0.5, taper=False).max() == pytest.approx(0.5)
    assert dominant_orientation(np.zeros((5, 5)))[1] == 0.0


# --------------------------------------------------------------------------- renderer


def test_params_validation() -> None:
    with pytest.raises(ValueError):
        RainParams(density=(0.5, 0.1))
    with pytest.raises(ValueError):
        RainParams(alpha=(0.0, 1.0))
    with pytest.raises(ValueError):
        RainParams(layers=(0, 2))
    with pytest.raises(ValueError):
        RainParams(jpeg_quality=(50, 120))
    with pytest.raises(ValueError, match="preset"):
        RainRenderer("drizzle")
    with pytest.raises(TypeError):
        RainRenderer(3)  # type: ignore[arg-type]
    assert set(PRESETS) == {"light", "medium", "heavy", "real"}
    assert RainRenderer({"layers": (1, 1)}).params.layers == (1, 1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_render_bounded_and_nontrivial(preset: str) -> None:
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.0, 0.8, size=(96, 128, 3)).astype(np.float32)
    renderer = RainRenderer(preset, haze_prob=0.0, jpeg_prob=0.0)
    for seed in range(3):
        rainy = renderer.render(clean, np.random.default_rng(seed))
        assert rainy.shape == clean.shape and rainy.dtype == np.float32
        assert rainy.min() >= 0.0 and rainy.max() <= 1.0
        assert (rainy - clean).min() >= -1e-6  # rain only adds light when there is no haze
        layer = (rainy - clean).mean(axis=2)
        assert layer.mean() > 0.002 and (layer > 0.1).mean() > 0.005


def test_render_full_model_in_range_and_deterministic() -> None:
    clean = np.random.default_rng(1).uniform(0, 1, size=(64, 80, 3)).astype(np.float32)
    r = RainRenderer("heavy", haze_prob=1.0, jpeg_prob=1.0)
    a = r.render(clean, np.random.default_rng(5))
    b = r.render(clean, np.random.default_rng(5))
    c = r.render(clean, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    u8 = (clean * 255).round().astype(np.uint8)  # uint8 input accepted
    assert r.render(u8, np.random.default_rng(5)).shape == clean.shape


def test_haze_term() -> None:
    clean = np.random.default_rng(2).uniform(0, 1, size=(32, 32, 3)).astype(np.float32)
    r = RainRenderer(
        RainParams(density=(0.0, 0.0), haze_prob=1.0, alpha=(0.8, 0.8), atmospheric_light=(0.9, 0.9), jpeg_prob=0.0)
    )
    np.testing.assert_allclose(r.render(clean, np.random.default_rng(0)), 0.8 * clean + 0.2 * 0.9, atol=1e-6)


# Each preset's rainy image of one clean image (seed 11) as rendered before ``render_rain_pair`` existed (commit
# b88e249): its sum and one pixel. Rendered rain is training data: the same seed must keep giving the same samples.
RENDERED_BEFORE = {
    "heavy": (4136.1221, [0.6013047, 0.7023951, 0.3359093]),
    "light": (3404.5421, [0.6013047, 0.7023951, 0.3359093]),
    "medium": (3575.8197, [0.8313726, 0.5058824, 0.7254902]),
    "real": (3664.5060, [0.7803922, 0.6196079, 0.7372549]),
}


@pytest.mark.parametrize("preset", sorted(RENDERED_BEFORE))
def test_rendering_is_what_it_was(preset: str) -> None:
    clean = np.random.default_rng(7).uniform(0, 1, (40, 56, 3)).astype(np.float32)
    rainy = RainRenderer(preset).render(clean, np.random.default_rng(11))
    total, pixel = RENDERED_BEFORE[preset]
    assert abs(float(rainy.astype(np.float64).sum()) - total) < 1e-3  # tolerance: SIMD paths of other CPUs
    np.testing.assert_allclose(rainy[5, 7], pixel, atol=1e-5)
    pair = RainRenderer(preset).render_pair(clean, np.random.default_rng(11), streaks_only=True)[0]
    np.testing.assert_array_equal(pair, rainy)  # the target costs no random draw


def test_streaks_only_target_keeps_veil_and_compression() -> None:
    """``render_pair``: the same rainy image as ``render``; the target is the clean image, or with ``streaks_only``
    the clean image under the same veil and JPEG quality, so rainy − target is the streaks alone."""
    clean = np.random.default_rng(3).uniform(0.1, 0.6, size=(48, 48, 3)).astype(np.float32)
    foggy = RainRenderer("real", haze_prob=1.0, jpeg_prob=0.0, alpha=(0.8, 0.8), atmospheric_light=(0.9, 0.9))
    rainy, target = foggy.render_pair(clean, np.random.default_rng(0), streaks_only=True)
    np.testing.assert_array_equal(rainy, foggy.render(clean, np.random.default_rng(0)))
    np.testing.assert_allclose(target, 0.8 * clean + 0.2 * 0.9, atol=1e-6)
    streaks = rainy - target
    assert streaks.min() > -1e-6 and streaks.max() > 0.05  # only added light: the streaks
    rainy2, plain = foggy.render_pair(clean, np.random.default_rng(0))
    np.testing.assert_array_equal(rainy2, rainy)
    np.testing.assert_array_equal(plain, clean)  # the field's target: the clean image, veil and all removed
    jpeg = RainRenderer("light", jpeg_prob=1.0, jpeg_quality=(60, 60))
    rainy, target = jpeg.render_pair(clean, np.random.default_rng(1), streaks_only=True)
    np.testing.assert_array_equal(target, jpeg_round_trip(clean, 60))  # compressed as the input was


def test_render_odd_and_tiny_sizes() -> None:
    for shape in [(321, 481, 3), (481, 321, 3), (17, 23, 3)]:
        clean = np.full(shape, 0.2, np.float32)
        out = RainRenderer("heavy", haze_prob=0.0, jpeg_prob=0.0).render(clean, np.random.default_rng(0))
        assert out.shape == shape and (out - clean).min() >= -1e-6


def test_dominant_direction_follows_params() -> None:
    clean = np.full((192, 192, 3), 0.2, np.float32)
    for angle in (70.0, 105.0):
        r = RainRenderer("light", angle=(angle, angle), angle_spread=0.0, jpeg_prob=0.0, blur_prob=0.0)
        stats = rain_statistics(r.render(clean, np.random.default_rng(0)), clean)
        assert stats["orientation"] == pytest.approx(angle, abs=3.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_y_psnr_on_real_photos(preset: str, clean_photos: list[np.ndarray]) -> None:
    lo, hi = documented_range(preset)
    renderer = RainRenderer(preset)
    values = [y_psnr(renderer.render(c, np.random.default_rng(i)), c) for i, c in enumerate(clean_photos)]
    assert lo <= float(np.median(values)) <= hi, values
    # the documented range is p5–p95 over 40 photos; very bright or dark photos sit in the tails
    assert all(lo - 4.0 <= v <= hi + 4.0 for v in values), values


def test_heavy_preset_matches_raintrainh_statistics(clean_photos: list[np.ndarray]) -> None:
    root = data_dir("RainTrainH_val")
    real = [rain_statistics(read(p), read(root / "clean" / p.name)) for p in sorted((root / "rainy").iterdir())]
    renderer = RainRenderer("heavy")
    synth = [rain_statistics(renderer.render(c, np.random.default_rng(i)), c) for i, c in enumerate(clean_photos)]
    med = lambda rows, k: float(np.median([r[k] for r in rows]))  # noqa: E731
    assert med(synth, "mean") == pytest.approx(med(real, "mean"), abs=0.06)
    assert med(synth, "coverage") == pytest.approx(med(real, "coverage"), abs=0.15)
    assert med(synth, "y_psnr") == pytest.approx(med(real, "y_psnr"), abs=2.5)
    assert med(synth, "orientation") == pytest.approx(med(real, "orientation"), abs=8.0)
    assert 80 <= med(real, "orientation") <= 100  # real heavy rain falls near vertically


# --------------------------------------------------------------------------- real rain layers


def test_layer_bank_reproduces_its_own_pair() -> None:
    root = data_dir("RainTrainH_val")
    names = sorted(p.name for p in (root / "rainy").iterdir())[:4]
    pairs = [(root / "rainy" / n, root / "clean" / n) for n in names]
    grey = RainLayerBank.from_pairs(pairs)
    rgb = RainLayerBank.from_pairs(pairs, grey=False)
    assert len(grey) == 4 and grey.names == names and grey.grey and not rgb.grey
    for i, n in enumerate(names):
        rainy, clean = read(root / "rainy" / n), read(root / "clean" / n)
        layer = grey.layer(i)
        assert layer.shape == clean.shape[:2] and layer.min() >= 0 and layer.max() <= 1
        add = y_psnr(composite(clean, layer), rainy)
        assert add > 40.0  # measured: exact (inf dB) on all 18 RainTrainH_val pairs
        assert add > y_psnr(screen_blend(clean, layer), rainy) + 10.0  # screen: 18.5–34.5 dB
        assert y_psnr(composite(clean, rgb.layer(i)), rainy) > 40.0


def test_saturated_pixels_are_filled_not_ghosted() -> None:
    clean = np.full((40, 30, 3), 0.4, np.float32)
    clean[10:20, 5:10] = (0.8, 0.6, 0.9)  # bright coloured patch
    rainy = clean.copy()
    rainy[:, 7] += 0.5  # a grey vertical streak through the patch
    rainy = np.clip(rainy, 0, 1)  # saturates all channels inside the patch
    filled = RainLayerBank.from_arrays([(rainy, clean)])
    raw = RainLayerBank.from_arrays([(rainy, clean)], fill_saturated=False)
    per_channel = RainLayerBank.from_arrays([(rainy, clean)], grey=False, fill_saturated=False)
    np.testing.assert_allclose(raw.layer(0)[10:20, 7], 0.4, atol=1 / 255)  # lower bound 1 − 0.6
    np.testing.assert_allclose(filled.layer(0)[:, 7], 0.5, atol=1 / 255)  # the streak continues
    np.testing.assert_allclose(per_channel.layer(0)[15, 7], (0.2, 0.4, 0.1), atol=1 / 255)  # colour ghost
    for bank in (filled, raw, per_channel):  # all still reproduce their own pair exactly
        np.testing.assert_allclose(composite(clean, bank.layer(0)), rainy, atol=1 / 255 + 1e-6)


def test_layer_bank_from_folder_and_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        RainLayerBank.from_folder(tmp_path)
    (tmp_path / "rainy").mkdir()
    (tmp_path / "clean").mkdir()
    with pytest.raises(ValueError, match="no matching"):
        RainLayerBank.from_folder(tmp_path)
    clean = np.full((12, 10, 3), 40, np.uint8)
    rainy = clean.copy()
    rainy[:, 4] = 200
    Image.fromarray(rainy).save(tmp_path / "rainy" / "a.png")
    Image.fromarray(clean).save(tmp_path / "clean" / "a.png")
    bank = RainLayerBank.from_folder(tmp_path)
    assert bank.layer(0).shape == (12, 10)
    np.testing.assert_allclose(bank.layer(0)[:, 4], 160 / 255, atol=1e-6)
    assert RainLayerBank.from_folder(tmp_path, grey=False).layer(0).shape == (12, 10, 3)
    with pytest.raises(ValueError):
        RainLayerBank([])


def test_layer_bank_sampling() -> None:
    clean = np.full((40, 60, 3), 0.1, np.float32)
    rainy = clean.copy()
    rainy[:, 10] += 0.5  # one vertical streak at x = 10
    bank = RainLayerBank.from_arrays([(rainy, clean)])
    base = float(bank.layer(0).max())  # ≈ 0.5 in 1/255 steps
    rng = np.random.default_rng(0)
    gains, flipped = [], 0
    for _ in range(200):
        s = bank.sample(rng, (40, 60))
        assert s.shape == (40, 60) and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
        flipped += int(s[0].argmax()) == 49
        gains.append(s.max() / base)
    assert 0.7 - 1e-3 <= min(gains) < 0.75 and 1.05 < max(gains) <= 1.1 + 1e-3
    assert 70 <= flipped <= 130
    big = bank.sample(rng, (100, 150))  # larger than the layer: tiled periodically
    assert big.shape == (100, 150)
    assert (big.max(axis=0) > 0).sum() == 3  # streak columns repeat every 60 px
    rgb = RainLayerBank.from_arrays([(rainy, clean)], grey=False)
    assert rgb.sample(rng, (20, 30)).shape == (20, 30, 3)
    flat = RainLayerBank.from_arrays([(np.full((50, 50, 3), 0.5, np.float32), np.zeros((50, 50, 3), np.float32))])
    rot = flat.sample(rng, (30, 30), max_rotation=10.0, scale=(1.0, 1.0))
    np.testing.assert_allclose(rot, round(0.5 * 255) / 255, atol=1 / 255)  # no black corners
    a = bank.sample(np.random.default_rng(9), (20, 20), max_rotation=5.0)
    np.testing.assert_array_equal(a, bank.sample(np.random.default_rng(9), (20, 20), max_rotation=5.0))
    out = bank.augment(clean, rng)
    assert out.shape == clean.shape and (out >= clean - 1e-6).all()
