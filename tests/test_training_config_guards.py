"""Training config guards: non-finite numbers are refused in one line, and ``--resume --allow-changes`` trains
with the config's learning rate (not the one saved with the optimizer and scheduler)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_training import tiny_config, write_config  # clean_folder: a fixture of conftest.py

from derain.training import load_config, train
from derain.training.config import ConfigError
from derain.training.trainer import lr_factor


@pytest.mark.parametrize("override, message", [
    ("lr=.inf", "lr must be a finite number, got inf"),
    ("lr=.nan", "lr must be a finite number, got nan"),
    ("lr=-.inf", "lr must be a finite number, got -inf"),
    ("lr=inf", "lr must be a finite number, got 'inf'"),
    ("lr=nan", "lr must be a finite number, got 'nan'"),
    ("ssim_weight=.nan", "ssim_weight must be a finite number, got nan"),
    ("ema=.nan", "ema must be a finite number, got nan"),
    ("identity_weight=.inf", "identity_weight must be a finite number, got inf"),
    ("sources=[{kind: synthetic, path: c, scale: [0.5, .inf]}]", "sources[0].scale[1] must be a finite number, got inf"),
])
def test_non_finite_numbers_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["sources=[{kind: synthetic, path: clean}]", override], base=Path("/"))
    assert str(info.value) == message


def test_finite_numbers_still_pass() -> None:
    cfg = load_config(None, ["sources=[{kind: synthetic, path: clean}]", "lr=1e30", "ssim_weight=0.5"], base=Path("/"))
    assert cfg.lr == 1e30 and cfg.ssim_weight == 0.5


@pytest.mark.parametrize("lr, betas", [(1e39, [0.5, 0.999]), (1.8e38, [0.5, 0.999]), (3.5e38, [0.0, 0.999])])
def test_an_lr_past_float32_is_refused(lr: float, betas: list) -> None:
    """A finite lr whose first Adam step (lr / (1 - beta1)) is no float32: torch would fail with an overflow error."""
    with pytest.raises(ConfigError, match=r"^lr must be at most .* \(Adam's first step, lr / \(1 - betas\[0\]\), must fit a float32\), got "):
        load_config(None, ["sources=[{kind: synthetic, path: clean}]", f"lr={lr!r}", f"betas={betas}"], base=Path("/"))
    load_config(None, ["sources=[{kind: synthetic, path: clean}]", "lr=1.6e38", "betas=[0.5, 0.999]"], base=Path("/"))


def test_cli_refuses_lr_inf_in_one_line(tmp_path, clean_folder) -> None:
    cfg = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, tmp_path / "run", lr=float("inf")))
    proc = subprocess.run([sys.executable, "-m", "derain.cli.main", "train", str(cfg)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "Error: lr must be a finite number, got inf", proc.stderr
    assert not (tmp_path / "run").exists()


def _logged_lrs(out: Path) -> dict[int, float]:
    with open(out / "train_log.csv") as f:
        return {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}


class TestResumeFollowsTheConfigsSchedule:
    def test_a_changed_lr_is_used_after_resume(self, tmp_path, clean_folder) -> None:
        """lr 2e-4 for steps 1-2, then resumed with lr 1e-3 --allow-changes: steps 3-8 follow 1e-3's schedule (the
        optimizer's rate, the scheduler's base and the logged rate), and so do the checkpoints written after."""
        out = tmp_path / "run"
        cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=8, decay_start=4))
        train(load_config(cfg_path), stop_after=2)
        with pytest.raises(ConfigError, match="lr differ"):
            train(load_config(cfg_path, ["lr=0.001"]), resume=True)  # without --allow-changes: refused
        train(load_config(cfg_path, ["lr=0.001"]), resume=True, allow_changes=True)
        lrs = _logged_lrs(out)
        assert lrs[1] == lrs[2] == pytest.approx(2e-4)
        for step in range(3, 9):  # the rate logged after step s is the one for step s+1: lr * factor(s)
            assert lrs[step] == pytest.approx(1e-3 * lr_factor(step, 4, 8)), step
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        assert state["scheduler"]["base_lrs"] == [1e-3]
        assert state["optimizer"]["param_groups"][0]["initial_lr"] == 1e-3 and state["config"]["lr"] == 1e-3

    def test_a_changed_decay_start_is_used_from_the_first_resumed_step(self, tmp_path, clean_folder, monkeypatch) -> None:
        """The rate each update uses (seen by Adam itself): the first step after the resume is already on the new
        schedule, not on the one the saved optimizer state carried."""
        out = tmp_path / "run"
        cfg_path = write_config(tmp_path / "c.yaml", tiny_config(clean_folder, out, iterations=8, decay_start=6))
        train(load_config(cfg_path), stop_after=5)
        used: list[float] = []
        real_step = torch.optim.Adam.step

        def step(self, *args, **kwargs):
            used.append(self.param_groups[0]["lr"])
            return real_step(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Adam, "step", step)
        train(load_config(cfg_path, ["decay_start=3"]), resume=True, allow_changes=True)
        assert used == pytest.approx([2e-4 * lr_factor(s - 1, 3, 8) for s in (6, 7, 8)])

    def test_an_unchanged_config_resumes_bit_for_bit(self, tmp_path, clean_folder) -> None:
        """The recomputed rate is the scheduler's own: a resumed run logs exactly what an uninterrupted one does."""
        full, parts = tmp_path / "full", tmp_path / "parts"
        train(load_config(write_config(tmp_path / "a.yaml", tiny_config(clean_folder, full))))
        cfg_path = write_config(tmp_path / "b.yaml", tiny_config(clean_folder, parts))
        train(load_config(cfg_path), stop_after=3)
        train(load_config(cfg_path), resume=True)
        with open(full / "train_log.csv") as a, open(parts / "train_log.csv") as b:
            strip = lambda rows: [(r["step"], r["loss"], r["lr"]) for r in rows]  # noqa: E731 - images/s differ
            assert strip(csv.DictReader(a)) == strip(csv.DictReader(b))
