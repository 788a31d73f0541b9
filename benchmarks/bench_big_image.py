"""Peak memory (RSS) and time of ``derain run``, or of ``derain serve`` answering one upload, on one big photo.

    python benchmarks/bench_big_image.py [--model efderain-tiny] [--size 6000x4000] [--threads 2]
                                         [--tile N] [--format jpg] [--limit-mb 2048]
    python benchmarks/bench_big_image.py --service --size 7700x5200 --limit-mb 1536   # a 40 MP upload

Writes a synthetic JPEG and a model file to a temporary folder, runs the real CLI
(``python -m derain.cli.main run ...``, or ``serve`` and one POST of the photo) in a subprocess and
reads its peak RSS with ``resource.getrusage(RUSAGE_CHILDREN)`` once it has ended (only the child is
measured: the picture is made here).
A registered model without bundled weights runs with its (identity) initial weights — memory and
time do not depend on the weights. Exits 1 when the peak exceeds ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import derain
from derain.models.registry import model_spec


def synthetic_photo(width: int, height: int) -> Image.Image:
    """Smooth colour gradients plus noise and streaks (a JPEG of realistic size), built in row bands."""
    rng = np.random.default_rng(0)
    out = np.empty((height, width, 3), np.uint8)
    x = np.linspace(0, 1, width, dtype=np.float32)
    for r0 in range(0, height, 500):
        r1 = min(r0 + 500, height)
        y = np.linspace(r0 / height, r1 / height, r1 - r0, dtype=np.float32)[:, None]
        band = np.stack([60 + 150 * x[None] * (1 - y), 80 + 120 * y + 0 * x[None], 200 - 100 * x[None] * y], axis=2)
        band += rng.normal(0, 6, band.shape).astype(np.float32)
        band[:, ::37] += 40  # rain-like streaks
        out[r0:r1] = np.clip(band, 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efderain-tiny")
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--tile", type=int, default=None, help="--tile for derain run (default: automatic)")
    parser.add_argument("--format", default=None, help="--format for derain run (default: the input's, JPEG)")
    parser.add_argument("--limit-mb", type=float, default=2048.0)
    parser.add_argument("--service", action="store_true", help="measure `derain serve` answering one upload of the photo")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo = folder / "big.jpg"
        synthetic_photo(width, height).save(photo, quality=92)
        weights = folder / "model.safetensors"
        pretrained = model_spec(args.model).weights is not None
        derain.save_model(derain.create_model(args.model, pretrained=pretrained), weights)
        if args.service:
            _serve_one(photo, weights, args, width, height)
            return
        cmd = [sys.executable, "-m", "derain.cli.main", "run", str(photo), "-o", str(folder / "out"),
               "--weights", str(weights), "--threads", str(args.threads)]
        if args.tile is not None:
            cmd += ["--tile", str(args.tile)]
        if args.format:
            cmd += ["--format", args.format]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        print(proc.stderr.strip())
        if proc.returncode != 0:
            sys.exit(f"derain run failed with exit code {proc.returncode}")
        outputs = list((folder / "out").iterdir())
        print(f"model {args.model}, {width}x{height}, {args.threads} threads, tile {args.tile or 'auto'}: "
              f"peak RSS {peak_mb:.0f} MiB, {seconds:.1f} s wall (process start and model load included), "
              f"output {outputs[0].name} {outputs[0].stat().st_size / 1e6:.1f} MB")
        if peak_mb > args.limit_mb:
            sys.exit(f"peak RSS {peak_mb:.0f} MiB exceeds the {args.limit_mb:.0f} MiB limit")


def _serve_one(photo: Path, weights: Path, args: argparse.Namespace, width: int, height: int) -> None:
    """``derain serve`` (1 worker), one POST of ``photo``; the server's peak RSS once it has stopped."""
    import urllib.request

    from derain.service.testing import running_server

    data = photo.read_bytes()
    start = time.perf_counter()
    with running_server("--weights", str(weights), "--threads", str(args.threads), "--log-level", "warning") as server:
        request = urllib.request.Request(f"{server.url}/v1/derain", data=data, headers={"Content-Type": "image/jpeg"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as response:
            body = response.read()
            timing = response.headers.get("Server-Timing", "")
        request_s = time.perf_counter() - t0
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"service, model {args.model}, {width}x{height} ({width * height / 1e6:.0f} MP, upload {len(data) / 1e6:.1f} MB), "
          f"{args.threads} threads: server peak RSS {peak_mb:.0f} MiB, request {request_s:.1f} s ({timing}), "
          f"{seconds:.1f} s with start-up; answer {len(body) / 1e6:.1f} MB")
    if peak_mb > args.limit_mb:
        sys.exit(f"peak RSS {peak_mb:.0f} MiB exceeds the {args.limit_mb:.0f} MiB limit")


if __name__ == "__main__":
    main()
