"""Training samples: (rainy, clean) crops from paired folders, rendered rain or real rain layers.

Every source reads what the run's hold-out (:class:`~derain.data.folders.HoldOut`) leaves of its folders:
the held-out pairs and photos are the validation sets, and never a training sample.

Sample ``i`` is a pure function of ``(seed, i)``: its source, image, crop, rain and flips are
drawn from ``numpy.random.default_rng([seed, i])``. Training at step ``t`` on rank ``r`` of ``W``
uses samples ``t·B·W + r·B + j`` (:class:`StepBatchSampler`), so a resumed or distributed run
sees exactly the samples an uninterrupted single run would, whatever the number of workers.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..data.folders import HoldOut
from ..data.rain_layers import RainLayerBank, random_angle, rotate_center, rotation_window
from ..data.rainmix import RainMix, StreakBank
from ..data.render import MIXED, RainRenderer
from ..data.pairs import DatasetError
from ..io.images import ImageReadError, image_size, read_image
from ..io.pixels import luma
from .config import SourceConfig, TrainConfig

__all__ = ["TrainingSamples", "StepBatchSampler", "build_sources", "DatasetError"]

log = logging.getLogger(__name__)

Sample = tuple[np.ndarray, np.ndarray]  # (rainy, clean), HWC float32 in [0, 1]


@lru_cache(maxsize=4096)
def _load(path: str) -> np.ndarray:
    """Decoded uint8 RGB image, cached per process (the corpora here are small)."""
    return read_image(path)


def _to_float(img: np.ndarray) -> np.ndarray:
    from ..io.pixels import to_float
    return to_float(img, "divide")


def _image_size(path: Path) -> tuple[int, int]:
    try:
        return image_size(path)
    except ImageReadError as e:
        raise DatasetError(str(e)) from None


def _usable(paths: Sequence[Path], crop: int, what: str) -> list[Path]:
    """Paths whose images are at least ``crop`` on both sides; warn about the others."""
    keep = []
    for p in paths:
        w, h = _image_size(p)
        if min(w, h) < crop:
            log.warning("skipping %s: %dx%d is smaller than the %d-pixel crop", p, w, h, crop)
        else:
            keep.append(p)
    if not keep:
        raise DatasetError(f"{what}: no image is at least {crop}x{crop} pixels (the training crop)")
    return keep


def _random_crop(images: Sequence[np.ndarray], crop: int, rng: np.random.Generator) -> list[np.ndarray]:
    h, w = images[0].shape[:2]
    y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    return [im[y : y + crop, x : x + crop] for im in images]


class Source(Protocol):
    def sample(self, rng: np.random.Generator, crop: int) -> Sample: ...

    def describe(self) -> str:
        """What the source draws from, counted after the hold-out (``derain train --check``)."""
        ...


class PairedSource:
    """Crops of real (rainy, clean) pairs from a folder in any known layout, except its held-out pairs."""

    def __init__(self, cfg: SourceConfig, crop: int, holdout: HoldOut) -> None:
        pairs, _ = holdout.split_pairs(cfg.path, cfg.layout)
        usable = set(_usable([p.rainy for p in pairs], crop, cfg.path))
        self.pairs = [p for p in pairs if p.rainy in usable]
        self.max_rotation = float(cfg.max_rotation)

    def describe(self) -> str:
        return f"{len(self.pairs)} pairs"

    def sample(self, rng: np.random.Generator, crop: int) -> Sample:
        pair = self.pairs[int(rng.integers(len(self.pairs)))]
        rainy, clean = _load(str(pair.rainy)), _load(str(pair.clean))
        if rainy.shape != clean.shape:
            raise DatasetError(f"{pair.rainy} and {pair.clean} differ in size")
        angle = random_angle(rng, self.max_rotation)
        window = max(rotation_window(crop, crop, angle))
        if window > min(rainy.shape[:2]):  # too small to turn by this much: this sample stays upright
            angle, window = 0.0, crop
        rainy, clean = _random_crop([rainy, clean], window, rng)
        if angle:  # bicubic: a turned crop stays nearly as sharp as the photos the model will see
            rainy, clean = (rotate_center(a, angle, crop, crop, Image.Resampling.BICUBIC) for a in (rainy, clean))
        return _to_float(rainy), _to_float(clean)


class SyntheticSource:
    """Crops of clean photos, except the held-out ones, with rain rendered on the fly (``preset``: a renderer
    preset or ``mixed``); the target is the clean crop, or with ``streaks_only`` the clean crop under the rainy
    one's veil and JPEG compression (:func:`~derain.data.render.render_rain_pair`)."""

    def __init__(self, cfg: SourceConfig, crop: int, holdout: HoldOut) -> None:
        files, _ = holdout.split_photos(cfg.path)
        self.files = _usable(files, crop, cfg.path)
        names = list(MIXED) if cfg.preset == "mixed" else [cfg.preset]
        self.renderers = [RainRenderer(n) for n in names]
        self.streaks_only = cfg.streaks_only
        self.max_rotation = float(cfg.max_rotation)

    def describe(self) -> str:
        return f"{len(self.files)} photos"

    def sample(self, rng: np.random.Generator, crop: int) -> Sample:
        photo = _load(str(self.files[int(rng.integers(len(self.files)))]))
        angle = random_angle(rng, self.max_rotation)
        clean = _to_float(_random_crop([photo], crop, rng)[0])
        renderer = self.renderers[int(rng.integers(len(self.renderers)))]
        if angle:  # the rain turns, not the photo (its JPEG blocks and veil stay as a camera makes them)
            low, high = renderer.params.angle
            renderer = RainRenderer(renderer.params, angle=(low + angle, high + angle))
        return renderer.render_pair(clean, rng, self.streaks_only)


