"""Speed of the pixel-wise dilation filtering op and of every registered model on this machine.

    python benchmarks/bench_foundation.py [--threads 2] [--repeats 10] [--json out.json]

Prints two markdown tables: the op (reference vs fast, dilations 1-4, 3x321x481, fp32 and bf16)
and each registered model's forward pass at 481x321 (fp32, and bf16 autocast with the prepared model's layouts).
"""

from __future__ import annotations

import argparse
import json

import derain  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import torch
from derain.bench.timing import machine_description, model_gflops, time_call
from derain.inference.precision import autocast, input_layout, prepare_model
from derain.ops import pixel_dilation_filter2d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", nargs="*", default=None, help="registered names (default: all)")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random (released-init) weights otherwise produce denormals: 10-40x slower
    print(f"Machine: {machine_description()}\n")

    results: dict[str, list[dict]] = {"op": [], "models": []}
    print("| op: 4 dilations, 1x3x321x481 | fp32 ms | bf16 ms |\n|---|---|---|")
    g = torch.Generator().manual_seed(0)
    image, kernels = torch.rand(1, 3, 321, 481, generator=g), torch.randn(1, 27, 321, 481, generator=g) / 9
    for impl in ("reference", "fast"):
        row = {"implementation": impl}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            x, k = image.to(dtype), kernels.to(dtype)
            with torch.inference_mode():
                row[name] = time_call(lambda: pixel_dilation_filter2d(x, k, (1, 2, 3, 4), impl), repeats=args.repeats).median_ms
        results["op"].append(row)
        print(f"| {impl} | {row['fp32']:.2f} | {row['bf16']:.2f} |")

    print("\n| model (1x3x321x481) | params | GFLOPs | fp32 ms | bf16+CL ms |\n|---|---|---|---|---|")
    x = torch.rand(1, 3, 321, 481)
    for name in args.models or derain.list_models():
        model = derain.create_model(name).eval()
        row = {
            "model": name,
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": model_gflops(model, x),
        }
        for precision in ("fp32", "bf16"):
            m = prepare_model(model, precision)
            xin = input_layout(x, m, precision)
            with torch.inference_mode(), autocast(precision):
                heavy = row["gflops"] > 100
                row[precision] = time_call(lambda: m(xin), warmup=1 if heavy else 3, repeats=3 if heavy else args.repeats).median_ms
        results["models"].append(row)
        print(f"| {name} | {row['params']:,} | {row['gflops']:.1f} | {row['fp32']:.1f} | {row['bf16']:.1f} |")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), **results}, f, indent=2)


if __name__ == "__main__":
    main()
