"""Pixel-unshuffle as one strided copy against ``F.pixel_unshuffle``: the op alone, and whole bundled models per call.

    python benchmarks/bench_unshuffle.py [--threads 2] [--calls 25]

The op on a 352×512 image (the padded 481×321), fp32 and bf16, factors 2 and 4 (medians of 50); then each bundled
model on a 481×321 uint8 image through ``derain_rgb``, its stem's unshuffle switched between the two on alternating
calls in one process (medians of ``--calls`` each, the first five left out), and whether the outputs are identical.
"""

from __future__ import annotations

import argparse
import time

import derain  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import numpy as np
import torch
import torch.nn.functional as F

import derain.models.efderain as efderain
from derain.bench.timing import machine_description, time_call
from derain.inference.loading import load_derainer
from derain.ops.shuffle import pixel_unshuffle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine_description()}\n")
    print("| op on 1x3x352x512 | factor | F.pixel_unshuffle ms | strided copy ms |")
    print("|---|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.rand(1, 3, 352, 512).to(dtype)
        for f in (2, 4):
            aten = time_call(lambda f=f, x=x: F.pixel_unshuffle(x, f), warmup=5, repeats=50).median_ms
            ours = time_call(lambda f=f, x=x: pixel_unshuffle(x, f), warmup=5, repeats=50).median_ms
            print(f"| {str(dtype).split('.')[-1]} | {f} | {aten:.3f} | {ours:.3f} |")
    image = (np.random.default_rng(0).random((321, 481, 3)) * 255).astype(np.uint8)
    print("\n| model (auto precision) | F.pixel_unshuffle ms/call | strided copy ms/call | outputs identical |")
    print("|---|---:|---:|---|")
    for name in ("default", "fast"):
        runner = load_derainer(name)
        times: dict[str, list[float]] = {"aten": [], "ours": []}
        outs = {}
        for _ in range(args.calls + 5):
            for key, fn in (("aten", F.pixel_unshuffle), ("ours", pixel_unshuffle)):
                efderain.pixel_unshuffle = fn
                t = time.perf_counter()
                outs[key] = runner.derain_rgb(image)
                times[key].append(time.perf_counter() - t)
        efderain.pixel_unshuffle = pixel_unshuffle
        med = {k: float(np.median(v[5:])) * 1000 for k, v in times.items()}
        print(f"| {name} | {med['aten']:.2f} | {med['ours']:.2f} | {np.array_equal(outs['aten'], outs['ours'])} |")


if __name__ == "__main__":
    main()
