"""The image gate's calibration: validation mean / no harm and the gate on real rainy photos, per bias offset.

    python benchmarks/gate_calibration.py WEIGHTS [--preset default-cpu-v7] [--offset 0 --offset 0.15 ...]
                                          [--real ../shared/data/InternetData147/rainy]

For each offset added to ``gate_global.bias`` (times ``GATE_GAIN`` on the logit) of the model at
WEIGHTS: the preset's validation sets (``ValidationSets``, fp32: the numbers training logs) and, on
every photo of ``--real`` (real rain, no ground truth; downscaled to 640 pixels), how many have an
image gate below 0.1 and 0.3, and the median. Validation chooses; the real photos are reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import derain
from derain.evaluation import ValidationSets
from derain.io.images import is_image_file, read_image
from derain.models.efderain import GATE_GAIN, pad_border, pad_to_multiple
from derain.training import load_config, resolve_preset


def image_gates(model: torch.nn.Module, folder: Path) -> np.ndarray:
    gates = []
    for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
        x = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].float() / 255
        scale = min(1.0, 640 / max(x.shape[-2:]))
        if scale < 1:
            x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="area")
        x, _ = pad_to_multiple(pad_border(x, model.border), model.config.multiple)
        with torch.no_grad():
            deep = model.features(x)[1]
            gates.append(torch.sigmoid(model.gate_global(deep.float().mean((2, 3))) * GATE_GAIN).item())
    return np.array(gates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--preset", default="default-cpu-v7")
    parser.add_argument("--offset", type=float, action="append", default=None)
    parser.add_argument("--real", type=Path, default=Path("../shared/data/InternetData147/rainy"))
    args = parser.parse_args()
    cfg = load_config(resolve_preset(args.preset))
    validation = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed)
    print("| bias offset | validation mean | no harm | real photos gate < 0.1 / < 0.3 | median gate |")
    print("|---:|---:|---:|---:|---:|")
    for offset in args.offset or [0.0]:
        model = derain.load_model(args.weights).float().eval()
        with torch.no_grad():
            model.gate_global.bias += offset
        scores = validation.run(model, "fp32")
        gates = image_gates(model, args.real) if args.real.is_dir() else np.array([np.nan])
        print(f"| {offset:+.2f} | {scores['mean_psnr']:.2f} | {scores['noharm_psnr']:.2f} | "
              f"{int((gates < 0.1).sum())} / {int((gates < 0.3).sum())} of {len(gates)} | {np.nanmedian(gates):.2f} |")


if __name__ == "__main__":
    main()