class RainLayerSource:
    """Crops of clean photos with real rain layers (rainy − clean of paired folders) composited on; held-out
    photos and pairs are left out of both."""

    def __init__(self, cfg: SourceConfig, crop: int, holdout: HoldOut) -> None:
        files, _ = holdout.split_photos(cfg.path)
        self.files = _usable(files, crop, cfg.path)
        pairs = [p for folder in cfg.layers for p in holdout.split_pairs(folder)[0]]
        if not pairs:
            raise DatasetError(f"no rain-layer pairs left in {cfg.layers} after the hold-out")
        self.bank = RainLayerBank.from_pairs([(p.rainy, p.clean) for p in pairs])
        self.scale, self.max_rotation = (float(cfg.scale[0]), float(cfg.scale[1])), float(cfg.max_rotation)
        self.zoom = (float(cfg.zoom[0]), float(cfg.zoom[1]))

    def describe(self) -> str:
        return f"{len(self.files)} photos, {len(self.bank)} rain layers"

    def sample(self, rng: np.random.Generator, crop: int) -> Sample:
        clean = _to_float(_random_crop([_load(str(self.files[int(rng.integers(len(self.files)))]))], crop, rng)[0])
        return self.bank.augment(clean, rng, scale=self.scale, max_rotation=self.max_rotation, zoom=self.zoom), clean


#: The source class of each ``kind`` (:data:`~derain.training.config.SOURCE_KINDS`).
SOURCES: dict[str, type[PairedSource | SyntheticSource | RainLayerSource]] = {
    "paired": PairedSource,
    "synthetic": SyntheticSource,
    "rain_layers": RainLayerSource,
}


def build_sources(cfg: TrainConfig, holdout: HoldOut | None = None) -> list[Source]:
    """Every configured source, reading what the config's hold-out (``holdout``, default ``cfg.hold_out()``) leaves
    of its folders; dataset problems raise :class:`DatasetError` before training."""
    holdout = holdout if holdout is not None else cfg.hold_out()
    sources: list[Source] = []
    for s in cfg.sources:
        try:
            sources.append(SOURCES[s.kind](s, cfg.crop, holdout))
        except (ImageReadError, ValueError) as e:
            if isinstance(e, DatasetError):
                raise
            raise DatasetError(f"data source {s.kind} {s.path}: {e}") from None
    return sources


