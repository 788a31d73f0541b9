"""Before/after contact sheet of real rainy photos (no ground truth), e.g. InternetData147.

    python benchmarks/contact_sheet.py ../shared/data/InternetData147/rainy -o docs/internet_contact_sheet.jpg \
        [--model default | --weights PATH] [--n 8] [--thumb 320]

Each row: a ``--thumb``-pixel centre crop of a photo and the same crop of the derained photo (the
whole photo is derained at full resolution, tiled where large: thin streaks vanish when photos are
shrunk, so crops show what the model does). Photos are taken in sorted file-name order, spread evenly over the folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import derain
from derain.io.images import is_image_file, read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--weights")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--thumb", type=int, default=320)
    args = parser.parse_args()
    model = derain.load_model(args.weights, name=None) if args.weights else derain.create_model(args.model, pretrained=True)
    files = sorted((p for p in Path(args.folder).iterdir() if is_image_file(p)), key=lambda p: p.name)
    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, args.n)]
    rows = []
    for path in picks:
        full = read_image(path)
        derained = derain.derain(full, model=model, precision="fp32")
        h, w = full.shape[:2]
        t = min(args.thumb, h, w)
        y, x = (h - t) // 2, (w - t) // 2
        rainy, out = full[y : y + t, x : x + t], derained[y : y + t, x : x + t]
        pair = np.concatenate([rainy, np.full((rainy.shape[0], 4, 3), 255, np.uint8), out], axis=1)
        canvas = np.full((args.thumb, 2 * args.thumb + 4, 3), 255, np.uint8)
        canvas[: pair.shape[0], : pair.shape[1]] = pair
        rows.append(canvas)
    sheet = np.concatenate([np.concatenate([r, np.full((4, r.shape[1], 3), 255, np.uint8)]) for r in rows])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.output, quality=88)
    print(f"wrote {args.output}: {len(rows)} photos, left rainy, right derained ({', '.join(p.name for p in picks)})")


if __name__ == "__main__":
    main()
