"""Quality and speed of models on paired datasets, side by side in one process (markdown table + JSON).

    python benchmarks/bench_quality.py \
        --model default \
        --model prenet=../shared/data/peers/prenet/Rain100L.pth \
        --data ../shared/data/RainTrainH_val@last6 --data ../shared/data/JORDER_heavy5 \
        --data ../shared/data/SIRR_val --data ../shared/data/Rain100L \
        --protocol both --json quality.json

``--model NAME`` uses the registered model with its bundled weights, ``NAME=PATH`` loads PATH into
NAME's architecture, ``PATH`` a model file with its own config. ``--data DIR@lastN`` takes only
the last N pairs of DIR (e.g. the RainTrainH pairs held out from the default model's training). Seconds per image are the median
model time of the evaluation (first protocol), at the precision given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import derain  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import torch

from derain.bench.quality import load_model_spec
from derain.bench.timing import machine_description
from derain.evaluation.evaluate import evaluate, expand_protocols
from derain.data.pairs import find_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--protocol", default="y", choices=["y", "efderain-rgb", "both"])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocols = expand_protocols(args.protocol)
    print(f"Machine: {machine_description()}; precision {args.precision}\n")
    header = "| model | dataset | n | " + " | ".join(f"{p} PSNR / SSIM (input)" for p in protocols) + " | median ms |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    for spec in args.model:
        label, model = load_model_spec(spec)
        for data in args.data:
            folder, _, last = data.partition("@last")
            pairs = find_pairs(folder)
            if last:
                pairs.pairs = pairs.pairs[-int(last) :]
            r = evaluate(model, pairs, protocols, limit=args.limit, precision=args.precision, progress=False, model_name=label)
            m = r.metrics
            cells = [f"{m[p]['psnr']:.2f} / {m[p]['ssim']:.4f} ({m[p]['input_psnr']:.2f} / {m[p]['input_ssim']:.4f})" for p in protocols]
            ms = r.seconds_per_image["median"] * 1000
            print(f"| {label} | {Path(folder).name}{' (last ' + last + ')' if last else ''} | {r.n} | " + " | ".join(cells) + f" | {ms:.1f} |", flush=True)
            rows.append({**r.to_dict(), "model": label, "dataset": data})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
