"""The training loop behind ``derain train``: single process or ``torchrun`` (DDP), resumable.

Results layout (``out_dir``)::

    config.yaml         the resolved configuration
    checkpoint.pt       model, optimizer, scheduler, step, RNG states, config (--resume reads it)
    last.safetensors    model weights at the last checkpoint (derain.load_model reads it; with ``ema``,
                        the moving average, as validation scores it; the raw weights are in checkpoint.pt)
    .current/, .group-* the two above are links into .current, one folder per checkpoint swapped in
                        atomically: after a kill both are at the same step
    best.safetensors    model weights with the best mean validation Y-PSNR
    validated/          with ``validation.keep``: every validated step's weights (``stepNNNNNNN.safetensors``)
    train_log.csv       step, loss, lr, images/s (with ``judgement``: also that step's judgement loss)
    val_log.csv         step, per validation set PSNR/SSIM (protocol y), mean PSNR
    samples/            rainy | output | clean strips of the first validation image

Only rank 0 writes. Adam (lr, betas), constant lr until ``decay_start`` then linear decay to 0. With ``judgement``
each step's loss also has ``judgement.weight`` × :func:`~derain.training.losses.judgement_loss` of the model's
image gate on that step's labelled photos (:class:`~derain.training.judgement.JudgementSamples`). With
``ema: d`` the run also keeps ``torch.optim.swa_utils.AveragedModel``'s exponential moving average of the
weights (decay ``d`` per step): validation, ``best`` and ``last`` are that average, which is steadier than
the last step's weights. ``train_only: [name, ...]`` trains only the parameters of those submodules (``refine``:
``refine.*``; :func:`trainable_parameters`); the others keep ``init_weights``' values.

Non-finite numbers (a learning rate too high, a broken image) never reach the files: a step whose loss or
gradient norm is not finite is skipped (no optimizer step, no EMA update; the step still counts, so the data
and the schedule go on as in a run without it), logged and counted; ``max_bad_steps`` such steps in a row
stop the run with :class:`TrainingDiverged`. Checkpoints are not written in the middle of such a streak, and
nothing is written whose weights are not finite: the last checkpoint that trained stays, and ``--resume``
continues from it. A run without non-finite numbers trains exactly as it would without these checks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from PIL import Image
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..errors import UserError
from ..evaluation.validation import ValidationSets
from ..metrics import quantize
from ..inference.derainer import Derainer
from ..io.atomic import WriteError, append_file, atomic_files, write_atomic, write_new
from ..io.images import save_image
from ..io.pixels import to_float
from ..io.progress import echo, progress_bar
from ..models.checkpoint import CheckpointError, load_training_state, save_model
from ..models.registry import create_model, load_model
from .config import SCHEDULE_KEYS, ConfigError, TrainConfig, config_changes
from .dataset import StepBatchSampler, TrainingSamples, build_sources
from .judgement import JudgementSamples
from .losses import build_loss, gate_loss, judgement_loss

__all__ = ["train", "TrainResult", "TrainingDiverged", "lr_factor"]

log = logging.getLogger(__name__)


class TrainingDiverged(UserError, FloatingPointError):
    """Training stopped because its numbers stopped being finite: ``max_bad_steps`` steps in a row with a
    non-finite loss or gradient, or weights that are no longer finite. The cause is the run's input (the
    learning rate, the data), so it is the user's to fix; its message is one line that says where the last
    good checkpoint is."""


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    best_psnr: float | None
    last_loss: float | None
    skipped_steps: int = 0  # steps skipped in all for a non-finite loss or gradient (this run and the ones it resumes)

    def __str__(self) -> str:
        best = f"{self.best_psnr:.2f} dB" if self.best_psnr is not None else "n/a"
        return f"trained {self.step} steps; best validation Y-PSNR {best}; weights in {self.out_dir}"


def lr_factor(step: int, decay_start: int, iterations: int) -> float:
    """1 until ``decay_start``, then linear to 0 at ``iterations``.

    >>> [round(lr_factor(s, 2, 6), 2) for s in range(7)]
    [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    """
    if step <= decay_start or iterations == decay_start:
        return 1.0
    return max(0.0, (iterations - step) / (iterations - decay_start))


def _rng_states() -> dict[str, Any]:
    """Global RNG states as tensors, numbers and lists only (the checkpoint loads without pickled code)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def _check_run_folder(cfg: TrainConfig, resume: bool, allow_changes: bool) -> dict[str, Any] | None:
    """Refuse to mix runs: the checkpoint state to resume from, None for a fresh run in an unused folder."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir {out} is a file, not a folder")
    ckpt = out / "checkpoint.pt"
    earlier = [f for f in ("checkpoint.pt", "best.safetensors", "last.safetensors", "train_log.csv") if (out / f).exists()]
    if not resume:
        if earlier:
            raise ConfigError(f"{out} holds an earlier run ({', '.join(earlier)}): pass --resume to continue it, or choose another out_dir")
        return None
    if not ckpt.exists():
        if earlier:
            raise ConfigError(f"{out} holds an earlier run's files ({', '.join(earlier)}) but no checkpoint.pt to resume from")
        log.warning("no checkpoint at %s: starting from scratch", ckpt)
        return None
    state = load_training_state(ckpt)
    try:
        changed = config_changes(state.get("config", {}), cfg)
    except ConfigError as e:
        raise ConfigError(f"--resume: the config saved in {ckpt}: {e}") from None
    refused = [k for k in changed if not (allow_changes and k in SCHEDULE_KEYS)]
    if refused:
        hint = " (schedule keys change only with --allow-changes)" if set(refused) <= SCHEDULE_KEYS else ""
        raise ConfigError(f"--resume: {out} was trained with another config: {', '.join(refused)} differ{hint}")
    return state


def _weights_step(path: Path) -> int | None:
    """The training step recorded in a weights file's metadata (None: no file, or no step)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return int((f.metadata() or {}).get("step", ""))
    except Exception:  # noqa: BLE001 - missing or unreadable: rewrite it
        return None


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append one row (a header first in a new file) whole or not at all (:func:`~derain.io.atomic.append_file`).
    A row with columns the file's header lacks (a run resumed by a newer version that logs more) rewrites the file
    with the wider header, its earlier rows blank there."""
    fields = list(row)
    if path.exists() and path.stat().st_size:
        with open(path, newline="") as f:
            fields = next(csv.reader(f), [])
        new = [k for k in row if k not in fields]
        if new:
            with open(path, newline="") as f:
                rows = [{k: v for k, v in r.items() if k is not None} for r in csv.DictReader(f)]
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fields + new, restval="")
            writer.writeheader()
            writer.writerows(rows + [row])
            write_atomic(path, text.getvalue())
            return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, restval="")
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerow(row)
    append_file(path, text.getvalue())


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (they were lost with the process that wrote them)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(r for r in rows if int(r["step"]) <= step)
    write_atomic(path, text.getvalue())


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def batch_trim(seed: int, step: int, most: int) -> tuple[int, int]:
    """Rows and columns (each 0..``most``) that step ``step`` of a run seeded ``seed`` trims off its batch
    (``crop_trim``): the same on every rank and after a resume.

    >>> batch_trim(3, 10, 0)
    (0, 0)
    >>> batch_trim(3, 10, 15) == batch_trim(3, 10, 15)
    True
    """
    if most <= 0:
        return 0, 0
    rng = random.Random(seed * 1_000_003 + step)
    return rng.randint(0, most), rng.randint(0, most)


def batch_loss(loss_fn: nn.Module, pred: Tensor, rainy: Tensor, clean: Tensor, identity_weight: float = 1.0) -> Tensor:
    """``loss_fn(pred, clean)`` with the rain-free samples of the batch (input equal to target) weighted by
    ``identity_weight``: each part's loss is weighted by its share of the batch, so with weight 1 this is
    ``loss_fn`` on the whole batch whenever the loss is a per-sample mean (as L1 and SSIM are).

    Without the weight a rain-free sample whose output is a level off weighs a tenth of a rainy one: the
    weight lets training care about leaving rain-free content untouched as much as about the rain.
    """
    if identity_weight == 1.0:
        return loss_fn(pred, clean)
    same = (rainy == clean).flatten(1).all(1)
    k, n = int(same.sum()), len(same)
    if k in (0, n):
        return loss_fn(pred, clean) * (identity_weight if k == n else 1.0)
    rain, free = ~same, same
    return (loss_fn(pred[rain], clean[rain]) * (n - k) + identity_weight * loss_fn(pred[free], clean[free]) * k) / n


def _load_init_weights(model: nn.Module, path: str) -> list[str]:
    """Start ``model`` from the weights at ``path``: every tensor must match, except the heads (``gate``,
    ``gate_global``, ``judge``, ``refine``): each head of ``model`` that the weights lack, or hold any tensor of in
    another shape, starts whole as the model's init made it (a refinement starts as no change, a gate open), and so
    does the image head ``gate_global`` whenever the ``judge`` it reads is new; returns those heads' names. A head the
    weights hold and the model lacks is an error, as are weights holding NaN or infinite values (:class:`ConfigError`,
    before any step)."""
    state = load_model(path).state_dict()
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise ConfigError(f"init_weights {path}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} hold NaN or infinite values")
    ours = model.state_dict()
    heads = ("gate.", "gate_global.", "judge.", "refine.")
    mine = {k.split(".")[0] for k in ours if k.startswith(heads)}
    new = {h for h in mine if any(k.startswith(h + ".") and (k not in state or state[k].shape != v.shape) for k, v in ours.items())}
    if "judge" in new and "gate_global" in mine:  # the image head reads the judge: trained on other features, it starts anew
        new.add("gate_global")
    for k in [k for k in state if k.split(".")[0] in new]:
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    new_heads = [k for k in missing if k.startswith(heads)]
    if unexpected or len(new_heads) != len(missing):
        raise ConfigError(
            f"init_weights {path} do not fit model: missing {sorted(set(missing) - set(new_heads))}, unexpected {sorted(unexpected)}"
        )
    heads_new = sorted({k.split(".")[0] for k in new_heads})
    if heads_new:
        log.warning("init_weights %s lack %s of this shape: it starts as initialised", path, ", ".join(heads_new))
    return heads_new


def trainable_parameters(model: nn.Module, prefixes: tuple[str, ...] = ()) -> list[nn.Parameter]:
    """The parameters to train: all (no ``prefixes``), else those of the submodules ``prefixes`` name (``refine``:
    ``refine.*``, not ``refiner.*``; a full parameter name names itself); the others get ``requires_grad = False``
    (no gradient is computed for them). A prefix that names no parameter is a :class:`ConfigError`."""
    if not prefixes:
        return list(model.parameters())
    named = {p: [] for p in prefixes}
    for name, param in model.named_parameters():
        inside = [p for p in prefixes if name == p or name.startswith(p + ".")]
        param.requires_grad_(bool(inside))
        for p in inside:
            named[p].append(param)
    unused = [p for p, params in named.items() if not params]
    if unused:
        raise ConfigError(f"train_only {unused}: no parameter of {type(model).__name__} is in it")
    return [param for param in model.parameters() if param.requires_grad]


@dataclass
class _Run:
    """One training run's state and its bookkeeping: checkpoints, validation, logs (rank 0 writes)."""

    cfg: TrainConfig
    out: Path
    rank: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    validation: ValidationSets | None
    ema: AveragedModel | None = None
    judgement: JudgementSamples | None = None  # the image gate's labelled photos (``judgement``), else None
    step: int = 0
    best: float | None = None
    skipped: int = 0  # steps skipped for a non-finite loss or gradient, in all
    saved_step: int | None = None  # the step of the checkpoint in out_dir (None: none yet)

    @property
    def weights(self) -> nn.Module:
        """The weights that are validated and saved: the moving average with ``ema``, else the model."""
        return self.model if self.ema is None else self.ema.module

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint (:func:`_check_run_folder`'s state): weights, optimizer, schedule, RNG, logs."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._follow_config_schedule()
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(f"{self.out / 'checkpoint.pt'} has no averaged weights for `ema`")
            self.ema.load_state_dict(state["ema"])
        self.step, self.best = state["step"], state["best_psnr"]
        self.skipped, self.saved_step = int(state.get("skipped_steps", 0)), self.step  # older checkpoints: none skipped
        _set_rng_states(state["rng"])
        if self.rank == 0:
            _truncate_csv(self.out / "train_log.csv", self.step)
            _truncate_csv(self.out / "val_log.csv", self.step)
            for kept in (self.out / "validated").glob("step*.safetensors"):  # validated after the checkpoint
                if kept.stem[4:].isdigit() and int(kept.stem[4:]) > self.step:
                    kept.unlink()
            if _weights_step(self.out / "last.safetensors") != self.step:  # written apart (no symlinks) or by hand
                self.save_checkpoint()
            log.warning("resumed from %s at step %d", self.out / "checkpoint.pt", self.step)

    def _follow_config_schedule(self) -> None:
        """After a restore, the learning rate of this run's config (``lr``, ``decay_start``, ``iterations``; they differ
        from the checkpoint's only with ``--allow-changes``), not the one saved with the optimizer and scheduler:
        their states carry the old base rate. The step's rate is computed as the scheduler computes it, so an
        unchanged config resumes bit for bit."""
        sched = self.scheduler
        sched.base_lrs = [self.cfg.lr for _ in self.optimizer.param_groups]
        for group, base, factor in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["initial_lr"] = base
            group["lr"] = base * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # what get_last_lr() reports

    def save_checkpoint(self) -> None:
        """checkpoint.pt and last.safetensors as one unit (:func:`~derain.io.atomic.atomic_files`): after a
        kill both are at the old step or both at the new one. Weights that are not finite are never written:
        :class:`TrainingDiverged`, the files in ``out_dir`` left as they were."""
        self.require_finite(self.model)  # every rank: they hold the same weights, so they stop together
        if self.rank != 0:
            return
        self.require_finite(self.weights)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "best_psnr": self.best,
            "rng": _rng_states(),
            "config": self.cfg.to_dict(),
            "skipped_steps": self.skipped,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        blob = io.BytesIO()
        torch.save(state, blob)  # in memory, then written whole (write_new): a full disk fails the write, never cuts it
        with atomic_files(self.out, ["last.safetensors", "checkpoint.pt"]) as paths:
            save_model(self.weights, paths["last.safetensors"], metadata={"step": str(self.step)})
            write_new(paths["checkpoint.pt"], blob.getbuffer())
        self.saved_step = self.step

    def kept(self) -> str:
        """Where a stopped run can go on from, for :class:`TrainingDiverged`'s message."""
        if self.saved_step is None:
            return f"no checkpoint was written in {self.out}"
        return f"the last checkpoint, step {self.saved_step}, is kept in {self.out} (--resume continues from it)"

    def require_finite(self, module: nn.Module) -> None:
        """Raise :class:`TrainingDiverged` if any weight (or buffer) of ``module`` is NaN or infinite: such
        weights can only come from a step that overflowed, and written out they would replace good ones."""
        bad = next((k for k, v in module.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise TrainingDiverged(
                f"training diverged at step {self.step}: the weights are no longer finite ({bad}); lower the "
                f"learning rate (lr={self.cfg.lr:g}) or check the data; nothing was written, {self.kept()}"
            )

    def validate(self) -> None:
        """Score the validation sets; log them, keep best.safetensors by the mean PSNR, write a sample."""
        if self.validation is None or not self.validation:
            return
        weights = self.weights
        self.require_finite(weights)  # before a score or best.safetensors comes of them
        scores = self.validation.run(weights, "fp32")  # Derainer runs it in eval mode, its modes restored after
        _append_csv(self.out / "val_log.csv", {"step": self.step, **{k: f"{v:.4f}" for k, v in scores.items()}})
        echo(f"step {self.step}: validation " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()
                                                          if k.endswith("psnr") or k.startswith("noharm")))
        if self.best is None or scores["mean_psnr"] > self.best:
            self.best = scores["mean_psnr"]
            meta = {"step": str(self.step), "mean_val_psnr": f"{self.best:.4f}"}
            save_model(weights, self.out / "best.safetensors", metadata=meta)
        if self.cfg.validation.keep:
            meta = {"step": str(self.step), "mean_val_psnr": f"{scores['mean_psnr']:.4f}"}
            (self.out / "validated").mkdir(exist_ok=True)
            save_model(weights, self.out / "validated" / f"step{self.step:07d}.safetensors", metadata=meta)
        if self.cfg.sample_every:
            _write_sample(weights, self.validation, self.out / "samples" / f"step{self.step:07d}.png")

    def log_step(self, loss: float, images_per_s: float, judgement: float | None = None) -> None:
        row = {"step": self.step, "loss": f"{loss:.8f}", "lr": f"{self.scheduler.get_last_lr()[0]:.6g}",
               "images_per_s": f"{images_per_s:.2f}"}
        if self.judgement is not None:  # a run's config is fixed, so its log's columns are too
            row["judgement_loss"] = f"{judgement:.6f}" if judgement is not None else ""
        _append_csv(self.out / "train_log.csv", row)


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None, allow_changes: bool = False) -> TrainResult:
    """Train according to ``cfg``; ``stop_after`` ends the loop early at that step (tests).

    A fresh run needs an ``out_dir`` without an earlier run; ``resume`` continues the one there, whose
    config must be ``cfg`` but for :data:`~derain.training.config.RUNTIME_KEYS` (and
    :data:`~derain.training.config.SCHEDULE_KEYS` with ``allow_changes``).
    """
    resumed = _check_run_folder(cfg, resume, allow_changes)
    rank, world = _distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # the released init (gain 0.02) makes denormal activations: 10-40x slower on CPU
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out_dir)
    samples, judgement, validation, model = _prepare(cfg, validate=rank == 0)
    model.to(device)
    optimizer = torch.optim.Adam(trainable_parameters(model, cfg.train_only), lr=cfg.lr, betas=tuple(cfg.betas))
    if rank == 0:  # the configuration is whole: from here on the run is written
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.decay_start, cfg.iterations))
    # rank 0 alone validates and saves, so it alone keeps the average
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema and rank == 0 else None
    run = _Run(cfg, out, rank, model, optimizer, scheduler, validation, ema, judgement)
    try:
        if resumed is not None:
            run.restore(resumed)
        last_loss = _train_loop(run, samples, device, world, min(cfg.iterations, stop_after or cfg.iterations))
        if run.step == cfg.iterations and (not cfg.validation.every or run.step % cfg.validation.every):
            run.validate()
            run.save_checkpoint()
    except WriteError as err:  # a full disk: the file is as it was; say what the run can go on from
        raise err.with_hint(run.kept()) from None
    if world > 1:
        _record_rank_checksums(model, out, rank)
    return TrainResult(out, run.step, run.best, last_loss, run.skipped)


