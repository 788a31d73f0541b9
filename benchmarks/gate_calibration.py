"""The image gate's calibration: validation mean / no harm and the gate on real rainy photos, per bias offset.

    python benchmarks/gate_calibration.py WEIGHTS [--preset default-cpu-v7] [--offset 0 --offset 0.15 ...]
                                          [--real FOLDER] [--write OUT --min-noharm 45 [--min-noharm-min 40]]

For each offset added to ``gate_global.bias`` (times ``GATE_GAIN`` on the logit) of the model at
WEIGHTS: the preset's validation sets (``ValidationSets``, fp32: the numbers training logs), each family and
the mean, its no harm (mean, lowest image, mean shift in levels; with ``validation.noharm``), and, on every photo of ``--real`` (real rain, no ground truth; downscaled to 640 pixels; none by
default: a held-out evaluation set has no place in a calibration), how many have an image gate below 0.1 and 0.3,
and the median. Validation chooses: ``--write OUT`` saves (fp16) the largest offset whose validation no harm is at
least ``--min-noharm`` dB, and with ``--min-noharm-min`` whose lowest rain-free image is at least that (the gate
most open within the no-harm bounds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import derain  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import numpy as np
import torch

from derain.errors import UserError
from derain.evaluation import ValidationSets
from derain.evaluation.validation import validation_families
from derain.io.images import is_image_file, read_image
from derain.models.checkpoint import save_model
from derain.training import load_config, resolve_preset


def image_gates(model: torch.nn.Module, folder: Path) -> np.ndarray:
    gates = []
    for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
        x = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].float() / 255
        scale = min(1.0, 640 / max(x.shape[-2:]))
        if scale < 1:
            x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="area")
        with torch.no_grad():
            gates.append(model.image_gate(x).item())
    return np.array(gates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("--preset", default="default-cpu-v7")
    parser.add_argument("--offset", type=float, action="append", default=None)
    parser.add_argument("--real", type=Path, default=None)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--min-noharm", type=float, default=45.0)
    parser.add_argument("--min-noharm-min", type=float, default=None)
    args = parser.parse_args()
    try:
        calibrate(args)
    except UserError as err:  # a bad file, preset or model: one line
        sys.exit(f"error: {err}")


def calibrate(args: argparse.Namespace) -> None:
    """The table and, with ``args.write``, the chosen offset's weights (the module docstring)."""
    if args.real is not None and not args.real.is_dir():
        raise UserError(f"--real {args.real}: not a folder")
    if not getattr(derain.load_model(args.weights), "judges_images", False):
        raise UserError(f"{args.weights}: this model has no image gate to calibrate")
    cfg = load_config(resolve_preset(args.preset))
    validation = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed)
    chosen = None
    header = False
    for offset in sorted(args.offset or [0.0]):
        model = derain.load_model(args.weights).float().eval()
        with torch.no_grad():
            model.gate_global.bias += offset
        scores = validation.run(model, "fp32")
        families = validation_families(scores)
        if not header:
            print("| bias offset | " + " | ".join(k[: -len("_psnr")] for k in families)
                  + " | validation mean | no harm | no harm min | shift | real photos gate < 0.1 / < 0.3 | median gate |")
            print("|---:|" + "---:|" * len(families) + "---:|---:|---:|---:|---:|---:|")
            header = True
        real = "— | —"
        if args.real is not None:
            gates = image_gates(model, args.real)
            real = f"{int((gates < 0.1).sum())} / {int((gates < 0.3).sum())} of {len(gates)} | {np.median(gates):.2f}"
        nan = float("nan")
        print(f"| {offset:+.2f} | " + " | ".join(f"{scores[k]:.2f}" for k in families)
              + f" | {scores['mean_psnr']:.2f} | {scores.get('noharm_psnr', nan):.2f} | {scores.get('noharm_min', nan):.2f}"
              + f" | {scores.get('noharm_shift', nan):+.2f} | {real} |")
        if scores.get("noharm_psnr", nan) >= args.min_noharm and (
                args.min_noharm_min is None or scores.get("noharm_min", nan) >= args.min_noharm_min):
            chosen = (offset, model)
    if args.write is not None:
        if chosen is None:
            floor = "" if args.min_noharm_min is None else f" and its lowest image >= {args.min_noharm_min} dB"
            raise SystemExit(f"no offset keeps validation no harm >= {args.min_noharm} dB{floor}; nothing written")
        save_model(chosen[1], args.write, metadata={"gate_offset": f"{chosen[0]:g}"}, dtype=torch.float16)
        print(f"wrote {args.write} (offset {chosen[0]:+.2f})")


if __name__ == "__main__":
    main()