def colour_jitter(rainy: np.ndarray, clean: np.ndarray, rng: np.random.Generator) -> Sample:
    """The same exposure (× U(0.6, 1.4)) and white balance (× U(0.85, 1.15) per channel) on both images.

    The rain stays what it was relative to the scene, while brightness and colour vary: what tells a
    rainy input from its target is the rain, never the photo's exposure or tint.

    >>> x = np.full((2, 2, 3), 0.5, np.float32)
    >>> a, b = colour_jitter(x, x, np.random.default_rng(0))
    >>> bool(np.array_equal(a, b)), a.dtype.name
    (True, 'float32')
    """
    gain = (rng.uniform(0.6, 1.4) * rng.uniform(0.85, 1.15, size=3)).astype(np.float32)
    return np.clip(rainy * gain, 0, 1), np.clip(clean * gain, 0, 1)


def to_grey(rainy: np.ndarray, clean: np.ndarray) -> Sample:
    """Both images as grey (BT.601 luma in all three channels): a pair whose input has R = G = B and whose target
    does too, so that the network learns to keep a grey photo grey (no colour cast from per-channel kernels).

    >>> x = np.random.default_rng(0).random((2, 2, 3), dtype=np.float32)
    >>> a, b = to_grey(x, x)
    >>> bool(np.array_equal(a[..., 0], a[..., 2])), a.shape, a.dtype.name
    (True, (2, 2, 3), 'float32')
    """
    grey = lambda a: np.repeat(luma(a)[..., None], 3, axis=2)  # noqa: E731
    return grey(rainy), grey(clean)


class TrainingSamples(Dataset):
    """Deterministic, index-addressed training samples (CHW float32 tensors ``rainy, clean``)."""

    def __init__(self, cfg: TrainConfig, sources: Sequence[Source] | None = None) -> None:
        self.cfg = cfg
        self.sources = list(sources) if sources is not None else build_sources(cfg)
        weights = np.array([s.weight for s in cfg.sources], dtype=np.float64)
        self.probabilities = weights / weights.sum()
        self.rainmix = RainMix(StreakBank(cfg.streaks), mode=cfg.rainmix_mode) if cfg.rainmix else None

    def __len__(self) -> int:
        return 2**62

    def sample(self, index: int) -> Sample:
        rng = np.random.default_rng([self.cfg.seed, index])
        source = self.sources[int(rng.choice(len(self.sources), p=self.probabilities))]
        rainy, clean = source.sample(rng, self.cfg.crop)
        if self.cfg.identity_p and rng.random() < self.cfg.identity_p:
            rainy = clean  # rain-free in, unchanged out
        elif self.rainmix is not None and rng.random() < self.cfg.rainmix_p:
            rainy, clean = self.rainmix.rainmix_pair(rainy, clean, rng)
        if self.cfg.colour_jitter and rng.random() < self.cfg.colour_jitter:
            rainy, clean = colour_jitter(rainy, clean, rng)
        if self.cfg.grey_p and rng.random() < self.cfg.grey_p:
            rainy, clean = to_grey(rainy, clean)
        if self.cfg.flips:
            if rng.random() < 0.5:
                rainy, clean = rainy[:, ::-1], clean[:, ::-1]
            if rng.random() < 0.5:
                rainy, clean = rainy[::-1], clean[::-1]
        return rainy, clean

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rainy, clean = self.sample(index)
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))  # noqa: E731
        return to_tensor(rainy), to_tensor(clean)


class StepBatchSampler(Sampler[list[int]]):
    """Batches of sample indices for steps ``start, start+1, …, stop-1`` of rank ``rank`` of ``world``."""

    def __init__(self, batch_size: int, start: int, stop: int, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.start, self.stop, self.rank, self.world = batch_size, start, stop, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        b = self.batch_size
        for step in range(self.start, self.stop):
            first = (step * self.world + self.rank) * b
            yield list(range(first, first + b))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
