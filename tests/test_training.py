"""Training: config, samples, loss, resume after kill -9, torchrun DDP, presets."""

from __future__ import annotations

import csv
import itertools
import math
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
import yaml
from helpers_training import TINY_MODEL, tiny_config, write_config
from PIL import Image

import derain
from derain.data.render import dominant_orientation
from derain.metrics import calculate_psnr, calculate_ssim, ssim_torch
from derain.training.config import ConfigError, load_config
from derain.training.dataset import DatasetError, StepBatchSampler, TrainingSamples
from derain.training.losses import L1SSIMLoss, build_loss, gate_loss, rain_mask
from derain.training.presets import TEMPLATE, list_presets, resolve_preset
from derain.models.checkpoint import read_state_dict
from derain.training.trainer import train


def read_losses(out: Path) -> dict[int, str]:
    with open(out / "train_log.csv") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f)}


class TestConfig:
    def test_defaults_are_the_released_recipe(self) -> None:
        cfg = load_config(None, ["sources=[{kind: synthetic, path: clean}]"], base=Path("/"))
        assert cfg.lr == 2e-4 and cfg.betas == (0.5, 0.999) and cfg.batch_size == 16 and cfg.crop == 256
        assert cfg.loss == "l1_ssim" and cfg.ssim_weight == 0.2

    def test_overrides(self, tmp_path) -> None:
        path = write_config(tmp_path / "c.yaml", {"iterations": 10, "decay_start": 5, "sources": [{"kind": "synthetic", "path": "clean"}]})
        cfg = load_config(path, ["lr=0.001", "validation.every=7", "model_overrides={depth: 1}", "flips=true"], base=tmp_path)
        assert cfg.lr == 0.001 and cfg.validation.every == 7 and cfg.model_overrides == {"depth": 1} and cfg.flips
        assert cfg.sources[0].path == str(tmp_path / "clean")
        two = ["sources=[{kind: synthetic, path: a}, {kind: synthetic, path: b}]"]
        cfg = load_config(None, [*two, "sources.1.weight=0.25", "sources.0.preset=light"], base=tmp_path)
        assert [(s.weight, s.preset) for s in cfg.sources] == [(1.0, "light"), (0.25, "mixed")]
        for override, match in (("sources.2.weight=1", r"override sources.2.weight: '2' is not an index of a list of 2 \(0 to 1\)"),
                                ("sources.x.weight=1", "'x' is not an index"), ("sources.0.kind.x=1", "override sources.0.kind.x: kind holds a value"),
                                ("sources.1.zoom=[5, 6]", r"^sources\[1\]: source zoom must be"),
                                ("sources.²=1", "'²' is not an index")):
            with pytest.raises(ConfigError, match=match):
                load_config(None, [*two, override], base=tmp_path)

    @pytest.mark.parametrize(
        "override,match",
        [
            ("loss=l2", "loss must be"),
            ("precision=fp8", "precision"),
            ("bogus=1", "unknown config key"),
            ("validation.bogus=1", r"unknown config key\(s\) validation.bogus"),
            ("iterations=abc", "must be a number"),
            ("decay_start=99999", "decay_start"),
            ("rainmix=true", "streaks"),
            ("sources=[{kind: web, path: x}]", "source kind"),
            ("sources=[{kind: rain_layers, path: c, layers: [p], scale: [0.9, 0.2]}]", "scale"),
            ("sources=[{kind: rain_layers, path: c, layers: [p], max_rotation: 120}]", "max_rotation"),
            ("checkpoint_every=0", "checkpoint_every must be >= 1"),
            ("log_every=0", "log_every must be >= 1"),
            ("threads=-3", "threads must be >= 0"),
            ("seed=-1", "seed must be >= 0"),
            ("betas=abc", r"betas must be two numbers"),
            ("betas=[0.5, 1.5]", r"betas must be two numbers"),
            ("lr=0", "lr must be > 0"),
            ("identity_p=1.5", r"identity_p must be in \[0, 1\]"),
            ("identity_weight=0", "identity_weight must be > 0"),
            ("validation.held_out={x: 0}", "held_out"),
            ("holdout={x: 0}", r"holdout counts must be >= 1"),
            ("holdout={x: 2, ./x: 3}", "holdout names the folder .*x twice, with 2 and 3"),
            ("ema=1", "ema must be < 1"),
            ("max_bad_steps=0", "max_bad_steps must be >= 1"),
            ("max_bad_steps=2.5", "max_bad_steps must be a whole number"),
        ],
    )
    def test_invalid(self, override: str, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            load_config(None, ["sources=[{kind: synthetic, path: clean}]", override])

    def test_presets(self) -> None:
        assert {"paper-v1", "paper-v2", "paper-v3", "paper-v4", "released"} <= set(list_presets())
        for name in set(list_presets()) - {TEMPLATE}:
            cfg = load_config(resolve_preset(name))
            assert cfg.model in derain.list_models()
        v = {n: load_config(resolve_preset(f"paper-{n}")) for n in ("v1", "v2", "v3", "v4")}
        assert (v["v1"].model, v["v1"].loss) == ("efderain-paper", "l1")
        v1 = derain.create_model(v["v1"].model, **v["v1"].model_overrides)  # the v1 head is an override...
        assert v1.config == derain.create_model("efderain-v1").config
        small_v1 = load_config(resolve_preset("paper-v1"), ["model=efderain-small"])  # ...so a smaller model keeps it
        assert derain.create_model(small_v1.model, **small_v1.model_overrides).config.dilations == (1,)
        assert (v["v2"].model, v["v2"].loss, v["v2"].rainmix) == ("efderain-paper", "l1", False)
        assert (v["v3"].loss, v["v3"].rainmix) == ("l1_ssim", False)
        assert (v["v4"].loss, v["v4"].rainmix) == ("l1_ssim", True)
        with pytest.raises(ConfigError, match="no config file"):
            resolve_preset("nope")


    def test_shipped_presets_are_the_chains_the_paper_and_a_template(self) -> None:
        """The presets are the stages that reproduce the bundled weights, each starting from the run folder of the one
        before (default version 11: from the committed weights of the chain in experiments/); the paper's; the
        template. No machine settings; stages tried and not shipped, and the earlier stages of a chain, load from
        experiments/."""
        chains = [["default-cpu", "default-cpu-ft", "default-cpu-v3", "default-cpu-v4", "default-cpu-v5", "default-cpu-v7"],
                  ["fast-cpu-v4", "fast-cpu-v7"]]
        paper = ["paper-v1", "paper-v2", "paper-v3", "paper-v4", "released"]
        in_domain = ["rain100l"]  # the paper's protocol per family; the frontier benchmark's recipe
        assert set(list_presets()) == {*chains[0], *chains[1], "default-cpu-v11", *paper, *in_domain, TEMPLATE}
        root = Path(__file__).parents[1]
        v11_chain = ["default-he-s1", "default-he-s2", "default-he-s3", "default-he-s5", "default-he-s7"]
        starts = [load_config(resolve_preset(str(root / "experiments" / f"{n}.yaml"))).init_weights for n in v11_chain[1:]]
        starts.append(load_config(resolve_preset("default-cpu-v11")).init_weights)
        for stage, start in zip(v11_chain, starts):  # each stage starts from the one before's committed fp16 weights
            assert Path(start) == (root / "experiments" / "weights" / f"{stage}.safetensors").resolve() and Path(start).is_file()
        assert not load_config(resolve_preset("default-cpu")).init_weights  # from scratch (fast's stages 1-3: MODEL_CARD.md)
        for chain in chains:
            cfgs = [load_config(resolve_preset(name)) for name in chain]
            for before, after in itertools.pairwise(cfgs):
                assert Path(after.init_weights).parent == (Path.cwd() / before.out_dir).resolve()
        for name in list_presets():
            assert "threads" not in yaml.safe_load(resolve_preset(name).read_text())
        experiments = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))
        assert experiments and not {p.stem for p in experiments} & set(list_presets())
        for path in experiments:  # each continues earlier weights, or is a first stage from scratch with He's init
            cfg = load_config(resolve_preset(str(path)))
            assert cfg.init_weights or cfg.model_overrides.get("init") == "he", path.name


class TestLoss:
    def test_ssim_term_matches_evaluation_ssim(self) -> None:
        """The training SSIM is the evaluation SSIM's formula (same window), differing only in padding."""
        rng = np.random.default_rng(0)
        a, b = rng.random((40, 50)), rng.random((40, 50))
        ta, tb = (torch.from_numpy(x)[None, None] for x in (a, b))
        assert abs(float(ssim_torch(ta, tb, padding="valid")) - calculate_ssim(a[..., None] * 255, b[..., None] * 255)) < 1e-6

    def test_values(self) -> None:
        x = torch.rand(2, 3, 24, 24)
        y = (x + 0.1).clamp(0, 1)
        l1 = float((x - y).abs().mean())
        assert float(build_loss("l1")(x, y)) == pytest.approx(l1, abs=1e-7)
        expected = l1 - 0.2 * float(ssim_torch(x, y, padding="same"))
        assert float(build_loss("l1_ssim")(x, y)) == pytest.approx(expected, abs=1e-6)
        assert float(L1SSIMLoss()(x, x)) == pytest.approx(-0.2, abs=1e-6)
        with pytest.raises(ValueError):
            build_loss("l2")