def _prepare(cfg: TrainConfig, validate: bool) -> tuple[TrainingSamples, JudgementSamples | None, ValidationSets | None, nn.Module]:
    """What a run reads and starts from, read before anything is written: its samples, the image gate's labelled
    photos, the validation sets (``validate``) and the model with ``init_weights``; data and weights errors end here."""
    holdout = cfg.hold_out()  # one reading of the held-out folders for the samples, the judgement and validation
    samples = TrainingSamples(cfg, build_sources(cfg, holdout))
    judgement = JudgementSamples(cfg.judgement, holdout, cfg.seed) if cfg.judgement else None
    if cfg.init_weights and not Path(cfg.init_weights).is_file():
        raise ConfigError(
            f"init_weights {cfg.init_weights}: no such file (the weights this config starts from; "
            "set init_weights=PATH, or see the preset's comment for where they come from)"
        )
    validation = ValidationSets(cfg.validation, holdout, cfg.seed) if validate else None
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_overrides)
    new_heads = _load_init_weights(model, cfg.init_weights) if cfg.init_weights else []
    untrained = [h for h in new_heads if cfg.train_only and h not in cfg.train_only]
    if untrained:
        raise ConfigError(f"init_weights {cfg.init_weights} lack {', '.join(untrained)}, which train_only leaves out: "
                          "it would stay as initialised")
    return samples, judgement, validation, model


