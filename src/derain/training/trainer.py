"""The training loop behind ``derain train``: single process or ``torchrun`` (DDP), resumable.

Results layout (``out_dir``)::

    config.yaml         the resolved configuration
    checkpoint.pt       model, optimizer, scheduler, step, RNG states, config (atomic; --resume reads it)
    last.safetensors    model weights at the last checkpoint (derain.load_model reads it)
    best.safetensors    model weights with the best mean validation Y-PSNR
    train_log.csv       step, loss, lr, images/s
    val_log.csv         step, per validation set PSNR/SSIM (protocol y), mean PSNR
    samples/            rainy | output | clean strips of the first validation image

Only rank 0 writes. Adam (lr, betas), constant lr until ``decay_start`` then linear decay to 0.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from PIL import Image
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.render import RainRenderer
from ..evaluation.evaluate import evaluate
from ..evaluation.metrics import quantize
from ..evaluation.pairs import Pair, find_pairs
from ..inference.derainer import Derainer
from ..io.atomic import atomic_output
from ..io.images import read_image
from ..models.checkpoint import load_model, load_training_state, save_model
from ..models.registry import create_model
from .config import ConfigError, TrainConfig
from .dataset import StepBatchSampler, TrainingSamples, build_sources, clean_split
from .losses import build_loss

__all__ = ["train", "TrainResult", "ValidationSets", "lr_factor", "config_changes", "RUNTIME_KEYS", "SCHEDULE_KEYS"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    best_psnr: float | None
    last_loss: float | None

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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


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


class ValidationSets:
    """Validation pairs (never test sets) and the synthetic held-out pairs, scored with protocol ``y``."""

    def __init__(self, cfg: TrainConfig) -> None:
        v = cfg.validation
        self.sets: dict[str, list[Pair]] = {}
        for folder in v.paired:
            pairs = find_pairs(folder).pairs
            self.sets[Path(folder).name] = pairs[: v.limit] if v.limit else pairs
        held_out = {folder: v.holdout for folder in v.holdout_only} | dict(v.held_out)
        for folder, n in held_out.items():
            pairs = find_pairs(folder).pairs[-n:] if n else []
            if pairs:
                self.sets[f"{Path(folder).name}-holdout{n}"] = pairs
        self.synthetic: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.rain_free: list[np.ndarray] = []  # held-out rain-free images: the model must return them unchanged
        held_clean: list[Path] = []
        if v.synthetic:
            clean_sources = [s for s in cfg.sources if s.kind != "paired"]
            if clean_sources:
                _, held_clean = clean_split(clean_sources[0].path, v.synthetic)
                presets = ("light", "medium", "heavy")
                for n, path in enumerate(held_clean):
                    rng = np.random.default_rng([cfg.seed, 10**9 + n])
                    clean = read_image(path).astype(np.float32) / 255
                    if v.max_side:
                        clean = clean[: v.max_side, : v.max_side]
                    rainy = RainRenderer(presets[n % 3]).render(clean, rng)
                    self.synthetic.append((path.stem, quantize(rainy), quantize(clean)))
        if v.noharm:
            paths = held_clean + [p.clean for pairs in self.sets.values() for p in pairs]
            self.rain_free = [read_image(p) for p in paths]

    def __bool__(self) -> bool:
        return bool(self.sets or self.synthetic)

    def run(self, model: nn.Module, precision: str) -> dict[str, float]:
        derainer = Derainer(model, device=next(model.parameters()).device, precision=precision)  # the training device
        scores: dict[str, float] = {}
        for name, pairs in self.sets.items():
            result = evaluate(derainer, pairs, "y", progress=False)
            scores[f"{name}_psnr"] = result.metrics["y"]["psnr"]
            scores[f"{name}_ssim"] = result.metrics["y"]["ssim"]
        if self.synthetic:
            from ..evaluation.metrics import score

            psnrs = [score("y", derainer(rainy.astype(np.float32) / 255), clean)[0] for _, rainy, clean in self.synthetic]
            scores["synthetic_psnr"] = float(np.mean(psnrs))
        psnr_keys = [k for k in scores if k.endswith("_psnr")]
        scores["mean_psnr"] = float(np.mean([scores[k] for k in psnr_keys]))
        if self.rain_free:
            from ..evaluation.metrics import score

            psnrs = [min(score("y", derainer(img.astype(np.float32) / 255), img)[0], 100.0) for img in self.rain_free]
            scores["noharm_psnr"] = float(np.mean(psnrs))  # reported beside the mean, not part of it
        return scores

    def first_image(self) -> np.ndarray | None:
        for pairs in self.sets.values():
            return read_image(pairs[0].rainy)
        return self.synthetic[0][1] if self.synthetic else None


# Config keys that change how fast a run goes or what it prints, not what it learns: free to change on --resume.
RUNTIME_KEYS = frozenset({"threads", "workers", "log_every", "sample_every"})
# Keys that change the schedule of a run, not its model or data: changed on --resume only with allow_changes.
SCHEDULE_KEYS = frozenset({"iterations", "decay_start", "lr", "checkpoint_every", "validation"})


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, so a config read back from a checkpoint compares equal to a fresh one."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_changes(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """The top-level keys (other than :data:`RUNTIME_KEYS`) whose values differ between a checkpoint's config and ``cfg``."""
    wanted = cfg.to_dict()
    keys = (set(saved) | set(wanted)) - RUNTIME_KEYS
    return sorted(k for k in keys if _plain(saved.get(k)) != _plain(wanted.get(k)))


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
    changed = config_changes(state.get("config", {}), cfg)
    refused = [k for k in changed if not (allow_changes and k in SCHEDULE_KEYS)]
    if refused:
        hint = " (schedule keys change only with --allow-changes)" if set(refused) <= SCHEDULE_KEYS else ""
        raise ConfigError(f"--resume: {out} was trained with another config: {', '.join(refused)} differ{hint}")
    return state


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (they were lost with the process that wrote them)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    fields = list(rows[0])
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= step)


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None, allow_changes: bool = False) -> TrainResult:
    """Train according to ``cfg``; ``stop_after`` ends the loop early at that step (tests).

    A fresh run needs an ``out_dir`` without an earlier run; ``resume`` continues the one there, whose
    config must be ``cfg`` but for :data:`RUNTIME_KEYS` (and :data:`SCHEDULE_KEYS` with ``allow_changes``).
    """
    cfg.validate()
    resumed = _check_run_folder(cfg, resume, allow_changes)
    rank, world = _distributed()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # the released init (gain 0.02) makes denormal activations: 10-40x slower on CPU
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out_dir)
    samples = TrainingSamples(cfg, build_sources(cfg))  # dataset errors end here, before anything is written
    validation = ValidationSets(cfg) if rank == 0 else None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_overrides)
    if cfg.init_weights:
        model.load_state_dict(load_model(cfg.init_weights).state_dict())
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.decay_start, cfg.iterations))
    step, best = 0, None
    ckpt_path = out / "checkpoint.pt"
    if resumed is not None:
        state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = state["step"], state["best_psnr"]
        _set_rng_states(state["rng"])
        if rank == 0:
            _truncate_csv(out / "train_log.csv", step)
            _truncate_csv(out / "val_log.csv", step)
            log.warning("resumed from %s at step %d", ckpt_path, step)

    net: nn.Module = DistributedDataParallel(model) if world > 1 else model
    loss_fn = build_loss(cfg.loss, cfg.ssim_weight)
    stop = min(cfg.iterations, stop_after or cfg.iterations)
    loader = DataLoader(
        samples,
        batch_sampler=StepBatchSampler(cfg.batch_size, step, stop, rank, world),
        num_workers=cfg.workers,
        persistent_workers=False,
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def save_checkpoint() -> None:
        if rank != 0:
            return
        _atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "best_psnr": best,
                "rng": _rng_states(),
                "config": cfg.to_dict(),
            },
            ckpt_path,
        )
        save_model(model, out / "last.safetensors", metadata={"step": str(step)})

    def validate() -> None:
        nonlocal best
        if validation is None or not validation:
            return
        model.eval()
        scores = validation.run(model, "fp32")
        model.train()
        _append_csv(out / "val_log.csv", {"step": step, **{k: f"{v:.4f}" for k, v in scores.items()}})
        tqdm.write(f"step {step}: validation " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items() if k.endswith("psnr")))
        if best is None or scores["mean_psnr"] > best:
            best = scores["mean_psnr"]
            save_model(model, out / "best.safetensors", metadata={"step": str(step), "mean_val_psnr": f"{best:.4f}"})
        if cfg.sample_every:
            _write_sample(model, validation, out / "samples" / f"step{step:07d}.png")

    net.train()
    last_loss = None
    bar = tqdm(total=stop, initial=step, desc="train", unit="step", disable=rank != 0, dynamic_ncols=True)
    t_last = time.perf_counter()
    for rainy, clean in loader:
        rainy, clean = rainy.to(device), clean.to(device)
        with autocast:
            pred = net(rainy)
        loss = loss_fn(pred.float(), clean)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        last_loss = loss.item()
        bar.update(1)
        now = time.perf_counter()
        ips = cfg.batch_size * world / max(now - t_last, 1e-9)
        t_last = now
        bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{ips:.1f}")
        if rank == 0 and (step % cfg.log_every == 0 or step == stop):
            _append_csv(out / "train_log.csv", {"step": step, "loss": f"{last_loss:.8f}", "lr": f"{scheduler.get_last_lr()[0]:.6g}", "images_per_s": f"{ips:.2f}"})
        if cfg.validation.every and step % cfg.validation.every == 0:
            validate()
        if step % cfg.checkpoint_every == 0 or step == stop:
            save_checkpoint()
    bar.close()
    if step == cfg.iterations and (not cfg.validation.every or step % cfg.validation.every):
        validate()
        save_checkpoint()
    if world > 1:
        _record_rank_checksums(model, out, rank)
    return TrainResult(out, step, best, last_loss)


def _record_rank_checksums(model: nn.Module, out: Path, rank: int) -> None:
    """Gather a SHA-256 of every rank's parameters; rank 0 writes them to ``ranks.yaml`` (they must agree)."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    checksums: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(checksums, digest.hexdigest())
    if rank == 0:
        (out / "ranks.yaml").write_text(yaml.safe_dump({"parameter_checksums": checksums}))
        if len(set(checksums)) != 1:
            log.error("ranks ended with different parameters: %s", checksums)
    dist.barrier()


def _write_sample(model: nn.Module, validation: ValidationSets, path: Path) -> None:
    rainy = validation.first_image()
    if rainy is None:
        return
    pred = Derainer(model, device=next(model.parameters()).device, precision="fp32")(rainy.astype(np.float32) / 255)
    strip = np.concatenate([rainy, quantize(pred)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(path)