class TestSamples:
    def test_deterministic_and_index_addressed(self, clean_folder, tmp_path) -> None:
        cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "o", flips=True)))
        a, b = TrainingSamples(cfg), TrainingSamples(cfg)
        ra, ca = a[5]
        rb, cb = b[5]
        assert torch.equal(ra, rb) and torch.equal(ca, cb)
        assert ra.shape == (3, 32, 32) and not torch.equal(a[6][0], ra)
        assert float((ra - ca).abs().mean()) > 0.005  # rain was added

    def test_rain_layer_intensity_scale(self, clean_folder, tmp_path) -> None:
        """A source's ``scale`` multiplies the real rain layer: a constant +100/255 layer at x0.5 adds 50/255."""
        pairs = tmp_path / "pairs"
        for sub in ("rainy", "clean"):
            (pairs / sub).mkdir(parents=True)
        clean = np.full((40, 40, 3), 80, np.uint8)
        Image.fromarray(clean).save(pairs / "clean" / "a.png")
        Image.fromarray(clean + 100).save(pairs / "rainy" / "a.png")
        source = {"kind": "rain_layers", "path": str(clean_folder), "layers": [str(pairs)], "max_rotation": 10}
        for scale, added in (([0.5, 0.5], 50 / 255), ([1.0, 1.0], 100 / 255)):
            cfg = load_config(None, [f"sources=[{yaml.safe_dump({**source, 'scale': scale}, default_flow_style=True).strip()}]",
                                     "crop=32", "validation.synthetic=0"])
            rainy, clean_crop = TrainingSamples(cfg).sample(0)
            expected = np.minimum(clean_crop + added, 1.0)
            assert np.abs(rainy - expected).max() < 2 / 255

    def test_rain_layer_zoom(self, clean_folder, tmp_path) -> None:
        """A source's ``zoom`` resizes the rain layer: one-pixel streaks every 8 columns come out about ``factor``
        pixels wide, at 0.5 twice as many, and a factor-1 range leaves the sample as it was without the key."""
        from derain.data.rain_layers import RainLayerBank

        clean = np.zeros((64, 64, 3), np.float32)
        rainy = clean.copy()
        rainy[:, ::8] = 0.6
        bank = RainLayerBank.from_arrays([(rainy, clean)])
        def streak_width(zoom: tuple[float, float]) -> float:  # columns above half the streak, per streak
            layer = bank.sample(np.random.default_rng(1), (64, 64), scale=(1, 1), flip=False, zoom=zoom)
            lit = np.concatenate([[0], layer.mean(axis=0) > 0.3, [0]]).astype(int)  # above half the streak's 0.6
            return float(lit.sum() / (np.diff(lit) == 1).sum())
        assert streak_width((1, 1)) == 1.0
        assert 2.5 <= streak_width((3, 3)) <= 4.5
        far = np.concatenate([[0], bank.sample(np.random.default_rng(1), (64, 64), scale=(1, 1), zoom=(0.5, 0.5)).mean(axis=0) > 0.1, [0]])
        assert (np.diff(far.astype(int)) == 1).sum() == 16  # at 0.5 twice as many streaks as the layer's 8 per 64 columns
        plain = bank.sample(np.random.default_rng(5), (32, 32))
        np.testing.assert_array_equal(plain, bank.sample(np.random.default_rng(5), (32, 32), zoom=(1, 1)))
        turned = bank.sample(np.random.default_rng(2), (40, 24), zoom=(0.5, 2.0), max_rotation=30)
        assert turned.shape == (40, 24) and turned.max() > 0.2  # zoomed and turned, still the requested size
        pairs = tmp_path / "pairs"  # through a training source: the zoom reaches the samples
        for sub in ("rainy", "clean"):
            (pairs / sub).mkdir(parents=True)
        Image.fromarray(np.full((64, 64, 3), 40, np.uint8)).save(pairs / "clean" / "a.png")
        streaks = np.full((64, 64, 3), 40, np.uint8)
        streaks[:, ::8] = 200  # one-pixel streaks every 8 columns
        Image.fromarray(streaks).save(pairs / "rainy" / "a.png")
        source = {"kind": "rain_layers", "path": str(clean_folder), "layers": [str(pairs)], "scale": [1, 1]}
        def rain(zoom: list[float]) -> np.ndarray:
            cfg = load_config(None, [f"sources=[{yaml.safe_dump({**source, 'zoom': zoom}, default_flow_style=True).strip()}]",
                                     "crop=32", "colour_jitter=0"])
            rainy, clean = TrainingSamples(cfg).sample(3)
            return (rainy - clean).max(axis=2)
        sharp, wide = rain([1, 1]), rain([3, 3])
        lit = [int((r.mean(axis=0) > 0.3).sum()) for r in (sharp, wide)]  # columns above half the streak's 0.63
        assert lit[0] == 4 and lit[1] >= 6, lit  # 4 one-pixel streaks in 32 columns; x3: about 1-2 streaks 3 px wide
        with pytest.raises(ConfigError, match="zoom resizes rain layers"):
            load_config(None, [f"sources=[{{kind: synthetic, path: {clean_folder}, zoom: [0.5, 2]}}]"])
        with pytest.raises(ConfigError, match="zoom must be"):
            load_config(None, [f"sources=[{{kind: rain_layers, path: {clean_folder}, layers: [{clean_folder}], zoom: [2, 1]}}]"])
        with pytest.raises(ConfigError, match=r"0.25 <= low <= high <= 4"):
            load_config(None, [f"sources=[{{kind: rain_layers, path: {clean_folder}, layers: [{clean_folder}], zoom: [0.01, 1]}}]"])

    def test_paired_and_synthetic_sources_turn_their_samples(self, clean_folder, tmp_path) -> None:
        """``max_rotation`` on a paired source turns rainy and clean by one angle (their difference is still the
        rain, turned); on a synthetic one it spreads the rendered streaks' slant; 0 keeps every streak vertical."""
        pairs = tmp_path / "pairs"
        for sub in ("rainy", "clean"):
            (pairs / sub).mkdir(parents=True)
        yy, xx = np.mgrid[0:96, 0:96]
        clean = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], 2).astype(np.uint8)  # smooth, no rain
        rainy = clean.copy()
        rainy[:, 8::12] = np.minimum(rainy[:, 8::12].astype(int) + 120, 255).astype(np.uint8)  # vertical streaks
        Image.fromarray(clean).save(pairs / "clean" / "a.png")
        Image.fromarray(rainy).save(pairs / "rainy" / "a.png")

        def slants(source: dict, n: int = 24) -> np.ndarray:
            cfg = load_config(None, [f"sources=[{yaml.safe_dump(source, default_flow_style=True).strip()}]", "crop=32",
                                     "validation.synthetic=0", "flips=false"])
            samples = TrainingSamples(cfg)
            out = []
            for i in range(n):
                r, c = samples.sample(i)
                rain = (r - c).mean(2)
                if source["kind"] == "paired":
                    assert np.median(np.abs(rain)) < 1.5 / 255  # clean turned with rainy: between the streaks they agree
                    assert np.abs(c[..., 2] - 90 / 255).max() < 1.5 / 255  # no empty corner (the blue channel is 90)
                angle, coherence = dominant_orientation(np.clip(rain, 0, None))
                if coherence > 0.3:
                    out.append(abs(angle - 90.0))
            return np.array(out)

        paired = {"kind": "paired", "path": str(pairs)}
        assert slants(paired).max() < 2
        turned = slants({**paired, "max_rotation": 45})
        assert len(turned) >= 20 and turned.max() > 25 and turned.max() <= 47
        synthetic = {"kind": "synthetic", "path": str(clean_folder), "preset": "heavy"}
        assert np.percentile(slants({**synthetic, "max_rotation": 60}), 90) > np.percentile(slants(synthetic), 90) + 10

    def test_rain_free_share_and_colour_jitter(self, clean_folder, tmp_path) -> None:
        """``identity_p`` gives input = target samples; ``colour_jitter`` scales both images by one gain."""
        base = tiny_config(clean_folder, tmp_path / "o")
        plain = TrainingSamples(load_config(write_config(tmp_path / "a.yaml", base)))
        ident = TrainingSamples(load_config(write_config(tmp_path / "b.yaml", {**base, "identity_p": 0.5})))
        same = np.mean([np.array_equal(*ident.sample(i)) for i in range(200)])
        dry = np.mean([np.array_equal(*plain.sample(i)) for i in range(200)])  # crops the sparse rain missed
        assert dry < 0.25 and 0.38 < same - dry / 2 < 0.62  # about half more
        jitter = TrainingSamples(load_config(write_config(tmp_path / "c.yaml", {**base, "identity_p": 1.0, "colour_jitter": 1.0})))
        ratios = []
        for i in range(20):
            rainy, clean = jitter.sample(i)
            assert np.array_equal(rainy, clean)  # the same change on both images
            ratios.append(clean.reshape(-1, 3).mean(0) / ident.sources[0].sample(np.random.default_rng(0), 32)[1].reshape(-1, 3).mean(0))
        assert np.std(np.log(ratios)) > 0.05  # brightness and colour really vary
        # without the new keys a preset's samples are what they were (no extra random draws)
        assert all(np.array_equal(plain.sample(i)[0], TrainingSamples(load_config(tmp_path / "a.yaml")).sample(i)[0]) for i in range(3))

    def test_streaks_only_source(self, clean_folder, tmp_path) -> None:
        """``streaks_only`` on a synthetic source: the same rainy crops, targets under their veil; other kinds refuse it."""
        base = tiny_config(clean_folder, tmp_path / "o")
        source = {"kind": "synthetic", "path": str(clean_folder), "preset": "real"}
        plain = TrainingSamples(load_config(write_config(tmp_path / "a.yaml", {**base, "sources": [source]})))
        kept = TrainingSamples(load_config(write_config(tmp_path / "b.yaml", {**base, "sources": [{**source, "streaks_only": True}]})))
        differ = 0
        for i in range(20):
            (r0, c0), (r1, c1) = plain.sample(i), kept.sample(i)
            np.testing.assert_array_equal(r0, r1)
            differ += not np.array_equal(c0, c1)
        assert differ >= 10  # the real preset veils or compresses most crops
        with pytest.raises(ConfigError, match="streaks_only"):
            load_config(write_config(tmp_path / "c.yaml", {**base, "sources": [{"kind": "paired", "path": str(clean_folder), "streaks_only": True}]}))

    def test_grey_share(self, clean_folder, tmp_path) -> None:
        """``grey_p`` turns that share of samples grey (R = G = B) in input and target alike; rain stays rain."""
        base = tiny_config(clean_folder, tmp_path / "o")
        half = TrainingSamples(load_config(write_config(tmp_path / "g.yaml", {**base, "grey_p": 0.5, "colour_jitter": 1.0})))
        greys, rainy_greys = 0, 0
        for i in range(100):
            rainy, clean = half.sample(i)
            grey = np.array_equal(clean[..., 0], clean[..., 1]) and np.array_equal(clean[..., 1], clean[..., 2])
            if grey:
                greys += 1
                assert np.array_equal(rainy[..., 0], rainy[..., 2])  # the input is grey too
                rainy_greys += not np.array_equal(rainy, clean)
        assert 35 <= greys <= 65 and rainy_greys > 0  # about half; the grey ones still carry rain
        plain = TrainingSamples(load_config(write_config(tmp_path / "p.yaml", {**base, "colour_jitter": 1.0})))
        assert sum(np.array_equal(plain.sample(i)[1][..., 0], plain.sample(i)[1][..., 2]) for i in range(20)) == 0

    def test_paired_source_holds_out_its_last_pairs(self, tmp_path) -> None:
        pairs = tmp_path / "pairs"
        for sub in ("rainy", "clean"):
            (pairs / sub).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((40, 40, 3), 20 + 50 * i, np.uint8)).save(pairs / "clean" / f"{i}.png")
            Image.fromarray(np.full((40, 40, 3), 30 + 50 * i, np.uint8)).save(pairs / "rainy" / f"{i}.png")
        cfg = load_config(None, [f"sources=[{{kind: paired, path: '{pairs}', holdout: 2}}]", "crop=32", "validation.synthetic=0"])
        levels = {round(float(TrainingSamples(cfg).sample(i)[1].mean()) * 255) for i in range(40)}
        assert levels == {20, 70}  # pairs 2 and 3 never appear

    def test_batch_sampler(self) -> None:
        ranks = [list(StepBatchSampler(2, start=1, stop=3, rank=r, world=2)) for r in (0, 1)]
        assert ranks[0] == [[4, 5], [8, 9]] and ranks[1] == [[6, 7], [10, 11]]

    def test_dataset_errors(self, tmp_path) -> None:
        empty = tmp_path / "empty"
        empty.mkdir()
        for path, match in [(tmp_path / "missing", "does not exist"), (empty, "images")]:
            cfg = load_config(None, [f"sources=[{{kind: synthetic, path: {path}}}]", "validation.synthetic=0"])
            with pytest.raises(DatasetError, match=match):
                TrainingSamples(cfg)

    def test_all_images_too_small(self, tmp_path) -> None:
        (tmp_path / "c").mkdir()
        Image.new("RGB", (10, 10)).save(tmp_path / "c" / "a.png")
        cfg = load_config(None, [f"sources=[{{kind: synthetic, path: {tmp_path / 'c'}}}]", "crop=32"])
        with pytest.raises(DatasetError, match="smaller|at least 32x32"):
            TrainingSamples(cfg)


