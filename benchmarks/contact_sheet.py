"""Before/after contact sheet of real rainy photos (no ground truth), e.g. InternetData147.

    python benchmarks/contact_sheet.py ../shared/data/InternetData147/rainy -o docs/internet_contact_sheet.jpg \
        [--model default | --weights PATH] [--n 8] [--thumb 320] [--pick 40.jpg --pick 144.jpg ...]
    python benchmarks/contact_sheet.py ../shared/data/clean -o docs/rainfree_contact_sheet.jpg   # rain-free in/out

Each row: a ``--thumb``-pixel centre crop of a photo and the same crop of the derained photo (the
whole photo is derained at full resolution, tiled where large: thin streaks vanish when photos are
shrunk, so crops show what the model does). Photos are taken in sorted file-name order (the folder
tree), spread evenly over it, or named with ``--pick``; derained through ``derain.derain`` at
``--precision`` (default ``auto``, what users get).
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
    parser.add_argument("--pick", action="append", default=[], help="file name to include (repeatable; replaces --n)")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    model = derain.load_model(args.weights, name=None) if args.weights else derain.create_model(args.model, pretrained=True)
    files = sorted(p for p in Path(args.folder).rglob("*") if p.is_file() and is_image_file(p))
    if args.pick:
        by_name = {p.name: p for p in files}
        missing = [n for n in args.pick if n not in by_name]
        if missing:
            parser.error(f"not in {args.folder}: {', '.join(missing)}")
        picks = [by_name[n] for n in args.pick]
    else:
        picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, args.n)]
    rows = []
    for path in picks:
        full = read_image(path)
        derained = derain.derain(full, model=model, precision=args.precision)
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
    print(f"wrote {args.output}: {len(rows)} photos, left input, right derained ({', '.join(p.name for p in picks)})")


if __name__ == "__main__":
    main()
