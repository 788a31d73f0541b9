"""EfDeRain architecture, registry and model files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import zipfile

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import derain
from derain.bench.faults import WEIGHTS_DAMAGE as DAMAGE  # the damage cases, shared with benchmarks/bench_faults.py
from derain.bench.faults import flip_bit, split_safetensors, with_header
from derain.models import CheckpointError, EfDeRain, EfDeRainConfig, model_spec
from derain.models.checkpoint import (
    DIGEST_KEY,
    file_digest,
    read_state_dict,
    write_digest,
)
from derain.models.efderain import pad_border, pad_to_multiple
from derain.ops.padding import pad_canvas
from derain.ops.fused_filter import fused_filter_available

pytestmark = pytest.mark.precision  # floating-point paths compared: CI runs these under capped instruction sets too


PAPER_PARAMS = 27_395_406


def released_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Independent forward pass of the released network, written from reference.md §1 only."""

    def basic(name: str, t: torch.Tensor) -> torch.Tensor:
        for idx in (0, 2, 4):
            t = F.relu(F.conv2d(t, sd[f"{name}.conv1.{idx}.weight"], sd[f"{name}.conv1.{idx}.bias"], padding=1))
        return t

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

    c1 = basic("conv1", x)
    c2 = basic("conv2", F.avg_pool2d(c1, 2, 2))
    c3 = basic("conv3", F.avg_pool2d(c2, 2, 2))
    c4 = basic("conv4", F.avg_pool2d(c3, 2, 2))
    c5 = basic("conv5", F.avg_pool2d(c4, 2, 2))
    c6 = basic("conv6", torch.cat([c4, up(c5)], 1))
    c7 = basic("conv7", torch.cat([c3, up(c6)], 1))
    c8 = basic("conv8", torch.cat([c2, up(c7)], 1))
    core = F.conv2d(up(c8), sd["outc.weight"], sd["outc.bias"])
    b, _, h, w = x.shape
    outs = []
    for r in (1, 2, 3, 4):
        xp = F.pad(x, (r, r, r, r))
        out = torch.zeros_like(x)
        for c in range(3):
            for i in range(3):
                for j in range(3):
                    out[:, c] += core[:, c * 9 + 3 * i + j] * xp[:, c, r * i : r * i + h, r * j : r * j + w]
        outs.append(out)
    return F.conv2d(torch.cat(outs, 1), sd["conv_final.weight"], sd["conv_final.bias"], padding=1)


