"""Rain removal against the streaks' slant: rendered rain at a fixed angle from vertical on held-out clean photos.

    python benchmarks/slant.py [--model default --model fast --model WEIGHTS ...] [--set ../shared/data/clean@last6]
                               [--preset heavy --preset real] [--slant 0 --slant 20 ...] [--max-side 480]

Rain falls at whatever slant wind and a tilted camera give it; the paired training sets' streaks are near
vertical. For each preset and slant ``s``, every photo of ``--set`` (``FOLDER`` or ``FOLDER@lastN``, as ``derain
bench noharm`` reads it; downscaled to ``--max-side``) gets the preset's rain with its dominant direction fixed at
``90 − s`` degrees (even photos) or ``90 + s`` (odd ones), counter-clockwise from the x axis as
``derain.data.render.dominant_orientation`` reports it (90: vertical), the preset's own per-layer spread kept. The
renderer is seeded by the photo alone, so every slant gets the same streaks, only turned, and every model the same
rainy images. Each model derains them (``derain.derain``, ``--precision``, auto by default) at strength ``auto`` and at strength 1 (the
gates' judgement overridden: what the network does). The table gives the mean Y-PSNR of the input and each model's
gain over it (dB, against the clean photo). Bad input (a missing set, an unknown model or preset) is one line and
exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import derain  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import numpy as np
import torch

from derain.bench.noharm import rain_free_images
from derain.data.photos import read_photo
from derain.data.render import PRESETS, RainRenderer
from derain.errors import UserError
from derain.metrics import calculate_psnr


def _photos(spec: str, max_side: int) -> list[np.ndarray]:
    return [read_photo(path, max_side) for path in rain_free_images(spec)]


def _rainy(clean: np.ndarray, preset: str, slant: float, index: int) -> np.ndarray:
    angle = 90.0 + (slant if index % 2 else -slant)
    renderer = RainRenderer(preset, angle=(angle, angle))
    rainy = renderer.render(clean.astype(np.float32) / 255, np.random.default_rng(index))
    return np.clip(np.rint(rainy * 255), 0, 255).astype(np.uint8)


def _positive(text: str) -> int:
    value = int(text)
    if value < 16:
        raise argparse.ArgumentTypeError(f"must be at least 16, got {value}")
    return value


def _slant(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 90:
        raise argparse.ArgumentTypeError(f"a slant is 0..90 degrees from vertical, got {value:g}")
    return value


def run(models: list[str], spec: str, presets: list[str], slants: list[float], max_side: int, precision: str) -> None:
    cleans = _photos(spec, max_side)
    runners = [derain.load_derainer(m, precision=precision) for m in models]  # loaded once; a bad model fails before any rendering
    labels = [Path(m).name if Path(m).is_file() else m for m in models]
    header = ["preset", "slant", "input"] + [f"{m} {s}" for m in labels for s in ("auto", "strength 1")]
    print(f"Y-PSNR against the clean photo: the input's, and each model's gain over it (dB); {len(cleans)} photos of "
          f"{spec}, long side <= {max_side} px, precision {precision}")
    print()
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    for preset in presets:
        for slant in slants:
            rainy = [_rainy(c, preset, slant, i) for i, c in enumerate(cleans)]
            base = float(np.mean([calculate_psnr(r, c, test_y_channel=True) for r, c in zip(rainy, cleans)]))
            cells = [preset, f"{slant:g}°", f"{base:.2f}"]
            for runner in runners:
                for strength in ("auto", 1.0):
                    out = [derain.derain(r, model=runner, strength=strength) for r in rainy]
                    score = float(np.mean([calculate_psnr(o, c, test_y_channel=True) for o, c in zip(out, cleans)]))
                    cells.append(f"{score - base:+.2f}")
            print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="a registered name or weights file; repeatable")
    parser.add_argument("--set", default="../shared/data/clean@last6", help="rain-free photos: FOLDER or FOLDER@lastN")
    parser.add_argument("--preset", action="append", choices=sorted(PRESETS), default=None,
                        help="renderer presets (default: heavy, real)")
    parser.add_argument("--slant", type=_slant, action="append", default=None,
                        help="degrees from vertical, 0..90 (default 0, 15, 30, 45, 60)")
    parser.add_argument("--max-side", type=_positive, default=480)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args.model or ["default", "fast"], args.set, args.preset or ["heavy", "real"],
            args.slant or [0.0, 15.0, 30.0, 45.0, 60.0], args.max_side, args.precision)
    except (UserError, OSError, ValueError) as e:
        sys.exit(f"slant: {e}")


if __name__ == "__main__":
    main()
