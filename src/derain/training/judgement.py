"""Image-level labels for a model's image gate: real rainy photos are rainy, rain-free photos are dry.

A model with an image gate (``gate_global``, :attr:`~derain.models.interface.StagedModel.judges_images`) multiplies
its rain gate by one factor per image, judged from all of it. Trained only against rendered rain masks, that
judgement need not carry over to photographed rain; :class:`JudgementSamples` gives it whole real photos with a
label each (``judgement`` in the config, :class:`~derain.training.config.JudgementConfig`), and the trainer adds
``weight`` × :func:`~derain.training.losses.judgement_loss` of ``model.image_gate(views)`` every step.

**A step's views.** Step ``t`` on rank ``r`` of ``W`` takes the items ``(t·W + r)·B + j``, ``j < B`` (as
:class:`~derain.training.dataset.StepBatchSampler` numbers samples); item ``i`` is a pure function of
``(seed, i)``: its photo, size, crop, flip and JPEG round trip are drawn from
``numpy.random.default_rng([seed, JUDGEMENT_STREAM, i])``. Its label is fixed by its place in the batch: the
first ``B/2`` are rainy, the rest dry. A resumed run therefore sees the views an uninterrupted one would.

**What tells the labels apart must be the rain.** Both sides are drawn alike: a photo is resized so that its
short side is ``size`` × U(``zoom``) (Pillow LANCZOS, an area-like average as the judgement's own downscale,
:func:`~derain.inference.tiling.judgement_view`), cropped to ``size``², flipped at random, and re-encoded as JPEG
(:func:`~derain.data.render.jpeg_round_trip`) with one probability and one quality range for both labels, so
compression, size or framing cannot stand in for rain.

**What is read.** Rainy folders: the files ``select`` keeps (:func:`~derain.data.folders.numbered`). Dry folders:
what the run's hold-out leaves (:meth:`~derain.data.folders.HoldOut.split_photos`): a held-out photo is validated,
never judged in training.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.folders import HoldOut, numbered
from ..data.pairs import DatasetError
from ..data.render import jpeg_round_trip
from ..io.images import ImageReadError, is_image_file, read_image
from ..io.pixels import to_float
from .config import JudgementConfig

__all__ = ["JUDGEMENT_STREAM", "JudgementSamples"]

#: Part of every judgement item's seed: its random stream is apart from the training samples' (``[seed, i]``).
JUDGEMENT_STREAM = 0x6A756467


@lru_cache(maxsize=2048)
def _fitted(path: str, short: int) -> np.ndarray:
    """The photo at ``path`` (uint8 RGB, :func:`~derain.io.images.read_image`) with its short side at most ``short``
    px (LANCZOS), cached per process: a large photo is decoded and shrunk once, not every step."""
    rgb = read_image(path)
    h, w = rgb.shape[:2]
    if min(h, w) <= short:
        return rgb
    scale = short / min(h, w)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def _photos(folder: str, what: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"judgement.{what} folder {root} does not exist")
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


class JudgementSamples:
    """The image gate's labelled views: :meth:`batch` gives step ``t``'s ``(views, labels)``.

    ``views`` is ``(B, 3, size, size)`` float32 in [0, 1], ``labels`` ``(B, 1)`` float32: the first half 1
    (rainy), the second 0 (dry). :class:`DatasetError` when a folder is missing or leaves no photo.
    """

    def __init__(self, cfg: JudgementConfig, holdout: HoldOut, seed: int) -> None:
        self.cfg, self.seed = cfg, seed
        self.rainy = [p for folder in cfg.rainy for p in _photos(folder, "rainy") if numbered(p, cfg.select)]
        if not self.rainy:
            raise DatasetError(f"judgement.rainy {cfg.rainy}: no photo with select: {cfg.select}")
        self.dry = [p for folder in cfg.dry for p in holdout.split_photos(folder)[0]]
        if not self.dry:
            raise DatasetError(f"judgement.dry {cfg.dry}: no photo left after the hold-out")
        self.largest = math.ceil(cfg.size * cfg.zoom[1])  # the short side no view needs more of

    def item(self, index: int) -> tuple[np.ndarray, float]:
        """Item ``index``: its view (``size × size × 3`` float32) and its label (1 rainy, 0 dry)."""
        cfg = self.cfg
        rng = np.random.default_rng([self.seed, JUDGEMENT_STREAM, index])
        label = 1.0 if index % cfg.batch < cfg.batch // 2 else 0.0
        files = self.rainy if label else self.dry
        path = files[int(rng.integers(len(files)))]
        try:
            rgb = _fitted(str(path), self.largest)
        except ImageReadError as e:
            raise DatasetError(f"judgement photo {path}: {e}") from None
        h, w = rgb.shape[:2]
        scale = cfg.size * float(rng.uniform(*cfg.zoom)) / min(h, w)
        size = (max(cfg.size, round(w * scale)), max(cfg.size, round(h * scale)))
        view = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
        y, x = int(rng.integers(0, size[1] - cfg.size + 1)), int(rng.integers(0, size[0] - cfg.size + 1))
        view = view[y : y + cfg.size, x : x + cfg.size]
        if rng.random() < 0.5:
            view = view[:, ::-1]
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        if rng.random() < cfg.jpeg_p:  # drawn for both labels alike
            return jpeg_round_trip(np.ascontiguousarray(view), quality), label
        return to_float(np.ascontiguousarray(view)), label

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s views and labels on rank ``rank`` of ``world`` (module docstring)."""
        b = self.cfg.batch
        first = (step * world + rank) * b
        items = [self.item(first + j) for j in range(b)]
        views = torch.from_numpy(np.stack([v.transpose(2, 0, 1) for v, _ in items]).astype(np.float32, copy=False))
        labels = torch.tensor([[label] for _, label in items], dtype=torch.float32)
        return views, labels
