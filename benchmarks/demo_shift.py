"""Where `derain demo`'s output is darker or brighter than the clean scene, by how much rain the pixel got.

    python benchmarks/demo_shift.py default fast efderain-cpu=experiments/weights/default-he-s3.safetensors

For each model (NAME or NAME=WEIGHTS; fp32, one thread): the demo's scene and medium rain (seed 0), the output's
Y-PSNR against the clean scene, and the mean of (output − clean) over the pixels binned by how much the rain added
(mean over R, G, B of rainy − clean: < 5, 5-30, 30-80, >= 80 levels), then the mean shift per channel. Dark streak
ghosts show as a negative shift where the rain added little: the filtering dims the background between streaks.
"""

from __future__ import annotations

import sys

import derain  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import numpy as np
import torch

from derain.cli.demo import synthetic_scene
from derain.data.render import RainRenderer
from derain.io.pixels import to_float
from derain.metrics import calculate_psnr, quantize

BINS = ((-np.inf, 5), (5, 30), (30, 80), (80, np.inf))


def main(specs: list[str]) -> None:
    torch.set_num_threads(1)
    clean = synthetic_scene(seed=0)
    rainy = quantize(RainRenderer("medium").render(to_float(clean), np.random.default_rng(0)))
    added = rainy.astype(float).mean(2) - clean.astype(float).mean(2)
    print("| model | Y-PSNR | shift, rain added < 5 | 5-30 | 30-80 | >= 80 | mean shift R / G / B |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| rainy input | {calculate_psnr(rainy, clean, test_y_channel=True):.2f} | | | | | |")
    for spec in specs:
        name, _, weights = spec.partition("=")
        out = quantize(derain.load_derainer(name, weights=weights or None, precision="fp32")(to_float(rainy)))
        diff = out.astype(float) - clean.astype(float)
        bins = " | ".join(f"{diff[(added >= lo) & (added < hi)].mean():+.1f}" for lo, hi in BINS)
        shift = " / ".join(f"{diff[..., c].mean():+.1f}" for c in range(3))
        print(f"| {spec} | {calculate_psnr(out, clean, test_y_channel=True):.2f} | {bins} | {shift} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["default", "fast"])
