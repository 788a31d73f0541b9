"""RainMix: streak bank, ops, chain composition, mix formulas, screen blend, pairs, determinism."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derain.data.rainmix import (
    OPS,
    Op,
    RainMix,
    StreakBank,
    chain_matrix,
    mix,
    op_matrix,
    rainmix_pair,
    sample_op,
    screen_blend,
    warp_chain,
)
from derain.data.render import dominant_orientation

from conftest import shared_path as data_dir


@pytest.fixture(scope="module")
def garg_bank() -> StreakBank:
    return StreakBank(data_dir("Streaks_Garg06"))


def random_streaks(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A small synthetic streak map: sparse vertical dashes."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.float32)
    for _ in range(60):
        y, x = int(rng.integers(0, h - 12)), int(rng.integers(0, w))
        m[y : y + 12, x] = rng.uniform(0.4, 1.0)
    return m


@pytest.fixture(scope="module")
def small_bank() -> StreakBank:
    return StreakBank.from_arrays([random_streaks(seed=s) for s in range(4)])


def vertical_line(h: int = 201, w: int = 201, width: int = 3, length: int = 140) -> np.ndarray:
    img = np.zeros((h, w), np.float32)
    c = w // 2
    img[(h - length) // 2 : (h + length) // 2, c - width // 2 : c + width // 2 + 1] = 1.0
    return img


def centroid(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(img.shape)
    total = img.sum()
    return float((ys * img).sum() / total), float((xs * img).sum() / total)


# --------------------------------------------------------------------------- streak bank


def test_streak_bank_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        StreakBank(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images"):
        StreakBank(tmp_path / "empty")
    with pytest.raises(ValueError):
        StreakBank.from_arrays([])


def test_streak_bank_reads_grey_and_rgb(tmp_path: Path) -> None:
    grey = (random_streaks(20, 30) * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "1-4.png")
    Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2)).save(tmp_path / "2-4.png")
    bank = StreakBank(tmp_path)
    assert len(bank) == 2
    for i in range(2):
        m = bank[i]
        assert m.shape == (20, 30) and m.dtype == np.float32
        assert 0.0 <= m.min() and m.max() <= 1.0
        np.testing.assert_allclose(m, grey / 255.0, atol=1 / 255 + 1e-6)
    bank[0][:] = 5  # returned arrays are copies
    assert bank[0].max() <= 1.0


def test_garg_bank(garg_bank: StreakBank) -> None:
    assert len(garg_bank) == 825
    m = garg_bank[0]
    assert m.dtype == np.float32 and m.ndim == 2 and m.shape[0] == 320 and m.shape[1] in (536, 568, 600)
    assert 0.0 <= m.min() and m.max() <= 1.0 and 0.01 < m.mean() < 0.3


# --------------------------------------------------------------------------- ops


def test_single_ops_match_pillow_augmix_calls() -> None:
    """Each op's matrix is exactly what AugMix's Pillow call does (content moves the documented way)."""
    img = random_streaks(60, 80)
    pil = Image.fromarray(img, mode="F")
    np.testing.assert_array_equal(
        warp_chain(img, [Op("rotate", 7)]), np.asarray(pil.rotate(7, resample=Image.Resampling.BILINEAR))
    )
    np.testing.assert_array_equal(
        warp_chain(img, [Op("shear_x", 0.09)]),
        np.asarray(pil.transform((80, 60), Image.Transform.AFFINE, (1, 0.09, 0, 0, 1, 0), Image.Resampling.BILINEAR)),
    )
    assert op_matrix("zoom_x", 2.0, (60, 80), anchor_end=True)[0].tolist() == [2.0, 0.0, -80.0]
    with pytest.raises(ValueError, match="unknown RainMix op"):
        op_matrix("solarize", 1.0, (4, 4))


@pytest.mark.parametrize("degrees", [8, -8, 5])
def test_rotate_turns_a_vertical_streak(degrees: int) -> None:
    line = vertical_line()
    before, _ = dominant_orientation(line)
    assert before == pytest.approx(90.0, abs=0.5)
    after, coherence = dominant_orientation(warp_chain(line, [Op("rotate", degrees)]))
    assert after == pytest.approx(90.0 + degrees, abs=1.0)
    assert coherence > 0.8


def test_shear_x_tilts_a_vertical_streak() -> None:
    after, _ = dominant_orientation(warp_chain(vertical_line(), [Op("shear_x", 0.09)]))
    assert after == pytest.approx(90.0 - math.degrees(math.atan(0.09)), abs=1.0)  # 84.9°


@pytest.mark.parametrize(
    ("name", "value", "axis"), [("translate_x", 17, 1), ("translate_x", -9, 1), ("translate_y", 12, 0)]
)
def test_translate_moves_the_centroid(name: str, value: int, axis: int) -> None:
    img = np.zeros((80, 100), np.float32)
    img[30:50, 40:60] = 1.0
    before = centroid(img)
    after = centroid(warp_chain(img, [Op(name, value)]))
    assert after[axis] - before[axis] == pytest.approx(value, abs=1e-3)
    assert after[1 - axis] == pytest.approx(before[1 - axis], abs=1e-3)


def test_zoom_changes_the_extent() -> None:
    img = np.zeros((40, 120), np.float32)
    img[18:22, 20:100] = 1.0  # 80 px long horizontal bar
    cols = lambda a: np.flatnonzero(a.max(axis=0) > 0.5)  # noqa: E731
    shrunk = warp_chain(img, [Op("zoom_x", 2.0)])  # anchored left: x_in = 2·x
    assert len(cols(shrunk)) == pytest.approx(40, abs=2) and cols(shrunk)[0] == pytest.approx(10, abs=1)
    right = warp_chain(img, [Op("zoom_x", 2.0, anchor_end=True)])  # x_in = 2·x − 120
    assert len(cols(right)) == pytest.approx(40, abs=2) and cols(right)[-1] == pytest.approx(109, abs=1)
    grown = warp_chain(img, [Op("zoom_x", 0.5)])  # content ×2, cut at the frame
    assert cols(grown)[0] == pytest.approx(40, abs=1) and cols(grown)[-1] == 119
    rows = np.flatnonzero(warp_chain(img, [Op("zoom_y", 0.5)]).max(axis=1) > 0.5)
    assert rows[0] == pytest.approx(36, abs=1) and rows[-1] == 39  # rows 18–22 → 36–44, cut at 40
    rows = np.flatnonzero(warp_chain(img, [Op("zoom_y", 4.0)]).max(axis=1) > 0.1)
    assert rows[0] == pytest.approx(4, abs=1) and len(rows) <= 3  # 4 rows squeezed to ~1


def test_sample_op_ranges_match_augmix_severity_3() -> None:
    rng = np.random.default_rng(0)
    shape = (320, 600)
    vals: dict[str, list[float]] = {name: [] for name in OPS}
    for name in OPS:
        for _ in range(400):
            vals[name].append(sample_op(name, rng, 3, shape).value)
    rot = np.array(vals["rotate"])
    assert np.all(rot == np.round(rot)) and np.abs(rot).max() == 8 and rot.min() < 0 < rot.max()
    shear = np.abs(vals["shear_x"] + vals["shear_y"])
    assert shear.max() <= 0.09 and shear.max() > 0.08 and shear.min() >= 0.003
    tx = np.abs(vals["translate_x"])
    assert tx.max() <= 60 and tx.max() >= 55  # ≤ 10 % of the width
    assert np.abs(vals["translate_y"]).max() <= 32
    zoom = np.array(vals["zoom_x"] + vals["zoom_y"])
    assert zoom.min() >= 1 / 1.8 - 1e-9 and zoom.max() <= 1 / 0.06 + 1e-9 and zoom.min() < 0.7 and zoom.max() > 5


def test_chain_is_one_affine_and_matches_sequential_warps() -> None:
    img = random_streaks(96, 128)
    ops = [Op("rotate", 5), Op("shear_y", 0.05), Op("translate_x", 10)]
    m = chain_matrix(ops, img.shape)
    expected = op_matrix("rotate", 5, img.shape) @ op_matrix("shear_y", 0.05, img.shape) @ op_matrix(
        "translate_x", 10, img.shape
    )
    np.testing.assert_allclose(m, expected)
    once = warp_chain(img, ops)
    seq = img
    for op in ops:
        seq = warp_chain(seq, [op])
    assert np.abs(once - seq).mean() < 0.01  # only interpolation differs
    assert once.sum() == pytest.approx(seq.sum(), rel=0.02)


def test_intermediate_clipping_is_kept() -> None:
    """Moving right then back left loses what left the frame, as sequential warps would."""
    img = np.ones((20, 50), np.float32)
    out = warp_chain(img, [Op("translate_x", 15), Op("translate_x", -15)])
    np.testing.assert_array_equal(out[:, :35], 1.0)
    np.testing.assert_array_equal(out[:, 35:], 0.0)


# --------------------------------------------------------------------------- mix, blend


def test_mix_formulas_on_constructed_inputs() -> None:
    r = np.array([[0.0, 0.4, 1.0]], np.float32)
    chains = np.stack([np.full((1, 3), v, np.float32) for v in (0.2, 0.6, 1.0)])
    w = np.array([0.2, 0.3, 0.5])
    s = 0.2 * 0.2 + 0.3 * 0.6 + 0.5 * 1.0  # Σ w_i·chain_i = 0.72
    for m in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(mix(r, chains, w, m, "paper"), np.clip(m * r + (1 - m) * s, 0, 1), rtol=1e-6)
    # released: max(1 − m, 0.7)·R + max(m, 0.5/max(w))·Σ   (0.5 / 0.5 = 1.0)
    np.testing.assert_allclose(mix(r, chains, w, 0.1, "released"), 0.9 * r + 1.0 * s, rtol=1e-6)
    np.testing.assert_allclose(mix(r, chains, w, 0.8, "released"), 0.7 * r + 1.0 * s, rtol=1e-6)
    w2 = np.array([0.6, 0.2, 0.2])  # 0.5 / 0.6 = 0.833 < m = 0.9
    s2 = 0.6 * 0.2 + 0.2 * 0.6 + 0.2 * 1.0
    out = mix(r, chains, w2, 0.9, "released")
    np.testing.assert_allclose(out, 0.7 * r + 0.9 * s2, rtol=1e-6)
    assert out.max() > 1.0  # gain above 1, not clipped
    assert mix(r, chains, w2, 0.9, "paper").max() <= 1.0
    with pytest.raises(ValueError):
        mix(r, chains, w[:2], 0.5, "paper")
    with pytest.raises(ValueError, match="mode"):
        mix(r, chains, w, 0.5, "augmix")


def test_screen_blend_formula() -> None:
    img = np.array([[[0.5, 0.2, 0.9]]], np.float32)
    rain = np.array([[0.5]], np.float32)
    np.testing.assert_allclose(screen_blend(img, rain), [[[0.75, 0.6, 0.95]]], rtol=1e-6)
    strong = np.array([[1.5]], np.float32)
    np.testing.assert_allclose(screen_blend(img, strong, clip=False), [[[1.25, 1.4, 1.05]]], rtol=1e-6)
    np.testing.assert_allclose(screen_blend(img, strong, clip=True), [[[1.0, 1.0, 1.0]]])
    with pytest.raises(ValueError):
        screen_blend(np.zeros((2, 2, 3), np.float32), np.zeros((3, 3), np.float32))


def test_render_applies_mix_to_chain_outputs(small_bank: StreakBank) -> None:
    """The pipeline's map equals mix(R, chains, w, m) of its own sampled parameters, and with
    identity chains the formulas reduce to known gains."""
    for mode in ("paper", "released"):
        rm = RainMix(small_bank, mode=mode)
        sample = rm.sample(np.random.default_rng(3), size=(64, 64))
        r, chains = rm.render_chains(sample)
        np.testing.assert_array_equal(rm.render(sample), mix(r, chains, sample.weights, sample.m, mode))
        ident = dataclasses.replace(
            sample, chains=((Op("translate_x", 0),),) * 3, weights=(0.25, 0.25, 0.5), m=0.9
        )
        out = rm.render(ident)
        r_id, chains_id = rm.render_chains(ident)
        for c in chains_id:
            np.testing.assert_allclose(c, r_id, atol=1e-6)
        gain = 1.0 if mode == "paper" else 0.7 + max(0.9, 0.5 / 0.5)  # 1.7
        np.testing.assert_allclose(out, np.clip(gain * r_id, 0, 1) if mode == "paper" else gain * r_id, atol=1e-6)


# --------------------------------------------------------------------------- sampling


def test_chain_depths_per_mode(small_bank: StreakBank) -> None:
    rng = np.random.default_rng(0)
    paper = [RainMix(small_bank, "paper").sample(rng) for _ in range(200)]
    released = [RainMix(small_bank, "released").sample(rng) for _ in range(200)]
    paper_depths = {len(c) for s in paper for c in s.chains}
    assert paper_depths == {1, 2, 3}
    assert any(len({len(c) for c in s.chains}) > 1 for s in paper)  # drawn per chain
    for s in released:
        depths = {len(c) for c in s.chains}
        assert len(depths) == 1 and depths <= {2, 3}  # one depth shared by all chains
    for s in paper + released:
        assert len(s.chains) == 3 and sum(s.weights) == pytest.approx(1.0) and 0.0 <= s.m <= 1.0
    ops_used = {op.name for s in paper for c in s.chains for op in c}
    assert ops_used == set(OPS)


def test_determinism(small_bank: StreakBank) -> None:
    for mode in ("paper", "released"):
        rm = RainMix(small_bank, mode=mode)
        a = rm.sample_rain_map(np.random.default_rng(42), size=(64, 80))
        b = rm.sample_rain_map(np.random.default_rng(42), size=(64, 80))
        c = rm.sample_rain_map(np.random.default_rng(43), size=(64, 80))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        # the constructor's rng is the default
        x = RainMix(small_bank, mode=mode, rng=np.random.default_rng(7)).sample_rain_map()
        y = RainMix(small_bank, mode=mode, rng=np.random.default_rng(7)).sample_rain_map()
        np.testing.assert_array_equal(x, y)


def test_real_streaks_determinism_and_shapes(garg_bank: StreakBank) -> None:
    rm = RainMix(garg_bank, mode="paper")
    a = rm.sample_rain_map(np.random.default_rng(1))
    assert a.ndim == 2 and a.shape[0] == 320 and a.dtype == np.float32
    np.testing.assert_array_equal(a, rm.sample_rain_map(np.random.default_rng(1)))
    crop = rm.sample_rain_map(np.random.default_rng(2), size=(256, 256))
    assert crop.shape == (256, 256) and 0 <= crop.min() and crop.max() <= 1 and crop.mean() > 0.005
    rainy = np.full((256, 256, 3), 0.3, np.float32)
    x1, t1 = RainMix(garg_bank, "released").rainmix_pair(rainy, rainy * 0.5, np.random.default_rng(5))
    x2, _ = RainMix(garg_bank, "released").rainmix_pair(rainy, rainy * 0.5, np.random.default_rng(5))
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (256, 256, 3)


def test_map_smaller_than_image_is_enlarged(small_bank: StreakBank) -> None:
    flat = StreakBank.from_arrays([np.full((30, 40), 0.5, np.float32)])
    rm = RainMix(flat, mode="paper")
    sample = rm.sample(np.random.default_rng(0), size=(96, 64))
    assert sample.scale == pytest.approx(96 / 30)
    r, _ = rm.render_chains(sample)
    assert r.shape == (96, 64)
    np.testing.assert_allclose(r, 0.5, atol=1e-6)  # enlarged, no black border, no seam


# --------------------------------------------------------------------------- compositing


def test_composite_ranges_per_mode() -> None:
    bright = StreakBank.from_arrays([np.full((64, 64), 0.9, np.float32)])
    img = np.full((48, 48, 3), 0.5, np.float32)
    paper = RainMix(bright, "paper").composite(img, np.random.default_rng(0))
    assert paper.shape == img.shape and paper.min() >= 0.5 and paper.max() <= 1.0
    highs = [RainMix(bright, "released").composite(img, np.random.default_rng(s)).max() for s in range(5)]
    assert max(highs) > 1.0  # released mode: gain > 1 and no clip


def test_rainmix_pair_base_choice_and_target() -> None:
    empty = StreakBank.from_arrays([np.zeros((32, 32), np.float32)])  # no rain: input == base
    rm = RainMix(empty, "paper")
    rainy = np.full((16, 16, 3), 0.6, np.float32)
    clean = np.full((16, 16, 3), 0.2, np.float32)
    rng = np.random.default_rng(0)
    n, picked_rainy = 1100, 0
    for _ in range(n):
        x, target = rm.rainmix_pair(rainy, clean, rng)
        assert target is clean
        assert np.array_equal(x, rainy) or np.array_equal(x, clean)
        picked_rainy += bool(np.array_equal(x, rainy))
    assert picked_rainy / n == pytest.approx(7 / 11, abs=0.05)
    x, _ = rainmix_pair(rm, None, clean, rng)  # clean-only data
    np.testing.assert_array_equal(x, clean)
    x, _ = rm.rainmix_pair(rainy, clean, rng, p_rainy=1.0)
    np.testing.assert_array_equal(x, rainy)
    with pytest.raises(ValueError):
        rm.rainmix_pair(rainy[:8], clean, rng)


def test_rainmix_bad_arguments(small_bank: StreakBank) -> None:
    with pytest.raises(ValueError, match="mode"):
        RainMix(small_bank, mode="augmix")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RainMix(small_bank, width=0)