class TestHoldOut:
    """``holdout: {FOLDER: N}``: one description of what never trains, read by training and validation alike."""

    @staticmethod
    def _data(root: Path) -> tuple[Path, Path]:
        """Six pairs of flat images, pair ``i`` clean at level 20 + 30·i under a flat rain layer of +(i + 1)·5, and five
        flat clean photos at levels 5 + 30·j: a training sample's levels say which pair, layer or photo it came from."""
        pairs, photos = root / "pairs", root / "photos"
        for sub in ("rainy", "clean"):
            (pairs / sub).mkdir(parents=True)
        photos.mkdir()
        for i in range(6):
            Image.fromarray(np.full((40, 40, 3), 20 + 30 * i, np.uint8)).save(pairs / "clean" / f"{i}.png")
            Image.fromarray(np.full((40, 40, 3), 20 + 30 * i + 5 * (i + 1), np.uint8)).save(pairs / "rainy" / f"{i}.png")
        for j in range(5):
            Image.fromarray(np.full((40, 40, 3), 5 + 30 * j, np.uint8)).save(photos / f"p{j}.png")
        return pairs, photos

    def test_training_never_samples_what_validation_scores(self, tmp_path) -> None:
        from derain.evaluation import ValidationSets

        pairs, photos = self._data(tmp_path)
        sources = [{"kind": "paired", "path": str(pairs)},
                   {"kind": "rain_layers", "path": str(photos), "layers": [str(pairs)], "scale": [1, 1]},
                   {"kind": "synthetic", "path": str(photos), "preset": "light"}]
        cfg = load_config(None, [f"sources={yaml.safe_dump(sources, default_flow_style=True).strip()}",
                                 f"holdout={{'{pairs}': 2, '{photos}': 2}}", "crop=32", "batch_size=4"])
        samples = TrainingSamples(cfg)
        seen_pairs, seen_layers, seen_photos = set(), set(), set()
        for batch in StepBatchSampler(cfg.batch_size, start=0, stop=100):
            for index in batch:
                rainy, clean = samples.sample(index)
                level, added = round(float(clean.mean()) * 255), round(float((rainy - clean).mean()) * 255)
                if level % 30 == 20:  # a pair
                    seen_pairs.add((level - 20) // 30)
                else:
                    seen_photos.add((level - 5) // 30)
                    if added and np.allclose(rainy - clean, added / 255, atol=2 / 255):  # a flat rain layer, not rendered rain
                        seen_layers.add(added // 5 - 1)
        assert seen_pairs == {0, 1, 2, 3} and seen_layers == {0, 1, 2, 3} and seen_photos == {0, 1, 2}
        validation = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed)
        assert {name: [p.name for p in held] for name, held in validation.sets.items()} == {"pairs-holdout2": ["4", "5"]}
        assert [name for name, _, _ in validation.synthetic] == ["p3", "p4"]

    def test_a_photo_held_out_by_a_folder_never_trains_from_a_folder_inside_or_around_it(self, tmp_path) -> None:
        """A source on a sub-folder (``photos/sub``) beside a hold-out of its parent's last photos leaves those
        photos out too (also where no source reads the parent), a source on the parent leaves out what the
        sub-folder's hold-out holds, and validation scores each held-out photo once, however many folders hold it out."""
        from derain.evaluation import ValidationSets

        _, photos = self._data(tmp_path)
        sub = photos / "sub"
        sub.mkdir()
        for j in range(3):  # the parent's last photos, sorted after p0-p4
            Image.fromarray(np.full((40, 40, 3), 200 + 10 * j, np.uint8)).save(sub / f"s{j}.png")
        sources = [{"kind": "synthetic", "path": str(photos), "preset": "light"},
                   {"kind": "synthetic", "path": str(sub), "preset": "light", "weight": 3}]
        for holdout in (f"{{'{photos}': 2}}", f"{{'{photos}': 2, '{sub}': 1}}"):
            cfg = load_config(None, [f"sources={yaml.safe_dump(sources, default_flow_style=True).strip()}",
                                     f"holdout={holdout}", "crop=32", "identity_p=1"])
            samples = TrainingSamples(cfg)
            levels = {round(float(samples.sample(i)[1].mean()) * 255) for i in range(200)}
            assert levels == {5, 35, 65, 95, 125, 200}  # s1 and s2 (210, 220) are held out by photos' hold-out
            validation = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed)
            assert [name for name, _, _ in validation.synthetic] == ["s1", "s2"]
        # the other way round: sub's own hold-out (s1, s2) beyond photos' (s2) leaves the source on photos too
        cfg = load_config(None, [f"sources={yaml.safe_dump(sources, default_flow_style=True).strip()}",
                                 f"holdout={{'{photos}': 1, '{sub}': 2}}", "crop=32", "identity_p=1"])
        assert {round(float(TrainingSamples(cfg).sample(i)[1].mean()) * 255) for i in range(200)} == {5, 35, 65, 95, 125, 200}
        assert [name for name, _, _ in ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed).synthetic] == ["s2", "s1"]
        # a hold-out of the parent that no source reads still holds its photos out of the source inside it
        inner = [sources[1]]
        cfg = load_config(None, [f"sources={yaml.safe_dump(inner, default_flow_style=True).strip()}",
                                 f"holdout={{'{photos}': 2}}", "crop=32", "identity_p=1"])
        assert {round(float(TrainingSamples(cfg).sample(i)[1].mean()) * 255) for i in range(50)} == {200}
        validation = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed)
        assert [name for name, _, _ in validation.synthetic] == ["s1", "s2"] and not validation.sets
        cfg = load_config(None, [f"sources={yaml.safe_dump(sources, default_flow_style=True).strip()}",
                                 f"holdout={{'{photos}': 3}}", "crop=32"])
        with pytest.raises(DatasetError, match="none left to train on"):
            TrainingSamples(cfg)
        # a held-out folder around photos and pairs alike is refused: it cannot be both
        mixed = [sources[1], {"kind": "paired", "path": str(tmp_path / "pairs")}]
        cfg = load_config(None, [f"sources={yaml.safe_dump(mixed, default_flow_style=True).strip()}",
                                 f"holdout={{'{tmp_path}': 2}}", "crop=32"])
        with pytest.raises(DatasetError, match="holds photos and pairs .* alike"):
            TrainingSamples(cfg)

    def test_older_spellings_read_as_holdout(self, tmp_path) -> None:
        pairs, photos = self._data(tmp_path)
        sources = f"{{kind: paired, path: {pairs}}}, {{kind: synthetic, path: {photos}}}"
        new = load_config(None, [f"sources=[{sources}]", f"holdout={{{pairs}: 2, {photos}: 1}}"]).to_dict()
        old = f"sources=[{{kind: paired, path: {pairs}, holdout: 2}}, {{kind: synthetic, path: {photos}}}]"
        for spelling in ([old, "validation.synthetic=1"],
                         [old, f"validation.held_out={{{pairs}: 2}}", "validation.synthetic=1"],
                         [f"sources=[{sources}]", f"validation.holdout_only=[{pairs}]", "validation.holdout=2", "validation.synthetic=1"]):
            assert load_config(None, spelling).to_dict() == new
        with pytest.raises(ConfigError, match=r"sources\[0\].holdout holds out 2 of .*pairs but validation.held_out 3"):
            load_config(None, [old, f"validation.held_out={{{pairs}: 3}}"])
        with pytest.raises(ConfigError, match="validation.synthetic: this config names its hold-out in `holdout"):
            load_config(resolve_preset("paper-v1"), ["validation.synthetic=0"])

    def test_a_run_saved_with_an_older_spelling_resumes(self, clean_folder, tmp_path) -> None:
        """A run folder whose saved config spells the hold-out the older way resumes under ``holdout``; another
        hold-out is a changed config."""
        out = tmp_path / "run"
        cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=2, decay_start=1, validation={"every": 0},
                                                                 holdout={str(clean_folder): 2}))
        train(load_config(cfg_path), stop_after=1)
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert state["config"].pop("holdout") == {str(clean_folder): 2}
        state["config"]["validation"].update(synthetic=2, holdout_only=[], holdout=0, held_out={})
        state["config"]["sources"][0]["holdout"] = 0
        torch.save(state, out / "checkpoint.pt")
        with pytest.raises(ConfigError, match="holdout differ"):
            train(load_config(cfg_path, [f"holdout={{{clean_folder}: 3}}"]), resume=True)
        assert train(load_config(cfg_path), resume=True).step == 2

    def test_the_template_validates_once_its_data_paths_are_set(self, tmp_path) -> None:
        from derain.evaluation import ValidationSets

        with pytest.raises(ConfigError, match="source of kind 'paired' needs a path"):
            load_config(resolve_preset(TEMPLATE))
        pairs, _ = self._data(tmp_path)
        cfg = load_config(resolve_preset(TEMPLATE), [f"sources=[{{kind: paired, path: {pairs}}}]", f"holdout={{{pairs}: 2}}", "crop=32"])
        assert cfg.model in derain.list_models() and cfg.holdout == {str(pairs): 2}
        assert len(TrainingSamples(cfg).sources[0].pairs) == 4
        assert list(ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed).sets) == ["pairs-holdout2"]


