"""Validation sets (never test sets): what a training run scores to keep its best weights, and how they load.

A run's validation sets come from two places of its data description:

* ``validation.paired``: folders of pairs used only for validation, each scored whole (its first ``limit``
  pairs with ``limit``);
* the hold-out (:class:`~derain.data.folders.HoldOut`, ``holdout: {FOLDER: N}``): the last N pairs of a paired
  folder, scored as the set ``<folder>-holdout<N>``, and the last N photos of a clean-photo folder, scored as
  ``synthetic`` with rain rendered on them (a fixed draw per photo, from the run's seed). Training never reads
  these items: both sides take them from the same :class:`~derain.data.folders.HoldOut`.

Scores are protocol ``y`` (:func:`derain.evaluation.evaluate.evaluate`) per set, and ``mean_psnr`` over the sets;
with ``noharm`` also how unchanged the held-out rain-free images come back, reported beside the mean, not in it:
``noharm_psnr`` (their identity Y-PSNR, the mean), ``noharm_min`` (the lowest image's; a mean over many images hides
one damaged photo) and ``noharm_shift`` (output − input in 8-bit levels, averaged over each image's pixels, then over
the images, as ``derain bench noharm`` does; the channel farthest from 0, signed: a darkening or a colour cast).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..data.folders import DataPath, HoldOut
from ..data.pairs import Pair, find_pairs
from ..data.render import RainRenderer
from ..inference.derainer import Derainer
from ..io.images import read_image
from ..io.pixels import to_float
from ..metrics import quantize, score
from .evaluate import evaluate

__all__ = ["ValidationConfig", "ValidationSets", "REPORTED_BESIDE", "validation_families"]

#: Scores of :meth:`ValidationSets.run` that end in ``_psnr`` but are not a validation set's.
REPORTED_BESIDE = ("mean_psnr", "noharm_psnr")


def validation_families(scores: dict[str, object]) -> list[str]:
    """The ``<set>_psnr`` keys of a validation's scores (or of a val_log.csv row), in order: each set's own score.

    >>> validation_families({"A-holdout20_psnr": 31.0, "A-holdout20_ssim": 0.9, "B_psnr": 24.0, "mean_psnr": 27.5,
    ...                      "noharm_psnr": 90.0, "noharm_min": 45.0})
    ['A-holdout20_psnr', 'B_psnr']
    """
    return [k for k in scores if k.endswith("_psnr") and k not in REPORTED_BESIDE]


class ValidationConfig(BaseModel):
    """When and on what a run validates, besides its hold-out (the ``validation:`` section of a training config).

    Unknown keys are errors; paths are :data:`~derain.data.folders.DataPath` (expanded while a config loads).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    paired: list[DataPath] = Field(default_factory=list)  # folders of pairs used only for validation, scored whole
    noharm: bool = False  # identity Y-PSNR on the held-out rain-free images (reported, not in the mean)
    every: int = Field(500, ge=0)  # validate every this many steps (0: only at the end)
    max_side: int = Field(0, ge=0)  # >0 crops the held-out photos to this many pixels per side
    limit: int = Field(0, ge=0)  # at most this many pairs per `paired` folder (0 = all)
    # keep every validated step's weights (validated/step-NNNNNNN.safetensors), so that a rule other than the best
    # mean (e.g. the best worst family against a reference) can choose among them after the run
    keep: bool = False


class ValidationSets:
    """The validation sets of ``config`` and ``holdout``, loaded: pairs per set, rendered pairs, rain-free images."""

    def __init__(self, config: ValidationConfig, holdout: HoldOut, seed: int) -> None:
        self.sets: dict[str, list[Pair]] = {}
        for folder in config.paired:
            pairs = find_pairs(folder).pairs
            self.sets[Path(folder).name] = pairs[: config.limit] if config.limit else pairs
        for folder, pairs in holdout.held_out_pairs().items():
            self.sets[f"{Path(folder).name}-holdout{holdout.count(folder)}"] = pairs
        self.synthetic: list[tuple[str, np.ndarray, np.ndarray]] = []
        held_photos = holdout.held_out_photos()
        presets = ("light", "medium", "heavy")
        for n, path in enumerate(held_photos):
            rng = np.random.default_rng([seed, 10**9 + n])
            clean = to_float(read_image(path))
            if config.max_side:
                clean = clean[: config.max_side, : config.max_side]
            rainy = RainRenderer(presets[n % 3]).render(clean, rng)
            self.synthetic.append((path.stem, quantize(rainy), quantize(clean)))
        self.rain_free: list[np.ndarray] = []  # held-out rain-free images: the model must return them unchanged
        if config.noharm:
            paths = held_photos + [p.clean for pairs in self.sets.values() for p in pairs]
            self.rain_free = [read_image(p) for p in paths]

    def __bool__(self) -> bool:
        return bool(self.sets or self.synthetic)

    def run(self, model: nn.Module, precision: str) -> dict[str, float]:
        """``<set>_psnr`` and ``<set>_ssim`` per set, ``synthetic_psnr``, ``mean_psnr`` (and ``noharm_psnr``,
        ``noharm_min``, ``noharm_shift``), on the model's own device."""
        derainer = Derainer(model, device=next(model.parameters()).device, precision=precision)
        scores: dict[str, float] = {}
        for name, pairs in self.sets.items():
            result = evaluate(derainer, pairs, "y", progress=False)
            scores[f"{name}_psnr"] = result.metrics["y"]["psnr"]
            scores[f"{name}_ssim"] = result.metrics["y"]["ssim"]
        if self.synthetic:
            psnrs = [score("y", derainer(to_float(rainy)), clean)[0] for _, rainy, clean in self.synthetic]
            scores["synthetic_psnr"] = float(np.mean(psnrs))
        psnr_keys = [k for k in scores if k.endswith("_psnr")]
        scores["mean_psnr"] = float(np.mean([scores[k] for k in psnr_keys]))
        if self.rain_free:  # reported beside the mean, not part of it
            psnrs, shifts = [], []
            for img in self.rain_free:
                out = derainer(to_float(img))
                psnrs.append(min(score("y", out, img)[0], 100.0))
                shifts.append((quantize(out).astype(np.float64) - img).reshape(-1, 3).mean(0))
            shift = np.mean(shifts, axis=0)
            scores["noharm_psnr"] = float(np.mean(psnrs))
            scores["noharm_min"] = float(np.min(psnrs))
            scores["noharm_shift"] = float(shift[np.argmax(np.abs(shift))])
        return scores

    def first_image(self) -> np.ndarray | None:
        """The first set's first rainy image (else the first rendered one): the run's sample strip."""
        for pairs in self.sets.values():
            return read_image(pairs[0].rainy)
        return self.synthetic[0][1] if self.synthetic else None