def random_released_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the released key names and shapes (larger-than-init weights)."""
    torch.manual_seed(seed)
    reference = EfDeRain()
    return {k: torch.randn_like(v) * (1.0 / max(1, v[0].numel()) ** 0.5) for k, v in reference.state_dict().items()}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TestPaperNetwork:
    def test_parameter_count(self) -> None:
        assert n_params(derain.create_model("efderain-paper")) == PAPER_PARAMS

    def test_released_keys(self) -> None:
        keys = list(derain.create_model("efderain-paper").state_dict())
        assert keys[0] == "conv1.conv1.0.weight"
        assert "conv8.conv1.4.bias" in keys
        assert keys[-4:] == ["outc.weight", "outc.bias", "conv_final.weight", "conv_final.bias"]
        assert len(keys) == 8 * 6 + 4

    def test_matches_released_forward(self, tmp_path) -> None:
        state = random_released_checkpoint()
        path = tmp_path / "v3_rain100H.pth"
        torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DataParallel prefix
        model = derain.load_model(path, name="efderain-paper")
        x = torch.rand(1, 3, 48, 64)
        with torch.no_grad():
            ours = model(x)
            ref = released_forward(state, x)
        assert ref.abs().max() > 1e-2  # the check is not vacuous
        assert (ours - ref).abs().max().item() < 1e-5

    def test_outc_order_is_equivalent(self) -> None:
        torch.manual_seed(0)
        a = EfDeRain(EfDeRainConfig(widths=(8, 8, 8, 8), outc_at_full_resolution=True)).double()
        b = EfDeRain(EfDeRainConfig(widths=(8, 8, 8, 8), outc_at_full_resolution=False)).double()
        b.load_state_dict(a.state_dict())
        for p in a.outc.parameters():  # make outc non-trivial
            p.data.normal_()
        b.load_state_dict(a.state_dict())
        x = torch.rand(1, 3, 32, 40, dtype=torch.float64)
        with torch.no_grad():
            assert (a(x) - b(x)).abs().max().item() < 1e-12


class TestEfDeRainConfig:
    def test_v1_has_no_fusion(self) -> None:
        model = derain.create_model("efderain-v1")
        assert not hasattr(model, "conv_final")
        assert model.config.dilations == (1,)
        assert n_params(model) == PAPER_PARAMS - (12 * 3 * 9 + 3)

    @pytest.mark.parametrize(
        "fields,match",
        [
            ({"widths": (8,)}, "widths"),
            ({"kernel_size": 4}, "odd"),
            ({"dilations": ()}, "dilations"),
            ({"dilations": (0, 1)}, "dilations"),
            ({"fusion": False}, "exactly one dilation"),
            ({"kernel_level": 4}, "kernel_level"),
            ({"depth": 0}, "depth"),
            ({"init": "xavier"}, "init"),
        ],
    )
    def test_invalid(self, fields, match) -> None:
        with pytest.raises(ValueError, match=match):
            EfDeRainConfig(**fields)

    def test_dict_round_trip(self) -> None:
        cfg = EfDeRainConfig(widths=(4, 8, 16), kernel_size=5, dilations=(1, 3), kernel_level=0)
        again = EfDeRainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
        with pytest.raises(ValueError, match="unknown"):
            EfDeRainConfig.from_dict({"width": 3})

    @pytest.mark.parametrize("kernel_level", [0, 1, 2])
    @pytest.mark.parametrize("kernel_size", [1, 3, 5])
    def test_variants_run(self, kernel_level: int, kernel_size: int) -> None:
        model = EfDeRain(EfDeRainConfig(widths=(4, 4, 4, 4), depth=1, kernel_level=kernel_level, kernel_size=kernel_size))
        assert model(torch.rand(2, 3, 19, 21)).shape == (2, 3, 19, 21)


class TestInit:
    """``init="he"`` keeps a deep ReLU KPN's activations at scale from the first step (the released gain 0.02 shrinks
    them layer by layer); either way the output heads start small and the identity init makes the untrained network
    return about its input."""

    CFG = dict(widths=(16, 32, 64, 128, 128), depth=2, stem=2, kernel_level=0, outc_at_full_resolution=False,
               identity_init=True, channel_fusion=True)

    def features_and_output(self, init: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = EfDeRain(EfDeRainConfig(**self.CFG, init=init))
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            feat, _ = model.features(x)
            return feat.abs().mean().item(), (model(x) - x).abs().max().item()

    def test_he_keeps_the_kernel_features_at_scale(self) -> None:
        released, he = self.features_and_output("released")[0], self.features_and_output("he")[0]
        assert released < 0.05 and he > 0.15  # measured 0.017 and 0.40 (9 ReLU convolutions deep)

    @pytest.mark.parametrize("init", ["released", "he"])
    def test_the_untrained_network_is_about_the_identity(self, init: str) -> None:
        assert self.features_and_output(init)[1] < 0.15  # measured 0.003 and 0.06 (max over pixels)

    def test_he_biases_zero_heads_small(self) -> None:
        model = EfDeRain(EfDeRainConfig(**self.CFG, init="he", gate=True))
        conv = model.conv1.conv1[0]
        assert torch.count_nonzero(conv.bias) == 0
        assert 0.5 < conv.weight.std().item() * (conv.weight[0].numel() / 2) ** 0.5 < 1.5  # He: std = sqrt(2 / fan_in)
        assert model.outc.weight.std() < 0.01 and model.gate.weight.std() < 0.01  # the released init (gain 0.02)


def perturbed_efderain(name: str, **overrides) -> EfDeRain:
    """Registered model ``name`` (config ``overrides``) in eval mode, weights moved away from the identity init so every tap matters."""
    model = derain.create_model(name, **overrides).eval()
    assert isinstance(model, EfDeRain)
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("name", derain.list_models())
class TestRegistry:
    """Every registered model: smoke, shape, any size, backward, eval determinism."""

    def test_shapes(self, name: str) -> None:
        model = derain.create_model(name).eval()
        with torch.no_grad():
            for shape in [(1, 3, 17, 33), (2, 3, 32, 32), (1, 3, 1, 5)]:
                assert model(torch.rand(*shape)).shape == shape

    def test_backward(self, name: str) -> None:
        model = derain.create_model(name)
        x = torch.rand(1, 3, 32, 48)
        model(x).abs().mean().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0

    def test_spec(self, name: str) -> None:
        spec = model_spec(name)
        assert spec.name == name and spec.description

    def test_wrong_input(self, name: str) -> None:
        with pytest.raises(ValueError, match="expected input"):
            derain.create_model(name)(torch.rand(1, 4, 16, 16))


EFDERAIN_MODELS = [n for n in derain.list_models() if model_spec(n).architecture.startswith("efderain")]  # and its variants


@pytest.mark.parametrize("name", EFDERAIN_MODELS)
class TestRegisteredEfDeRain:
    """Every registered EfDeRain model: the cropped and fused inference paths equal the plain computation."""

    @pytest.mark.parametrize("centre", [False, True])
    def test_forward_is_the_uncropped_filtering(self, name: str, centre: bool) -> None:
        """forward skips the padding beyond the taps' reach at full resolution: same output as filtering all of it,
        on the canvas of :func:`~derain.ops.padding.pad_canvas` (the image at its top-left, or centred)."""
        model = perturbed_efderain(name, centre_canvas=centre)
        cfg = model.config
        lead = model.border  # reflect border of the taps' reach (0 as released)
        assert lead == (5 if (cfg.unit_kernels or cfg.channel_fusion) else 0) and model.centred == centre
        parts = 2 if centre else 1  # the slack to the multiple is split between top and bottom when centred
        slack = min(parts * (model.reach + 1), cfg.multiple - 1)  # padded below by more than the reach where it fits
        height = 2 * cfg.multiple - 2 * lead - slack
        x = torch.rand(1, 3, height, 70, requires_grad=True)
        padded, (top, left) = pad_canvas(x, lead, cfg.multiple, centre)
        slack = padded.shape[-2] - height - 2 * lead
        assert (top, left) == ((lead + slack // 2, lead + (padded.shape[-1] - 70 - 2 * lead) // 2) if centre else (lead, lead))
        assert padded.shape[-1] % cfg.multiple == 0 and torch.equal(padded[..., top : top + height, left : left + 70], x)
        below = padded.shape[-2] - top - height
        assert below > model.reach or slack == cfg.multiple - 1  # the cropped path runs where the multiple leaves room
        full = model.padded_forward(padded)[..., top : top + height, left : left + 70]
        out = model(x)
        torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()

    @pytest.mark.parametrize("centre", [False, True])
    @pytest.mark.usefixtures("fused_isa")
    def test_fused_kernel_is_the_eager_path(self, name: str, centre: bool) -> None:
        """Inference runs the full-resolution stage in the fused C kernel: same output as the eager path."""
        model = perturbed_efderain(name, centre_canvas=centre)
        x = torch.rand(2, 3, 37, 70)
        with torch.no_grad():
            fused_expected = fused_filter_available() and model.config.fusion and not model.config.outc_at_full_resolution
            assert model.uses_fused_kernel(x) == fused_expected
            out = model(x)
            model.filter_implementation = "fast"
            assert not model.uses_fused_kernel(x)
            torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
        model.filter_implementation = "auto"
        assert not model.uses_fused_kernel(x.requires_grad_())  # training needs the eager path's gradient



class TestNoHarmConstraints:
    """``unit_kernels`` and ``channel_fusion``: flat areas of any colour pass unchanged, whatever the weights."""

    @staticmethod
    def model(**fields) -> EfDeRain:
        model = EfDeRain(EfDeRainConfig(widths=(8, 8, 8), depth=1, stem=2, kernel_level=0, outc_at_full_resolution=False,
                                        identity_init=True, **fields)).eval()
        torch.manual_seed(1)
        for p in model.parameters():
            p.data.add_(torch.randn_like(p) * 0.2)
        return model

    @pytest.mark.parametrize("size", [(1, 1), (3, 5), (37, 70), (64, 64)])
    @pytest.mark.parametrize("implementation", ["auto", "fast", "reference"])
    def test_flat_colour_comes_back(self, size, implementation) -> None:
        model = self.model(unit_kernels=True, channel_fusion=True)
        model.filter_implementation = implementation
        for colour in [(0.9, 0.9, 0.9), (0.1, 0.6, 0.95), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]:
            x = torch.tensor(colour).view(1, 3, 1, 1).expand(2, 3, *size).contiguous()
            with torch.no_grad():
                torch.testing.assert_close(model(x), x, rtol=0, atol=5e-5)  # fp32 rounding: 0.013 levels
                with torch.autocast("cpu", dtype=torch.bfloat16):  # kernels and fusion stay fp32
                    torch.testing.assert_close(model(x).float(), x, rtol=0, atol=5e-5)

    def test_without_constraints_flat_colour_changes(self) -> None:
        """The same perturbed weights without the constraints do change a flat colour (the test above can fail)."""
        x = torch.full((1, 3, 37, 70), 0.5)
        with torch.no_grad():
            assert (self.model()(x) - x).abs().max() > 0.01
            assert (self.model(unit_kernels=True)(x) - x).abs().max() > 0.01  # the fusion alone still shifts

    def test_projected_parameters(self) -> None:
        model = self.model(unit_kernels=True, channel_fusion=True)
        w, b = model.outc_params()
        feat = torch.randn(4, w.shape[1])
        kernels = (feat @ w[:, :, 0, 0].T + b).view(4, 3, 9)
        torch.testing.assert_close(kernels.sum(-1), torch.ones(4, 3))
        fw, fb = model.fusion_params()
        sums = fw.view(3, 4, 3, 9).sum((1, 3))  # out colour x in colour
        torch.testing.assert_close(sums, torch.eye(3))
        assert not fb.any()
        # the raw parameters are untouched (the projection happens in the forward pass)
        assert not torch.equal(model.outc.weight, w) and not torch.equal(model.conv_final.weight, fw)

    def test_gradient_flows_through_the_projection(self) -> None:
        model = self.model(unit_kernels=True, channel_fusion=True).train()
        model(torch.rand(1, 3, 32, 32)).square().mean().backward()
        assert model.outc.weight.grad.abs().sum() > 0 and model.conv_final.weight.grad.abs().sum() > 0


class TestRainGate:
    """``gate``: output = input + m·(filtered − input) with the predicted gate m in (0, 1)."""

    @staticmethod
    def model(**fields) -> EfDeRain:
        return TestNoHarmConstraints.model(channel_fusion=True, gate=True, **fields)

    def test_closed_gate_returns_the_input_exactly(self) -> None:
        model = self.model()
        with torch.no_grad():
            model.gate.bias.fill_(-30.0)
            x = torch.rand(2, 3, 37, 70)
            assert torch.equal(model(x), x)
            model.gate.bias.fill_(30.0)
            assert (model(x) - x).abs().max() > 0.01  # the same weights with the gate open change it

    def test_output_is_the_gated_blend(self) -> None:
        model = self.model()
        x = torch.rand(1, 3, 64, 64)
        ungated = EfDeRain(dataclasses.replace(model.config, gate=False)).eval()
        ungated.load_state_dict(model.state_dict(), strict=False)
        b = model.border
        with torch.no_grad():  # the forward pass's padding: reflect by the border, then to the multiple
            padded, _ = pad_to_multiple(pad_border(x, b), model.config.multiple)
            m = model.gate_map(model.kernel_features(padded))[..., b : b + 64, b : b + 64]
            assert 0 < m.min() and m.max() < 1
            torch.testing.assert_close(model(x), x + m * (ungated(x) - x), rtol=0, atol=1e-5)

    @pytest.mark.parametrize("implementation", ["fast", "reference"])
    @pytest.mark.usefixtures("fused_isa")
    def test_fused_kernel_path_equals_eager(self, implementation) -> None:
        model = self.model()
        x = torch.rand(1, 3, 45, 61)
        with torch.no_grad():
            assert model.uses_fused_kernel(x)
            fused = model(x)
            model.filter_implementation = implementation
            torch.testing.assert_close(fused, model(x), rtol=0, atol=1e-5)

    @pytest.mark.parametrize("width", [0, 8])
    def test_starts_open_and_ungated_weights_load_without_it(self, width) -> None:
        model = EfDeRain(EfDeRainConfig(widths=(8, 8, 8), depth=1, stem=2, kernel_level=0, gate=True, gate_width=width))
        with torch.no_grad():
            m = model.gate_map(model.kernel_features(torch.rand(1, 3, 16, 16)))
        assert 0.94 < m.min() and m.max() < 0.96
        ungated = EfDeRain(dataclasses.replace(model.config, gate=False, gate_width=0))
        heads = {"gate.weight", "gate.bias"} if not width else {"gate.0.weight", "gate.0.bias", "gate.2.weight", "gate.2.bias"}
        assert set(model.state_dict()) - set(ungated.state_dict()) == heads

    def test_return_gate_gives_the_gate_of_the_output(self) -> None:
        model = self.model()
        x = torch.rand(2, 3, 37, 70)
        with torch.no_grad():
            out, gate = model(x, return_gate=True)
            assert torch.equal(out, model(x)) and gate.shape == (2, 1, 37, 70) and 0 < gate.min() and gate.max() < 1
            model.gate.bias.fill_(-30.0)
            out, gate = model(x, return_gate=True)
            assert gate.max() < 1e-6 and torch.equal(out, x)
            ungated = EfDeRain(dataclasses.replace(model.config, gate=False)).eval()
            out, gate = ungated(x, return_gate=True)
            assert gate is None and out.shape == x.shape

    @pytest.mark.usefixtures("fused_isa")
    def test_wide_head_sees_a_neighbourhood_and_starts_open(self) -> None:
        model = self.model(gate_width=8)
        assert model.gate[0].weight.shape == (8, 27, 3, 3) and model.gate[2].weight.shape == (1, 8, 1, 1)
        x = torch.rand(1, 3, 45, 61)
        with torch.no_grad():
            _, gate = model(x, return_gate=True)
            assert gate.mean() > 0.8 and gate.std() > 1e-4  # open, and not constant: the hidden layer is alive
            assert model.uses_fused_kernel(x)
            fused = model(x)
            model.filter_implementation = "fast"
            torch.testing.assert_close(fused, model(x), rtol=1e-5, atol=1e-5)  # float sums in another order
        with pytest.raises(ValueError, match="gate_width"):
            EfDeRainConfig(gate_width=8)

    @pytest.mark.usefixtures("fused_isa")
    def test_global_gate_closes_the_whole_image(self) -> None:
        model = self.model(gate_global=True)
        with torch.no_grad():
            model.gate.bias.fill_(30.0)  # the per-pixel gate open
        pixel_only = EfDeRain(dataclasses.replace(model.config, gate_global=False)).eval()
        pixel_only.load_state_dict(model.state_dict(), strict=False)
        x = torch.rand(2, 3, 45, 61)
        with torch.no_grad():
            model.gate_global.weight.zero_()
            model.gate_global.bias.fill_(30.0)  # wide open: the per-pixel gate alone
            out, gate = model(x, return_gate=True)
            torch.testing.assert_close(out, pixel_only(x), rtol=0, atol=1e-6)
            assert gate.shape == (2, 1, 45, 61) and (out - x).abs().max() > 0.01
            model.gate_global.bias.fill_(-30.0)  # judged dry as a whole: the input comes back exactly
            assert torch.equal(model(x), x)
            model.gate_global.bias.fill_(0.0)
            assert model.uses_fused_kernel(x)
            fused = model(x)
            model.filter_implementation = "fast"
            torch.testing.assert_close(fused, model(x), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="gate_global"):
            EfDeRainConfig(gate_global=True)

    def test_a_judge_judges_apart_from_the_kpn(self, tmp_path) -> None:
        """``judge_widths``: the image head reads the judge's features: ``forward`` applies the judgement that
        ``image_gate`` makes; the KPN's weights do not move it and its loss trains the judge, not the KPN; a judged
        model starts from a plain one's weights with its judge and image head new (open), and saves and loads."""
        from derain.models.checkpoint import save_model
        from derain.training.trainer import _load_init_weights

        model = self.model(gate_global=True, judge_widths=(8, 16), init="he")
        x = torch.rand(2, 3, 45, 61, generator=torch.Generator().manual_seed(0))
        x[1] = 0.5 + 0.5 * x[1]  # a dim and a bright image: judged apart
        with torch.no_grad():
            model.gate.bias.fill_(30.0)
            model.gate_global.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))  # depends on the image
            model.gate_global.bias.zero_()
            judged = model.image_gate(x)
            assert judged.shape == (2, 1) and (judged.max() - judged.min()) > 1e-3
            torch.testing.assert_close(model(x), model(x, whole=judged), rtol=0, atol=1e-6)
            model.conv1.conv1[0].weight.mul_(2.0)
            assert torch.equal(model.image_gate(x), judged)  # the KPN changed, the judgement did not
            model.judge[1].weight.mul_(2.0)
            assert not torch.equal(model.image_gate(x), judged)
        model.image_gate(x).sum().backward()
        assert model.conv1.conv1[0].weight.grad is None and model.judge[1].weight.grad.abs().sum() > 0
        plain = self.model(gate_global=True, init="he")
        save_model(plain, tmp_path / "plain.safetensors")
        fresh = EfDeRain(model.config)  # as initialised: the heads start open
        assert _load_init_weights(fresh, str(tmp_path / "plain.safetensors")) == ["gate_global", "judge"]
        assert torch.equal(fresh.conv1.conv1[0].weight, plain.conv1.conv1[0].weight)
        torch.testing.assert_close(fresh.image_gate(x), torch.full((2, 1), 0.99), rtol=0, atol=1e-3)  # starts open
        # a judge as wide as the KPN's deepest level: the image head fits in shape but read other features, so it starts anew
        wide = EfDeRain(dataclasses.replace(model.config, judge_widths=(8, 8)))
        assert _load_init_weights(wide, str(tmp_path / "plain.safetensors")) == ["gate_global", "judge"]
        torch.testing.assert_close(wide.image_gate(x), torch.full((2, 1), 0.99), rtol=0, atol=1e-3)
        save_model(model, tmp_path / "judged.safetensors")
        loaded = derain.load_model(tmp_path / "judged.safetensors")
        assert loaded.config.judge_widths == (8, 16)
        with torch.no_grad():
            torch.testing.assert_close(loaded.image_gate(x), model.image_gate(x), rtol=0, atol=0)
        with pytest.raises(ValueError, match="judge_widths"):
            EfDeRainConfig(gate=True, judge_widths=(8,))

    def test_a_judged_model_compiles_and_exports(self, tmp_path) -> None:
        """The judge is part of the low-resolution stage: the compiled stage and an ONNX export compute what eager does."""
        from derain.inference.compiled import compile_model

        model = self.model(gate_global=True, judge_widths=(8, 16))
        with torch.no_grad():
            model.gate.bias.fill_(30.0)
            model.gate_global.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
            model.gate_global.bias.zero_()
        x = torch.rand(2, 3, 45, 61, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            eager = model(x)
            assert (eager - x).abs().max() > 1e-3
            torch.testing.assert_close(compile_model(model, backend="eager")(x), eager, rtol=0, atol=1e-4)  # sums in another order
        pytest.importorskip("onnxruntime")
        from derain.inference.onnx_export import OnnxDerainer, export_onnx

        runner = OnnxDerainer(export_onnx(model, tmp_path / "m.onnx"), threads=1)
        reference = derain.load_derainer(model, precision="fp32").run_tensor(x)
        assert (runner.run_tensor(x) - reference).abs().max().item() <= 1e-3

    def test_detached_gates_train_their_heads_only(self) -> None:
        """``gate_detach``: the same output, and a loss on it (or on the image gate) reaches the gate heads but
        reaches the KPN only along the filtering, not through the gates."""
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        attached = self.model(gate_global=True)
        detached = EfDeRain(dataclasses.replace(attached.config, gate_detach=True)).eval()
        detached.load_state_dict(attached.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(detached(x), attached(x), rtol=0, atol=0)
        for model in (attached, detached):
            model.image_gate(x).sum().backward()
            assert model.gate_global.weight.grad.abs().sum() > 0
        assert attached.conv3.conv1[0].weight.grad.abs().sum() > 0  # the image gate's loss moves the KPN ...
        assert detached.conv3.conv1[0].weight.grad is None  # ... unless detached
        for model in (attached, detached):
            model.zero_grad(set_to_none=True)
            _, gate = model(x, return_gate=True)
            gate.sum().backward()  # the gate's own loss (as gate_weight's)
            assert model.gate.weight.grad.abs().sum() > 0
        assert attached.conv1.conv1[0].weight.grad.abs().sum() > 0
        assert detached.conv1.conv1[0].weight.grad is None

    def test_gradient_reaches_the_gate(self) -> None:
        model = self.model().train()
        model(torch.rand(1, 3, 32, 32)).square().mean().backward()
        assert model.gate.weight.grad.abs().sum() > 0 and model.gate.bias.grad.abs() > 0


def test_paper_size_image_padding() -> None:
    model = derain.create_model("efderain-tiny").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 321, 481)).shape == (1, 3, 321, 481)


