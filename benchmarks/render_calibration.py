"""Measure the rain renderer's presets against the real rain sets (BENCHMARKS.md, "Rendered rain and real rain layers").

For every preset of :data:`derain.data.render.PRESETS`, rain is rendered on photos drawn (seeded) from
``DATA/clean``; :func:`derain.data.render.rain_statistics` is measured on them and on the real pairs of
``RainTrainH_val``, ``JORDER_heavy5`` and ``SIRR_val`` (whichever exist). Prints p5 / median / p95 per
statistic and set.

    python benchmarks/render_calibration.py --data-root ../shared/data --images 120
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from derain.data.render import PRESETS, RainRenderer, rain_statistics
from derain.io.images import is_image_file, read_image
from derain.training.config import default_data_root

KEYS = ("y_psnr", "mean", "coverage", "orientation", "coherence", "width")


def _summarise(rows: list[dict[str, float]]) -> dict[str, tuple[float, float, float]]:
    """5th percentile, median and 95th percentile of each statistic."""
    return {k: tuple(float(np.percentile([r[k] for r in rows], q)) for q in (5, 50, 95)) for k in rows[0]}  # type: ignore[misc]


def calibrate(root: Path, n_images: int, seed: int) -> dict[str, dict[str, tuple[float, float, float]]]:
    files = sorted(p for p in (root / "clean").rglob("*") if is_image_file(p))
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in rng.choice(len(files), size=min(n_images, len(files)), replace=False)]
    cleans = [read_image(p) for p in chosen]
    out = {}
    for name in PRESETS:
        renderer, prng = RainRenderer(name), np.random.default_rng(seed)
        out[name] = _summarise([rain_statistics(renderer.render(c, prng), c) for c in cleans])
    for real in ("RainTrainH_val", "JORDER_heavy5", "SIRR_val"):
        rainy_dir = root / real / "rainy"
        if rainy_dir.is_dir():
            rows = [rain_statistics(read_image(p), read_image(root / real / "clean" / p.name))
                    for p in sorted(rainy_dir.iterdir()) if is_image_file(p)]
            out[real] = _summarise(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=None, help="default: $DERAIN_DATA or ../shared/data")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = args.data_root or Path(default_data_root())
    table = calibrate(root, args.images, args.seed)
    print(f"{'set':16s}" + "".join(f"{k:>26s}" for k in KEYS) + "   (p5 / median / p95)")
    for name, stats in table.items():
        print(f"{name:16s}" + "".join("{:>26s}".format("%.3g / %.3g / %.3g" % stats[k]) for k in KEYS))


if __name__ == "__main__":
    main()
