"""`derain demo`: the README's main-job command on a fresh machine (no input file)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

import derain
from derain.cli.demo import synthetic_scene


def test_scene_is_deterministic() -> None:
    assert np.array_equal(synthetic_scene(seed=3), synthetic_scene(seed=3))
    assert not np.array_equal(synthetic_scene(seed=3), synthetic_scene(seed=4))


def test_demo_writes_strip(tmp_path) -> None:
    torch.manual_seed(0)
    weights = derain.save_model(derain.create_model("efderain-tiny", identity_init=True), tmp_path / "t.safetensors")
    out = tmp_path / "demo.png"
    proc = subprocess.run([sys.executable, "-m", "derain.cli.main", "demo", "-o", str(out), "--weights", str(weights)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Y-PSNR" in proc.stdout
    with Image.open(out) as im:
        assert im.size == (3 * 481, 321)
    assert not list(tmp_path.glob(".demo.png*"))
    # an earlier result is kept unless --overwrite says otherwise
    args = [sys.executable, "-m", "derain.cli.main", "demo", "-o", str(out), "--weights", str(weights)]
    stamp = out.stat().st_mtime_ns
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "exists (use --overwrite" in again.stderr and "Traceback" not in again.stderr
    assert out.stat().st_mtime_ns == stamp
    assert subprocess.run([*args, "--overwrite"], capture_output=True, text=True, timeout=120).returncode == 0


def test_demo_again_writes_the_next_free_name(tmp_path) -> None:
    """Without -o, a second run keeps the first strip and writes derain_demo-2.png (exit 0 both times)."""
    torch.manual_seed(0)
    weights = derain.save_model(derain.create_model("efderain-tiny", identity_init=True), tmp_path / "t.safetensors")
    args = [sys.executable, "-m", "derain.cli.main", "demo", "--weights", str(weights)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert first.returncode == 0 and "wrote derain_demo.png" in first.stdout, first.stderr
    stamp = (tmp_path / "derain_demo.png").stat().st_mtime_ns
    second = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert second.returncode == 0 and "wrote derain_demo-2.png" in second.stdout, second.stderr
    assert (tmp_path / "derain_demo.png").stat().st_mtime_ns == stamp
    with Image.open(tmp_path / "derain_demo-2.png") as im:
        assert im.size == (3 * 481, 321)
