"""Strength and one judgement per image: ``--strength``, ``Derainer(strength=)``, ``derain.derain(strength=)``,
the service's ``?strength=``; a model that judges images (EfDeRain's ``gate_global``) judges each image once,
so its tiles agree with the whole."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import derain
from derain.inference import derainer as derainer_module
from derain.inference.derainer import Derainer, resolve_strength
from derain.models.efderain import EfDeRain, EfDeRainConfig
from derain.service import create_app
from derain.service.testing import encode_image, rainy_photo


def judging_model(whole_bias: float | None = None) -> EfDeRain:
    """A small gated model that judges images (gate_global), weights perturbed so it changes its input."""
    cfg = EfDeRainConfig(widths=(8, 8, 8), depth=1, stem=2, kernel_level=0, identity_init=True, channel_fusion=True,
                         gate=True, gate_global=True)
    torch.manual_seed(3)
    model = EfDeRain(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.gate.bias.fill_(30.0)  # the per-pixel gate open: the image's judgement decides
        if whole_bias is None:
            model.gate_global.weight.mul_(20.0)  # the judgement depends on the image
            model.gate_global.bias.zero_()
        else:  # a fixed judgement: dry (< 0) or rainy (> 0) whatever the image
            model.gate_global.weight.zero_()
            model.gate_global.bias.fill_(whole_bias)
    return model


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255
    img = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((w, h), Image.BILINEAR)).copy()
    img[::7, :, :] = 255  # bright lines: something for the filtering to change
    return img


class TestResolveStrength:
    @pytest.mark.parametrize("value, expected", [(None, "auto"), ("auto", "auto"), (" AUTO ", "auto"), (0, 0.0), ("1", 1.0), (0.25, 0.25)])
    def test_values(self, value, expected):
        assert resolve_strength(value) == expected

    @pytest.mark.parametrize("value", [-0.1, 1.5, "strong", "nan", float("nan"), [1]])
    def test_bad_values_are_refused(self, value):
        with pytest.raises(ValueError, match="strength must be"):
            resolve_strength(value)


class TestStrength:
    def test_zero_returns_the_input_exactly(self):
        img = photo()
        d = Derainer(judging_model(), precision="fp32")
        assert np.array_equal(d(img, strength=0), img)
        assert np.array_equal(Derainer(judging_model(), precision="fp32", strength=0)(img), img)
        assert np.array_equal(derain.derain(img, model=judging_model(), precision="fp32", strength=0), img)
        x = torch.rand(1, 3, 40, 56)
        assert torch.equal(derain.derain(x, model=judging_model(), precision="fp32", strength=0), x)

    def test_one_ignores_a_closed_judgement(self):
        """A model that judges the image dry returns it unchanged under auto; strength 1 removes rain all the same,
        exactly as the model with its judgement wide open."""
        x = torch.rand(1, 3, 48, 64)
        closed = Derainer(judging_model(whole_bias=-1e4), precision="fp32")
        opened = Derainer(judging_model(whole_bias=1e4), precision="fp32")
        assert (closed.run_tensor(x) - x).abs().max() < 1e-6
        forced = closed.run_tensor(x, strength=1)
        assert (forced - x).abs().mean() > 0.01
        torch.testing.assert_close(forced, opened.run_tensor(x), rtol=0, atol=1e-6)

    def test_a_fraction_is_that_much_of_the_full_removal(self):
        x = torch.rand(2, 3, 48, 64)
        d = Derainer(judging_model(), precision="fp32")
        full = d.run_tensor(x, strength=1)
        inside = (full > 0) & (full < 1)  # where the full removal was not clamped
        assert inside.float().mean() > 0.5
        part = d.run_tensor(x, strength=0.3)
        torch.testing.assert_close(part[inside], (x + 0.3 * (full - x))[inside], rtol=0, atol=1e-5)

    def test_a_model_that_does_not_judge_is_blended(self):
        torch.manual_seed(0)
        model = derain.create_model("efderain-tiny", identity_init=True)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        x = torch.rand(1, 3, 40, 56)
        d = Derainer(model, precision="fp32")
        assert not d.judges_images
        full = d.run_tensor(x)
        assert torch.equal(d.run_tensor(x, strength=1), full)
        inside = (full > 0) & (full < 1)
        assert inside.float().mean() > 0.5
        torch.testing.assert_close(d.run_tensor(x, strength=0.5)[inside], (x + 0.5 * (full - x))[inside], rtol=0, atol=1e-6)

    def test_the_bundled_default_judges_and_takes_a_strength(self, shared_dataset):
        """On a rain-free photo the default judges dry, its judgement holds removal back; strength 1 overrides it."""
        d = Derainer("default", precision="fp32")
        assert d.judges_images
        img = np.asarray(rainy_photo())
        assert psnr(d(img, strength=0), img) == float("inf")
        for path in sorted(shared_dataset("clean").rglob("*.jpg"))[:40]:  # the first photo it finds dry
            rgb = Image.open(path).convert("RGB")
            dry = np.asarray(rgb.resize((256, 256 * rgb.height // rgb.width), Image.BICUBIC))
            if float(d.judge(torch.from_numpy(dry.copy()).permute(2, 0, 1)[None].float() / 255)) < 0.1:
                break
        else:
            pytest.fail("the default judged none of 40 rain-free photos dry")
        auto, full = d(dry), d(dry, strength=1)
        assert psnr(auto, dry) > 45 and psnr(full, dry) < psnr(auto, dry) - 5, (psnr(full, dry), psnr(auto, dry))


class TestOneJudgementPerImage:
    def test_tiles_get_the_image_judgement(self, monkeypatch):
        """Tiled, every tile runs with the judgement of the whole image, made once: tiles and whole agree."""
        model = judging_model()
        d = Derainer(model, precision="fp32")
        img = photo(96, 128)
        judged = []
        real_judge = d.judge
        monkeypatch.setattr(d, "judge", lambda view: judged.append(view.shape) or real_judge(view))
        whole = d(img, tile=0)
        assert judged == []  # one pass: the model judges the image itself
        tiled = d(img, tile=48, overlap=8)
        assert judged == [(1, 3, 96, 128)]  # once, on all of it (it fits JUDGE_PIXELS)
        assert psnr(tiled, whole) >= 45
        # per-tile judgements (what the model would do on its own) disagree: the test can tell them apart
        per_tile = derain.inference.tiling.derain_array(d.run_tensor, img, 48, 8)
        assert psnr(per_tile, whole) < psnr(tiled, whole) - 3

    def test_a_large_image_is_judged_on_a_downscaled_copy_tiled_or_not(self, monkeypatch):
        monkeypatch.setattr(derainer_module, "JUDGE_PIXELS", 48 * 64)  # this 96x128 image counts as large
        d = Derainer(judging_model(), precision="fp32")
        img = photo(96, 128, seed=1)
        views = []
        real_judge = d.judge
        monkeypatch.setattr(d, "judge", lambda view: views.append(tuple(view.shape)) or real_judge(view))
        untiled, tiled = d(img, tile=0), d(img, tile=48, overlap=8)
        assert views == [(1, 3, 48, 64), (1, 3, 48, 64)]
        assert psnr(tiled, untiled) >= 45
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        tensor_path = (d.run_tiled(x, 0) * 255).round().byte()[0].permute(1, 2, 0).numpy()
        assert np.abs(tensor_path.astype(int) - untiled).max() <= 1  # the tensor path judges the same way

    def test_a_big_real_photo_tiled_and_untiled_agree(self, shared_dataset):
        """The bundled default on a real rainy photo enlarged past the automatic tiling: the tiles' outputs
        match one pass over the whole (they used to differ where each tile judged itself)."""
        rgb = Image.open(shared_dataset("InternetData147") / "rainy" / "119.jpg").convert("RGB")
        big = np.asarray(rgb.resize((1400, 1400 * rgb.height // rgb.width), Image.BICUBIC))
        d = Derainer("default", precision="bf16")
        assert psnr(d(big), d(big, tile=0)) >= 45


class TestCommandsTakeTheStrength:
    @pytest.fixture(scope="class")
    @classmethod
    def weights(cls, tmp_path_factory) -> Path:
        path = tmp_path_factory.mktemp("model") / "judging.safetensors"
        derain.save_model(judging_model(), path)
        return path

    @staticmethod
    def cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, "-m", "derain.cli.main", *map(str, args)], cwd=cwd, capture_output=True, timeout=120, env=env)

    def test_run_with_strength_zero_writes_the_input(self, tmp_path, weights):
        Image.fromarray(photo()).save(tmp_path / "a.png")
        proc = self.cli("run", "a.png", "--weights", weights, "--strength", "0", "-o", "out", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr.decode()
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), photo())
        proc = self.cli("run", "a.png", "--weights", weights, "--strength", "1", "-o", "full", cwd=tmp_path)
        assert proc.returncode == 0 and psnr(np.asarray(Image.open(tmp_path / "full" / "a.png")), photo()) < 40

    @pytest.mark.parametrize("args, words", [(("--strength", "2"), "strength must be"), (("--strength", "0.5", "--backend", "onnxruntime"), "torch backend")])
    def test_bad_strength_is_one_line(self, tmp_path, weights, args, words):
        Image.fromarray(photo()).save(tmp_path / "a.png")
        proc = self.cli("run", "a.png", "--weights", weights, *args, cwd=tmp_path)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and words in err and "Traceback" not in err, err
        assert not (tmp_path / "derained").exists()

    def test_video_takes_the_strength(self, tmp_path, weights):
        """``derain video --strength 0`` gives the input's frames back (up to the encoder), 1 changes them."""
        from test_video import decode, make_video

        src = make_video(tmp_path / "in.mp4", 64, 48, frames=4, audio=False)
        _, frames = decode(src)
        changes = {}
        for strength in ("0", "1"):
            out = tmp_path / f"out{strength}.mp4"
            proc = self.cli("video", src, "-o", out, "--weights", weights, "--strength", strength, "--crf", "0", cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr.decode()
            changes[strength] = float(np.abs(decode(out)[1] - frames).mean())
        assert changes["0"] < 2.0 and changes["1"] > 5 * changes["0"], changes  # 0: colour conversion only

    def test_service_strength(self):
        with TestClient(create_app(judging_model(), precision="fp32")) as client:
            png = encode_image(Image.fromarray(photo()))
            r = client.post("/v1/derain?strength=0", files={"file": ("a.png", png, "image/png")})
            assert r.status_code == 200, r.text
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), photo())
            full = client.post("/v1/derain?strength=1", files={"file": ("a.png", png, "image/png")})
            assert psnr(np.asarray(Image.open(io.BytesIO(full.content))), photo()) < 40
            bad = client.post("/v1/derain?strength=lots", files={"file": ("a.png", png, "image/png")})
            assert bad.status_code == 422 and "strength must be" in bad.json()["error"]
            page = client.get("/").text
            assert 'id="strength"' in page and 'type="range"' in page


def test_gated_output_is_unchanged_by_the_seam():
    """forward(x) and forward(x, whole=<its own judgement>) give the same bits (fused and eager)."""
    model = judging_model()
    x = torch.rand(2, 3, 45, 61)
    with torch.no_grad():
        own = model.image_gate(x)
        assert torch.equal(model(x), model(x, whole=own))
        model.filter_implementation = "fast"
        assert torch.equal(model(x), model(x, whole=own))
        with pytest.raises(ValueError, match="one factor per image"):
            model(x, whole=own[:1])
    ungated = EfDeRain(dataclasses.replace(model.config, gate_global=False))
    with pytest.raises(ValueError, match="gate_global"):
        ungated.image_gate(x)
