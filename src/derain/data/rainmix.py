"""RainMix: AugMix-style augmentation of real rain-streak maps (EfficientDeRain, Algorithm 1).

A streak map ``R_org`` (Garg & Nayar 2006, grey, [0, 1]) is transformed by ``width`` random
chains of geometric ops, mixed with Dirichlet weights and blended back with the original::

    paper     R = clip(m·R_org + (1 − m)·Σ_i w_i·chain_i(R_org), 0, 1)
    released  R = max(1 − m, 0.7)·R_org + max(m, 0.5 / max(w))·Σ_i w_i·chain_i(R_org)   (gain > 1, no clip)

with ``w ~ Dirichlet(1, …, 1)`` and ``m ~ Beta(1, 1)``. In ``paper`` mode each chain has 1–3 ops
drawn independently; in ``released`` mode one depth (2 or 3) is drawn and shared by all chains,
as the released code does. The map is then screen-blended onto an image, ``I + R − I·R``
(clipped to [0, 1] in ``paper`` mode, not in ``released`` mode).

Ops (AugMix at ``severity`` s, level ~ U(0.1, s), random sign; outside the map is black)::

    rotate       int(3·level) degrees about the centre (≤ 8° at s = 3), counter-clockwise as displayed
    shear_x/y    level·0.03 (≤ 0.09)
    translate_x  int(level·W/30) pixels (≤ 10 % of the width);  translate_y: of the height
    zoom_x/y     sampling rate 1/(0.6·level) along one axis (0.56–16.7: > 1 shrinks the map
                 toward the left/top or, with probability 1/2, the right/bottom edge; < 1 enlarges)

Implementation: every op is an affine map, a chain is composed into ONE matrix and the map is
warped once per chain (Pillow ``Image.transform(AFFINE, BILINEAR, fillcolor=0)`` on a float
image; faster than ``scipy.ndimage.affine_transform`` here). What a sequence of warps
would have cut off at an intermediate step (e.g. a translation undone by a later one) is masked
out analytically, so the result equals the sequential chain up to interpolation (one bilinear
resampling instead of up to three, and no uint8 rounding between ops as in the released code).
Only the crop that will be blended is rendered: the crop offset is folded into the affine maps.

Sizes: the streak map is cropped at a random position to the image size. A map smaller than
the image (e.g. 320-pixel-high streaks on a 481×321 or 1024-pixel photo) is first enlarged
isotropically (bilinear, the smallest factor that covers the image; also folded into the warp)
rather than tiled, so no seams appear. The released code instead cropped the *image* to the
map size; here the image always keeps its size.

>>> import numpy as np
>>> maps = [np.tile(np.linspace(0, 1, 40, dtype=np.float32), (30, 1))]
>>> rm = RainMix(StreakBank.from_arrays(maps), mode="paper")
>>> r = rm.sample_rain_map(np.random.default_rng(0))
>>> r.shape, r.dtype, bool(r.min() >= 0 and r.max() <= 1)
((30, 40), dtype('float32'), True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from ..io.images import IMAGE_EXTENSIONS, is_image_file, read_image
from ..io.pixels import luma, to_float

__all__ = [
    "OPS",
    "Op",
    "RainMix",
    "RainMixSample",
    "StreakBank",
    "chain_matrix",
    "mix",
    "op_matrix",
    "rainmix_pair",
    "sample_op",
    "screen_blend",
    "warp_chain",
]

Mode = Literal["paper", "released"]
MODES: tuple[str, ...] = ("paper", "released")

#: The RainMix operation set (paper: {rot, shear_x/y, trans_x/y, zoom_x/y}).
OPS: tuple[str, ...] = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y", "zoom_x", "zoom_y")



# --------------------------------------------------------------------------- streak bank


class StreakBank:
    """Grey rain-streak maps read from a folder (e.g. Garg & Nayar's ``Streaks_Garg06``).

    ``bank[i]`` is an ``H×W`` float32 array in [0, 1]. RGB files are converted to grey (Pillow's
    ITU-R 601 luma; the Garg–Nayar originals have three equal channels). Files are read on first
    use and kept as uint8 (about 150 MB for all 825 Garg–Nayar maps); ``preload=True`` reads them
    all now (before forking DataLoader workers, so they share the pages), ``cache=False`` keeps
    nothing.

    Raises ``ValueError`` if the folder does not exist or holds no images.
    """

    def __init__(self, folder: str | os.PathLike[str], *, preload: bool = False, cache: bool = True) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"streak folder {str(root)!r} does not exist or is not a directory")
        paths = sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p))
        if not paths:
            raise ValueError(
                f"streak folder {str(root)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        self.folder: Path | None = root
        self.paths: list[Path] = paths
        self._cache_enabled = cache
        self._maps: dict[int, np.ndarray] = {}
        if preload:
            for i in range(len(paths)):
                self._maps[i] = self._read(i)

    @classmethod
    def from_arrays(cls, maps: Sequence[np.ndarray]) -> StreakBank:
        """A bank of in-memory maps (``H×W`` or ``H×W×C``; uint8, or float in [0, 1])."""
        if len(maps) == 0:
            raise ValueError("StreakBank.from_arrays needs at least one map")
        bank = cls.__new__(cls)
        bank.folder = None
        bank.paths = []
        bank._cache_enabled = True
        bank._maps = {i: _to_grey(np.asarray(m)) for i, m in enumerate(maps)}
        return bank

    def _read(self, i: int) -> np.ndarray:
        rgb = read_image(self.paths[i])
        if (rgb[..., :1] == rgb).all():  # grey files (the Garg–Nayar bank): their values as stored
            return rgb[..., 0].copy()
        return np.clip(np.round(luma(rgb)), 0, 255).astype(np.uint8)  # ITU-R 601, as Pillow's "L"

    def __len__(self) -> int:
        return len(self.paths) if self.folder is not None else len(self._maps)

    def raw(self, i: int) -> np.ndarray:
        """Map ``i`` as stored (uint8 for files, float32 for :meth:`from_arrays`); do not modify."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"streak index {i} out of range for a bank of {len(self)}")
        i %= len(self)
        m = self._maps.get(i)
        if m is None:
            m = self._read(i)
            if self._cache_enabled:
                self._maps[i] = m
        return m

    def __getitem__(self, i: int) -> np.ndarray:
        m = self.raw(i)
        if m.dtype == np.uint8:
            return to_float(m, "reciprocal")
        return m.astype(np.float32, copy=True)

    def __repr__(self) -> str:
        where = str(self.folder) if self.folder is not None else "<arrays>"
        return f"StreakBank({where!r}, n={len(self)})"


def _to_grey(m: np.ndarray) -> np.ndarray:
    if m.ndim == 3:
        m = m.astype(np.float32).mean(axis=2) if m.shape[2] > 1 else m[:, :, 0]
        if not np.issubdtype(m.dtype, np.floating):
            m = m.astype(np.float32)
    if m.ndim != 2:
        raise ValueError(f"a streak map must be H×W or H×W×C, got shape {m.shape}")
    if m.dtype == np.uint8:
        return m.copy()
    m = np.asarray(m, dtype=np.float32)
    if m.max(initial=0.0) > 1.0 + 1e-6:  # 0-255 values given as float
        m = m / 255.0
    return np.ascontiguousarray(m)


# --------------------------------------------------------------------------- ops


@dataclass(frozen=True)
class Op:
    """One sampled op: ``name`` in :data:`OPS`, its signed ``value`` (degrees, shear factor,
    pixels of displacement or zoom sampling rate) and, for zooms, whether the map is anchored at
    the far (right/bottom) edge."""

    name: str
    value: float
    anchor_end: bool = False


def op_matrix(name: str, value: float, shape: tuple[int, int], anchor_end: bool = False) -> np.ndarray:
    """3×3 affine matrix of one op, mapping *output* pixel coordinates to *input* coordinates.

    Coordinates are Pillow's continuous ones (x right, y down; pixel (i, j) covers [j, j+1) ×
    [i, i+1)); ``shape`` is the map's ``(H, W)``. Conventions (same as AugMix's Pillow calls):

    * ``rotate``: content turns ``value`` degrees counter-clockwise (as displayed) about the centre;
    * ``shear_x``: input x = x + value·y; ``shear_y``: input y = y + value·x;
    * ``translate_x``/``_y``: content moves by ``value`` pixels (+ = right/down);
    * ``zoom_x``/``_y``: input x = value·x (+ W·(1 − value) with ``anchor_end``): content is
      scaled by 1/value along that axis, pinned to the left/top (or right/bottom) edge.

    >>> op_matrix("translate_x", 5, (10, 20))[0].tolist()
    [1.0, 0.0, -5.0]
    """
    h, w = shape
    m = np.eye(3)
    v = float(value)
    if name == "rotate":
        a = math.radians(v)
        c, s = math.cos(a), math.sin(a)
        cx, cy = w / 2.0, h / 2.0
        m[:2, :2] = [[c, -s], [s, c]]
        m[0, 2] = cx - c * cx + s * cy
        m[1, 2] = cy - s * cx - c * cy
    elif name == "shear_x":
        m[0, 1] = v
    elif name == "shear_y":
        m[1, 0] = v
    elif name == "translate_x":
        m[0, 2] = -v
    elif name == "translate_y":
        m[1, 2] = -v
    elif name == "zoom_x":
        m[0, 0] = v
        m[0, 2] = w * (1.0 - v) if anchor_end else 0.0
    elif name == "zoom_y":
        m[1, 1] = v
        m[1, 2] = h * (1.0 - v) if anchor_end else 0.0
    else:
        raise ValueError(f"unknown RainMix op {name!r}; choose one of {OPS}")
    return m


def sample_op(name: str, rng: np.random.Generator, severity: float, shape: tuple[int, int]) -> Op:
    """Draw the parameter of op ``name`` as AugMix does at ``severity`` (level ~ U(0.1, severity))."""
    h, w = shape
    level = float(rng.uniform(0.1, severity))
    flip = bool(rng.random() > 0.5)  # negative sign / far-edge anchor
    sign = -1.0 if flip else 1.0
    if name == "rotate":
        return Op(name, sign * int(level * 30 / 10))
    if name in ("shear_x", "shear_y"):
        return Op(name, sign * level * 0.3 / 10)
    if name == "translate_x":
        return Op(name, sign * int(level * (w / 3) / 10))
    if name == "translate_y":
        return Op(name, sign * int(level * (h / 3) / 10))
    if name in ("zoom_x", "zoom_y"):
        return Op(name, 1.0 / (level * 6.0 / 10), anchor_end=flip)
    raise ValueError(f"unknown RainMix op {name!r}; choose one of {OPS}")


def chain_matrix(ops: Sequence[Op], shape: tuple[int, int]) -> np.ndarray:
    """Output→input matrix of a chain applied in order (``ops[0]`` first): M_1 · M_2 · … · M_d."""
    m = np.eye(3)
    for op in ops:
        m = m @ op_matrix(op.name, op.value, shape, op.anchor_end)
    return m


def _frame_mask(p: np.ndarray, out_shape: tuple[int, int], frame: tuple[int, int]) -> np.ndarray | None:
    """Pixels of the output whose centres map (through ``p``) inside ``frame`` = (H, W); ``None`` if all do."""
    h, w = out_shape
    fh, fw = frame
    cx = np.array([0.5, w - 0.5, 0.5, w - 0.5])
    cy = np.array([0.5, 0.5, h - 0.5, h - 0.5])
    u = p[0, 0] * cx + p[0, 1] * cy + p[0, 2]
    v = p[1, 0] * cx + p[1, 1] * cy + p[1, 2]
    if np.all((u >= 0) & (u < fw) & (v >= 0) & (v < fh)):
        return None  # a parallelogram containing all four corners contains the whole rectangle
    xs = np.arange(w, dtype=np.float32) + np.float32(0.5)
    ys = np.arange(h, dtype=np.float32) + np.float32(0.5)
    u = (np.float32(p[0, 1]) * ys + np.float32(p[0, 2]))[:, None] + (np.float32(p[0, 0]) * xs)[None, :]
    v = (np.float32(p[1, 1]) * ys + np.float32(p[1, 2]))[:, None] + (np.float32(p[1, 0]) * xs)[None, :]
    return (u >= 0) & (u < fw) & (v >= 0) & (v < fh)


def warp_chain(
    image: np.ndarray | Image.Image,
    ops: Sequence[Op],
    out_shape: tuple[int, int] | None = None,
    pre: np.ndarray | None = None,
) -> np.ndarray:
    """Apply a chain of ops to a grey float map with one bilinear warp; outside is 0.

    ``pre`` is an extra output→map matrix applied after the chain (used for cropping/scaling the
    result; default identity) and ``out_shape`` the ``(h, w)`` of the result (default the map's).
    Regions that an intermediate op would have pushed out of the frame stay black.
    """
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    shape = (pil.height, pil.width)
    out_shape = shape if out_shape is None else (int(out_shape[0]), int(out_shape[1]))
    t = np.eye(3) if pre is None else np.asarray(pre, dtype=np.float64)
    mats = [op_matrix(op.name, op.value, shape, op.anchor_end) for op in ops]
    # suffix products: P_j = M_{j+1} … M_d · T maps output coords into the frame after op j
    suffix = t
    mask: np.ndarray | None = None
    for j in range(len(mats) - 1, 0, -1):
        suffix = mats[j] @ suffix
        mj = _frame_mask(suffix, out_shape, shape)
        if mj is not None:
            mask = mj if mask is None else (mask & mj)
    full = mats[0] @ suffix if mats else t
    data = tuple(float(x) for x in full[:2].ravel())
    out = pil.transform(
        (out_shape[1], out_shape[0]),
        Image.Transform.AFFINE,
        data,
        resample=Image.Resampling.BILINEAR,
        fillcolor=0,
    )
    arr = np.asarray(out, dtype=np.float32)
    if mask is not None:
        arr = np.where(mask, arr, np.float32(0.0))
    return arr


# --------------------------------------------------------------------------- mixing, blending


def mix(
    r: np.ndarray,
    chains: np.ndarray | Sequence[np.ndarray],
    w: Sequence[float] | np.ndarray,
    m: float,
    mode: Mode = "paper",
) -> np.ndarray:
    """RainMix's final mix of the original map ``r`` with the transformed ``chains``.

    ``paper``: ``clip(m·r + (1 − m)·Σ w_i·chains_i, 0, 1)``;
    ``released``: ``max(1 − m, 0.7)·r + max(m, 0.5/max(w))·Σ w_i·chains_i`` (not clipped).

    >>> r = np.array([[0.5]], np.float32); c = np.array([[[1.0]], [[0.0]]], np.float32)
    >>> float(mix(r, c, [0.5, 0.5], 0.25, "paper")[0, 0]), float(mix(r, c, [0.5, 0.5], 0.25, "released")[0, 0])
    (0.5, 0.875)
    """
    if mode not in MODES:
        raise ValueError(f"unknown RainMix mode {mode!r}; choose one of {MODES}")
    wv = np.asarray(w, dtype=np.float64).ravel()
    if len(chains) != wv.shape[0]:
        raise ValueError(f"{len(chains)} chains but {wv.shape[0]} weights")
    r = np.asarray(r, dtype=np.float32)
    m = float(m)
    if mode == "paper":
        a, b = m, 1.0 - m
    else:
        a, b = max(1.0 - m, 0.7), max(m, 0.5 / float(wv.max()))
    # out = a·r + Σ (b·w_i)·chain_i, accumulated in place (no stacking, no temporaries per chain)
    out = np.multiply(r, np.float32(a), dtype=np.float32)
    tmp = np.empty_like(out)
    for wi, chain in zip(wv, chains, strict=True):
        np.multiply(np.asarray(chain, dtype=np.float32), np.float32(b * wi), out=tmp)
        out += tmp
    if mode == "paper":
        np.clip(out, 0.0, 1.0, out=out)
    return out


def screen_blend(image: np.ndarray, rain: np.ndarray, clip: bool = True) -> np.ndarray:
    """Screen blend ``I + R − I·R`` of an ``H×W×C`` image and an ``H×W`` (or ``H×W×C``) rain map.

    >>> float(screen_blend(np.full((1, 1, 3), 0.5, np.float32), np.full((1, 1), 0.5, np.float32))[0, 0, 0])
    0.75
    """
    img = np.asarray(image, dtype=np.float32)
    r = np.asarray(rain, dtype=np.float32)
    if r.ndim == img.ndim - 1:
        r = r[..., None]
    if r.shape[:2] != img.shape[:2]:
        raise ValueError(f"rain map {r.shape[:2]} and image {img.shape[:2]} differ in size")
    out = img + r - img * r
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


# --------------------------------------------------------------------------- RainMix


@dataclass(frozen=True)
class RainMixSample:
    """Everything RainMix draws for one rain map (so a draw can be inspected or replayed).

    ``offset`` is the ``(y, x)`` of the crop in the streak map enlarged by ``scale`` (≥ 1; 1
    unless the map is smaller than the requested size); ``chains`` the ops of each chain in order;
    ``weights`` the Dirichlet weights; ``m`` the Beta draw.
    """

    index: int
    out_shape: tuple[int, int]
    offset: tuple[int, int]
    scale: float
    chains: tuple[tuple[Op, ...], ...]
    weights: tuple[float, ...]
    m: float


class RainMix:
    """RainMix augmentation over a :class:`StreakBank`.

    Args:
        bank: the streak maps.
        mode: ``"paper"`` (Algorithm 1: chains of 1–3 ops each, convex mix, clipped) or
            ``"released"`` (the authors' code: one depth in {2, 3} for all chains, mix with gain
            > 1, no clipping anywhere).
        severity: AugMix severity of the ops (3 in the paper's code).
        width: number of chains (3 in the released code; Algorithm 1 writes 4).
        rng: default generator for calls that do not pass one. DataLoader workers forked from
            one process share its state, so give each worker its own generator (e.g. seeded from
            ``torch.utils.data.get_worker_info().seed``) or pass ``rng`` to every call.
    """

    def __init__(
        self,
        bank: StreakBank,
        mode: Mode = "paper",
        severity: float = 3,
        width: int = 3,
        rng: np.random.Generator | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown RainMix mode {mode!r}; choose one of {MODES}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if not severity > 0.1:
            raise ValueError(f"severity must be > 0.1, got {severity}")
        if len(bank) == 0:
            raise ValueError("the streak bank is empty")
        self.bank = bank
        self.mode: Mode = mode
        self.severity = float(severity)
        self.width = int(width)
        self.rng = rng if rng is not None else np.random.default_rng()

    @property
    def clip(self) -> bool:
        """Whether blends are clipped to [0, 1] (``paper`` mode)."""
        return self.mode == "paper"

    # -- sampling ------------------------------------------------------------------------------

    def sample(
        self,
        rng: np.random.Generator | None = None,
        size: tuple[int, int] | None = None,
        index: int | None = None,
    ) -> RainMixSample:
        """Draw a streak map, its crop, the chains, the weights and ``m`` (nothing is rendered)."""
        rng = self.rng if rng is None else rng
        if index is None:
            index = int(rng.integers(len(self.bank)))
        shape = self.bank.raw(index).shape[:2]
        w = rng.dirichlet([1.0] * self.width)
        m = float(rng.beta(1.0, 1.0))
        if self.mode == "released":
            depth = int(rng.integers(2, 4))
            depths = [depth] * self.width
        else:
            depths = [int(d) for d in rng.integers(1, 4, size=self.width)]
        chains = tuple(
            tuple(sample_op(OPS[int(rng.integers(len(OPS)))], rng, self.severity, shape) for _ in range(d))
            for d in depths
        )
        out_shape = shape if size is None else (int(size[0]), int(size[1]))
        scale = max(1.0, out_shape[0] / shape[0], out_shape[1] / shape[1])
        room_y = int(math.floor(shape[0] * scale + 1e-6)) - out_shape[0]
        room_x = int(math.floor(shape[1] * scale + 1e-6)) - out_shape[1]
        offset = (int(rng.integers(max(room_y, 0) + 1)), int(rng.integers(max(room_x, 0) + 1)))
        return RainMixSample(
            index=index,
            out_shape=out_shape,
            offset=offset,
            scale=float(scale),
            chains=chains,
            weights=tuple(float(x) for x in w),
            m=m,
        )

    def render_chains(self, sample: RainMixSample) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(r, chains)``: the cropped original map ``(h, w)`` and each chain's output (``width`` maps)."""
        src = self.bank[sample.index]
        pil = Image.fromarray(src)  # float32 -> mode "F"
        s = sample.scale
        oy, ox = sample.offset
        t = np.array([[1.0 / s, 0.0, ox / s], [0.0, 1.0 / s, oy / s], [0.0, 0.0, 1.0]])
        h, w = sample.out_shape
        if s == 1.0:
            r = src[oy : oy + h, ox : ox + w]
        else:
            r = warp_chain(pil, (), sample.out_shape, pre=t)
        chains = [warp_chain(pil, ops, sample.out_shape, pre=t) for ops in sample.chains]
        return r, chains

    def render(self, sample: RainMixSample) -> np.ndarray:
        """The mixed rain map of a :class:`RainMixSample` (``(h, w)`` float32)."""
        r, chains = self.render_chains(sample)
        return mix(r, chains, sample.weights, sample.m, self.mode)

    def sample_rain_map(
        self, rng: np.random.Generator | None = None, size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """One RainMix rain map, ``(H, W)`` float32: the whole streak map, or a random crop of ``size``.

        In ``paper`` mode the values lie in [0, 1]; in ``released`` mode they may exceed 1.
        """
        return self.render(self.sample(rng, size))

    # -- compositing ---------------------------------------------------------------------------

    def composite(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Screen-blend a fresh rain map (cropped to the image's size) onto ``image`` (``H×W×3``, [0, 1])."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 3:
            raise ValueError(f"image must be H×W×C, got shape {img.shape}")
        rain = self.sample_rain_map(rng, img.shape[:2])
        return screen_blend(img, rain, clip=self.clip)

    def rainmix_pair(
        self,
        rainy: np.ndarray | None,
        clean: np.ndarray,
        rng: np.random.Generator | None = None,
        p_rainy: float = 7 / 11,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(input, target)`` for training: RainMix rain on the rainy image (probability ``p_rainy``,
        the released code's ``randint(0, 10) > 3``) or on the clean one; the target is ``clean``.

        ``rainy`` may be ``None`` (clean-only data): the base is then always ``clean``. Both images
        are ``H×W×3`` float32 in [0, 1] of the same size; the target is returned as given (no copy).
        """
        rng = self.rng if rng is None else rng
        clean = np.asarray(clean, dtype=np.float32)
        use_rainy = bool(rng.random() < p_rainy)
        if rainy is not None:
            rainy = np.asarray(rainy, dtype=np.float32)
            if rainy.shape != clean.shape:
                raise ValueError(f"rainy {rainy.shape} and clean {clean.shape} differ in shape")
        base = rainy if (use_rainy and rainy is not None) else clean
        return self.composite(base, rng), clean

    __call__ = rainmix_pair

    def __repr__(self) -> str:
        return f"RainMix({self.bank!r}, mode={self.mode!r}, severity={self.severity:g}, width={self.width})"


def rainmix_pair(
    rainmix: RainMix,
    rainy: np.ndarray | None,
    clean: np.ndarray,
    rng: np.random.Generator | None = None,
    p_rainy: float = 7 / 11,
) -> tuple[np.ndarray, np.ndarray]:
    """Function form of :meth:`RainMix.rainmix_pair`."""
    return rainmix.rainmix_pair(rainy, clean, rng, p_rainy)