def test_training_reduces_loss_and_writes_results(clean_folder, tmp_path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", iterations=60, decay_start=40, lr=0.003, validation={"synthetic": 2, "every": 20}, checkpoint_every=20)))
    result = train(cfg)
    out = tmp_path / "run"
    assert {"config.yaml", "checkpoint.pt", "last.safetensors", "best.safetensors", "train_log.csv", "val_log.csv"} <= {p.name for p in out.iterdir()}
    with open(out / "val_log.csv") as f:
        val = [float(r["mean_psnr"]) for r in csv.DictReader(f)]
    assert len(val) == 3 and val[-1] > val[0] + 1.0
    assert result.best_psnr == pytest.approx(max(val), abs=1e-3)
    model = derain.load_model(out / "best.safetensors")
    assert model.config.widths == (4, 8, 8)


def test_validation_keep_saves_every_validated_step(clean_folder, tmp_path) -> None:
    """``validation.keep``: one weights file per validation, each scoring what val_log.csv says; the best one is
    best.safetensors; without it no folder is written."""
    from derain.evaluation import ValidationSets

    out = tmp_path / "run"
    extra = {"iterations": 6, "decay_start": 6, "lr": 0.01, "validation": {"synthetic": 2, "every": 2, "keep": True}}
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, **extra)))
    train(cfg)
    kept = sorted((out / "validated").iterdir())
    assert [p.name for p in kept] == [f"step{n:07d}.safetensors" for n in (2, 4, 6)]
    with open(out / "val_log.csv") as f:
        logged = [float(r["mean_psnr"]) for r in csv.DictReader(f)]
    sets = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed)
    models = [derain.load_model(p) for p in kept]
    assert [sets.run(m, "fp32")["mean_psnr"] for m in models] == pytest.approx(logged, abs=1e-4)
    assert not torch.equal(models[0].conv_final.weight, models[-1].conv_final.weight)  # lr 0.01: the steps differ
    best = derain.load_model(out / "best.safetensors").state_dict()
    for key, value in models[logged.index(max(logged))].state_dict().items():
        torch.testing.assert_close(best[key], value, rtol=0, atol=0)
    # a resume drops what was validated after its checkpoint: a stale step-8 file is replaced by step 8's weights
    shutil.copy(kept[0], out / "validated" / "step0000008.safetensors")
    train(load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, **{**extra, "iterations": 8}))),
          resume=True, allow_changes=True)
    from derain.training.trainer import _weights_step
    assert _weights_step(out / "validated" / "step0000008.safetensors") == 8
    extra["validation"] = {"synthetic": 2, "every": 2}
    train(load_config(write_config(tmp_path / "d.yaml", tiny_config(clean_folder, tmp_path / "plain", **extra))))
    assert not (tmp_path / "plain" / "validated").exists()


def test_validation_no_harm_reports_the_lowest_image_and_the_shift(tmp_path) -> None:
    """``noharm_min`` is the lowest held-out rain-free image's identity Y-PSNR and ``noharm_shift`` the mean
    output - input in levels (the channel farthest from 0): a model that darkens only bright photos by 10 levels
    leaves the dark one at 100 dB, the bright one at 20·log10(255 / (10 · Y's weight sum)) and the mean at -5."""
    from derain.evaluation import ValidationSets

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, level in enumerate((30, 60, 90, 200)):  # the last two are held out
        Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(photos / f"p{i}.png")

    class DarkenBright(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.where(x.mean() > 0.5, x - 10 / 255, x)

    sources = [{"kind": "synthetic", "path": str(photos), "preset": "light"}]
    cfg = load_config(None, [f"sources={yaml.safe_dump(sources, default_flow_style=True).strip()}",
                             f"holdout={{'{photos}': 2}}", "validation={noharm: true}"])
    scores = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed).run(DarkenBright(), "fp32")
    y_sum = (65.481 + 128.553 + 24.966) / 255
    assert scores["noharm_min"] == pytest.approx(20 * math.log10(255 / (10 * y_sum)), abs=1e-3)
    assert scores["noharm_psnr"] == pytest.approx((100 + scores["noharm_min"]) / 2, abs=1e-3)
    assert scores["noharm_shift"] == pytest.approx(-5.0, abs=1e-6)
    assert "mean_psnr" in scores and all(not k.startswith("noharm") for k in scores if k.endswith("_psnr") and k != "noharm_psnr")


def test_a_log_row_with_new_columns_widens_the_header(tmp_path) -> None:
    """A resumed run that logs a column its val_log.csv lacks rewrites the file with the wider header: the earlier
    rows keep their values and are blank in the new column; a row with the same columns is appended as it is."""
    from derain.training.trainer import _append_csv

    log = tmp_path / "val_log.csv"
    _append_csv(log, {"step": 2, "mean_psnr": "20.0"})
    _append_csv(log, {"step": 4, "mean_psnr": "21.0", "noharm_min": "45.0"})
    _append_csv(log, {"step": 6, "mean_psnr": "22.0", "noharm_min": "46.0"})
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"step": "2", "mean_psnr": "20.0", "noharm_min": ""}, {"step": "4", "mean_psnr": "21.0", "noharm_min": "45.0"},
                    {"step": "6", "mean_psnr": "22.0", "noharm_min": "46.0"}]


def test_a_run_saved_before_a_validation_key_existed_resumes(clean_folder, tmp_path) -> None:
    """A checkpoint whose config's ``validation`` section lacks a key added since (``keep``) counts it at its default."""
    from derain.training.config import config_changes

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", validation={"synthetic": 2})))
    saved = cfg.to_dict()
    del saved["validation"]["keep"]
    assert config_changes(saved, cfg) == []
    saved["validation"]["every"] = 7
    assert config_changes(saved, cfg) == ["validation"]
    for source in saved["sources"]:  # a source key added since (``zoom``) counts at its default too
        del source["zoom"]
    assert config_changes(saved, cfg) == ["validation"]
    saved["sources"][0]["weight"] = 3.0
    assert config_changes(saved, cfg) == ["sources", "validation"]


def test_pick_step_chooses_the_best_worst_margin(tmp_path) -> None:
    """benchmarks/pick_step.py: the step whose worst family against the references is best (not the best mean),
    among the steps whose no harm is at least --min-noharm."""
    header = "step,A-holdout20_psnr,A-holdout20_ssim,B_psnr,B_ssim,synthetic_psnr,mean_psnr,noharm_psnr\n"
    rows = ["300,31.0,0.9,20.0,0.8,25,25.3,60", "600,30.5,0.9,20.6,0.8,25,25.4,50", "900,30.9,0.9,21.0,0.8,25,25.6,40"]
    (tmp_path / "val_log.csv").write_text(header + "\n".join(rows) + "\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pick_step.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path), "--ref", "A=31", "--ref", "B=21"],
                         capture_output=True, text=True, check=True)
    # worst margins: 300 -1.0, 600 -0.5, 900 -0.1 but its no harm 40 < 45
    assert "chosen: step 600 (worst margin -0.50 dB; by margin)" in run.stdout
    missing = subprocess.run([sys.executable, str(script), str(tmp_path), "--ref", "C=1"], capture_output=True, text=True)
    assert missing.returncode != 0 and "no column for C" in missing.stderr
    malformed = subprocess.run([sys.executable, str(script), str(tmp_path), "--ref", "A"], capture_output=True, text=True)
    assert malformed.returncode == 2 and "expected FAMILY=DB" in malformed.stderr and "Traceback" not in malformed.stderr
    # the per-image guards: --min-noharm-min and --max-shift need their columns; --by noharm-min takes, among the
    # steps with no family below its reference, the one whose lowest rain-free image is highest
    for option in (["--min-noharm-min", "40"], ["--max-shift", "0.5"], ["--by", "noharm-min"]):
        old = subprocess.run([sys.executable, str(script), str(tmp_path), "--ref", "A=30", "--ref", "B=20", *option],
                             capture_output=True, text=True)
        assert old.returncode != 0 and "no validated step has noharm_" in old.stderr and "Traceback" not in old.stderr
    rows = ["300,31.0,0.9,20.0,0.8,25,25.3,60,41,-0.1", "600,30.5,0.9,20.6,0.8,25,25.4,50,44,-0.6",
            "900,30.9,0.9,21.0,0.8,25,25.6,50,39,-0.2", "1200,31.2,0.9,21.2,0.8,25,25.7,55,42,-0.3"]
    (tmp_path / "val_log.csv").write_text(header.strip() + ",noharm_min,noharm_shift\n" + "\n".join(rows) + "\n")

    def chosen(*options: str, ref: tuple[str, ...] = ("--ref", "A=30", "--ref", "B=20")) -> str:
        out = subprocess.run([sys.executable, str(script), str(tmp_path), *ref, *options],
                             capture_output=True, text=True, check=True).stdout
        line = out.split("chosen: step ")[1]
        return line.split(" ")[0] + ("" if "by margin" in line else " by noharm-min")

    # worst margins against A=30, B=20: 300 0.0, 600 +0.5, 900 +0.9, 1200 +1.2; lowest images 41, 44, 39, 42
    assert chosen() == "1200"
    assert chosen("--by", "noharm-min") == "600 by noharm-min"  # every step clears the references; 600's image highest
    assert chosen("--by", "noharm-min", "--max-shift", "0.5") == "1200 by noharm-min"  # 600 shifts 0.6 levels: 1200's 42
    assert chosen("--min-noharm-min", "43") == "600"  # the one step whose lowest image is at least 43
    # against A=31.3, B=21.1 no step clears both references: the margin rule chooses, and the line says so
    assert chosen("--by", "noharm-min", ref=("--ref", "A=31.3", "--ref", "B=21.1")) == "1200"
    # ties on the lowest image go to the larger worst margin
    rows[0] = "300,31.0,0.9,20.0,0.8,25,25.3,60,44,-0.1"  # 300 and 600 both at 44; 600's margin (+0.5) is larger
    (tmp_path / "val_log.csv").write_text(header.strip() + ",noharm_min,noharm_shift\n" + "\n".join(rows) + "\n")
    assert chosen("--by", "noharm-min") == "600 by noharm-min"
    none = subprocess.run([sys.executable, str(script), str(tmp_path), "--min-noharm-min", "50", "--ref", "A=30", "--ref", "B=20"],
                          capture_output=True, text=True)
    assert none.returncode != 0 and "no validated step meets the no-harm bounds" in none.stderr
    (tmp_path / "val_log.csv").write_bytes(b"\xff\xfe\x00 not text")
    garbled = subprocess.run([sys.executable, str(script), str(tmp_path / "val_log.csv")], capture_output=True, text=True)
    assert garbled.returncode != 0 and "not a validation log" in garbled.stderr and "Traceback" not in garbled.stderr


