"""Where a colour cast comes from: the training sources' brightness offsets and a model's gains.

    python benchmarks/cast_diagnostics.py [--data ../shared/data] [--weights A.safetensors ...]

1. Mean (rainy − clean) per RGB channel, in 8-bit levels, of every paired folder and of the
   training sources' samples (rendered rain per preset, real rain layers composited on clean crops,
   RainMix): a source whose rainy side is always brighter teaches a model to dim everything.
2. For each model (default: the bundled ``default`` and ``fast``): the fusion's gain from each colour
   to each colour (its weights as applied, summed over dilations and taps) and its bias in levels,
   and on the 6 held-out clean photos the mean predicted kernel sum per channel (1 = the identity)
   and the output's mean shift.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import derain  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import numpy as np
import torch

from derain.data.rain_layers import RainLayerBank
from derain.data.rainmix import RainMix, StreakBank
from derain.data.render import RainRenderer
from derain.data.pairs import find_pairs
from derain.io.images import is_image_file, read_image
from derain.ops.padding import pad_canvas


def offsets(name: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    d = np.array([(r.astype(np.float64) - c).reshape(-1, 3).mean(0) for r, c in pairs])
    m = d.mean(0)
    print(f"| {name} | {len(pairs)} | {m[0]:+.2f} / {m[1]:+.2f} / {m[2]:+.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--weights", action="append", default=[])
    args = parser.parse_args()
    data = Path(args.data)
    rng = np.random.default_rng(0)
    clean_files = sorted(p for p in (data / "clean").rglob("*") if p.is_file() and is_image_file(p))
    photos = [read_image(p) for p in clean_files[:60]]

    def crop(c: np.ndarray) -> np.ndarray:
        h, w = c.shape[:2]
        y, x = rng.integers(0, h - 128), rng.integers(0, w - 128)
        return c[y : y + 128, x : x + 128].astype(np.float32) / 255

    print("| source | n | mean rainy − clean, R / G / B (levels) |\n|---|---:|---:|")
    for folder in ("RainTrainL", "RainTrainH_val", "JORDER_heavy5", "SIRR_val"):
        offsets(folder, [(read_image(p.rainy), read_image(p.clean)) for p in find_pairs(data / folder).pairs])
    for preset in ("light", "medium", "heavy"):
        renderer = RainRenderer(preset)
        offsets(f"rendered {preset}", [(renderer.render(c, rng) * 255, c * 255) for c in map(crop, photos)])
    for folder, scale in (("RainTrainL", (0.5, 1.5)), ("RainTrainH_val", (0.25, 1.1)), ("SIRR_val", (0.5, 1.5))):
        pairs = find_pairs(data / folder).pairs
        bank = RainLayerBank.from_pairs([(p.rainy, p.clean) for p in pairs[: -20 if folder == "RainTrainL" else -6]])
        offsets(f"{folder} layers on clean crops", [(bank.augment(c, rng, scale=scale, max_rotation=12) * 255, c * 255) for c in map(crop, photos)])
    rainmix = RainMix(StreakBank(data / "Streaks_Garg06"), mode="paper")
    offsets("RainMix on clean crops", [tuple(x * 255 for x in rainmix.rainmix_pair(None, c, rng)) for c in map(crop, photos)])

    models = [(w, derain.load_model(w)) for w in args.weights] or [(n, derain.create_model(n, pretrained=True)) for n in ("default", "fast")]
    held_out = [read_image(p) for p in clean_files[-6:]]
    for label, model in models:
        model.eval()
        w, b = (t.detach() for t in model.fusion_params())
        gains = np.array([[float(w[c, cp::3].sum()) for cp in range(3)] for c in range(3)])
        print(f"\n{label}: fusion gains (rows: output R, G, B; columns: input R, G, B)\n{gains.round(3)}\nfusion bias (levels) {(b.detach() * 255).numpy().round(2)}")
        for img in held_out:
            x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
            with torch.inference_mode():
                (h, wd), (padded, (top, left)) = x.shape[-2:], pad_canvas(x, model.border, model.config.multiple, model.centred)
                k = model.predict_kernels(padded)[..., top : top + h, left : left + wd]
                sums = k.view(1, 3, -1, h, wd).sum(2).mean((0, 2, 3)).numpy()
                shift = ((model(x).clamp(0, 1) - x) * 255).mean((0, 2, 3)).numpy()
            print(f"  kernel sums R/G/B {sums.round(4)}  output shift (levels) {shift.round(2)}")


if __name__ == "__main__":
    main()
