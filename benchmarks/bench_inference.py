"""Inference speed per backend: single-image latency and folder throughput, as a markdown table.

    python benchmarks/bench_inference.py [--model NAME | --weights PATH] [--threads N]
        [--sizes 481x321,1920x1080] [--repeats 10] [--warmup 2] [--images 32] [--folder-size 481x321]
        [--backends torch-fp32,torch-bf16,onnxruntime] [--tile auto|0|N] [--json out.json]

Backends: ``torch-fp32``; ``torch-bf16`` (autocast, the model prepared as ``--precision bf16`` prepares it; fast
only where oneDNN has native bf16, i.e. AVX-512-BF16 or AMX, which the header says);
``onnxruntime`` (fp32, CPU provider, the model exported once with
:func:`derain.inference.onnx_export.export_onnx`; padding to the model's multiple done by the
wrapper, as in ``derain run --backend onnxruntime``).

* **Latency**: one ``(1, 3, H, W)`` image through ``run_tiled`` (what ``derain run`` calls; ``--tile
  auto`` tiles images above 1 MP in 512-pixel tiles as ``derain run`` does, ``--tile 0`` runs whole
  images), median of ``--repeats`` after ``--warmup`` calls, in ms.
* **Folder throughput**: ``--images`` synthetic JPEGs of ``--folder-size`` derained by the code of
  ``derain run`` (planning, prefetch thread, decode, derain, encode, atomic writes), images/s.

Model: ``--weights PATH``, or ``--model NAME`` (its bundled weights if it has some, else its initial
weights — speed does not depend on the weights), default: the bundled ``default`` model, else
``efderain-cpu`` with its identity init.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import derain  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import numpy as np
import torch
from PIL import Image

from derain.bench.timing import machine_description, time_call
from derain.inference.derainer import Derainer
from derain.inference.precision import cpu_has_fast_bf16
from derain.models.registry import model_spec

BACKENDS = ("torch-fp32", "torch-bf16", "onnxruntime")


def load_model(name: str | None, weights: str | None) -> tuple[torch.nn.Module, str]:
    if weights:
        return derain.load_model(weights, name=name), weights
    if name is None:
        name = "default" if "default" in derain.list_models() else "efderain-cpu"
    if model_spec(name).weights:
        return derain.create_model(name, pretrained=True), f"{name} (bundled weights)"
    return derain.create_model(name), f"{name} (initial weights)"


def make_runner(backend: str, model: torch.nn.Module, threads: int) -> Any:
    model = copy.deepcopy(model)
    if backend == "torch-fp32":
        return Derainer(model, precision="fp32", threads=threads)
    if backend == "torch-bf16":
        return Derainer(model, precision="bf16", threads=threads)
    if backend == "onnxruntime":
        from derain.inference.onnx_export import OnnxDerainer

        return OnnxDerainer.from_model(model, threads=threads)
    raise SystemExit(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def parse_size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def synthetic_photos(folder: Path, count: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        img = np.stack([60 + 150 * xx / width, 80 + 120 * yy / height, 200 - 100 * (xx + yy) / (width + height)], -1)
        img += rng.normal(0, 6, img.shape)
        img[:, (i * 7) % 37 :: 37] += 40  # streaks
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"rain_{i:04d}.jpg", quality=92)


def folder_throughput(runner: Any, folder: Path, out: Path, tile: int | None) -> float:
    """Images/s of ``derain run``'s job loop over ``folder`` (model already loaded)."""
    from derain.cli.plan import plan_jobs
    from derain.cli.run import _run_jobs
    from derain.io.images import DEFAULT_MAX_PIXELS

    plan = plan_jobs((str(folder),), out, False, "", None, True)
    start = time.perf_counter()
    ok, failed = _run_jobs(runner, plan.jobs, out, tile, 32, None, 95, False, DEFAULT_MAX_PIXELS)
    seconds = time.perf_counter() - start
    if failed:
        raise SystemExit(f"{failed} images failed in the folder run")
    return ok / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="registered model name")
    parser.add_argument("--weights", help="model file (.safetensors)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sizes", default="481x321,1920x1080", help="WxH,... for the latency columns")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", type=int, default=32, help="images in the folder run (0 = skip it)")
    parser.add_argument("--folder-size", default="481x321", help="WxH of the folder images")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--tile", default="auto", help="auto (as derain run), 0 (whole images) or a tile side")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    tile = None if args.tile == "auto" else int(args.tile)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    model, described = load_model(args.model, args.weights)
    params = sum(p.numel() for p in model.parameters())

    print(f"Machine: {machine_description()}")
    print(f"Model: {described}, {params / 1e6:.2f} M parameters; threads {args.threads}; tile {args.tile}; "
          f"native bf16: {'yes' if cpu_has_fast_bf16() else 'no (bf16 is emulated, expect it slow)'}")
    try:
        import onnxruntime

        print(f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}")
    except ImportError:
        pass
    print()

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="derain-bench-") as tmp:
        folder = Path(tmp) / "in"
        if args.images:
            folder.mkdir()
            synthetic_photos(folder, args.images, *parse_size(args.folder_size))
        for backend in backends:
            runner = make_runner(backend, model, args.threads)
            row: dict[str, Any] = {"backend": backend}
            for w, h in sizes:
                x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
                fn: Callable[[], object] = lambda: runner.run_tiled(x, tile)  # noqa: E731
                row[f"{w}x{h}_ms"] = time_call(fn, warmup=args.warmup, repeats=args.repeats).median_ms
            if args.images:
                row["folder_images_per_s"] = folder_throughput(runner, folder, Path(tmp) / f"out-{backend}", tile)
            rows.append(row)
            print(f"  {backend} done", file=sys.stderr)

    header = ["backend"] + [f"{w}×{h} ms (median)" for w, h in sizes]
    if args.images:
        header.append(f"folder {args.images}× {args.folder_size.replace('x', '×')} (images/s)")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for row in rows:
        cells = [row["backend"]] + [f"{row[f'{w}x{h}_ms']:.1f}" for w, h in sizes]
        if args.images:
            cells.append(f"{row['folder_images_per_s']:.2f}")
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "model": described, "threads": args.threads,
                                               "tile": args.tile, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
