"""The paper's ablation, Table 2 (``derain bench ablation``): v1-v4 trained with the same budget.

| variant | what (paper Table 2) | preset |
|---|---|---|
| v1 | pixel-wise filtering, one 3×3 kernel per pixel (no dilation, no fusion), L1 | ``paper-v1`` |
| v2 | pixel-wise dilation filtering (1, 2, 3, 4) + 3×3 fusion, L1 | ``paper-v2`` |
| v3 | v2 + SSIM term (L1 − 0.2·SSIM) | ``paper-v3`` |
| v4 | v3 + RainMix over the Garg-Nayar streaks | ``paper-v4`` |

Each variant trains from its preset with the same overrides (``iterations`` — the budget —,
``model``, ``crop``, ``batch_size``, threads, seed), resuming if its run folder already holds a
checkpoint of the same config (a folder holding another config's run is an error, not reused). The best weights by validation are then scored on the preset's validation sets
(never test sets) and, for reporting only, on the test folders given; time per 481×321 image
(fp32) is measured in the same process.

**In-domain mode** (``in_domain=TRAIN_DIR``, ``derain bench ablation --in-domain ../shared/data/RainTrainL
--test ../shared/data/Rain100L``): as the paper did on the Rain100H family, every variant trains on
the pairs of one family's training split only (its last ``holdout`` pairs held out), is selected on
that holdout, and is reported on the family's test set.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..evaluation.evaluate import evaluate
from ..evaluation.validation import ValidationSets, validation_families
from ..io.atomic import write_atomic
from ..models.checkpoint import load_training_state
from ..training import TrainConfig, config_changes, load_config, resolve_preset, train
from .timing import machine_description, time_call

__all__ = ["VARIANTS", "AblationRow", "ablation_config", "can_resume", "in_domain_overrides", "run_ablation", "ablation_table", "write_rows"]

VARIANTS: dict[str, str] = {
    "v1": "pixel-wise filtering, no dilation, L1",
    "v2": "+ dilations 1-4 and fusion, L1",
    "v3": "+ SSIM term (L1 - 0.2 SSIM)",
    "v4": "+ RainMix",
}


@dataclass
class AblationRow:
    variant: str
    what: str
    iterations: int
    validation: dict[str, float] = field(default_factory=dict)  # <set>_psnr, <set>_ssim, mean_psnr
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # folder name -> psnr, ssim
    ms: float = float("nan")  # fp32, 481x321, batch 1
    params: int = 0


def in_domain_overrides(train_dir: str | os.PathLike[str], holdout: int = 20) -> list[str]:
    """Config overrides that train on the pairs of ``train_dir`` only and validate on its last ``holdout``.

    >>> in_domain_overrides("/data/RainTrainL", 20)[0]
    "sources=[{kind: paired, path: '/data/RainTrainL'}]"
    """
    if holdout < 1:
        raise ValueError(f"holdout must be >= 1, got {holdout}")
    path = str(Path(train_dir).absolute()).replace("'", "''")
    return [
        f"sources=[{{kind: paired, path: '{path}'}}]",
        f"holdout={{'{path}': {holdout}}}",
        "validation.paired=[]",
    ]


def ablation_config(
    variant: str,
    iterations: int,
    out_dir: str | os.PathLike[str],
    model: str | None = None,
    overrides: Sequence[str] = (),
    in_domain: str | os.PathLike[str] | None = None,
    holdout: int = 20,
) -> TrainConfig:
    """The ``paper-<variant>`` preset with the shared budget: ``iterations`` (lr decays over the second
    half), validation at the middle and at the end, ``out_dir/<variant>``, the in-domain data if
    ``in_domain`` (:func:`in_domain_overrides`), then ``overrides``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    base = [
        f"iterations={iterations}",
        f"decay_start={iterations // 2}",
        f"validation.every={max(1, iterations // 2)}",
        f"checkpoint_every={max(1, min(250, iterations))}",
        f"out_dir={Path(out_dir) / variant}",
    ]
    if model:
        base.append(f"model={model}")
    if in_domain is not None:
        base += in_domain_overrides(in_domain, holdout)
    return load_config(resolve_preset(f"paper-{variant}"), [*base, *overrides])