def check_run(cfg: TrainConfig, resume: bool = False, allow_changes: bool = False) -> list[str]:
    """What :func:`train` would read and start from, checked as it checks them and described, without training or
    writing anything (``derain train --check``): the model, each source's share and size after the hold-out, the
    hold-out, the validation sets, the image gate's photos and the schedule. Raises what :func:`train` would.
    torch's global random state is left as it was (the model is built under the run's seed in a forked state)."""
    resumed = _check_run_folder(cfg, resume, allow_changes)
    with torch.random.fork_rng(devices=[]):
        samples, judgement, validation, model = _prepare(cfg, validate=True)
    trained = sum(p.numel() for p in trainable_parameters(model, cfg.train_only))
    total = sum(p.numel() for p in model.parameters())
    start = (f", resumed from {Path(cfg.out_dir) / 'checkpoint.pt'} at step {resumed['step']}" if resumed is not None
             else f", from {cfg.init_weights}" if cfg.init_weights else "")
    lines = [f"model {cfg.model}: {total / 1e6:.2f} M parameters, {trained / 1e6:.2f} M trained{start}"]
    for i, (source, built, share) in enumerate(zip(cfg.sources, samples.sources, samples.probabilities)):
        lines.append(f"sources[{i}] {source.kind} {source.path}: {share:.0%} of the samples, {built.describe()}")
    assert validation is not None
    scored = [f"{name} ({len(pairs)} pairs)" for name, pairs in validation.sets.items()]
    scored += [f"{len(validation.synthetic)} held-out photos with rendered rain"] if validation.synthetic else []
    if scored:
        lines.append("validation: " + ", ".join(scored)
                     + (f"; no harm on {len(validation.rain_free)} rain-free images" if validation.rain_free else "")
                     + (f", every {cfg.validation.every} steps" if cfg.validation.every else ", at the end"))
    else:
        lines.append("validation: none (nothing held out, no validation.paired folder)")
    if judgement is not None:
        lines.append(f"judgement: {len(judgement.rainy)} rainy and {len(judgement.dry)} dry photos")
    lines.append(f"{cfg.iterations} steps of {cfg.batch_size} crops of {cfg.crop}², lr {cfg.lr:g} (decay from step "
                 f"{cfg.decay_start}), {cfg.precision}, seed {cfg.seed} -> {cfg.out_dir}")
    return lines


