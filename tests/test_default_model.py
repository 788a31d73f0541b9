"""The bundled models (`default`, `fast`, and the in-domain `rain100l`): load offline under their registered names and
remove rain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import derain
from derain.cli.demo import synthetic_scene
from derain.data.render import RainRenderer
from derain.metrics import calculate_psnr, quantize
from derain.models.registry import bundled_weights_path

pytestmark = pytest.mark.precision  # floating-point paths compared: CI runs these under capped instruction sets too


def test_bundled_weights_load_as_default() -> None:
    assert set(derain.list_models(pretrained=True)) == {"default", "fast", "rain100l"}
    model = derain.load_model()
    assert model.registry_name == "default"
    assert model.config == derain.create_model("efderain-cpu").config
    assert not model.training


@pytest.mark.parametrize(("name", "architecture", "overrides"), [
    ("default", "efderain-cpu", {}), ("fast", "efderain-cpu-fast", {}),
    ("rain100l", "efderain-cpu", {"gate": False, "gate_global": False, "init": "he"}),
])
def test_bundled_weights_load(name: str, architecture: str, overrides: dict) -> None:
    path = bundled_weights_path(name)
    assert path.is_file() and path.stat().st_size < 10 * 2**20  # a few MB, fp16
    model = derain.create_model(name, pretrained=True)
    assert model.registry_name == name
    assert model.config == derain.create_model(architecture, **overrides).config


@pytest.mark.parametrize("name", ["default", "fast"])
def test_bundled_model_removes_rain_from_a_synthetic_photo(name: str) -> None:
    clean = synthetic_scene(seed=1)
    # Margins below what the models gain here (light: default +4.3 dB, fast +0.48 dB, the weak spot of
    # `fast`'s stage 3 noted in MODEL_CARD.md; heavy: +9.7 / +9.9 dB), above the noise of a no-op.
    for preset, gain in (("light", 0.25), ("heavy", 3.0)):
        rainy = quantize(RainRenderer(preset).render(clean.astype(np.float32) / 255, np.random.default_rng(5)))
        derained = derain.derain(rainy, model=name, precision="fp32")
        assert derained.dtype == np.uint8 and derained.shape == rainy.shape
        before = calculate_psnr(rainy, clean, test_y_channel=True)
        after = calculate_psnr(derained, clean, test_y_channel=True)
        assert after > before + gain, (name, preset, before, after)


def test_rain100l_is_a_light_rain_specialist() -> None:
    """The in-domain weights remove light rain (Rain100L's kind) at least as well as the general `default`, and heavy
    rain, which RainTrainL does not hold, less well (MODEL_CARD.md, "`rain100l`")."""
    clean = synthetic_scene(seed=1)
    gains: dict[tuple[str, str], float] = {}
    for preset in ("light", "heavy"):
        rainy = quantize(RainRenderer(preset).render(clean.astype(np.float32) / 255, np.random.default_rng(5)))
        for name in ("rain100l", "default"):
            derained = derain.derain(rainy, model=name, precision="fp32")
            gains[name, preset] = calculate_psnr(derained, clean, test_y_channel=True) - calculate_psnr(rainy, clean, test_y_channel=True)
    assert gains["rain100l", "light"] > 5.0 and gains["rain100l", "light"] >= gains["default", "light"] - 0.5, gains
    assert gains["rain100l", "heavy"] < gains["default", "heavy"] - 3.0, gains


def _rain_free_photos() -> list[np.ndarray]:
    """A synthetic rain-free scene, and (where the data is) two held-out clean photos (never trained on)."""
    from conftest import SHARED_DATA

    photos = [synthetic_scene(seed=2)]
    held_out = sorted((SHARED_DATA / "clean").rglob("*.jpg"))[-2:] if SHARED_DATA.is_dir() else []
    from derain.io.images import read_image

    return photos + [read_image(p)[:320, :480] for p in held_out]


# What the bundled weights achieve on these photos, with a margin (MODEL_CARD.md, "No harm"): the default
# (version 11) returns them within 0.01 level (75 dB and more, 0.5 level of near-grey spread at most), fast (version 7)
# within 0.2 level at 50 dB and more, but for one held-out photo its image gate judges rainy (-2.1 levels, 34.1 dB;
# fast version 4 shifted them by up to 5.7 levels); version 3 shifted them by -3.5 to -9 levels and gave grey
# cards up to 4.5 levels of colour.
NO_HARM_NOW = {"default": (0.5, 40.0, 0.5), "fast": (2.5, 32.0, 0.5)}  # |mean shift| levels, Y-PSNR dB, grey spread


@pytest.mark.parametrize("name", ["default", "fast"])
def test_rain_free_photo_comes_back_close_to_unchanged(name: str) -> None:
    """No regression of the no-harm measured for the bundled weights (default precision)."""
    max_shift, min_psnr, _ = NO_HARM_NOW[name]
    for photo in _rain_free_photos():
        out = derain.derain(photo, model=name)
        shift = (out.astype(np.float64) - photo).reshape(-1, 3).mean(0)
        assert np.abs(shift).max() <= max_shift, (name, shift)
        assert calculate_psnr(out, photo, test_y_channel=True) >= min_psnr


_FAST_NOT_YET = pytest.mark.xfail(strict=True, reason="fast does not meet issue 14's no-harm target (0.5 level, 40 dB) yet; see MODEL_CARD.md 'Gaps'")


@pytest.mark.parametrize("name", ["default", pytest.param("fast", marks=_FAST_NOT_YET)])
def test_rain_free_photo_comes_back_unchanged(name: str) -> None:
    """The target: a photo without rain comes back within 0.5 level per channel and >= 40 dB, on the synthetic
    scene and the held-out clean photos (``fast`` misses it on those only: without them its expected failure
    cannot show, so it skips, as data-backed tests do)."""
    from conftest import shared_path

    if name == "fast" and not any(shared_path("clean").rglob("*.jpg")):
        pytest.skip("../shared/data/clean holds no held-out .jpg photos")
    for photo in _rain_free_photos():
        out = derain.derain(photo, model=name)
        shift = (out.astype(np.float64) - photo).reshape(-1, 3).mean(0)
        assert np.abs(shift).max() <= 0.5, (name, shift)
        assert calculate_psnr(out, photo, test_y_channel=True) >= 40.0


@pytest.mark.parametrize("name", ["default", "fast"])
def test_grey_in_grey_out(name: str) -> None:
    """R = G = B in (flat cards and a black-and-white photo): R = G = B out at every pixel; nearly grey in (blue one
    level up, so the rule does not apply): the network's own change of the channel means stays together."""
    photo = synthetic_scene(seed=2)
    bw = np.repeat(np.round(photo @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None], 3, axis=2)
    cards = [np.full((64, 96, 3), v, np.uint8) for v in (20, 128, 230)]
    for img in [bw, *cards]:
        out = derain.derain(img, model=name)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all(), name
        near = img.copy()
        near[..., 2] = np.minimum(near[..., 2].astype(int) + 1, 255)
        change = (derain.derain(near, model=name).astype(np.float64) - near).reshape(-1, 3).mean(0)
        assert change.max() - change.min() <= NO_HARM_NOW[name][2], (name, change)
    for card in cards:  # flat areas come back; default version 11 darkens a bright card's first column and top row by up to 3 levels
        diff = np.abs(derain.derain(card, model=name).astype(int) - card)  # (MODEL_CARD.md, "Gaps")
        assert diff[1:-1, 1:-1].max() <= 1 and diff.max() <= 3


def test_bf16_close_to_fp32() -> None:
    x = torch.rand(1, 3, 64, 96)
    fp32 = derain.derain(x, precision="fp32")
    bf16 = derain.derain(x, precision="bf16")
    assert (fp32 - bf16).abs().mean() < 0.01


@pytest.mark.slow
@pytest.mark.parametrize(("name", "golden_psnr", "golden_ssim"), [("default", 31.2952, 0.93243), ("fast", 29.3841, 0.89713)])
def test_rain100l_score_is_the_model_cards(shared_dataset, name: str, golden_psnr: float, golden_ssim: float) -> None:
    """``derain eval ../shared/data/Rain100L --model NAME --protocol y`` gives MODEL_CARD.md's number."""
    from pathlib import Path

    from derain.evaluation.evaluate import evaluate

    result = evaluate(derain.create_model(name, pretrained=True), shared_dataset("Rain100L"), "y", precision="fp32", progress=False)
    psnr, ssim = result.metrics["y"]["psnr"], result.metrics["y"]["ssim"]
    assert result.n == 100
    assert abs(psnr - golden_psnr) < 0.005 and abs(ssim - golden_ssim) < 5e-4, (psnr, ssim)
    card = (Path(__file__).resolve().parents[1] / "MODEL_CARD.md").read_text()
    assert f"{psnr:.2f} / {ssim:.4f}" in card


@pytest.mark.slow
def test_rain100l_weights_meet_their_target_in_both_protocols(shared_dataset) -> None:
    """``derain eval ../shared/data/Rain100L --model rain100l --protocol both``: MODEL_CARD.md's numbers, and the
    in-domain target of issue 28 (33.0 dB in the released code's RGB protocol) met."""
    from pathlib import Path

    from derain.evaluation.evaluate import evaluate

    result = evaluate(derain.create_model("rain100l", pretrained=True), shared_dataset("Rain100L"), "both", precision="fp32", progress=False)
    y, rgb = result.metrics["y"], result.metrics["efderain-rgb"]
    assert abs(y["psnr"] - 33.8347) < 0.005 and abs(rgb["psnr"] - 33.2938) < 0.005, (y, rgb)
    assert rgb["psnr"] >= 33.0
    card = (Path(__file__).resolve().parents[1] / "MODEL_CARD.md").read_text()
    assert f"{y['psnr']:.2f} / {y['ssim']:.4f}" in card and f"{rgb['psnr']:.2f} / {rgb['ssim']:.4f}" in card