def test_pad_to_multiple() -> None:
    x = torch.arange(12.0).view(1, 1, 3, 4)
    padded, size = pad_to_multiple(x, 4)
    assert size == (3, 4) and padded.shape == (1, 1, 4, 4)
    assert torch.equal(padded[0, 0, 3], x[0, 0, 1])  # reflect: row 3 mirrors row 1
    tiny, _ = pad_to_multiple(torch.ones(1, 1, 1, 1), 16)
    assert tiny.shape == (1, 1, 16, 16) and torch.equal(tiny, torch.ones(1, 1, 16, 16))


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'.*efderain-paper"):
        derain.create_model("nope")


def test_pretrained_without_weights() -> None:
    """A registered model without bundled weights: a user error that says to pass --weights."""
    from derain.errors import UserError

    for name in ("efderain-paper", "prenet"):
        with pytest.raises(ValueError, match="no bundled weights: pass its weights file with --weights FILE") as info:
            derain.create_model(name, pretrained=True)
        assert isinstance(info.value, UserError) and "\n" not in str(info.value)


class TestModelFiles:
    def test_safetensors_round_trip(self, tmp_path) -> None:
        model = derain.create_model("efderain-tiny", kernel_size=5, dilations=(1, 2))
        path = derain.save_model(model, tmp_path / "m.safetensors", metadata={"note": "x"})
        loaded = derain.load_model(path)
        assert loaded.config == model.config
        x = torch.rand(1, 3, 24, 40)
        with torch.no_grad():
            assert torch.equal(loaded(x), model.eval()(x))
        assert not list(tmp_path.glob("*.tmp"))

    def test_fp16_file(self, tmp_path) -> None:
        model = derain.create_model("efderain-tiny")
        path = derain.save_model(model, tmp_path / "m.safetensors", dtype=torch.float16)
        loaded = derain.load_model(path)
        assert next(loaded.parameters()).dtype == torch.float32
        for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3, msg=k)

    def test_missing_key(self, tmp_path) -> None:
        state = random_released_checkpoint()
        del state["conv3.conv1.2.weight"]
        torch.save(state, tmp_path / "bad.pth")
        with pytest.raises(CheckpointError, match="missing key 'conv3.conv1.2.weight'"):
            derain.load_model(tmp_path / "bad.pth", name="efderain-paper")

    def test_unexpected_key(self, tmp_path) -> None:
        state = random_released_checkpoint()
        state["extra.weight"] = torch.zeros(1)
        torch.save(state, tmp_path / "bad.pth")
        with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
            derain.load_model(tmp_path / "bad.pth", name="efderain-paper")

    def test_wrong_shape(self, tmp_path) -> None:
        torch.save(derain.create_model("efderain-small").state_dict(), tmp_path / "small.pth")
        with pytest.raises(CheckpointError, match="key 'conv1.conv1.0.weight' has shape"):
            derain.load_model(tmp_path / "small.pth", name="efderain-paper")

    def test_pth_needs_name(self, tmp_path) -> None:
        torch.save(derain.create_model("efderain-tiny").state_dict(), tmp_path / "t.pth")
        with pytest.raises(CheckpointError, match="carries no architecture"):
            derain.load_model(tmp_path / "t.pth")

    def test_no_pickled_code(self, tmp_path) -> None:
        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))

        torch.save({"x": Evil()}, tmp_path / "evil.pth")
        with pytest.raises(CheckpointError, match="not a readable PyTorch state dict.*pickled code") as info:
            derain.load_model(tmp_path / "evil.pth", name="efderain-paper")
        assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)  # one line, no bad advice

    @pytest.mark.parametrize("content", [b"", b"not a model"])
    def test_garbage_files(self, tmp_path, content: bytes) -> None:
        for suffix in (".pth", ".safetensors"):
            path = tmp_path / f"g{suffix}"
            path.write_bytes(content)
            with pytest.raises(CheckpointError, match=str(path.name)):
                derain.load_model(path, name="efderain-tiny")

    @pytest.mark.parametrize(
        ("make", "kind"),
        [
            (lambda p: Image.new("RGB", (8, 6), (9, 99, 199)).save(p, format="JPEG"), "a JPEG image"),
            (lambda p: Image.new("L", (8, 6)).save(p, format="PNG"), "a PNG image"),
            (lambda p: p.write_text("step 100: loss 0.02\n"), "a text file"),
            (lambda p: p.write_bytes(b""), "empty: 0 bytes"),
            (lambda p: p.mkdir(), "a folder"),
            (lambda p: zipfile.ZipFile(p, "w").close(), "a ZIP archive without PyTorch data"),
            (lambda p: p.write_bytes(bytes(range(256)) * 4), "neither safetensors nor a PyTorch state dict"),
        ],
    )
    def test_files_that_are_not_weights_say_what_they_are(self, tmp_path, make, kind: str) -> None:
        """Told by their first bytes, whatever their name; one line, nothing about pickles."""
        for suffix in (".jpg", ".pth", ".safetensors"):
            path = tmp_path / f"x{suffix}"
            make(path)
            for name in (None, "efderain-tiny"):
                with pytest.raises(CheckpointError) as info:
                    derain.load_model(path, name=name)
                assert str(info.value) == f"{path}: not a weights file ({kind})"
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def test_pickled_code_named_like_an_image_is_still_refused(self, tmp_path, capfd) -> None:
        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))

        torch.save({"x": Evil()}, tmp_path / "evil.jpg")
        with pytest.raises(CheckpointError, match="evil.jpg: not a readable PyTorch state dict.*pickled code"):
            derain.load_model(tmp_path / "evil.jpg", name="efderain-paper")
        assert "pwned" not in capfd.readouterr().out

    def test_missing_file(self, tmp_path) -> None:
        with pytest.raises(CheckpointError, match="no such file"):
            derain.load_model(tmp_path / "none.safetensors")

    def test_name_overrides_metadata(self, tmp_path) -> None:
        path = derain.save_model(derain.create_model("efderain-small"), tmp_path / "s.safetensors")
        with pytest.raises(CheckpointError, match="s.safetensors does not match EfDeRain: unexpected key"):
            derain.load_model(path, name="efderain-tiny")




