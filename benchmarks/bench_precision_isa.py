"""fp32 against bf16 on this CPU and on the instruction sets of others, and what ``--precision auto`` picks.

    python benchmarks/bench_precision_isa.py [--model default --model fast] [--size 481x321] [--repeats 7]

Runs ``derain bench speed``'s timing (:func:`derain.bench.speed.run_speed`: prepared models, medians)
in one subprocess per setting: the CPU as it is, ``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` (AVX-512 without
bf16 instructions or AMX) and ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (AVX2 only, as most
laptops), so one machine shows the paths of the others. Prints a table: per setting and model, fp32 and
bf16 milliseconds, their ratio, the precision ``auto`` resolves to and whether it is the faster one,
and the fused kernel's clone in use.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = {
    "as it is": {},
    "AVX-512, no bf16/AMX": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "AVX2 only": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}

WORKER = """
import json, sys
from derain.bench.speed import run_speed
from derain.bench.timing import machine_description
from derain.inference.precision import resolve_precision
from derain.ops.fused_filter import fused_filter_isa
models, h, w, repeats = json.loads(sys.argv[1])
report = run_speed(models, sizes=[(h, w)], batches=[1], precisions=["fp32", "bf16"], repeats=repeats)
print(json.dumps({"machine": machine_description(), "auto": resolve_precision("auto"), "clone": fused_filter_isa(),
                  "ms": [[r.model, r.precision, r.ms] for r in report.rows]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="registered model (repeatable; default: default and fast)")
    parser.add_argument("--size", default="481x321", help="WxH")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    models = args.model or ["default", "fast"]
    w, h = (int(v) for v in args.size.lower().split("x"))
    print(f"{'setting':<22} {'model':<8} {'fp32 ms':>8} {'bf16 ms':>8} {'bf16/fp32':>9}  {'auto':<5} {'auto faster':<11} clone")
    machine = ""
    for name, env in SETTINGS.items():
        clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
        run = subprocess.run(
            [sys.executable, "-c", WORKER, json.dumps([models, h, w, args.repeats])],
            env={**clean, **env}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        result = json.loads(run.stdout.strip().splitlines()[-1])
        machine = machine or result["machine"]  # the CPU as it is
        ms = {(m, p): t for m, p, t in result["ms"]}
        for model in models:
            fp32, bf16 = ms[(model, "fp32")], ms[(model, "bf16")]
            faster = "bf16" if bf16 < fp32 else "fp32"
            print(
                f"{name:<22} {model:<8} {fp32:8.1f} {bf16:8.1f} {bf16 / fp32:9.2f}  {result['auto']:<5} "
                f"{'yes' if result['auto'] == faster else 'NO':<11} {result['clone']}"
            )
    print(f"\n{machine}; {w}x{h}, batch 1, medians of {args.repeats}")


if __name__ == "__main__":
    main()
