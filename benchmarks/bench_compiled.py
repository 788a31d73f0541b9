"""The compiled inference path against eager, with its compilation cost, cold and warm cache.

    python benchmarks/bench_compiled.py [--model default --model fast] [--threads 2] [--repeats 15]

For each model, two fresh processes share one new inductor cache folder: the first compiles from
nothing (``cold``), the second finds the graphs on disk (``warm``). Each times, through
``Derainer.run_tensor`` (the API's path, default precision), at 481×321, 321×481 and 1920×1080:
the compiled first call (compilation included: each size compiles its own graph), then compiled
and eager calls interleaved; and PReNet eager at 481×321 for the ratio. Prints a
table: ms per image (median), the first call's seconds, and how many images it takes for the
compiled path to win back its compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = {"481x321": (321, 481), "321x481": (481, 321), "1920x1080": (1080, 1920)}


def _steady_ms(x, repeats: int, *fns) -> list[float]:
    """Median ms of each of ``fns`` on ``x``, their calls interleaved (a slower spell of the machine hits all alike)."""
    for fn in fns:
        fn(x)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn(x)
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) * 1e3 for ts in times]


def worker(model: str, threads: int, repeats: int, prenet: bool) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from derain.inference.compiled import is_compiled
    from derain.inference.derainer import Derainer

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = {name: torch.rand(1, 3, *hw, generator=gen) for name, hw in SIZES.items()}
    eager = Derainer(model)
    row = {"model": model, "precision": eager.precision, "threads": threads}
    compiled = Derainer(model, compile=True)
    for name in SIZES:
        start = time.perf_counter()
        compiled.run_tensor(x[name])
        row[f"first_s_{name}"] = time.perf_counter() - start
        n = repeats if name != "1920x1080" else max(3, repeats // 3)
        row[f"eager_ms_{name}"], row[f"compiled_ms_{name}"] = _steady_ms(x[name], n, eager.run_tensor, compiled.run_tensor)
    if not is_compiled(compiled.model) or counters["stats"]["unique_graphs"] != len(SIZES):
        raise SystemExit(f"{model}: not every size ran compiled ({counters['stats']['unique_graphs']} graphs)")
    if prenet:
        import derain

        runner = Derainer(derain.create_model("prenet"), owned=True)  # prepared like the bundled models
        row["prenet_ms"] = _steady_ms(x["481x321"], 3, runner.run_tensor)[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--prenet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.repeats, args.prenet)))
        return
    from derain.bench.timing import machine_description

    rows = []
    for i, model in enumerate(args.models or ["default", "fast"]):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            for state in ("cold", "warm"):
                cmd = [sys.executable, __file__, "--worker", model, "--threads", str(args.threads), "--repeats", str(args.repeats)]
                if i == 0 and state == "cold":
                    cmd.append("--prenet")
                out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout  # stderr shown
                rows.append({**json.loads(out.strip().splitlines()[-1]), "cache": state})
    prenet = next(r["prenet_ms"] for r in rows if "prenet_ms" in r)
    print(f"{machine_description()}; workers: {args.threads} threads; PReNet eager 481x321: {prenet:.1f} ms\n")
    print("| model | cache | eager ms 481x321 (x PReNet) | compiled ms (x PReNet) | first call s | 321x481: first s / eager / compiled ms "
          "| 1920x1080: first s / eager / compiled ms | 481x321 images to win back the first call |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        e, c = r["eager_ms_481x321"], r["compiled_ms_481x321"]
        gain = e - c
        first = r["first_s_481x321"] - c / 1e3
        even = f"{first / (gain / 1e3):.0f}" if gain > 0 else "never"
        print(f"| {r['model']} ({r['precision']}) | {r['cache']} | {e:.1f} ({prenet / e:.0f}x) | {c:.1f} ({prenet / c:.0f}x) | "
              f"{r['first_s_481x321']:.1f} | {r['first_s_321x481']:.1f} / {r['eager_ms_321x481']:.1f} / {r['compiled_ms_321x481']:.1f} | "
              f"{r['first_s_1920x1080']:.1f} / {r['eager_ms_1920x1080']:.0f} / {r['compiled_ms_1920x1080']:.0f} | {even} |")


if __name__ == "__main__":
    main()
