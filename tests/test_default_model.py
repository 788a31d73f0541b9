"""The bundled default model: loads offline as the registered `default` and removes rain."""

from __future__ import annotations

import numpy as np
import torch

import derain
from derain.cli.demo import synthetic_scene
from derain.data.render import RainRenderer
from derain.evaluation.metrics import calculate_psnr, quantize
from derain.models.registry import bundled_weights_path


def test_bundled_weights_load_as_default() -> None:
    assert "default" in derain.list_models(pretrained=True)
    path = bundled_weights_path("default")
    assert path.is_file() and path.stat().st_size < 10 * 2**20  # a few MB, fp16
    model = derain.load_model()
    assert model.registry_name == "default"
    assert model.config == derain.create_model("efderain-cpu").config
    assert not model.training


def test_default_removes_rain_from_a_synthetic_photo() -> None:
    clean = synthetic_scene(seed=1)
    for preset, gain in (("light", 0.5), ("heavy", 3.0)):
        rainy = quantize(RainRenderer(preset).render(clean.astype(np.float32) / 255, np.random.default_rng(5)))
        derained = derain.derain(rainy, precision="fp32")
        assert derained.dtype == np.uint8 and derained.shape == rainy.shape
        before = calculate_psnr(rainy, clean, test_y_channel=True)
        after = calculate_psnr(derained, clean, test_y_channel=True)
        assert after > before + gain, (preset, before, after)


def test_bf16_close_to_fp32() -> None:
    x = torch.rand(1, 3, 64, 96)
    fp32 = derain.derain(x, precision="fp32")
    bf16 = derain.derain(x, precision="bf16")
    assert (fp32 - bf16).abs().mean() < 0.01


def test_rain100l_score_is_the_model_cards(shared_dataset) -> None:
    """``derain eval ../shared/data/Rain100L --model default --protocol y`` gives MODEL_CARD.md's number."""
    from pathlib import Path

    from derain.evaluation.evaluate import evaluate

    result = evaluate(derain.load_model(), shared_dataset("Rain100L"), "y", precision="fp32", progress=False)
    psnr, ssim = result.metrics["y"]["psnr"], result.metrics["y"]["ssim"]
    assert result.n == 100
    assert abs(psnr - 30.2269) < 0.005 and abs(ssim - 0.92229) < 5e-4, (psnr, ssim)
    card = (Path(__file__).resolve().parents[1] / "MODEL_CARD.md").read_text()
    assert f"{psnr:.2f} / {ssim:.4f}" in card