def run_ablation(
    iterations: int,
    out_dir: str | os.PathLike[str],
    tests: Sequence[str | os.PathLike[str]] = (),
    model: str | None = None,
    overrides: Sequence[str] = (),
    variants: Sequence[str] = tuple(VARIANTS),
    log: Callable[[str], None] = lambda _: None,
    in_domain: str | os.PathLike[str] | None = None,
    holdout: int = 20,
) -> list[AblationRow]:
    """Train (or resume) each variant, then score its best weights; one :class:`AblationRow` per variant."""
    import derain

    configs = {v: ablation_config(v, iterations, out_dir, model, overrides, in_domain, holdout) for v in variants}  # all errors before training
    resume = {v: can_resume(cfg) for v, cfg in configs.items()}
    rows = []
    for variant, cfg in configs.items():
        log(f"{variant}: training {cfg.model} for {cfg.iterations} steps in {cfg.out_dir}")
        result = train(cfg, resume=resume[variant])
        run = Path(cfg.out_dir)
        weights = run / "best.safetensors" if (run / "best.safetensors").exists() else run / "last.safetensors"
        net = derain.load_model(weights).eval()
        row = AblationRow(variant, VARIANTS[variant], result.step, params=sum(p.numel() for p in net.parameters()))
        row.validation = ValidationSets(cfg.validation, cfg.hold_out(), cfg.seed).run(net, "fp32")
        for folder in tests:
            r = evaluate(net, folder, "y", precision="fp32", progress=False)
            row.test[Path(folder).name] = {"psnr": r.metrics["y"]["psnr"], "ssim": r.metrics["y"]["ssim"]}
        x = torch.rand(1, 3, 321, 481)
        with torch.inference_mode():
            row.ms = time_call(lambda: net(x), warmup=2, repeats=5).median_ms
        log(f"{variant}: validation mean Y-PSNR {row.validation.get('mean_psnr', float('nan')):.2f} dB")
        rows.append(row)
    return rows


def can_resume(cfg: TrainConfig) -> bool:
    """True if ``cfg.out_dir`` holds a checkpoint of this very config; an error if it holds another run's."""
    path = Path(cfg.out_dir) / "checkpoint.pt"
    if not path.exists():
        return False
    differ = config_changes(load_training_state(path).get("config", {}), cfg)
    if differ:
        raise ValueError(f"{cfg.out_dir} holds a run with another config ({', '.join(differ)} differ); use another --out-dir or remove it")
    return True


def ablation_table(rows: Sequence[AblationRow]) -> str:
    """Markdown: validation PSNR/SSIM per set and their mean, test PSNR/SSIM, ms per image."""
    if not rows:
        return "(no rows)"
    sets = [k[: -len("_psnr")] for k in validation_families(rows[0].validation)]
    tests = list(rows[0].test)
    head = ["variant", "what", "steps", *(f"{s} (val)" for s in sets), "val mean PSNR", *(f"{t} (test)" for t in tests), "ms 481×321 fp32"]
    lines = [f"Machine: {machine_description()}; protocol y (PSNR dB / SSIM)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        v = r.validation
        cells = [r.variant, r.what, str(r.iterations)]
        for s in sets:
            ssim = v.get(f"{s}_ssim")
            cells.append(f"{v[f'{s}_psnr']:.2f}" + (f" / {ssim:.4f}" if ssim is not None else ""))
        cells.append(f"{v.get('mean_psnr', float('nan')):.2f}")
        cells += [f"{r.test[t]['psnr']:.2f} / {r.test[t]['ssim']:.4f}" for t in tests]
        cells.append(f"{r.ms:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_rows(rows: Sequence[AblationRow], path: str | os.PathLike[str]) -> None:
    """The rows as JSON (with the machine)."""
    data: dict[str, Any] = {"machine": machine_description(), "rows": [asdict(r) for r in rows]}
    write_atomic(path, json.dumps(data, indent=2))
