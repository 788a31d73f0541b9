"""Tiled against untiled output of large photos: does every tile get the image's judgement?

    python benchmarks/bench_tiling_agreement.py [--model default --model fast] [--photo 126.jpg ...] [--side 2562]

Each photo of InternetData147 (``../shared/data/InternetData147/rainy``, or ``--folder``) is enlarged
(bicubic) to ``--side`` pixels wide, past the automatic tiling (1 MP), and derained twice through
``derain.derain``'s path: tiled as ``derain photo.jpg`` tiles it (512-pixel tiles, 32 overlap) and in one
pass (``tile=0``). Prints a table: Y-PSNR of the tiled output against the one-pass output, and the mean
absolute difference in 8-bit levels. Issue 27's target: at least 45 dB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from derain.bench.timing import machine_description
from derain.inference.loading import load_derainer
from derain.metrics import calculate_psnr

DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "InternetData147" / "rainy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="registered model (repeatable; default: default and fast)")
    parser.add_argument("--photo", action="append", help="file name in the folder (repeatable; default: 126.jpg 119.jpg 29.jpg)")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--side", type=int, default=2562, help="width to enlarge each photo to")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    models = args.model or ["default", "fast"]
    photos = args.photo or ["126.jpg", "119.jpg", "29.jpg"]
    print("| model | photo | size | tiled vs one pass, Y-PSNR (dB) | mean abs difference (levels) |")
    print("|---|---|---|---:|---:|")
    for name in models:
        runner = load_derainer(name, precision=args.precision)
        for photo in photos:
            rgb = Image.open(args.folder / photo).convert("RGB")
            big = np.asarray(rgb.resize((args.side, round(args.side * rgb.height / rgb.width)), Image.BICUBIC))
            tiled, whole = runner.derain_rgb(big), runner.derain_rgb(big, tile=0)
            psnr = calculate_psnr(tiled, whole, test_y_channel=True)
            diff = np.abs(tiled.astype(np.float64) - whole).mean()
            print(f"| {name} | {photo} | {big.shape[1]}x{big.shape[0]} | {psnr:.2f} | {diff:.3f} |")
    print(f"\n{machine_description()}; precision {runner.precision}")


if __name__ == "__main__":
    main()