def _gradient_norm(model: nn.Module) -> float:
    """The 2-norm of all of ``model``'s gradients together (as ``clip_grad_norm_`` measures it, without
    changing them): NaN or infinite when any gradient is, or when they are too large for float32."""
    norms = [torch.linalg.vector_norm(p.grad.detach(), 2.0) for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms), 2.0)) if norms else 0.0


def _any_rank(flag: bool, device: torch.device, world: int) -> bool:
    """``flag`` or'ed over the ranks (DDP: every rank must skip the same steps, or their weights part)."""
    if world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _train_loop(run: _Run, samples: TrainingSamples, device: torch.device, world: int, stop: int) -> float | None:
    """Steps from ``run.step`` to ``stop``: forward, loss, update, then logs, validation and checkpoints when due."""
    cfg = run.cfg
    net: nn.Module = DistributedDataParallel(run.model) if world > 1 else run.model
    loss_fn = build_loss(cfg.loss, cfg.ssim_weight)
    loader = DataLoader(
        samples,
        batch_sampler=StepBatchSampler(cfg.batch_size, run.step, stop, run.rank, world),
        num_workers=cfg.workers,
        persistent_workers=False,
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    global_gate = bool(getattr(getattr(run.model, "config", None), "gate_global", False))
    net.train()
    last_loss = None
    bad_in_row = 0  # steps skipped in a row for a non-finite loss or gradient
    bar = progress_bar(stop, initial=run.step, desc="train", unit="step", disable=run.rank != 0)
    t_last = time.perf_counter()
    for rainy, clean in loader:
        rainy, clean = rainy.to(device), clean.to(device)
        if cfg.crop_trim:
            rows, cols = batch_trim(cfg.seed, run.step, cfg.crop_trim)
            rainy, clean = (t[..., : t.shape[-2] - rows, : t.shape[-1] - cols] for t in (rainy, clean))
        with autocast:
            pred, gate = net(rainy, return_gate=True) if cfg.gate_weight else (net(rainy), None)
        loss = batch_loss(loss_fn, pred.float(), rainy, clean, cfg.identity_weight)
        if gate is not None:
            loss = loss + cfg.gate_weight * gate_loss(gate, rainy, clean, between_streaks=not global_gate)
        judged = None
        if run.judgement is not None and cfg.judgement is not None:  # this step's labelled photos, on this rank
            views, labels = run.judgement.batch(run.step, run.rank, world)
            with autocast:
                factor = run.model.image_gate(views.to(device))
            judged_loss = judgement_loss(factor, labels.to(device))
            loss = loss + cfg.judgement.weight * judged_loss
            judged = judged_loss.item()
        step_loss = loss.item()
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # also for a non-finite loss: under DDP every rank must take part in the gradients' all-reduce
        grad_norm = _gradient_norm(run.model)
        bad = _any_rank(not (math.isfinite(step_loss) and math.isfinite(grad_norm)), device, world)
        if bad:  # no update: the weights, Adam's state and the average stay as the last good step left them
            with warnings.catch_warnings():  # the schedule still follows the step count, even before a first update
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                run.scheduler.step()
        else:
            run.optimizer.step()
            run.scheduler.step()
            if run.ema is not None:
                run.ema.update_parameters(run.model)
        run.step += 1
        bad_in_row = bad_in_row + 1 if bad else 0
        if bad:
            run.skipped += 1
            if run.rank == 0:
                log.warning("step %d skipped: loss %s, gradient norm %s (%d in a row, %d in all; %d in a row stop the run)",
                            run.step, step_loss, grad_norm, bad_in_row, run.skipped, cfg.max_bad_steps)
        else:
            last_loss = step_loss
        bar.update(1)
        now = time.perf_counter()
        ips = cfg.batch_size * world / max(now - t_last, 1e-9)
        t_last = now
        bar.set_postfix(loss=f"{step_loss:.4f}", img_s=f"{ips:.1f}")
        if run.rank == 0 and (run.step % cfg.log_every == 0 or run.step == stop):
            run.log_step(step_loss, ips, judged)  # a skipped step's row shows its non-finite loss
        if bad_in_row >= cfg.max_bad_steps:
            bar.close()
            raise TrainingDiverged(
                f"training diverged: the loss or its gradient was not finite for {bad_in_row} steps in a row (steps "
                f"{run.step - bad_in_row + 1}-{run.step}; last loss {step_loss}, gradient norm {grad_norm}); lower the "
                f"learning rate (lr={cfg.lr:g}) or check the data; {run.kept()}"
            )
        if cfg.validation.every and run.step % cfg.validation.every == 0:
            run.validate()
        if (run.step % cfg.checkpoint_every == 0 and not bad) or run.step == stop:  # not in a streak: the last good one stays
            run.save_checkpoint()
    bar.close()
    return last_loss


def _record_rank_checksums(model: nn.Module, out: Path, rank: int) -> None:
    """Gather a SHA-256 of every rank's parameters; rank 0 writes them to ``ranks.yaml`` (they must agree)."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    checksums: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(checksums, digest.hexdigest())
    if rank == 0:
        write_atomic(out / "ranks.yaml", yaml.safe_dump({"parameter_checksums": checksums}))
        if len(set(checksums)) != 1:
            log.error("ranks ended with different parameters: %s", checksums)
    dist.barrier()


def _write_sample(model: nn.Module, validation: ValidationSets, path: Path) -> None:
    rainy = validation.first_image()
    if rainy is None:
        return
    pred = Derainer(model, device=next(model.parameters()).device, precision="fp32")(to_float(rainy, "divide"))
    strip = np.concatenate([rainy, quantize(pred)], axis=1)
    save_image(Image.fromarray(strip), path)
