"""Training signals for real rain (issue 27): the image gate's judgement labels and the ``real`` rain preset."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import derain
from derain.data.folders import numbered
from derain.data.render import MIXED, PRESETS, RainParams, RainRenderer, rain_statistics, render_streaks
from derain.training import judgement as judgement_module
from derain.training.config import ConfigError, load_config
from derain.training.judgement import JudgementSamples
from derain.training.losses import judgement_loss
from derain.training.trainer import train

from conftest import shared_path

TINY_GATED = {"widths": [4, 8, 8], "depth": 1, "kernel_level": 1, "gate": True, "gate_global": True}


def _streaky(rng: np.random.Generator, h: int = 80, w: int = 96) -> np.ndarray:
    """A smooth photo with bright near-vertical streaks (a stand-in for a real rainy photo)."""
    base = np.asarray(Image.fromarray((rng.random((5, 6, 3)) * 200).astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
    streaks = render_streaks((h, w), RainParams(density=(0.01, 0.01), intensity=(0.8, 0.8), blur_prob=0.0), rng)
    return np.clip(base + 255 * streaks[:, :, None], 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """(rainy, dry): numbered streaky photos 1-8 (and one without a number), smooth dry photos."""
    root = tmp_path_factory.mktemp("judgement")
    rainy, dry = root / "rainy", root / "dry"
    rainy.mkdir()
    dry.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 9):
        Image.fromarray(_streaky(rng)).save(rainy / f"{i}.jpg", quality=90)
    Image.fromarray(_streaky(rng)).save(rainy / "extra.jpg", quality=90)
    for i in range(6):
        base = (rng.random((5, 6, 3)) * 255).astype(np.uint8)
        Image.fromarray(base).resize((96, 80), Image.BICUBIC).save(dry / f"d{i}.png")
    return rainy, dry


def _config(folders: tuple[Path, Path], out: Path, **judgement) -> dict:
    rainy, dry = folders
    return {
        "model": "efderain-tiny",
        "model_overrides": TINY_GATED,
        "sources": [{"kind": "synthetic", "path": str(dry), "preset": "light"}],
        "judgement": {"rainy": [str(rainy)], "select": "even", "dry": [str(dry)], "batch": 4, "size": 32, **judgement},
        "crop": 32,
        "batch_size": 2,
        "iterations": 4,
        "decay_start": 2,
        "threads": 1,
        "seed": 1,
        "log_every": 1,
        "checkpoint_every": 2,
        "validation": {"every": 0},
        "out_dir": str(out),
    }


def _load(folders: tuple[Path, Path], tmp_path: Path, overrides: list[str] = (), **judgement):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(folders, tmp_path / "run", **judgement)))
    return load_config(path, list(overrides))


# --------------------------------------------------------------------------- which photos are read


def test_select_keeps_only_the_numbered_half() -> None:
    names = ["1.jpg", "2.jpg", "10.png", "11.png", "rain.jpg", "3a.jpg"]
    assert [n for n in names if numbered(n, "even")] == ["2.jpg", "10.png"]
    assert [n for n in names if numbered(n, "odd")] == ["1.jpg", "11.png"]
    assert [n for n in names if numbered(n, "all")] == names
    with pytest.raises(ValueError, match="select"):
        numbered("1.jpg", "most")


def test_the_judgement_reads_only_the_selected_rainy_files_and_no_held_out_dry_photo(folders, tmp_path, monkeypatch) -> None:
    cfg = _load(folders, tmp_path, [f"holdout={{{folders[1]}: 2}}"])
    samples = JudgementSamples(cfg.judgement, cfg.hold_out(), cfg.seed)
    assert sorted(p.name for p in samples.rainy) == ["2.jpg", "4.jpg", "6.jpg", "8.jpg"]
    assert sorted(p.name for p in samples.dry) == ["d0.png", "d1.png", "d2.png", "d3.png"]  # d4, d5 held out
    read: list[str] = []
    real_read = judgement_module.read_image
    monkeypatch.setattr(judgement_module, "read_image", lambda p, *a, **k: read.append(Path(p).name) or real_read(p, *a, **k))
    judgement_module._fitted.cache_clear()
    for step in range(12):
        samples.batch(step)
    assert read and set(read) <= {"2.jpg", "4.jpg", "6.jpg", "8.jpg", "d0.png", "d1.png", "d2.png", "d3.png"}


def test_internetdata147_trains_only_on_its_even_half(tmp_path) -> None:
    base = ["sources=[{kind: synthetic, path: clean}]", "model=efderain-cpu"]
    for select in ("all", "odd"):
        with pytest.raises(ConfigError, match="select: even") as err:
            load_config(None, [*base, f"judgement={{rainy: [$DERAIN_DATA/InternetData147/rainy], select: {select}, dry: [clean]}}"],
                        base=tmp_path)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="holdout names .*judgement.rainy"):
        load_config(None, [*base, "judgement={rainy: [r], dry: [clean]}", "holdout={r: 2}"], base=tmp_path)


def test_internetdata147_even_half_with_the_shared_data(tmp_path) -> None:
    folder = shared_path("InternetData147") / "rainy"
    cfg = load_config(None, ["sources=[{kind: synthetic, path: $DERAIN_DATA/clean}]", "model=efderain-cpu",
                             "holdout={$DERAIN_DATA/clean: 6}",
                             "judgement={rainy: [$DERAIN_DATA/InternetData147/rainy], select: even, dry: [$DERAIN_DATA/clean]}"],
                      base=tmp_path, data_root=folder.parents[1])
    samples = JudgementSamples(cfg.judgement, cfg.hold_out(), cfg.seed)
    evens = [p for p in folder.iterdir() if p.stem.isdigit() and int(p.stem) % 2 == 0]
    assert sorted(samples.rainy) == sorted(evens) and all(int(p.stem) % 2 == 0 for p in samples.rainy)
    held = cfg.hold_out().split_photos(cfg.judgement.dry[0])[1]
    assert len(held) == 6 and not set(held) & set(samples.dry)


# --------------------------------------------------------------------------- the batch


def test_a_batch_is_half_rainy_half_dry_and_a_function_of_seed_and_step(folders, tmp_path) -> None:
    cfg = _load(folders, tmp_path)
    samples = JudgementSamples(cfg.judgement, cfg.hold_out(), cfg.seed)
    views, labels = samples.batch(3)
    assert views.shape == (4, 3, 32, 32) and views.dtype == torch.float32 and 0 <= views.min() and views.max() <= 1
    assert labels.ravel().tolist() == [1.0, 1.0, 0.0, 0.0]
    again = JudgementSamples(cfg.judgement, cfg.hold_out(), cfg.seed)  # a resumed run builds its own
    assert torch.equal(again.batch(3)[0], views)
    assert not torch.equal(samples.batch(4)[0], views)
    other_seed = JudgementSamples(cfg.judgement, cfg.hold_out(), cfg.seed + 1)
    assert not torch.equal(other_seed.batch(3)[0], views)
    # rank r of W takes the items a single run numbers (t·W + r)·B + j, each half rainy
    assert torch.equal(samples.batch(1, rank=1, world=2)[0], samples.batch(3)[0])
    assert samples.batch(1, rank=0, world=2)[1].ravel().tolist() == [1.0, 1.0, 0.0, 0.0]


def test_both_sides_are_jpeg_encoded_alike(folders, tmp_path) -> None:
    always = _load(folders, tmp_path, jpeg_p=1.0)
    never = _load(folders, tmp_path, jpeg_p=0.0)
    a = JudgementSamples(always.judgement, always.hold_out(), 1).batch(0)[0]
    b = JudgementSamples(never.judgement, never.hold_out(), 1).batch(0)[0]
    changed = (a - b).abs().flatten(1).amax(1)
    assert bool((changed > 0).all()), changed  # every view, rainy and dry, re-encoded
    # the same crop underneath: the round trip only adds compression error
    assert float((a - b).abs().mean()) < 0.05


# --------------------------------------------------------------------------- the loss and the trainer


def test_the_judgement_loss_moves_the_image_gate_toward_the_labels(tmp_path) -> None:
    # photos a tiny untrained encoder can tell apart (bright dense streaks, dark smooth photos): the test is that
    # the loss reaches the image gate with the right labels, not how well a tiny model sees rain
    rng = np.random.default_rng(1)
    rainy, dry = tmp_path / "rainy", tmp_path / "dry"
    rainy.mkdir()
    dry.mkdir()
    for i in range(2, 10, 2):
        streaks = render_streaks((64, 64), RainParams(density=(0.05, 0.05), intensity=(0.9, 0.9), blur_prob=0.0), rng)
        Image.fromarray((255 * np.clip(0.3 + streaks, 0, 1)[:, :, None].repeat(3, 2)).astype(np.uint8)).save(rainy / f"{i}.png")
        Image.fromarray((rng.random((64, 64, 3)) * 20 + 30).astype(np.uint8)).save(dry / f"{i}.png")
    cfg = _load((rainy, dry), tmp_path)
    samples = JudgementSamples(cfg.judgement, cfg.hold_out(), cfg.seed)
    torch.manual_seed(0)
    model = derain.create_model("efderain-tiny", **TINY_GATED)
    for module in model.modules():  # PyTorch's init: the released gain (0.02) leaves a tiny encoder's features flat
        if isinstance(module, torch.nn.Conv2d):
            module.reset_parameters()
    views, labels = samples.batch(100)

    def judged() -> tuple[float, float]:
        with torch.no_grad():
            factor = model.image_gate(views)
        return float(judgement_loss(factor, labels)), float(factor[labels == 1].mean() - factor[labels == 0].mean())

    loss_before, _ = judged()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(20):
        v, y = samples.batch(step)
        loss = judgement_loss(model.image_gate(v), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss_after, gap = judged()
    assert loss_after < 0.5 * loss_before and gap > 0.3, (loss_before, loss_after, gap)


def test_training_with_judgement_logs_it_and_resumes_bit_for_bit(folders, tmp_path) -> None:
    straight = _config(folders, tmp_path / "a")
    cfg_a = load_config(_write(tmp_path / "a.yaml", straight))
    train(cfg_a)
    cfg_b = load_config(_write(tmp_path / "b.yaml", {**straight, "out_dir": str(tmp_path / "b")}))
    train(cfg_b, stop_after=2)
    train(cfg_b, resume=True)
    with open(tmp_path / "a" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and all(float(r["judgement_loss"]) > 0 for r in rows)
    a = derain.load_model(tmp_path / "a" / "last.safetensors").state_dict()
    b = derain.load_model(tmp_path / "b" / "last.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_model_without_an_image_gate_is_one_config_error(folders, tmp_path) -> None:
    for overrides in ({"widths": [4, 8, 8]}, {"widths": [4, 8, 8], "gate": True}):
        cfg = {**_config(folders, tmp_path / "run"), "model_overrides": overrides}
        with pytest.raises(ConfigError, match="judgement needs a model that judges whole images") as err:
            load_config(_write(tmp_path / "c.yaml", cfg))
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="batch must be even"):
        _load(folders, tmp_path, batch=3)
    with pytest.raises(ConfigError, match="needs `rainy` and `dry`"):
        load_config(None, ["sources=[{kind: synthetic, path: clean}]", "model=efderain-cpu", "judgement={rainy: [r]}"],
                    base=tmp_path)


# --------------------------------------------------------------------------- the real preset


def test_mixed_stays_the_rain100_style_presets() -> None:
    assert set(MIXED) == {"heavy", "light", "medium"} and "real" in PRESETS and "real" not in MIXED


def _median(preset: str, key: str, clean: np.ndarray, **overrides) -> float:
    renderer = RainRenderer(preset, **overrides)
    return float(np.median([rain_statistics(renderer.render(clean, np.random.default_rng(i)), clean)[key] for i in range(6)]))


def test_the_real_preset_renders_wide_streaks_over_a_veil() -> None:
    rng = np.random.default_rng(0)
    clean = np.asarray(Image.fromarray((rng.random((6, 8, 3)) * 120).astype(np.uint8)).resize((256, 192), Image.BICUBIC),
                       np.float32) / 255
    plain = {"haze_prob": 0.0, "jpeg_prob": 0.0}
    assert _median("real", "width", clean, **plain) > _median("heavy", "width", clean, **plain) + 0.3
    # semi-transparent: less added light than heavy rain, for all the width
    assert _median("real", "mean", clean, **plain) < _median("heavy", "mean", clean, **plain)
    # the veil lifts the dark pixels between the streaks (a photo of at most 0.47 under A >= 0.75)
    veiled = RainRenderer("real", haze_prob=1.0, jpeg_prob=0.0).render(clean, np.random.default_rng(1))
    assert float(np.percentile((veiled - clean).mean(axis=2), 5)) > 0.01


def test_depth_makes_the_near_layers_wide_faint_and_blurred() -> None:
    shape = (160, 160)
    params = RainParams(layers=(1, 1), density=(0.004, 0.004), length=(30, 30), thickness=(1, 1), intensity=(0.5, 0.5),
                        blur_prob=0.0, angle=(90, 90), angle_spread=0.0)
    far = render_streaks(shape, params, np.random.default_rng(0))
    near = render_streaks(shape, RainParams(**{**params.__dict__, "depth": 2.0, "depth_blur": 2.0}), np.random.default_rng(3))
    width = lambda s: rain_statistics(np.repeat(s[:, :, None], 3, 2), np.zeros((*shape, 3), np.float32))["width"]  # noqa: E731
    assert width(near) > width(far) and near.max() < far.max()
    with pytest.raises(ValueError, match="depth"):
        RainParams(depth=-1.0)