class TestWeightsIntegrity:
    """``derain.sha256``: written by save_model, checked by every load; damaged files are refused in one line."""

    @pytest.fixture
    def saved(self, tmp_path):
        return derain.save_model(derain.create_model("efderain-tiny"), tmp_path / "good.safetensors")

    @pytest.mark.parametrize("case", list(DAMAGE))
    def test_damaged_file_is_refused_in_one_line(self, saved, tmp_path, case: str) -> None:
        damage, reason = DAMAGE[case]
        path = tmp_path / "damaged.safetensors"
        path.write_bytes(damage(saved.read_bytes()))
        assert path.read_bytes() != saved.read_bytes()
        for load in (lambda: derain.load_model(path), lambda: derain.create_model("efderain-tiny", checkpoint_path=path),
                     lambda: read_state_dict(path)):
            with pytest.raises(CheckpointError, match=reason) as info:
                load()
            message = str(info.value)
            assert message.startswith(f"{path}: ") and "\n" not in message, message

    def test_saved_file_carries_its_hash(self, saved) -> None:
        meta = split_safetensors(saved.read_bytes())[1]["__metadata__"]
        assert re.fullmatch(r"[0-9a-f]{64}", meta[DIGEST_KEY]) and meta[DIGEST_KEY] == file_digest(saved)
        assert meta[DIGEST_KEY] == _independent_digest(saved.read_bytes())
        fp16 = derain.save_model(derain.create_model("efderain-tiny"), saved.with_name("h.safetensors"), dtype=torch.float16)
        assert split_safetensors(fp16.read_bytes())[1]["__metadata__"][DIGEST_KEY] == _independent_digest(fp16.read_bytes())

    def test_hash_does_not_depend_on_key_order_or_padding(self, saved, tmp_path) -> None:
        """Another writer may order the header's keys (and space it) otherwise: the same file, the same hash."""
        blob = saved.read_bytes()
        header = split_safetensors(blob)[1]
        reordered = {k: header[k] for k in reversed(list(header))}
        reordered["__metadata__"] = {k: header["__metadata__"][k] for k in sorted(header["__metadata__"], reverse=True)}
        path = tmp_path / "reordered.safetensors"
        path.write_bytes(with_header(blob, reordered, indent=2))
        assert path.read_bytes() != blob and file_digest(path) == file_digest(saved)
        for key, value in derain.load_model(saved).state_dict().items():
            assert torch.equal(derain.load_model(path).state_dict()[key], value)

    def test_files_without_a_hash_still_load(self, saved, tmp_path) -> None:
        """Older files and other tools' files carry no hash: they load (nothing to check) unless visibly cut."""
        from safetensors.torch import save_file

        model = derain.load_model(saved)
        header = split_safetensors(saved.read_bytes())[1]
        meta = {k: v for k, v in header["__metadata__"].items() if k != DIGEST_KEY}
        old = tmp_path / "old.safetensors"
        save_file(model.state_dict(), str(old), metadata=meta)
        assert DIGEST_KEY not in split_safetensors(old.read_bytes())[1]["__metadata__"]
        for key, value in derain.load_model(old).state_dict().items():
            assert torch.equal(model.state_dict()[key], value)
        foreign = tmp_path / "foreign.safetensors"  # no metadata at all
        save_file(model.state_dict(), str(foreign))
        derain.create_model("efderain-tiny", checkpoint_path=foreign)
        torch.save(model.state_dict(), tmp_path / "raw.pth")
        derain.create_model("efderain-tiny", checkpoint_path=tmp_path / "raw.pth")
        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(old.read_bytes()[:-3])
        with pytest.raises(CheckpointError, match=r"cut.safetensors: truncated"):
            derain.load_model(cut)
        # write_digest adds the hash to such a file, its tensors and the rest of its metadata unchanged
        before = old.read_bytes()
        write_digest(old)
        after = old.read_bytes()
        assert after[8 + split_safetensors(after)[0] :] == before[8 + split_safetensors(before)[0] :]
        stamped = split_safetensors(after)[1]
        assert stamped["__metadata__"].pop(DIGEST_KEY) == _independent_digest(after)
        assert stamped == split_safetensors(before)[1]
        derain.load_model(old)
        flipped = tmp_path / "flipped.safetensors"
        flipped.write_bytes(flip_bit(lambda b, n: len(b) - 1)(after))
        with pytest.raises(CheckpointError, match="do not match"):
            write_digest(flipped)  # damage is never sealed in

    @pytest.mark.parametrize("name", ["default", "fast"])
    def test_bundled_weights_carry_a_hash_that_checks(self, name: str) -> None:
        from derain.models.registry import bundled_weights_path

        path = bundled_weights_path(name)
        blob = path.read_bytes()
        meta = split_safetensors(blob)[1]["__metadata__"]
        assert meta[DIGEST_KEY] == _independent_digest(blob) == file_digest(path)
        assert meta["derain.name"] == name  # the other metadata is still there
        derain.create_model(name, pretrained=True)

    @pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
    def test_damaged_weights_through_the_cli(self, saved, tmp_path) -> None:
        """``derain run x.jpg --weights damaged.safetensors``: one line, exit code 1, no traceback, no output."""
        import subprocess
        import sys

        Image.new("RGB", (40, 30), (90, 120, 150)).save(tmp_path / "x.jpg")
        for case in ("bit in the middle of the data", "cut in the middle of the data", "a hash one digit short"):
            damaged = tmp_path / "damaged.safetensors"
            damaged.write_bytes(DAMAGE[case][0](saved.read_bytes()))
            proc = subprocess.run([sys.executable, "-m", "derain.cli.main", "run", "x.jpg", "--weights", "damaged.safetensors"],
                                  check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 1, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and "damaged.safetensors: " in lines[0] and "Traceback" not in proc.stderr, proc.stderr
            assert not (tmp_path / "derained").exists() or not any((tmp_path / "derained").iterdir())


def _independent_digest(blob: bytes) -> str:
    """``derain.sha256`` as :func:`derain.models.checkpoint.file_digest`'s docstring defines it, computed here."""
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    header["__metadata__"].pop(DIGEST_KEY, None)
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    return hashlib.sha256(len(canonical).to_bytes(8, "little") + canonical + blob[8 + size :]).hexdigest()
