"""A bank of real rain layers taken from paired (rainy, clean) images.

For each pair the layer is ``L = clip(rainy − clean, 0, 1)`` (rain adds light; the negative part is
dropped), stored as exact uint8 differences (a 481×321 grey layer is 150 kB).

**Grey by default.** The rain of RainTrainH and JORDER is grey (equal in R, G, B wherever no
channel is saturated), so the default layer is the channel *maximum* of the difference: exact
wherever any channel of the rainy pixel is below 255 (a saturated channel's difference is smaller
than the rain), and the tightest lower bound where all three are saturated. Keeping the three
channels (``grey=False``) is exact on colour-tinted rain too (a few SIRR pairs) but, where the rainy
image saturates, copies the clean image's colours into the layer as a visible "ghost" of the
original scene (saturated channels are common in heavy rain: BENCHMARKS.md, "Rendered rain and real
rain layers"). With ``fill_saturated`` (default) the lower-bound-only pixels are raised to the layer value a
few rows above/below at a known pixel (continuing the near-vertical streaks), which removes most
of the ghost; the filled value is never below the bound, so a layer still reproduces its own pair.

**Additive compositing**: ``composite(clean, L) = clip(clean + L, 0, 1)``. On its own pair the
composite reproduces the rainy image: grey layers (default) exactly on grey rain, nearly so on the
few SIRR pairs with slightly tinted rain, per-channel layers exactly on all of them. A screen blend
``clean + L − clean·L`` with the same layers does not (it adds too little light on bright
backgrounds). The measured Y-PSNRs are in BENCHMARKS.md, "Rendered rain and real rain layers".

:meth:`RainLayerBank.sample` draws a layer, crops it at a random position to the requested size
(tiling it periodically if it is smaller: periodic tiling keeps every streak's direction, which
mirror padding would flip), flips it horizontally with probability 1/2, scales its intensity by
U(0.7, 1.1) and optionally zooms it (its streaks wider and longer, or more of them and smaller: photographed
rain comes at every distance from the camera, the paired sets' at one) and rotates it by a few degrees
(cropping from a larger window so no black corners appear).

>>> import numpy as np
>>> clean = np.full((8, 8, 3), 0.25, np.float32)
>>> rainy = clean.copy(); rainy[:, 3] += 0.5
>>> bank = RainLayerBank.from_arrays([(rainy, clean)])
>>> bool(np.allclose(composite(clean, bank.layer(0)), rainy, atol=1 / 255))
True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..io.images import is_image_file, read_image
from ..io.pixels import to_float, to_u8

__all__ = ["RainLayerBank", "composite", "random_angle", "random_zoom", "rotate_center", "rotation_window"]

PathLike = str | os.PathLike[str]


def composite(clean: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """Additive composite ``clip(clean + layer, 0, 1)`` (float32; a grey ``H×W`` layer is broadcast)."""
    c = np.asarray(clean, dtype=np.float32)
    lay = np.asarray(layer, dtype=np.float32)
    if lay.ndim == c.ndim - 1:
        lay = lay[..., None]
    out = c + lay
    return np.clip(out, 0.0, 1.0, out=out)


def _read_u8(path: PathLike) -> np.ndarray:
    return read_image(path)


def _to_u8(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    return a if a.dtype == np.uint8 else to_u8(a.astype(np.float64))  # rounded half to even, in float64


def _fill_lower_bound(values: np.ndarray, unknown: np.ndarray, step: int = 4, max_shift: int = 512) -> np.ndarray:
    """Raise the lower-bound-only pixels ``unknown`` of a 2-D layer to the value found ``k·step``
    rows above or below (nearest first, periodic) at a pixel that is known: rain streaks are
    near-vertical, so this continues the streak through the saturated area. The result is never
    below ``values`` (the lower bound), so compositing onto the pair's own clean image still
    saturates exactly where the rainy image does."""
    if not unknown.any():
        return values
    out = values.copy()
    todo = unknown.copy()
    known = ~unknown
    h = values.shape[0]
    for k in range(1, max(1, min(max_shift, h) // step) + 1):
        for shift in (k * step, -k * step):
            take = todo & np.roll(known, shift, axis=0)
            if take.any():
                out[take] = np.maximum(values[take], np.roll(values, shift, axis=0)[take])
                todo &= ~take
        if not todo.any():
            break
    return out


def random_angle(rng: np.random.Generator, max_rotation: float) -> float:
    """A turn by U(−max_rotation, max_rotation) degrees, drawn only when ``max_rotation`` > 0 (without rotation the
    random stream is left as it was)."""
    return float(rng.uniform(-max_rotation, max_rotation)) if max_rotation > 0 else 0.0


def random_zoom(rng: np.random.Generator, zoom: tuple[float, float]) -> float:
    """A zoom factor log-uniform in [``zoom[0]``, ``zoom[1]``] (as likely to halve as to double), drawn only when the
    range is not (1, 1) (without zoom the random stream is left as it was).

    >>> random_zoom(np.random.default_rng(0), (1.0, 1.0))
    1.0
    >>> 0.5 <= random_zoom(np.random.default_rng(0), (0.5, 2.0)) <= 2.0
    True
    """
    low, high = float(zoom[0]), float(zoom[1])
    if not 0 < low <= high:
        raise ValueError(f"zoom must be [low, high] with 0 < low <= high, got {list(zoom)}")
    if low == high == 1.0:
        return 1.0
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def rotation_window(h: int, w: int, angle: float) -> tuple[int, int]:
    """The ``(height, width)`` of a window whose turn by ``angle`` degrees about its centre still covers its central
    ``h×w`` (the bounding box of ``h×w`` turned, and at least ``h×w``).

    >>> rotation_window(128, 128, 0.0), rotation_window(128, 128, 45.0), rotation_window(40, 120, 90.0)
    ((128, 128), (184, 184), (122, 120))
    """
    if not angle:
        return h, w
    a = math.radians(abs(angle))
    cos, sin = abs(math.cos(a)), abs(math.sin(a))
    return max(h, math.ceil(h * cos + w * sin) + 2), max(w, math.ceil(w * cos + h * sin) + 2)


def rotate_center(
    image: np.ndarray, angle: float, h: int, w: int, resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> np.ndarray:
    """``image`` (``H×W`` or ``H×W×C``, uint8 or float32, at least :func:`rotation_window` ``(h, w, angle)``) turned
    by ``angle`` degrees counter-clockwise about its centre, then its central ``h×w``: no corner left unfilled.
    uint8 ``H×W``, ``H×W×3`` or ``H×W×4`` turn as one Pillow image, anything else channel by channel as 32-bit
    floats (a bicubic ``resample`` can overshoot: the caller clips float data).

    >>> img = np.zeros((21, 21), np.float32); img[:, 10] = 1  # a vertical line
    >>> out = rotate_center(img, 90.0, 5, 5)
    >>> out.shape, bool(np.allclose(out[2], 1)), float(out[0].max())
    ((5, 5), True, 0.0)
    """
    if image.shape[0] < h or image.shape[1] < w:
        raise ValueError(f"a {image.shape[0]}x{image.shape[1]} image has no central {h}x{w} (rotation_window gives its size)")
    if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (3, 4)):
        out = np.asarray(Image.fromarray(np.ascontiguousarray(image)).rotate(angle, resample=resample))
    elif image.dtype == np.float32:
        planes = image[..., None] if image.ndim == 2 else image
        out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c])).rotate(angle, resample=resample))
                        for c in range(planes.shape[2])], axis=2)
        out = out[..., 0] if image.ndim == 2 else out
    else:
        raise TypeError(f"rotate_center takes uint8 (1, 3 or 4 channels) or float32 images, got {image.dtype} {image.shape}")
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return out[y0 : y0 + h, x0 : x0 + w]


class RainLayerBank:
    """Real rain layers ``clip(rainy − clean, 0, 1)`` to composite onto clean photos.

    Args:
        layers: uint8 layers in 1/255 steps, ``H×W`` (grey) or ``H×W×3``.
        names: optional name per layer (e.g. the rainy file name).
        grey: the layers are grey (``H×W``); :meth:`sample` then returns ``H×W`` maps, which
            :func:`composite` adds to all three channels.

    Build it with :meth:`from_folder`, :meth:`from_pairs` or :meth:`from_arrays`; their ``grey``
    and ``fill_saturated`` flags are described in the module docstring.
    """

    def __init__(self, layers: Sequence[np.ndarray], names: Sequence[str] | None = None, grey: bool = True) -> None:
        if len(layers) == 0:
            raise ValueError("a RainLayerBank needs at least one layer")
        self._layers = [np.ascontiguousarray(lay, dtype=np.uint8) for lay in layers]
        self.names = list(names) if names is not None else [str(i) for i in range(len(layers))]
        if len(self.names) != len(self._layers):
            raise ValueError(f"{len(self.names)} names for {len(self._layers)} layers")
        self.grey = bool(grey)

    # -- construction --------------------------------------------------------------------------

    @staticmethod
    def _layer_from(rainy_u8: np.ndarray, clean_u8: np.ndarray, grey: bool, fill_saturated: bool) -> np.ndarray:
        if rainy_u8.shape != clean_u8.shape or rainy_u8.ndim != 3:
            raise ValueError(f"rainy {rainy_u8.shape} and clean {clean_u8.shape} must be matching H×W×3 images")
        diff = rainy_u8.astype(np.int16) - clean_u8.astype(np.int16)
        np.clip(diff, 0, 255, out=diff)
        saturated = rainy_u8 == 255  # there the difference is only a lower bound of the rain
        if grey:
            # Rain is grey: where any channel is unsaturated its difference is the rain and the
            # saturated channels' differences are smaller, so the channel max is exact; where all
            # three are saturated it is the tightest lower bound.
            layer = diff.max(axis=2)
            if fill_saturated:
                layer = _fill_lower_bound(layer, saturated.all(axis=2))
            return layer.astype(np.uint8)
        if fill_saturated:
            diff = np.stack([_fill_lower_bound(diff[..., c], saturated[..., c]) for c in range(diff.shape[2])], axis=2)
        return diff.astype(np.uint8)

    @classmethod
    def from_pairs(
        cls, pairs: Iterable[tuple[PathLike, PathLike]], grey: bool = True, fill_saturated: bool = True
    ) -> RainLayerBank:
        """Layers from ``(rainy_path, clean_path)`` files (any Pillow-readable RGB/grey images)."""
        layers, names = [], []
        for rainy_path, clean_path in pairs:
            layers.append(cls._layer_from(_read_u8(rainy_path), _read_u8(clean_path), grey, fill_saturated))
            names.append(Path(rainy_path).name)
        if not layers:
            raise ValueError("no (rainy, clean) pairs given")
        return cls(layers, names, grey)

    @classmethod
    def from_folder(cls, root: PathLike, grey: bool = True, fill_saturated: bool = True) -> RainLayerBank:
        """Layers from ``root/rainy`` and ``root/clean`` with identical file names."""
        base = Path(root)
        rainy_dir, clean_dir = base / "rainy", base / "clean"
        if not rainy_dir.is_dir() or not clean_dir.is_dir():
            raise ValueError(f"{str(base)!r} must contain 'rainy/' and 'clean/' folders")
        pairs = [
            (p, clean_dir / p.name)
            for p in sorted(rainy_dir.iterdir())
            if is_image_file(p) and (clean_dir / p.name).is_file()
        ]
        if not pairs:
            raise ValueError(f"no matching rainy/clean image pairs under {str(base)!r}")
        return cls.from_pairs(pairs, grey, fill_saturated)

    @classmethod
    def from_arrays(
        cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]], grey: bool = True, fill_saturated: bool = True
    ) -> RainLayerBank:
        """Layers from in-memory ``(rainy, clean)`` images (uint8, or float in [0, 1], ``H×W×3``)."""
        layers = [cls._layer_from(_to_u8(r), _to_u8(c), grey, fill_saturated) for r, c in pairs]
        return cls(layers, None, grey)

    # -- access --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._layers)

    def layer(self, i: int) -> np.ndarray:
        """Layer ``i`` as float32 in [0, 1] (``H×W×3``, or ``H×W`` if grey)."""
        return to_float(self._layers[i], "reciprocal")

    def __repr__(self) -> str:
        return f"RainLayerBank(n={len(self)}, grey={self.grey})"

    # -- sampling ------------------------------------------------------------------------------

    def sample(
        self,
        rng: np.random.Generator,
        size: tuple[int, int],
        *,
        scale: tuple[float, float] = (0.7, 1.1),
        flip: bool = True,
        max_rotation: float = 0.0,
        zoom: tuple[float, float] = (1.0, 1.0),
        index: int | None = None,
    ) -> np.ndarray:
        """A random layer of ``size = (h, w)`` (``h×w``, or ``h×w×3`` if not grey) as float32 in [0, 1].

        Random layer (or ``index``), random crop (periodic tiling where the layer is smaller), with ``zoom`` other
        than (1, 1) resized by a factor :func:`random_zoom` (a crop of ``1/factor`` the size, bilinear, antialiased
        where it shrinks: a factor 2 draws streaks twice as wide and long; 0.5 twice as many, half as long, and
        a streak thinner than 2 px fainter, not thinner, its light spread over the pixel it shares with the
        background: the layer's mean stays),
        horizontal flip with probability 1/2 (``flip``), intensity × U(``scale``) clipped to 1, and
        with ``max_rotation > 0`` a rotation by U(−max_rotation, max_rotation) degrees.
        """
        h, w = int(size[0]), int(size[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"size must be positive, got {size!r}")
        i = int(rng.integers(len(self))) if index is None else int(index)
        src = self._layers[i]
        angle = random_angle(rng, max_rotation)
        factor = random_zoom(rng, zoom)
        ch, cw = rotation_window(h, w, angle)
        if factor == 1.0:
            crop = self._crop(src, rng, ch, cw)
        else:
            small = self._crop(src, rng, max(1, round(ch / factor)), max(1, round(cw / factor)))
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(small)).resize((cw, ch), Image.Resampling.BILINEAR))
        if angle:
            crop = rotate_center(crop, angle, h, w)
        if flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain = float(rng.uniform(scale[0], scale[1]))
        out = crop.astype(np.float32) * np.float32(gain / 255.0)
        return np.clip(out, 0.0, 1.0, out=out)

    @staticmethod
    def _crop(src: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        sh, sw = src.shape[:2]
        y0 = int(rng.integers(sh))
        x0 = int(rng.integers(sw))
        if h <= sh and w <= sw:
            y0 %= sh - h + 1
            x0 %= sw - w + 1
            return src[y0 : y0 + h, x0 : x0 + w]
        rows = (y0 + np.arange(h)) % sh  # periodic tiling
        cols = (x0 + np.arange(w)) % sw
        return src[rows[:, None], cols[None, :]]

    def composite(self, clean: np.ndarray, layer: np.ndarray) -> np.ndarray:
        """Additive composite (see :func:`composite`)."""
        return composite(clean, layer)

    def augment(self, clean: np.ndarray, rng: np.random.Generator, **kwargs: object) -> np.ndarray:
        """``composite(clean, sample(rng, clean.shape[:2]))``: real rain on a clean ``H×W×3`` image."""
        c = np.asarray(clean, dtype=np.float32)
        return composite(c, self.sample(rng, c.shape[:2], **kwargs))  # type: ignore[arg-type]