def test_gate_calibration_writes_the_most_open_offset_within_the_no_harm_bounds(clean_folder, tmp_path) -> None:
    """benchmarks/gate_calibration.py: a row per offset with the validation's no harm (mean, lowest image, shift); with
    --min-noharm-min only an offset whose lowest rain-free image reaches it is written (the image gate shut: every
    held-out photo back exactly, 100 dB), and none reaching it writes nothing, in one line."""
    from derain.models.checkpoint import save_model

    overrides = {**TINY_MODEL, "gate": True, "gate_global": True}
    preset = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", model_overrides=overrides,
                                                          holdout={str(clean_folder): 2}, validation={"noharm": True}))
    torch.manual_seed(0)
    model = derain.create_model("efderain-tiny", **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # a model that changes rain-free photos with its gate open
    save_model(model, tmp_path / "w.safetensors")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gate_calibration.py"

    def calibrate(floor: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(tmp_path / "w.safetensors"), "--preset", str(preset),
                               "--offset", "-3", "--offset", "0", "--write", str(tmp_path / f"out{floor}.safetensors"),
                               "--min-noharm", "0", "--min-noharm-min", floor], capture_output=True, text=True)

    run = calibrate("99")
    assert run.returncode == 0, run.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in run.stdout.splitlines() if line.startswith("| -") or line.startswith("| +")}
    assert rows["-3.00"][-4:-2] == ["100.00", "+0.00"]  # shut: lowest image 100 dB, no shift
    assert float(rows["+0.00"][-4]) < 60  # open: the perturbed kernels change the photos
    assert "(offset -3.00)" in run.stdout and (tmp_path / "out99.safetensors").is_file()
    none = calibrate("101")
    assert none.returncode != 0 and "its lowest image >= 101.0 dB; nothing written" in none.stderr
    assert "Traceback" not in none.stderr and not (tmp_path / "out101.safetensors").exists()
    save_model(derain.create_model("efderain-tiny", **TINY_MODEL), tmp_path / "ungated.safetensors")
    for bad, message in ((tmp_path / "ungated.safetensors", "no image gate to calibrate"), (tmp_path / "nope.safetensors", "no such file")):
        run = subprocess.run([sys.executable, str(script), str(bad), "--preset", str(preset)], capture_output=True, text=True)
        assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr


def test_slant_benchmark_renders_rain_at_the_asked_slant_and_scores_each_model(clean_folder, tmp_path) -> None:
    """benchmarks/slant.py: its rain runs at 90 ± the slant (alternating sides); a row per preset and slant holds the
    input's mean Y-PSNR and the model's gain over it, as computed here."""
    import importlib.util

    from derain.models.checkpoint import save_model

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "slant.py"
    spec = importlib.util.spec_from_file_location("slant_benchmark", script)
    slant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slant)
    clean = np.full((96, 96, 3), 60, np.uint8)
    for index, expected in ((0, 90 - 40), (1, 90 + 40)):
        rainy = slant._rainy(clean, "heavy", 40.0, index)
        angle, coherence = dominant_orientation(np.clip(rainy.astype(np.float32) - 60, 0, None).mean(2))
        assert coherence > 0.5 and abs(angle - expected) < 6
    weights = tmp_path / "identity.safetensors"
    save_model(derain.create_model("efderain-tiny", identity_init=True), weights)
    run = subprocess.run([sys.executable, str(script), "--model", str(weights), "--set", str(clean_folder), "--preset", "heavy",
                          "--slant", "0", "--slant", "45", "--max-side", "96", "--threads", "1", "--precision", "fp32"],
                         capture_output=True, text=True, check=True)
    rows = [line for line in run.stdout.splitlines() if line.startswith("| heavy")]
    assert len(rows) == 2, run.stdout
    cleans = slant._photos(str(clean_folder), 96)
    runner = derain.load_derainer(str(weights), precision="fp32")
    for row, angle in zip(rows, (0.0, 45.0)):
        rainy = [slant._rainy(c, "heavy", angle, i) for i, c in enumerate(cleans)]
        before = np.mean([calculate_psnr(r, c, test_y_channel=True) for r, c in zip(rainy, cleans)])
        after = np.mean([calculate_psnr(runner(r), c, test_y_channel=True) for r, c in zip(rainy, cleans)])
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(before, abs=0.006), row
        assert float(cells[3]) == pytest.approx(after - before, abs=0.011), row


def test_ema_validates_and_saves_the_moving_average_across_a_resume(clean_folder, tmp_path) -> None:
    """With ``ema: 0.75`` the saved weights are p1 after step 1 and 0.75·p1 + 0.25·p2 after step 2 (p = the raw
    weights, in checkpoint.pt), also when step 2 runs in a resumed process; validation scores that average."""
    from derain.evaluation import ValidationSets

    out = tmp_path / "run"
    extra = {"iterations": 2, "decay_start": 2, "lr": 0.01, "ema": 0.75, "validation": {"synthetic": 2, "every": 1}}
    cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, **extra))
    train(load_config(cfg_path), stop_after=1)
    p1 = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    saved1 = derain.load_model(out / "last.safetensors").state_dict()
    for key, value in p1.items():
        torch.testing.assert_close(saved1[key], value, rtol=0, atol=0)
    train(load_config(cfg_path), resume=True)
    p2 = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    last = derain.load_model(out / "last.safetensors")
    saved2 = last.state_dict()
    assert [k for k in p2 if not torch.equal(p1[k], p2[k])]  # lr 0.01: the raw weights moved
    for key in p2:
        torch.testing.assert_close(saved2[key], 0.75 * p1[key] + 0.25 * p2[key], rtol=1e-6, atol=1e-7)
    with open(out / "val_log.csv") as f:
        rows = list(csv.DictReader(f))
    cfg = load_config(cfg_path)
    rescored = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed).run(last, "fp32")["mean_psnr"]
    assert float(rows[1]["mean_psnr"]) == pytest.approx(rescored, abs=1e-4)  # the average was validated
    best = derain.load_model(out / "best.safetensors").state_dict()
    scored = saved1 if float(rows[0]["mean_psnr"]) > float(rows[1]["mean_psnr"]) else saved2
    for key in p2:
        torch.testing.assert_close(best[key], scored[key], rtol=0, atol=0)


def test_train_only_trains_the_named_parameters_and_keeps_the_others(clean_folder, tmp_path) -> None:
    """``train_only: conv_final``: after two steps at lr 0.01 (the second in a resumed process, the moving average
    kept) every ``conv_final`` tensor has moved and every other tensor is exactly ``init_weights``'."""
    from derain.models.checkpoint import save_model

    init = derain.create_model("efderain-tiny", **TINY_MODEL)
    torch.nn.init.normal_(init.conv_final.weight, std=0.1)  # not the identity init: the loss has a gradient there
    save_model(init, tmp_path / "init.safetensors")
    start = derain.load_model(tmp_path / "init.safetensors").state_dict()
    out = tmp_path / "run"
    extra = {"iterations": 2, "decay_start": 2, "lr": 0.01, "init_weights": str(tmp_path / "init.safetensors"),
             "train_only": "conv_final.", "ema": 0.5}
    cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, **extra))
    assert load_config(cfg_path).train_only == ("conv_final",)
    train(load_config(cfg_path), stop_after=1)
    train(load_config(cfg_path), resume=True)
    for weights in (torch.load(out / "checkpoint.pt", weights_only=True)["model"],
                    derain.load_model(out / "last.safetensors").state_dict()):
        moved = sorted(k for k in start if not torch.equal(start[k], weights[k]))
        assert moved == ["conv_final.bias", "conv_final.weight"], moved


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_only": ["conv_fin"]}, "no parameter"),  # a prefix of a name, not a submodule
        ({"train_only": [""]}, "must not be empty"),
        ({"init_weights": ""}, "needs init_weights"),
        ({"model_overrides": {**TINY_MODEL, "gate": True}}, "lack gate"),  # a new head left out would stay random
        ({"model_overrides": {**TINY_MODEL, "gate": True}, "gate_weight": 0.1}, "must name `gate`"),
    ],
)
def test_train_only_refuses_what_would_train_nothing_before_writing(clean_folder, tmp_path, change, message) -> None:
    from derain.models.checkpoint import save_model

    save_model(derain.create_model("efderain-tiny", **TINY_MODEL), tmp_path / "init.safetensors")
    out = tmp_path / "run"
    cfg = tiny_config(clean_folder, out, init_weights=str(tmp_path / "init.safetensors"), train_only=["conv_final"])
    cfg.update(change)
    with pytest.raises(ConfigError, match=message):
        train(load_config(write_config(tmp_path / "c.yaml", cfg)))
    assert not out.exists()


def test_crop_trim_varies_the_batch_size_the_network_trains_on(clean_folder, tmp_path, monkeypatch) -> None:
    """``crop_trim: 7`` on 32² crops: the network trains on batches of 25..32 rows and columns, as ``batch_trim`` draws
    them from the seed and the step (the same draw after a resume); without it every batch is 32²."""
    from derain.models.efderain import EfDeRain
    from derain.training.trainer import batch_trim

    seen: list[tuple[int, int]] = []
    forward = EfDeRain.forward

    def spy(self, x, *args, **kwargs):
        if self.training:
            seen.append(tuple(x.shape[-2:]))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(EfDeRain, "forward", spy)
    draws = [batch_trim(3, step, 7) for step in range(8)]
    assert all(0 <= r <= 7 and 0 <= c <= 7 for r, c in draws) and len(set(draws)) > 3
    train(load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", crop_trim=7))))
    assert seen == [(32 - r, 32 - c) for r, c in draws]
    seen.clear()
    train(load_config(write_config(tmp_path / "d.yaml", tiny_config(clean_folder, tmp_path / "plain"))))
    assert seen == [(32, 32)] * 8
    with pytest.raises(ConfigError, match="crop_trim must be below half the crop"):
        load_config(write_config(tmp_path / "e.yaml", tiny_config(clean_folder, tmp_path / "bad", crop_trim=16)))


def test_a_run_from_before_a_config_key_existed_resumes(clean_folder, tmp_path) -> None:
    """A checkpoint whose config lacks a key added since (here ``ema``) resumes when ``cfg`` has its default."""
    out = tmp_path / "run"
    cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=2, decay_start=1))
    train(load_config(cfg_path), stop_after=1)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["config"]["ema"]
    torch.save(state, out / "checkpoint.pt")
    result = train(load_config(cfg_path), resume=True)
    assert result.step == 2
    changed = write_config(tmp_path / "d.yaml", tiny_config(clean_folder, out, iterations=2, decay_start=1, ema=0.5))
    with pytest.raises(ConfigError, match="ema"):
        train(load_config(changed), resume=True)


