"""What a layout costs through the user path before any training: EfDeRain layouts timed beside PReNet.

    python benchmarks/bench_layouts.py [--prenet ../shared/data/peers/prenet/Rain100L.pth] [--layout NAME ...]
                                       [--precision bf16] [--repeats 20] [--threads 2]

Speed does not depend on the weights, so a layout's time can be measured before it is trained: each layout is built
with fresh weights and run as a user runs a bundled model (``Derainer``, prepared for the precision, ``derain_rgb`` on a
uint8 image, the gates at strength 1), median of ``--repeats`` calls at 481×321 and of 3 at 1920×1080, PReNet in the
same process. ``floor`` is the pipeline with a KPN of width 4: what every layout pays for conversion, padding, the
full-resolution filtering and the fusion, whatever its network. Issue 28's targets: the next ``default`` at least 60×
PReNet, ``fast`` at least 120×.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import derain  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import numpy as np
import torch

from derain.bench.timing import machine_description, time_call
from derain.errors import UserError
from derain.inference.derainer import Derainer
from derain.models.efderain import EfDeRain, EfDeRainConfig

_PRENET = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "peers" / "prenet" / "Rain100L.pth"


def layouts() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (what it is, EfDeRain config)."""
    cpu = derain.create_model("efderain-cpu").config.to_dict()
    fast = derain.create_model("efderain-cpu-fast").config.to_dict()
    return {
        "efderain-cpu": ("today's default: stem 2, 5 levels 16-128, 2 convs per block, kernels at H/2", cpu),
        "efderain-cpu-d1": ("1 conv per block", {**cpu, "depth": 1}),
        "cpu-4-levels": ("5 levels -> 4 (16-128)", {**cpu, "widths": (16, 32, 64, 128)}),
        "cpu-12-96": ("widths x0.75", {**cpu, "widths": (12, 24, 48, 96, 96)}),
        "cpu-kernels-h4": ("the decoder stops at H/4, kernels upsampled x4", {**cpu, "kernel_level": 1}),
        "cpu-d1-kernels-h4": ("both", {**cpu, "depth": 1, "kernel_level": 1}),
        "efderain-cpu-fast": ("today's fast: stem 4, 4 levels 24-192, kernels at H/4", fast),
        "fast-d1": ("1 conv per block", {**fast, "depth": 1}),
        "fast-16-128": ("narrower", {**fast, "widths": (16, 32, 64, 128)}),
        "fast-d1-16-128": ("both", {**fast, "depth": 1, "widths": (16, 32, 64, 128)}),
        "efderain-cpu-w32": ("stem 4, 3 levels 32-128", derain.create_model("efderain-cpu-w32").config.to_dict()),
        "floor": ("stem 4, 4 levels of width 4, 1 conv per block: the pipeline without a network",
                  {**fast, "depth": 1, "widths": (4, 4, 4, 4)}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prenet", type=Path, default=_PRENET,
                        help="PReNet weights, timed beside (any of its files; default: ../shared/data/peers/prenet/Rain100L.pth)")
    parser.add_argument("--layout", action="append", choices=list(layouts()), metavar="NAME",
                        help=f"a layout (repeatable; default: all): {' '.join(layouts())}")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="(default: bf16)")
    parser.add_argument("--repeats", type=int, default=20, help="calls timed at 481x321 (default: 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args()
    if not args.prenet.is_file():
        parser.error(f"--prenet {args.prenet}: no such file (PReNet's weights are timed beside every layout)")
    try:
        run(args)
    except UserError as e:
        sys.exit(f"error: {e}")


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    small, big = (rng.random((321, 481, 3)) * 255).astype(np.uint8), (rng.random((1080, 1920, 3)) * 255).astype(np.uint8)
    table = layouts()
    prenet = derain.load_derainer(f"prenet={args.prenet}", precision=args.precision, strength=1.0)
    p_small = time_call(lambda: prenet.derain_rgb(small), warmup=1, repeats=5).median_ms
    print(f"{machine_description()}, {args.precision}; PReNet 481x321: {p_small:.1f} ms\n")
    print("| layout | what | params | ms 481x321 | × PReNet | ms 1920x1080 |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (what, config) in table.items():
        if args.layout and name not in args.layout:
            continue
        runner = Derainer(EfDeRain(EfDeRainConfig(**config)), precision=args.precision, strength=1.0, owned=True)
        ms = time_call(lambda r=runner: r.derain_rgb(small), warmup=3, repeats=args.repeats).median_ms
        ms_big = time_call(lambda r=runner: r.derain_rgb(big), warmup=1, repeats=3).median_ms
        params = sum(p.numel() for p in runner.model.parameters()) / 1e6
        print(f"| {name} | {what} | {params:.2f} M | {ms:.1f} | {p_small / ms:.0f}× | {ms_big:.0f} |", flush=True)


if __name__ == "__main__":
    main()
