"""What the training tests share (``tests/test_training.py``, ``tests/test_training_config_guards.py``): a tiny
model and config, and the clean-photo corpus behind the ``clean_folder`` fixture (``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from derain.bench.faults import TINY_MODEL

__all__ = ["TINY_MODEL", "make_clean_folder", "tiny_config", "write_config"]


def make_clean_folder(root: Path) -> Path:
    """A small clean-photo corpus in ``root``: smooth random images (no shared data needed)."""
    rng = np.random.default_rng(0)
    for i in range(8):
        base = rng.random((6, 8, 3))
        img = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((96, 72), Image.BICUBIC))
        Image.fromarray(img).save(root / f"{i:02d}.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "small.png")  # smaller than the crop: skipped
    return root


def tiny_config(clean_folder: Path, out: Path, **extra) -> dict:
    cfg = {
        "model": "efderain-tiny",
        "model_overrides": TINY_MODEL,
        "sources": [{"kind": "synthetic", "path": str(clean_folder), "preset": "mixed"}],
        "crop": 32,
        "batch_size": 2,
        "iterations": 8,
        "decay_start": 4,
        "threads": 1,
        "seed": 3,
        "log_every": 1,
        "checkpoint_every": 1,
        "validation": {"synthetic": 2, "every": 0},
        "out_dir": str(out),
    }
    cfg.update(extra)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path