def test_missing_init_weights_say_how_to_give_them(clean_folder, tmp_path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", init_weights=str(tmp_path / "none.safetensors"))))
    with pytest.raises(ConfigError, match=r"none.safetensors: no such file .*init_weights=PATH"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing written


def test_resume_in_process_equals_uninterrupted(clean_folder, tmp_path) -> None:
    full = load_config(write_config(tmp_path / "a.yaml", tiny_config(clean_folder, tmp_path / "a")))
    train(full)
    part = load_config(write_config(tmp_path / "b.yaml", tiny_config(clean_folder, tmp_path / "b")))
    train(part, stop_after=3)
    train(part, resume=True)
    assert read_losses(tmp_path / "a") == read_losses(tmp_path / "b")
    assert len(read_losses(tmp_path / "a")) == 8


def _derain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "derain.cli.main", *args]


@pytest.mark.slow
def test_resume_after_kill_9(clean_folder, tmp_path) -> None:
    """kill -9 in the middle of training; --resume continues and logs the same losses as a full run."""
    cfg = tiny_config(clean_folder, tmp_path / "killed", iterations=40, decay_start=20)
    path = write_config(tmp_path / "k.yaml", cfg)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_derain_cmd("train", str(path)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = tmp_path / "killed" / "train_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) > 6:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(read_losses(tmp_path / "killed"))
    assert 5 <= killed_at < 40, "the run must be killed mid-way"
    from safetensors import safe_open

    from derain.models.checkpoint import load_training_state

    with safe_open(str(tmp_path / "killed" / "last.safetensors"), "pt") as f:  # one unit: both at one step
        assert int(f.metadata()["step"]) == load_training_state(tmp_path / "killed" / "checkpoint.pt")["step"]
    subprocess.run(_derain_cmd("train", str(path), "--resume"), check=True, capture_output=True, env=env, timeout=300)
    reference = write_config(tmp_path / "r.yaml", {**cfg, "out_dir": str(tmp_path / "ref")})
    subprocess.run(_derain_cmd("train", str(reference)), check=True, capture_output=True, env=env, timeout=300)
    assert read_losses(tmp_path / "killed") == read_losses(tmp_path / "ref")
    assert sorted(read_losses(tmp_path / "ref")) == list(range(1, 41))


@pytest.mark.slow
def test_sigterm_during_training_leaves_no_temporaries(clean_folder, tmp_path) -> None:
    """SIGTERM is Ctrl-C for `derain train` too: it stops at once, and whatever checkpoint was being
    written is dropped whole (no temporary file or group folder), the previous one intact."""
    cfg = tiny_config(clean_folder, tmp_path / "run", iterations=400, decay_start=200)
    path = write_config(tmp_path / "t.yaml", cfg)
    proc = subprocess.Popen(_derain_cmd("train", str(path)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log = tmp_path / "run" / "train_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) > 6):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"Traceback" not in err, err[-2000:]
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith((".tmp", ".lnk"))]
    assert leftovers == []
    from derain.models.checkpoint import load_training_state

    assert load_training_state(tmp_path / "run" / "checkpoint.pt")["step"] >= 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes(clean_folder, tmp_path) -> None:
    """`torchrun --nproc_per_node 2`: DDP on gloo; both ranks end with identical parameters."""
    cfg = write_config(tmp_path / "d.yaml", tiny_config(clean_folder, tmp_path / "ddp", iterations=4, decay_start=2, validation={"every": 0}))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "derain.cli.main", "train", str(cfg)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sync = yaml.safe_load((tmp_path / "ddp" / "ranks.yaml").read_text())
    assert len(sync["parameter_checksums"]) == 2
    assert sync["parameter_checksums"][0] == sync["parameter_checksums"][1]
    assert sorted(read_losses(tmp_path / "ddp")) == [1, 2, 3, 4]


def test_cli_errors(tmp_path) -> None:
    bad = write_config(tmp_path / "bad.yaml", {"sources": [{"kind": "synthetic", "path": str(tmp_path / "none")}], "iterations": 2, "decay_start": 1})
    proc = subprocess.run(_derain_cmd("train", str(bad), f"out_dir={tmp_path / 'out'}"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written for a run that cannot start
    proc = subprocess.run(_derain_cmd("train", str(tmp_path / "missing.yaml")), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no config file" in proc.stderr


class _Planted:
    """A pickle that creates a marker file when unpickled with code execution allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("where", ["resume", "ablation"])
def test_planted_checkpoint_pickle_never_runs(clean_folder, tmp_path, where: str) -> None:
    """A checkpoint.pt that needs pickled code is refused in one line (resume, ablation), never executed."""
    marker = tmp_path / "pwned"
    if where == "resume":
        out = tmp_path / "run"
        out.mkdir()
        torch.save({"model": {}, "step": 1, "x": _Planted(marker)}, out / "checkpoint.pt")
        cfg = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out))
        proc = subprocess.run(_derain_cmd("train", str(cfg), "--resume"), capture_output=True, text=True, timeout=120)
    else:
        out = tmp_path / "abl" / "v2"
        out.mkdir(parents=True)
        torch.save({"model": {}, "step": 1, "config": _Planted(marker)}, out / "checkpoint.pt")
        proc = subprocess.run(_derain_cmd("bench", "ablation", "--iterations", "2", "--variant", "v2", "--model", "efderain-tiny",
                                          "--out-dir", str(tmp_path / "abl"), f"sources=[{{kind: synthetic, path: '{clean_folder}'}}]",
                                          "crop=32", "batch_size=2", "validation.paired=[]", "holdout={}"),
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert not marker.exists()
    assert "pickled code" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_checkpoint_loads_without_pickled_code(clean_folder, tmp_path) -> None:
    from derain.models.checkpoint import load_training_state

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", iterations=2, decay_start=1)))
    train(cfg)
    state = load_training_state(tmp_path / "run" / "checkpoint.pt")  # weights_only=True
    assert state["step"] == 2 and state["rng"]["numpy"]["keys"].shape == (624,)


def test_run_folder_is_never_silently_reused(clean_folder, tmp_path) -> None:
    out = tmp_path / "run"
    cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=2, decay_start=1))
    train(load_config(cfg_path))
    best = (out / "best.safetensors").read_bytes() if (out / "best.safetensors").exists() else None
    log_before = (out / "train_log.csv").read_text()
    with pytest.raises(ConfigError, match="holds an earlier run.*--resume"):
        train(load_config(cfg_path))
    assert (out / "train_log.csv").read_text() == log_before  # nothing appended or replaced
    if best is not None:
        assert (out / "best.safetensors").read_bytes() == best
    # --resume with a changed model or data config is refused, naming what changed
    for override, match in (("crop=48", "crop, iterations differ$"), ("lr=0.5", r"iterations, lr differ \(schedule keys change only with --allow-changes\)")):
        with pytest.raises(ConfigError, match=match):
            train(load_config(cfg_path, [override, "iterations=3"]), resume=True)
    result = train(load_config(cfg_path, ["iterations=3", "threads=2"]), resume=True, allow_changes=True)  # schedule: with the flag
    assert result.step == 3
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        train(load_config(cfg_path, [f"out_dir={tmp_path / 'file'}"]))


def test_train_without_arguments_lists_presets() -> None:
    proc = subprocess.run(_derain_cmd("train"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "default-cpu-v4" in proc.stdout and "paper-v1" in proc.stdout
    proc = subprocess.run(_derain_cmd("train", "--help"), capture_output=True, text=True, timeout=60)
    assert "out_dir" in proc.stdout and "PRESET" in proc.stdout


def test_presets_find_their_data_from_anywhere(tmp_path, monkeypatch) -> None:
    """Presets name ``$DERAIN_DATA/...``: --data-root, the variable, or ../shared/data beside the checkout."""
    from derain.training.config import default_data_root

    monkeypatch.chdir(tmp_path)  # not the repository root
    monkeypatch.delenv("DERAIN_DATA", raising=False)
    cfg = load_config(resolve_preset("default-cpu-v4"), data_root=tmp_path / "mine")
    assert cfg.sources[0].path == str(tmp_path / "mine" / "RainTrainL") and cfg.streaks == str(tmp_path / "mine" / "Streaks_Garg06")
    monkeypatch.setenv("DERAIN_DATA", str(tmp_path / "env"))
    assert load_config(resolve_preset("paper-v4")).sources[0].path == str(tmp_path / "env" / "clean")
    monkeypatch.delenv("DERAIN_DATA")
    root = default_data_root()
    if root.is_dir():  # beside this checkout (dev and CI): found even though the current folder is elsewhere
        assert load_config(resolve_preset("paper-v4")).sources[0].path == str(root / "clean")
    proc = subprocess.run(_derain_cmd("train", "default-cpu-v4", "--data-root", str(tmp_path / "none")), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1 and "none" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_batch_loss_weights_the_rain_free_samples():
    from derain.training.trainer import batch_loss

    torch.manual_seed(0)
    loss_fn = build_loss("l1_ssim", 0.2)
    clean = torch.rand(4, 3, 32, 32)
    rainy = clean.clone()
    rainy[:2] += 0.2 * torch.rand(2, 3, 32, 32)  # samples 0, 1 rainy; 2, 3 rain-free (input = target)
    pred = clean + 0.05 * torch.randn_like(clean)
    whole = loss_fn(pred, clean)
    torch.testing.assert_close(batch_loss(loss_fn, pred, rainy, clean, 1.0), whole)
    rain, free = loss_fn(pred[:2], clean[:2]), loss_fn(pred[2:], clean[2:])
    torch.testing.assert_close(batch_loss(loss_fn, pred, rainy, clean, 8.0), (2 * rain + 8 * 2 * free) / 4)
    torch.testing.assert_close(batch_loss(loss_fn, pred[:2], rainy[:2], clean[:2], 8.0), rain)  # no rain-free sample


class TestGateLoss:
    """``gate_weight``: the rain gate is trained against the rain mask (where the rain changed the image)."""

    def test_rain_mask_marks_changed_pixels_and_their_neighbours(self) -> None:
        clean = torch.rand(2, 3, 16, 16)
        rainy = clean.clone()
        rainy[0, 2, 5, 7] += 0.1  # one streak pixel, in one channel
        rainy[0, :, 12, 3] += 2 / 255  # below the threshold: not rain
        mask = rain_mask(rainy, clean)
        assert mask.shape == (2, 1, 16, 16)
        assert mask[0, 0, 4:7, 6:9].eq(1).all() and mask[0].sum() == 9
        assert mask[1].sum() == 0  # rain-free sample

    def test_without_between_streaks_only_rain_pixels_and_dry_samples_count(self) -> None:
        clean = torch.rand(2, 3, 16, 16)
        rainy = clean.clone()
        rainy[0, :, 8, 8] += 0.5  # sample 0: one streak pixel (its 3x3 neighbourhood is rain); sample 1 dry
        gate = torch.full((2, 1, 16, 16), 0.3, requires_grad=True)
        gate_loss(gate, rainy, clean, between_streaks=False).backward()
        counted = gate.grad[:, 0] != 0
        assert counted[0].sum() == 9 and counted[0, 7:10, 7:10].all() and counted[1].all()
        assert (gate.grad[0, 0, 7:10, 7:10] < 0).all() and (gate.grad[1] > 0).all()  # open on rain, close on dry

    def test_gate_loss_closes_the_gate_on_rain_free_content_and_opens_it_on_rain(self) -> None:
        """From the bundled default (open gate, about 0.95 everywhere): a few steps on one streaked and one
        rain-free image teach the gate to tell them apart (the mask covers 3/4 of the streaked one)."""
        torch.manual_seed(0)
        model = derain.create_model("default", pretrained=True)
        clean = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 6), size=(48, 48), mode="bilinear", align_corners=False)
        rainy = clean.clone()
        rainy[0, :, :, ::4] = (rainy[0, :, :, ::4] + 0.5).clamp(max=1)  # sample 0: vertical streaks; sample 1 rain-free
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(25):
            _, gate = model(rainy, return_gate=True)
            loss = gate_loss(gate, rainy, clean)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            _, gate = model(rainy, return_gate=True)
        assert gate[1].mean() < 0.05 and gate[0].mean() > 0.6, (gate[0].mean(), gate[1].mean())

    def test_init_weights_with_another_gate_head_start_that_head_fresh(self, tmp_path) -> None:
        from derain.training.trainer import _load_init_weights

        small = {**TINY_MODEL, "gate": True}
        derain.save_model(derain.create_model("efderain-tiny", **small), tmp_path / "w.safetensors")
        wide = derain.create_model("efderain-tiny", **small, gate_width=4)
        fresh = {k: v.clone() for k, v in wide.state_dict().items() if k.startswith("gate.")}
        _load_init_weights(wide, str(tmp_path / "w.safetensors"))
        assert all(torch.equal(wide.state_dict()[k], v) for k, v in fresh.items())
        source = derain.load_model(tmp_path / "w.safetensors").state_dict()
        assert torch.equal(wide.state_dict()["outc.weight"], source["outc.weight"])  # the rest is loaded

    def test_init_weights_without_a_global_gate_start_it_open(self, tmp_path) -> None:
        from derain.training.trainer import _load_init_weights

        derain.save_model(derain.create_model("efderain-tiny", **TINY_MODEL, gate=True), tmp_path / "w.safetensors")
        model = derain.create_model("efderain-tiny", **TINY_MODEL, gate=True, gate_global=True)
        _load_init_weights(model, str(tmp_path / "w.safetensors"))
        assert not model.gate_global.weight.any() and torch.sigmoid(model.gate_global.bias * 10).item() > 0.98

    def test_init_weights_with_an_infinite_value_are_refused(self, tmp_path) -> None:
        """Refused before any step, naming the tensor (not a training reported as diverged later)."""
        from derain.training.trainer import _load_init_weights

        model = derain.create_model("efderain-tiny", **TINY_MODEL)
        with torch.no_grad():
            model.outc.bias[0] = float("inf")
        derain.save_model(model, tmp_path / "w.safetensors")
        with pytest.raises(ConfigError, match=r"w.safetensors: outc.bias hold NaN or infinite"):
            _load_init_weights(derain.create_model("efderain-tiny", **TINY_MODEL), str(tmp_path / "w.safetensors"))

    def test_gated_weights_do_not_load_into_a_model_without_a_gate(self, tmp_path) -> None:
        from derain.training.trainer import _load_init_weights

        derain.save_model(derain.create_model("efderain-tiny", **TINY_MODEL, gate=True), tmp_path / "w.safetensors")
        with pytest.raises(ConfigError, match="unexpected.*gate"):
            _load_init_weights(derain.create_model("efderain-tiny", **TINY_MODEL), str(tmp_path / "w.safetensors"))

    def test_needs_a_model_with_a_gate(self, clean_folder, tmp_path) -> None:
        cfg = tiny_config(clean_folder, tmp_path / "run", gate_weight=0.1)
        with pytest.raises(ConfigError, match="gate_weight needs a model with a rain gate"):
            load_config(write_config(tmp_path / "c.yaml", cfg))
        cfg["model_overrides"] = {**TINY_MODEL, "gate": True}
        train(load_config(write_config(tmp_path / "c.yaml", {**cfg, "iterations": 2, "decay_start": 0})))
        assert (tmp_path / "run" / "last.safetensors").exists()


def test_resume_puts_the_weights_back_at_the_checkpoints_step(clean_folder, tmp_path) -> None:
    """A kill between writing last.safetensors and checkpoint.pt leaves them at different steps; --resume mends it."""
    from safetensors import safe_open


    out = tmp_path / "run"
    cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=4, decay_start=2, checkpoint_every=2))
    train(load_config(cfg_path), stop_after=2)  # checkpoint and weights at step 2
    ahead = derain.create_model("efderain-tiny", **TINY_MODEL)  # as if step 4's weights were written, then the kill
    derain.save_model(ahead, out / "last.safetensors", metadata={"step": "4"})
    train(load_config(cfg_path), resume=True, stop_after=2)  # resumes at step 2, trains nothing: the files are mended
    with safe_open(str(out / "last.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "2"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    weights = derain.load_model(out / "last.safetensors").state_dict()
    for key, value in state["model"].items():
        torch.testing.assert_close(weights[key].float(), value.float())


def _poison_images(monkeypatch, steps: set[int], batch_size: int = 2) -> None:
    """A NaN in the first rainy image of each of ``steps`` (1-based; StepBatchSampler gives step s the sample
    indices (s-1)·batch_size ...), as a broken image would bring."""
    original = TrainingSamples.__getitem__

    def getitem(self, index: int):
        rainy, clean = original(self, index)
        if index % batch_size == 0 and index // batch_size + 1 in steps:
            rainy = rainy.clone()
            rainy[0, 3, 5] = float("nan")
        return rainy, clean

    monkeypatch.setattr(TrainingSamples, "__getitem__", getitem)


def _all_finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def _files(out: Path) -> dict[str, bytes]:
    """The run's result files, as bytes (through the links of :func:`~derain.io.atomic.atomic_files`)."""
    return {name: (out / name).read_bytes() for name in ("checkpoint.pt", "last.safetensors", "best.safetensors") if (out / name).exists()}


class TestDivergence:
    """Non-finite losses and gradients: skipped, counted, and after ``max_bad_steps`` in a row a one-line stop that
    leaves the last good checkpoint; nothing non-finite is ever written."""

    def test_nan_in_one_image_skips_that_step_only(self, clean_folder, tmp_path, monkeypatch, caplog) -> None:
        out = tmp_path / "run"
        cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=6, decay_start=3, ema=0.5))
        train(load_config(cfg_path), stop_after=2)
        before = torch.load(out / "checkpoint.pt", weights_only=True)
        _poison_images(monkeypatch, {3})
        result = train(load_config(cfg_path), resume=True, stop_after=3)
        assert result.step == 3 and result.skipped_steps == 1
        assert "step 3 skipped: loss nan" in caplog.text
        after = torch.load(out / "checkpoint.pt", weights_only=True)
        assert after["step"] == 3 and after["skipped_steps"] == 1
        for part in ("model", "ema"):  # no update and no average of the broken step
            for key, value in before[part].items():
                assert torch.equal(after[part][key], value), (part, key)
        for index, state in before["optimizer"]["state"].items():
            assert all(torch.equal(after["optimizer"]["state"][index][k], v) for k, v in state.items())
        assert after["scheduler"]["last_epoch"] == 3  # the schedule follows the step count
        assert read_losses(out)[3] == "nan"
        result = train(load_config(cfg_path), resume=True)  # the rest trains as usual
        assert result.step == 6 and result.skipped_steps == 1 and result.last_loss is not None
        losses = read_losses(out)
        assert sorted(losses) == [1, 2, 3, 4, 5, 6] and all(np.isfinite(float(losses[s])) for s in (1, 2, 4, 5, 6))
        weights = derain.load_model(out / "last.safetensors").state_dict()
        assert _all_finite(weights) and _all_finite(torch.load(out / "checkpoint.pt", weights_only=True)["model"])

    def test_a_skipped_first_step_keeps_the_schedule_quietly(self, clean_folder, tmp_path, monkeypatch) -> None:
        """Step 1 skipped: the schedule still counts it (no PyTorch warning about the order of the calls)."""
        import warnings

        _poison_images(monkeypatch, {1})
        out = tmp_path / "run"
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            result = train(load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=3, decay_start=1))))
        assert not [w for w in seen if "lr_scheduler" in str(w.message)]
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert result.step == 3 and result.skipped_steps == 1 and state["scheduler"]["last_epoch"] == 3
        assert int(state["optimizer"]["state"][0]["step"]) == 2  # Adam updated at steps 2 and 3 only

    def test_loss_nan_once_is_skipped_and_training_finishes(self, clean_folder, tmp_path, monkeypatch) -> None:
        from derain.training import trainer

        clean = tmp_path / "clean-run"
        train(load_config(write_config(tmp_path / "a.yaml", tiny_config(clean_folder, clean))))
        calls = itertools.count(1)
        real = trainer.batch_loss
        monkeypatch.setattr(trainer, "batch_loss", lambda *a, **k: real(*a, **k) * (float("nan") if next(calls) == 4 else 1.0))
        out = tmp_path / "run"
        result = train(load_config(write_config(tmp_path / "b.yaml", tiny_config(clean_folder, out))))
        assert result.step == 8 and result.skipped_steps == 1
        losses, reference = read_losses(out), read_losses(clean)
        assert losses[4] == "nan" and all(np.isfinite(float(v)) for s, v in losses.items() if s != 4)
        assert [losses[s] for s in (1, 2, 3)] == [reference[s] for s in (1, 2, 3)]  # bit-identical until the NaN
        assert losses[5] != reference[5]  # step 4 did not train
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert state["step"] == 8 and state["skipped_steps"] == 1 and _all_finite(state["model"])
        assert _all_finite(derain.load_model(out / "last.safetensors").state_dict())

    def test_nan_for_max_bad_steps_in_a_row_stops_and_keeps_the_last_good_checkpoint(self, clean_folder, tmp_path, monkeypatch) -> None:
        """Steps 3-5 broken, max_bad_steps 3: the run stops at step 5 with one line, its checkpoint still that of
        step 2 (none written inside the streak); a resume with the data mended trains as a run that never broke,
        also when the checkpoint's config predates ``max_bad_steps``."""
        from derain.training.trainer import TrainingDiverged

        reference = tmp_path / "reference"
        train(load_config(write_config(tmp_path / "a.yaml", tiny_config(clean_folder, reference))), stop_after=2)
        out = tmp_path / "run"
        cfg_path = write_config(tmp_path / "b.yaml", tiny_config(clean_folder, out, max_bad_steps=3))
        with monkeypatch.context() as patch:
            _poison_images(patch, {3, 4, 5, 6, 7, 8})
            with pytest.raises(TrainingDiverged) as info:
                train(load_config(cfg_path))
        message = str(info.value)
        assert "\n" not in message and isinstance(info.value, derain.errors.UserError)
        assert "not finite for 3 steps in a row (steps 3-5; last loss nan" in message
        assert f"the last checkpoint, step 2, is kept in {out} (--resume continues from it)" in message
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert state["step"] == 2 and state["skipped_steps"] == 0
        ref_state = torch.load(reference / "checkpoint.pt", weights_only=True)
        assert all(torch.equal(state["model"][k], v) for k, v in ref_state["model"].items())
        tensors, meta = read_state_dict(out / "last.safetensors")  # checks its hash
        ref_tensors, ref_meta = read_state_dict(reference / "last.safetensors")
        assert meta == ref_meta and meta["step"] == "2" and "derain.sha256" in meta  # the same hash: the same contents
        assert all(torch.equal(tensors[k], v) for k, v in ref_tensors.items()) and _all_finite(tensors)
        assert sorted(read_losses(out)) == [1, 2, 3, 4, 5] and read_losses(out)[5] == "nan"

        del state["config"]["max_bad_steps"]  # a run from before the key: it counts as its default
        torch.save(state, out / "checkpoint.pt")
        result = train(load_config(cfg_path, ["max_bad_steps=4"]), resume=True)  # free to change on --resume
        assert result.step == 8 and result.skipped_steps == 0
        full = tmp_path / "full"
        train(load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, full))))
        assert read_losses(out) == read_losses(full)  # rows 3-5 of the stopped run were dropped and redone

    def test_an_infinite_step_writes_nothing_non_finite(self, clean_folder, tmp_path, monkeypatch) -> None:
        """Step 1's rate infinite (the schedule's factor, patched; the config refuses lr=.inf): the first update makes
        the weights infinite; the checkpoint that would hold them is refused."""
        from derain.training import trainer
        from derain.training.trainer import TrainingDiverged

        real = trainer.lr_factor
        monkeypatch.setattr(trainer, "lr_factor", lambda s, *a: float("inf") if s == 0 else real(s, *a))  # step 1's lr
        out = tmp_path / "run"
        cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out)))
        with pytest.raises(TrainingDiverged, match=r"^training diverged at step 1: the weights are no longer finite \(.*\); lower the "
                           r"learning rate \(lr=0.0002\) or check the data; nothing was written, no checkpoint was written in "):
            train(cfg)
        assert not _files(out) and (out / "config.yaml").exists()

    def test_huge_learning_rate_stops_after_max_bad_steps(self, clean_folder, tmp_path) -> None:
        """Without a checkpoint due, the weights thrown far by lr=1e6 give NaN losses: max_bad_steps of them stop the run."""
        from derain.training.trainer import TrainingDiverged

        out = tmp_path / "run"
        cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, lr=1e6, checkpoint_every=100, max_bad_steps=2)))
        with pytest.raises(TrainingDiverged, match=r"not finite for 2 steps in a row \(steps 2-3; .*lr=1e\+06.*no checkpoint was written"):
            train(cfg)
        assert not _files(out)
        assert sorted(read_losses(out)) == [1, 2, 3] and read_losses(out)[2] == "nan"

    def test_inf_learning_rate_in_a_resumed_run_keeps_the_checkpoint(self, clean_folder, tmp_path, monkeypatch) -> None:
        """The learning rate turns infinite for step 4 of a resumed run (the schedule's factor, patched): validation
        at step 4 refuses the weights it made; checkpoint, last and best stay those of step 2."""
        from derain.training import trainer
        from derain.training.trainer import TrainingDiverged

        out = tmp_path / "run"
        cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, checkpoint_every=2, validation={"synthetic": 2, "every": 2}))
        train(load_config(cfg_path), stop_after=2)
        good = _files(out)
        assert set(good) == {"checkpoint.pt", "last.safetensors", "best.safetensors"}
        with monkeypatch.context() as patch:
            real = trainer.lr_factor
            patch.setattr(trainer, "lr_factor", lambda s, *a: float("inf") if s == 3 else real(s, *a))  # step 4's lr
            with pytest.raises(TrainingDiverged, match=r"^training diverged at step 4: the weights are no longer finite \(.*\); lower the learning "
                               r"rate \(lr=0.0002\) or check the data; nothing was written, the last checkpoint, step 2, is kept in "):
                train(load_config(cfg_path), resume=True)
        assert _files(out) == good  # checkpoint, last and best: byte for byte
        assert sorted(read_losses(out)) == [1, 2, 3, 4]  # step 4's loss was finite: its update was not
        result = train(load_config(cfg_path), resume=True)  # the schedule mended: from step 2 again, to the end
        assert result.step == 8 and sorted(read_losses(out)) == list(range(1, 9))
        assert _all_finite(derain.load_model(out / "best.safetensors").state_dict())

    def test_cli_stops_with_one_line(self, clean_folder, tmp_path) -> None:
        cfg = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", lr=1e6, checkpoint_every=100, max_bad_steps=2))
        proc = subprocess.run(_derain_cmd("train", str(cfg)), check=False, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if "training diverged" in line]
        assert len(errors) == 1 and errors[0].startswith("Error: training diverged: the loss or its gradient was not finite")
        assert proc.stderr.count("WARNING: step") == 2  # each skipped step logged
        assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_derive_weights_average_writes_the_point_on_the_line(tmp_path) -> None:
    """benchmarks/derive_weights.py average: (1 - alpha)·A + alpha·B for every tensor, A's architecture; two different
    networks are one line and a non-zero exit."""
    from derain.models.checkpoint import read_model, save_model

    a, b = derain.create_model("efderain-tiny"), derain.create_model("efderain-tiny")
    with torch.no_grad():
        for p in b.parameters():
            p.add_(torch.randn_like(p))
    save_model(a, tmp_path / "a.safetensors")
    save_model(b, tmp_path / "b.safetensors")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "derive_weights.py"
    out = tmp_path / "mid.safetensors"
    subprocess.run([sys.executable, str(script), "average", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                    "--alpha", "0.25", "-o", str(out)], capture_output=True, text=True, check=True)
    from derain.models.checkpoint import read_state_dict

    mid, sa, sb = read_model(out).state_dict(), a.state_dict(), b.state_dict()
    for key, value in mid.items():
        assert torch.allclose(value.float(), 0.75 * sa[key] + 0.25 * sb[key], atol=2e-3, rtol=1e-3), key  # saved fp16
    stored, meta = read_state_dict(out)
    assert stored["outc.weight"].dtype == torch.float16 and meta["derain.name"] == "mid"
    save_model(derain.create_model("efderain-small"), tmp_path / "other.safetensors")
    save_model(derain.create_model("efderain-tiny", dilations=(1, 2)), tmp_path / "two.safetensors")
    for other, alpha in (("other", "0.5"), ("two", "0.5"), ("b", "nan")):
        bad = subprocess.run([sys.executable, str(script), "average", str(tmp_path / "a.safetensors"), str(tmp_path / f"{other}.safetensors"),
                              "--alpha", alpha, "-o", str(tmp_path / "x.safetensors")], capture_output=True, text=True)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) <= 2 and "Traceback" not in bad.stderr, bad.stderr
        assert ("finite" if alpha == "nan" else "different networks") in bad.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_derive_weights_shallow_keeps_each_blocks_first_convolution(tmp_path) -> None:
    """benchmarks/derive_weights.py shallow: depth 1, each block's first convolution and the other tensors copied; --no-gates
    leaves the gate heads out; anything but a plain two-convolution EfDeRain is one line and a non-zero exit."""
    from derain.models.checkpoint import read_model, save_model

    deep = derain.create_model("efderain-tiny", gate=True, gate_global=True)
    with torch.no_grad():
        for p in deep.parameters():
            p.add_(torch.randn_like(p))
    save_model(deep, tmp_path / "deep.safetensors")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "derive_weights.py"
    for flags, name in (([], "copied"), (["--no-gates"], "plain")):
        subprocess.run([sys.executable, str(script), "shallow", str(tmp_path / "deep.safetensors"), "-o", str(tmp_path / f"{name}.safetensors"),
                        *flags], capture_output=True, text=True, check=True)
    copied, plain, ref = (read_model(tmp_path / "copied.safetensors").state_dict(),
                          read_model(tmp_path / "plain.safetensors"), deep.state_dict())
    assert read_model(tmp_path / "copied.safetensors").config.depth == 1 and "conv1.conv1.2.weight" not in copied
    for key in ("conv1.conv1.0.weight", "conv4.conv1.0.bias", "outc.weight", "conv_final.weight", "gate.weight", "gate_global.weight"):
        assert torch.allclose(copied[key].float(), ref[key], atol=1e-2, rtol=1e-3), key  # saved fp16
    assert not plain.config.gate and not any(k.startswith("gate") for k in plain.state_dict())
    save_model(derain.create_model("efderain-cpu-d1"), tmp_path / "shallow.safetensors")
    bad = subprocess.run([sys.executable, str(script), "shallow", str(tmp_path / "shallow.safetensors"), "-o", str(tmp_path / "x.safetensors")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "at least two convolutions" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_check_says_what_a_run_would_read_and_writes_nothing(clean_folder, tmp_path) -> None:
    """``derain train CONFIG --check``: the sources' shares and sizes after the hold-out, the validation sets and
    the schedule, read as training reads them (its errors too), and no run folder."""
    from click.testing import CliRunner

    from derain.cli.main import cli
    from derain.training import check_run

    out = tmp_path / "run"
    path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=4, decay_start=2,
                                                         holdout={str(clean_folder): 2}, validation={"every": 2}))
    lines = check_run(load_config(path))
    n = len([p for p in clean_folder.rglob("*") if p.is_file()])
    assert any(line.startswith("sources[0] synthetic") and f"100% of the samples, {n - 2} photos" in line for line in lines), lines
    assert any(line.startswith("validation: 2 held-out photos with rendered rain") and line.endswith("every 2 steps") for line in lines), lines
    assert not out.exists()
    result = CliRunner().invoke(cli, ["train", str(path), "--check", "seed=3"])
    assert result.exit_code == 0 and "seed 3" in result.output and not out.exists()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_run(load_config(path))
    assert torch.equal(torch.rand(3), expected)  # the caller's random state is left as it was
    bare = check_run(load_config(path, ["holdout={}", "validation.paired=[]"]))
    assert "validation: none (nothing held out, no validation.paired folder)" in bare
    train(load_config(path), stop_after=1)
    with pytest.raises(ConfigError, match="holds an earlier run"):
        check_run(load_config(path))
    resumed = check_run(load_config(path), resume=True)
    assert resumed[0].endswith(f"resumed from {out / 'checkpoint.pt'} at step 1") and resumed[1:] == lines[1:]
