"""New weights from trained ones, for the next stage of a chain: a point between two runs, or a shallower start.

    python benchmarks/derive_weights.py average A.safetensors B.safetensors --alpha 0.5 -o OUT.safetensors
    python benchmarks/derive_weights.py shallow src/derain/weights/default.safetensors -o OUT.safetensors [--fresh-gates | --no-gates]

``average`` writes ``(1 - alpha)·A + alpha·B`` (a "model soup" of two: every floating-point tensor averaged in fp32)
with A's architecture and config. Both files must hold the same network: the same architecture, tensors (names and
shapes) and config, except fields only training reads (``init``, ``gate_detach``). Meaningful for two networks
trained from one start (a stage and the weights it started from), where the line between them stays in one basin;
experiments/default-soup-s13.md is such a use.

``shallow`` writes a one-convolution-per-block EfDeRain from a trained two-convolution one: each block keeps its first
convolution, every other tensor (outc, the fusion, the gate heads) is copied. It is not the same function (each block
loses its second convolution and ReLU); it is a start for ``efderain-cpu-d1``-like layouts (``depth: 1``) that keeps
what the deeper network learned in its first layers and its kernels' output layer. The gate heads read features the
shallower network computes differently: ``--fresh-gates`` starts them as a new network's (open) instead of copying
them; ``--no-gates`` leaves them out (``gate: false``, ``gate_global: false``), for a first stage that trains the
filtering alone: gates trained beside a filtering that is still worse than its input close, and the filtering then
gets no gradient (experiments/default-d1-s1.yaml found both).

Either writes fp16, named by the output file; bad input is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import derain  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads OpenMP (a shared machine's threads sleep)
import torch

from derain.errors import UserError
from derain.models.checkpoint import CheckpointError, read_model, save_model
from derain.models.efderain import EfDeRain

TRAINING_ONLY = ("init", "gate_detach")  # config fields that change how a network trains, not what it computes
_GATES = ("gate.", "gate_global.", "judge.")
_BLOCK = re.compile(r"^(conv\d+\.conv1)\.(\d+)\.(weight|bias)$")


def _function_config(model: torch.nn.Module) -> dict:
    return {k: v for k, v in model.config.to_dict().items() if k not in TRAINING_ONLY}  # type: ignore[attr-defined]


def interpolate(a: torch.nn.Module, b: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """``a`` with every floating-point tensor replaced by ``(1 - alpha)·a + alpha·b`` (in place, fp32)."""
    sa, sb = a.state_dict(), b.state_dict()
    if type(a) is not type(b) or _function_config(a) != _function_config(b):
        raise CheckpointError("the two files hold different networks (architecture or config differ)")
    if {k: v.shape for k, v in sa.items()} != {k: v.shape for k, v in sb.items()}:
        raise CheckpointError("the two files hold different networks (tensor names or shapes differ)")
    mixed = {k: (1 - alpha) * v.float() + alpha * sb[k].float() if v.is_floating_point() else v for k, v in sa.items()}
    a.load_state_dict(mixed)
    return a


def shallow(model: EfDeRain, fresh_gates: bool = False, gates: bool = True) -> EfDeRain:
    """``model``'s config with ``depth=1``, each block's first convolution and every non-block tensor of ``model``
    (with ``fresh_gates``, the gate heads' as a new network starts them; without ``gates``, no gate heads)."""
    if type(model) is not EfDeRain or model.config.depth < 2:
        raise CheckpointError("expected an EfDeRain network with at least two convolutions per block")
    config = replace(model.config, depth=1)
    if not gates:
        config = replace(config, gate=False, gate_global=False, gate_width=0, judge_widths=())
    torch.manual_seed(0)  # fresh gate heads: the same start every time
    out = EfDeRain(config)
    fresh, state = out.state_dict(), {}
    for key, value in model.state_dict().items():
        if key.startswith(_GATES) and not gates:
            continue
        block = _BLOCK.match(key)
        if block is not None and block.group(2) != "0":
            continue  # a block's later convolutions
        state[key] = fresh[key] if fresh_gates and key.startswith(_GATES) else value
    out.load_state_dict(state, strict=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    avg = sub.add_parser("average", help="(1 - alpha)·A + alpha·B")
    avg.add_argument("a", help="weights file A (its architecture and config are kept)")
    avg.add_argument("b", help="weights file B, the same network")
    avg.add_argument("--alpha", type=float, required=True, help="0 = A, 1 = B (outside [0, 1]: beyond them on the line)")
    avg.add_argument("-o", "--out", required=True, help="the new weights file (fp16)")
    sh = sub.add_parser("shallow", help="one convolution per block, from a two-convolution network")
    sh.add_argument("weights", help="a trained EfDeRain with two or more convolutions per block")
    sh.add_argument("-o", "--out", required=True, help="the new weights file (fp16)")
    which = sh.add_mutually_exclusive_group()
    which.add_argument("--fresh-gates", action="store_true", help="start the gate heads open, as a new network's")
    which.add_argument("--no-gates", action="store_true", help="leave the gate heads out")
    args = p.parse_args(argv)
    if args.command == "average" and not math.isfinite(args.alpha):
        avg.error(f"--alpha must be a finite number, got {args.alpha}")
    try:
        if args.command == "average":
            model = interpolate(read_model(args.a).float(), read_model(args.b).float(), args.alpha)
            meta = {"derived": f"{1 - args.alpha:g}*{args.a} + {args.alpha:g}*{args.b}"}
        else:
            model = shallow(read_model(args.weights).float(), args.fresh_gates, gates=not args.no_gates)
            meta = {"derived": f"{args.weights}, first convolution of each block"}
        model.registry_name = Path(args.out).stem  # type: ignore[assignment]
        save_model(model, args.out, metadata=meta, dtype=torch.float16)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
