"""PReNet baseline: architecture, the official weights, and a check against an independent re-implementation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import derain
from derain.models import CheckpointError, PReNet, PReNetConfig
from derain.models.registry import ARCHITECTURES, model_spec

from conftest import shared_path

pytestmark = pytest.mark.precision  # floating-point paths compared: CI runs these under capped instruction sets too


@pytest.fixture()
def WEIGHTS() -> Path:  # noqa: N802 - reads like the constant it replaces
    return shared_path("peers/prenet")


@pytest.fixture()
def RAIN100L() -> Path:  # noqa: N802
    return shared_path("Rain100L")


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def _rgb_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _reference_prenet(state: dict[str, torch.Tensor], y: torch.Tensor, stages: int = 6) -> torch.Tensor:
    """PReNet written out with F.conv2d straight from the released state dict (separate gate convs)."""

    def conv(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    b, _, height, width = y.shape
    h = torch.zeros(b, 32, height, width)
    c = torch.zeros(b, 32, height, width)
    x = y
    for _ in range(stages):
        x = F.relu(conv("conv0.0", torch.cat([y, x], 1)))
        xh = torch.cat([x, h], 1)
        i = torch.sigmoid(conv("conv_i.0", xh))
        f = torch.sigmoid(conv("conv_f.0", xh))
        g = torch.tanh(conv("conv_g.0", xh))
        o = torch.sigmoid(conv("conv_o.0", xh))
        c = f * c + i * g
        h = o * torch.tanh(c)
        x = h
        for n in range(1, 6):
            r = F.relu(conv(f"res_conv{n}.0", x))
            r = F.relu(conv(f"res_conv{n}.2", r))
            x = F.relu(r + x)
        x = conv("conv.0", x) + y
    return x


def test_registered():
    assert ARCHITECTURES["prenet"] == (PReNet, PReNetConfig)
    assert "prenet" in derain.list_models()
    assert "prenet" not in derain.list_models(pretrained=True)
    spec = model_spec("prenet")
    assert spec.architecture == "prenet" and spec.weights is None
    model = derain.create_model("prenet")
    assert isinstance(model, PReNet) and model.config == PReNetConfig()


def test_config_roundtrip_and_validation():
    cfg = PReNetConfig(stages=3, channels=16, res_blocks=2, recurrent=False)
    assert PReNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown PReNetConfig fields"):
        PReNetConfig.from_dict({"stages": 6, "width": 32})
    with pytest.raises(ValueError):
        PReNetConfig(stages=0)


def test_shapes_any_size_and_stage_outputs():
    torch.manual_seed(0)
    model = PReNet(PReNetConfig(stages=3, channels=8, res_blocks=2)).eval()
    x = torch.rand(2, 3, 13, 21)
    with torch.inference_mode():
        outs = model.stage_outputs(x)
        assert len(outs) == 3 and all(o.shape == x.shape for o in outs)
        torch.testing.assert_close(model(x), outs[-1])
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.rand(1, 1, 8, 8))


def test_prn_variant_has_no_lstm():
    keys = PReNet(PReNetConfig(recurrent=False)).state_dict().keys()
    assert not any(k.startswith("conv_") for k in keys)
    assert PReNet(PReNetConfig(recurrent=False))(torch.rand(1, 3, 9, 9)).shape == (1, 3, 9, 9)


@pytest.mark.parametrize("name", ["Rain100L.pth", "Rain100H.pth"])
def test_official_weights_load_strictly(name, WEIGHTS):
    state = torch.load(WEIGHTS / name, map_location="cpu", weights_only=True)
    model = PReNet()
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in state.values()) == 168963
    assert list(model.state_dict()) == list(state)  # same names, same order
    loaded = derain.load_model(WEIGHTS / name, name="prenet")
    assert isinstance(loaded, PReNet) and not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key])


def test_matches_independent_reimplementation(WEIGHTS):
    state = torch.load(WEIGHTS / "Rain100L.pth", map_location="cpu", weights_only=True)
    model = derain.load_model(WEIGHTS / "Rain100L.pth", name="prenet")
    torch.manual_seed(0)
    y = torch.rand(2, 3, 40, 57)
    with torch.inference_mode():
        ours = model(y)
        ref = _reference_prenet(state, y)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_wrong_checkpoint_names_a_key(tmp_path, WEIGHTS):
    path = tmp_path / "efderain.pth"
    torch.save(derain.create_model("efderain-tiny").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"missing key 'conv0\.0\.weight'"):
        derain.load_model(path, name="prenet")
    # The released PReNet weights do not fit a PRN (no LSTM) either.
    prn = PReNet(PReNetConfig(recurrent=False))
    state = torch.load(WEIGHTS / "Rain100L.pth", map_location="cpu", weights_only=True)
    from derain.models.checkpoint import load_state_dict_strict

    with pytest.raises(CheckpointError, match=r"unexpected key 'conv_i\.0\.weight'"):
        load_state_dict_strict(prn, state)


def test_safetensors_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = PReNet(PReNetConfig(stages=2, channels=8, res_blocks=1)).eval()
    path = derain.save_model(model, tmp_path / "prenet.safetensors")
    loaded = derain.load_model(path)
    assert isinstance(loaded, PReNet) and loaded.config == model.config
    x = torch.rand(1, 3, 11, 12)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))


def test_derains_a_rain100l_image(WEIGHTS, RAIN100L):
    rainy = _read_rgb(RAIN100L / "rainy" / "001.png")
    clean = _read_rgb(RAIN100L / "clean" / "001.png")
    model = derain.load_model(WEIGHTS / "Rain100L.pth", name="prenet")
    with torch.inference_mode():
        out = model(_to_tensor(rainy))
    assert out.shape == (1, 3, *rainy.shape[:2])
    restored = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    before, after = _rgb_psnr(rainy, clean), _rgb_psnr(restored, clean)
    # Measured: 25.97 dB -> 36.73 dB (RGB PSNR, uint8-rounded output) for pair 001.
    assert 25.5 < before < 26.5
    assert 36.2 < after < 37.2
    assert after > before + 10
