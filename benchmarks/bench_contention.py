"""A folder run (``derain run``) idle and beside a CPU hog, per OpenMP wait policy and thread count.

    python benchmarks/bench_contention.py [--model default] [--images 60] [--size 481x321] [--repeats 2]

Writes ``--images`` synthetic JPEGs to a temporary folder, then times ``python -m derain.cli.main run``
over them (process start and model load included) in a subprocess for every combination of
``OMP_WAIT_POLICY`` (``PASSIVE``, derain's default, and ``""``: OpenMP's own default, which spins
before sleeping), ``--threads`` (all cores, 1) and a competing busy process (none, one pure-Python
loop). Prints a table: median seconds and the ratio to the same setting's idle time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HOG = "while True: pass"


def write_photos(folder: Path, count: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        base = rng.random((height // 16 + 1, width // 16 + 1, 3)) * 255
        photo = Image.fromarray(base.astype(np.uint8)).resize((width, height), Image.BILINEAR)
        photo.save(folder / f"{i:03d}.jpg", quality=92)


def run_once(folder: Path, out: Path, model: str, policy: str, threads: int | None) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    cmd = [sys.executable, "-m", "derain.cli.main", "run", str(folder), "-o", str(out), "--model", model, "--overwrite"]
    if threads:
        cmd += ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", default="481x321")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "in", Path(tmp) / "out"
        folder.mkdir()
        write_photos(folder, args.images, width, height)
        idle: dict[tuple[str, int | None], float] = {}
        for hog in (False, True):
            proc = subprocess.Popen([sys.executable, "-c", HOG]) if hog else None
            try:
                for policy in ("PASSIVE", ""):
                    for threads in (None, 1):
                        times = [run_once(folder, out, args.model, policy, threads) for _ in range(args.repeats)]
                        t = statistics.median(times)
                        if not hog:
                            idle[(policy, threads)] = t
                        rows.append((hog, policy, threads, t, t / idle[(policy, threads)]))
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    print(f"`derain run` over {args.images} photos of {width}x{height}, model {args.model}, {cores} cores ({cpu}); "
          f"median of {args.repeats}, process start and model load included\n")
    print("| competing busy process | OMP_WAIT_POLICY | threads | seconds | x idle |")
    print("|---|---|---|---:|---:|")
    for hog, policy, threads, t, ratio in rows:
        print(f"| {'one' if hog else 'none'} | {policy or '(OpenMP default)'} | {threads or f'all ({cores})'} | {t:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
