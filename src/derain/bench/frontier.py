"""The CPU frontier (``derain bench frontier``): candidate networks, one training protocol, quality per millisecond.

**Protocol.** Every candidate trains with the ``rain100l`` preset (the pairs of RainTrainL only, its last 20 held out
for selection; loss, He's init of the blocks' convolutions (a NAF block's own convolutions keep theirs), crops,
schedule, seed the same for all) for the same wall-clock budget: before any training,
each candidate's time per training step is measured back to back in this process (same threads, random batches
of the preset's size), and ``minutes`` of it become its step count (so a cheaper network trains longer, as it
would in the same time). The step counts are kept in ``OUT/steps.json``, so a rerun resumes the same runs. The
checkpoint rule is the preset's: best mean Y-PSNR on the held-out pairs. Test folders (``tests``) are scored
for reporting only. Scores are kept in ``OUT/scores.json`` beside the weights they were measured on (file, size,
time written, the pairs and folders scored), so a rerun re-times every network on a quiet machine without scoring again.

**Memorisation test** (``memorise_minutes`` > 0): the same candidate trained on the first 10 pairs only and
scored on those very pairs. A design that cannot fit 10 pairs lacks capacity (or trainability); no schedule
will save it.

**Timing** through the user path: the network in its inference form (a re-parameterised network folded), prepared
for each precision as a saved model is when a runner loads it (``Derainer(..., owned=True)``: channels_last, the
weights in the compute dtype), ``derainer(uint8 image)`` at each size and precision, PReNet (its
``Rain100L.pth``, trained on all 200 RainTrainL pairs: its held-out score is not held out) in the same run.

>>> sorted(CANDIDATES)[:2]
['efderain-cpu', 'efderain-cpu-d1']
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data.pairs import find_pairs
from ..errors import InvalidArgument
from ..evaluation.evaluate import evaluate
from ..evaluation.validation import ValidationSets
from ..io.atomic import write_atomic
from ..models.interface import inference_form
from ..training import TrainConfig, load_config, resolve_preset, train
from ..training.losses import build_loss
from .ablation import can_resume, in_domain_overrides
from .timing import machine_description, time_call

__all__ = ["CANDIDATES", "FrontierRow", "FrontierReport", "run_frontier", "frontier_table", "frontier_plot", "inference_form"]

#: candidate -> its design (what it is: the registry's description, ``derain models``)
CANDIDATES: dict[str, str] = {
    "efderain-cpu": "KPN",  # today's default
    "efderain-cpu-fast": "KPN",  # today's fast
    "efderain-cpu-w32": "KPN",
    "efderain-cpu-d1": "KPN, one convolution per block",
    "efderain-cpu-rep": "KPN, re-parameterised",
    "efderain-cpu-refine": "KPN + H/4 refinement",
    "efderain-fast-refine": "KPN + H/4 refinement",
    "efderain-cpu-naf": "KPN of NAF blocks",
    "efderain-cpu-prn": "KPN + full-resolution refinement",
    "efderain-cpu-prnx": "KPN + full-resolution refinement of both images",
}
PRENET = "prenet (Rain100L.pth)"
MEMORISE_PAIRS = 10


@dataclass
class FrontierRow:
    name: str
    design: str
    params: int = 0
    steps: int = 0  # training steps in the budget
    train_minutes: float = 0.0  # wall-clock the training took (longer than the budget where the machine was shared)
    holdout: dict[str, float] = field(default_factory=dict)  # psnr, ssim (Y) on the held-out pairs
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # folder -> psnr, ssim (reporting only)
    memorise_psnr: float = float("nan")  # Y-PSNR on the 10 pairs it trained on
    memorise_steps: int = 0
    ms: dict[str, float] = field(default_factory=dict)  # "HxW precision" -> median ms per image


@dataclass
class FrontierReport:
    machine: str
    minutes: float
    memorise_minutes: float
    rows: list[FrontierRow] = field(default_factory=list)


def _recipe(name: str, out_dir: Path, overrides: Sequence[str]) -> TrainConfig:
    return load_config(resolve_preset("rain100l"), [f"model={name}", f"out_dir={out_dir}", *overrides])


def step_seconds(names: Sequence[str], cfg: TrainConfig, warmup: int = 2, repeats: int = 4) -> dict[str, float]:
    """Median seconds per training step of each named network with ``cfg``'s batch, crop, loss and precision."""
    import derain

    loss_fn = build_loss(cfg.loss, cfg.ssim_weight)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(cfg.batch_size, 3, cfg.crop, cfg.crop, generator=gen)
    y = torch.rand(cfg.batch_size, 3, cfg.crop, cfg.crop, generator=gen)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # as train() will
    seconds = {}
    for name in names:
        model = derain.create_model(name).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))

        def step() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                pred = model(x)
            loss = loss_fn(pred.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        seconds[name] = time_call(step, warmup=warmup, repeats=repeats).median_ms / 1e3
    return seconds


def memorise_folder(train_dir: str | os.PathLike[str], out: Path, n: int = MEMORISE_PAIRS) -> Path:
    """A folder of links to the first ``n`` pairs of ``train_dir`` (``rainy/`` + ``clean/``)."""
    pairs = find_pairs(train_dir, strict=True).pairs[:n]
    if len(pairs) < n:
        raise InvalidArgument(f"{train_dir} has {len(pairs)} pairs; the memorisation test needs {n}")
    for sub in ("rainy", "clean"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for p in pairs:
        for sub, src in (("rainy", Path(p.rainy)), ("clean", Path(p.clean))):
            link = out / sub / src.name
            if not link.exists():
                link.symlink_to(src.absolute())
    return out


def _train_best(cfg: TrainConfig) -> tuple[nn.Module, float, Path]:
    """Train (or resume) ``cfg``; its best weights (else the last), the minutes it took, and the weights' file."""
    import derain

    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the trainer's lines are progress here; stdout carries the table
        train(cfg, resume=can_resume(cfg))
    run = Path(cfg.out_dir)
    weights = run / "best.safetensors" if (run / "best.safetensors").exists() else run / "last.safetensors"
    return derain.load_model(weights).eval(), (time.perf_counter() - start) / 60, weights


class _Scores:
    """``OUT/scores.json``: each score with the stamp of what it was measured on; a changed stamp measures again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):  # unreadable: measured again and written anew
            self.saved = {}

    def get(self, key: str, stamp: str, measure: Callable[[], Any]) -> Any:
        if self.saved.get(key, {}).get("stamp") == stamp:
            return self.saved[key]["value"]
        value = measure()
        self.saved[key] = {"stamp": stamp, "value": value}
        write_atomic(self.path, json.dumps(self.saved, indent=1))
        return value


def _stamp(weights: str | os.PathLike[str], cfg: TrainConfig, tests: Sequence[str | os.PathLike[str]] = ()) -> str:
    """What a score depends on: the weights' file (path, size, time written), the pairs it is scored on, the test folders."""
    info = Path(weights).stat()
    scored_on = [cfg.hold_out().counts, sorted(cfg.hold_out().photo_folders), cfg.validation.model_dump(), cfg.seed]
    return json.dumps([str(Path(weights).resolve()), info.st_size, info.st_mtime_ns, scored_on, [str(Path(t).resolve()) for t in tests]],
                      default=str, sort_keys=True)


def _memorised(net: nn.Module, cfg: TrainConfig) -> float:
    """Mean Y-PSNR on the pairs it trained on (the memorisation run validates on them), fp32."""
    return ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed).run(net, "fp32")["mean_psnr"]


def _scores(net: nn.Module, cfg: TrainConfig, tests: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Held-out Y PSNR / SSIM (the checkpoint rule's pairs) and each test folder's, fp32."""
    scores = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed).run(net, "fp32")
    test = {}
    for folder in tests:
        r = evaluate(net, folder, "y", precision="fp32", progress=False)
        test[Path(folder).name] = {"psnr": r.metrics["y"]["psnr"], "ssim": r.metrics["y"]["ssim"]}
    return {"holdout": {"psnr": scores["mean_psnr"], "ssim": float(np.mean([v for k, v in scores.items() if k.endswith("_ssim")]))},
            "test": test}


def _time_user_path(model: nn.Module | str, sizes: Sequence[tuple[int, int]], precisions: Sequence[str],
                    weights: str | None = None, repeats: int = 5) -> dict[str, float]:
    import derain

    from ..inference.derainer import Derainer

    ms = {}
    rng = np.random.default_rng(0)
    for precision in precisions:
        # A trained network reaches users as a file or a name, which the runner loads and prepares for the precision
        # (channels_last, weights in the compute dtype); a module handed over is run as it is, so time a prepared copy.
        runner = (Derainer(copy.deepcopy(model), precision=precision, owned=True) if isinstance(model, nn.Module)
                  else derain.load_derainer(model, weights=weights, precision=precision))
        for h, w in sizes:
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            first = time.perf_counter()
            runner(image)  # warm-up; one more where a call is short, fewer repeats where it is long
            took = time.perf_counter() - first
            t = time_call(lambda: runner(image), warmup=0 if took > 2 else 1, repeats=1 if took > 20 else 2 if took > 2 else repeats)
            ms[f"{h}x{w} {precision}"] = t.median_ms
    return ms


def run_frontier(
    candidates: Sequence[str] = tuple(CANDIDATES),
    minutes: float = 10.0,
    memorise_minutes: float = 0.0,
    train_dir: str | os.PathLike[str] = "",
    out_dir: str | os.PathLike[str] = "runs/frontier",
    tests: Sequence[str | os.PathLike[str]] = (),
    prenet_weights: str | os.PathLike[str] | None = None,
    sizes: Sequence[tuple[int, int]] = ((321, 481), (1080, 1920)),
    precisions: Sequence[str] = ("fp32", "bf16"),
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = lambda _: None,
) -> FrontierReport:
    """Calibrate, train (memorisation test, then the budget), score and time every candidate; PReNet timed beside.

    ``minutes=0``: the memorisation test alone (no in-domain training; the held-out column stays empty); both 0: the
    speed of each untrained network alone."""
    import derain

    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise InvalidArgument(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}", option="--candidate")
    if minutes < 0 or memorise_minutes < 0:
        raise InvalidArgument("minutes and memorise_minutes must be >= 0", option="--minutes")
    out = Path(out_dir)
    data = [*(in_domain_overrides(train_dir, 20)[:2] if train_dir else []), *overrides]
    base = _recipe(candidates[0], out / "calibration", data)
    steps_file = out / "steps.json"
    saved = json.loads(steps_file.read_text()) if steps_file.exists() else {}
    todo = [c for c in candidates if c not in saved.get("seconds", {})] if minutes or memorise_minutes else []
    if todo:
        log(f"timing a training step of {len(todo)} candidate(s)")
        saved.setdefault("seconds", {}).update(step_seconds(todo, base))
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(steps_file, json.dumps(saved, indent=2))
    report = FrontierReport(machine_description(), minutes, memorise_minutes)
    cache = _Scores(out / "scores.json")
    train_folder = Path(base.sources[0].path)
    for name in candidates:
        row = FrontierRow(name, CANDIDATES[name])
        if not (minutes or memorise_minutes):  # speed alone: the untrained network (its weights do not change its time)
            net = inference_form(derain.create_model(name).eval())
            row.params = sum(p.numel() for p in net.parameters())
            row.ms = _time_user_path(net, sizes, precisions)
            report.rows.append(row)
            continue
        seconds = saved["seconds"][name]
        if memorise_minutes > 0:
            folder = memorise_folder(train_folder, out / "memorise-pairs")
            row.memorise_steps = max(1, int(memorise_minutes * 60 / seconds))
            quoted = str(folder.absolute()).replace("'", "''")
            cfg = _recipe(name, out / "memorise" / name, [
                *data, f"sources=[{{kind: paired, path: '{quoted}'}}]", "holdout={}", f"validation.paired=['{quoted}']",
                f"iterations={row.memorise_steps}", f"decay_start={row.memorise_steps // 2}",
                f"validation.every={row.memorise_steps}", f"checkpoint_every={max(1, min(100, row.memorise_steps))}",
            ])
            log(f"{name}: memorisation, {row.memorise_steps} steps on {MEMORISE_PAIRS} pairs")
            net, _, weights = _train_best(cfg)
            row.memorise_psnr = cache.get(f"memorise/{name}", _stamp(weights, cfg), lambda: _memorised(net, cfg))
        if minutes == 0:  # the memorisation test alone
            net = inference_form(net)
            row.params = sum(p.numel() for p in net.parameters())
            row.ms = _time_user_path(net, sizes, precisions)
            report.rows.append(row)
            continue
        row.steps = max(1, int(minutes * 60 / seconds))
        third = max(1, row.steps // 3)
        cfg = _recipe(name, out / "train" / name, [
            *data, f"iterations={row.steps}", f"decay_start={third}", f"validation.every={third}",
            f"checkpoint_every={max(1, min(100, row.steps))}",
        ])
        log(f"{name}: training {row.steps} steps ({seconds:.2f} s each when timed)")
        net, row.train_minutes, weights = _train_best(cfg)
        net = inference_form(net)
        scores = cache.get(f"train/{name}", _stamp(weights, cfg, tests), lambda: _scores(net, cfg, tests))
        row.holdout, row.test = scores["holdout"], scores["test"]
        row.params = sum(p.numel() for p in net.parameters())
        row.ms = _time_user_path(net, sizes, precisions)
        log(f"{name}: held-out {row.holdout['psnr']:.2f} dB, {row.ms}")
        report.rows.append(row)
    if prenet_weights:
        row = FrontierRow(PRENET, "recurrent CNN, full resolution")
        net = derain.load_model(prenet_weights, name="prenet").eval()
        row.params = sum(p.numel() for p in net.parameters())
        scores = cache.get("prenet", _stamp(prenet_weights, base, tests), lambda: _scores(net, base, tests))
        row.holdout, row.test = scores["holdout"], scores["test"]
        row.ms = _time_user_path(net, sizes, precisions)
        report.rows.append(row)
    return report


def _prenet_ms(report: FrontierReport) -> dict[str, float]:
    return next((r.ms for r in report.rows if r.name == PRENET), {})


def frontier_table(report: FrontierReport) -> str:
    """Markdown: design, parameters, steps, held-out and test PSNR/SSIM, memorisation, ms per image and × PReNet."""
    if not report.rows:
        return "(no rows)"
    cells = list(report.rows[0].ms)
    tests = list(dict.fromkeys(t for r in report.rows for t in r.test))
    prenet = _prenet_ms(report)
    head = ["network", "design", "params", "steps", "held-out Y PSNR / SSIM", *(f"{t} (test)" for t in tests), "memorise 10 pairs",
            *(f"ms {c}" for c in cells), *(f"× PReNet {c}" for c in cells if prenet)]
    lines = [f"Machine: {report.machine}; budget {report.minutes:g} min of training per candidate"
             + (f", memorisation {report.memorise_minutes:g} min" if report.memorise_minutes else ""),
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        row = [r.name, r.design, f"{r.params / 1e6:.2f} M", str(r.steps or "—"),
               f"{r.holdout['psnr']:.2f} / {r.holdout['ssim']:.4f}" if r.holdout else "—"]
        row += [f"{r.test[t]['psnr']:.2f} / {r.test[t]['ssim']:.4f}" if t in r.test else "—" for t in tests]
        row.append("—" if np.isnan(r.memorise_psnr) else f"{r.memorise_psnr:.2f} ({r.memorise_steps} steps)")
        row += [f"{r.ms[c]:.1f}" for c in cells]
        if prenet:
            row += [f"{prenet[c] / r.ms[c]:.0f}×" for c in cells]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def frontier_plot(report: FrontierReport, path: str | os.PathLike[str], cell: str | None = None) -> None:
    """Held-out Y-PSNR against milliseconds per image (log scale) at ``cell`` (default: the first), one point each."""
    from .plotting import pyplot

    plt = pyplot()
    cell = cell or next(iter(report.rows[0].ms))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for r in (r for r in report.rows if r.holdout):
        ax.scatter(r.ms[cell], r.holdout["psnr"], marker="s" if r.name == PRENET else "o")
        ax.annotate(r.name, (r.ms[cell], r.holdout["psnr"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per image, {cell} (user path)")
    ax.set_ylabel("held-out Y-PSNR (dB), RainTrainL last 20")
    ax.set_title(f"CPU frontier: {report.minutes:g} min of training each", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    write_atomic(path, png.getvalue())


def write_report(report: FrontierReport, path: str | os.PathLike[str]) -> None:
    """The report as JSON."""
    data: dict[str, Any] = asdict(report)
    write_atomic(path, json.dumps(data, indent=2))
