"""Synthetic rain for clean-only photos, and rain-layer statistics.

Rain model (JORDER-style, Yang et al. CVPR 2017)::

    O = α · (B + Σ_l S_l) + (1 − α) · A,     clipped to [0, 1]

``B`` is the clean image, ``S_l`` the streak layers (1–3, grey: added equally to R, G and B),
``A`` the atmospheric light (grey, ≈ 0.8–1.0) and ``α`` the transmission (``α = 1``: no haze).
Each streak layer is::

    S_l = intensity_l · (seeds_l ⊛ line(angle_l, length_l, thickness_l) [⊛ gauss(σ)])

``seeds_l`` is sparse noise (a pixel is a seed with probability ``density``, amplitude
U(0.5, 1)), ``line`` an anti-aliased line segment with peak 1 (so a lone seed of amplitude a
becomes a streak of brightness a · intensity) whose ends fade out, and ``gauss`` an optional
Gaussian blur. All layers are convolved at once with FFTs (circular convolution on a padded
5-smooth grid, so odd sizes such as 481×321 stay fast); the layer angles are a dominant direction
plus a few degrees of spread per layer. Overlapping streaks add up; the summed streak map is
clipped to [0, 1]. Optionally the result is re-encoded as JPEG (4:2:0, random quality).

**Depth** (``RainParams.depth``, ``depth_blur``; off in the Rain100-style presets). Real rain is seen at many
distances at once: drops near the camera make thick, long, faint and defocused streaks, far ones thin dense
lines. With ``depth > 0`` the layers are ordered from far to near, layer ``l`` of ``n`` at depth
``d_l = l / (n − 1)`` (one layer: ``d`` drawn U(0, 1)); its drawn length and thickness are multiplied by
``k_l = 1 + depth · d_l``, its intensity divided by ``k_l``, its density by ``k_l²`` (fewer, bigger drops), and
its streaks blurred by ``depth_blur · d_l`` px (σ) more than the image's blur. The ``real`` preset uses it.

Angles everywhere in this module are in degrees, counter-clockwise from the image's x axis
as the image is displayed (y pointing up): 90° is a vertical streak, 70° leans to the right
("/"), 110° to the left ("\\").

:func:`rain_statistics` measures a (rainy, clean) pair the same way for rendered and real data:
mean brightness of the rain layer, coverage, dominant streak orientation (gradient structure
tensor) and the input PSNR on MATLAB's Y channel. The presets (:data:`PRESETS`) were tuned with
it toward RainTrainH_val (heavy) and the light pairs of SIRR_val (light); each preset's
``description`` gives what it imitates. The measured ranges are in BENCHMARKS.md, "Rendered rain
and real rain layers" (``benchmarks/render_calibration.py`` re-measures them).

>>> import numpy as np
>>> clean = np.full((64, 64, 3), 0.3, np.float32)
>>> rainy = RainRenderer("heavy").render(clean, np.random.default_rng(0))
>>> rainy.shape, rainy.dtype, bool(rainy.min() >= 0.0 and rainy.max() <= 1.0)
((64, 64, 3), dtype('float32'), True)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from ..metrics import calculate_psnr, quantize
from ..io.pixels import to_float, to_u8

__all__ = [
    "MIXED",
    "PRESETS",
    "RainParams",
    "RainRenderer",
    "dominant_orientation",
    "jpeg_round_trip",
    "line_kernel",
    "rain_statistics",
    "render_rain",
    "render_rain_pair",
    "streak_width",
    "render_streaks",
    "y_psnr",
]

Range = tuple[float, float]


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class RainParams:
    """Ranges the renderer draws from (each ``(lo, hi)`` is sampled uniformly per image/layer).

    Attributes:
        layers: number of streak layers, inclusive integer range.
        density: probability that a pixel seeds a streak, per layer.
        length: streak length in pixels, per layer.
        thickness: streak thickness in pixels, per layer (below 1 the line is 1 px wide and
            dimmed by the thickness).
        angle: dominant streak direction in degrees (90 = vertical), per image.
        angle_spread: each layer deviates from the dominant direction by U(−spread, spread) degrees.
        intensity: peak brightness a seed of amplitude 1 adds, per layer.
        blur_prob: probability of blurring the streaks (all layers) with a Gaussian.
        blur_sigma: Gaussian blur σ in pixels when blurring.
        haze_prob: probability of a haze veil; without haze ``α = 1``.
        alpha: transmission α when there is haze (smaller = denser haze).
        atmospheric_light: grey level A of the veil.
        jpeg_prob: probability of re-encoding the result as JPEG.
        jpeg_quality: JPEG quality range (integers, inclusive).
        depth: how much bigger and fainter the nearest layer is than the farthest (module docstring,
            "Depth"); 0: the layers are drawn independently.
        depth_blur: extra Gaussian blur σ in pixels of the nearest layer (0 for the farthest).
        description: free text (what a preset imitates); not compared.
    """

    layers: tuple[int, int] = (1, 3)
    density: Range = (0.002, 0.01)
    length: Range = (10.0, 30.0)
    thickness: Range = (1.0, 2.0)
    angle: Range = (70.0, 110.0)
    angle_spread: float = 4.0
    intensity: Range = (0.3, 0.7)
    blur_prob: float = 0.5
    blur_sigma: Range = (0.5, 1.0)
    haze_prob: float = 0.0
    alpha: Range = (0.8, 1.0)
    atmospheric_light: Range = (0.8, 1.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (70, 95)
    depth: float = 0.0
    depth_blur: float = 0.0
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                if len(v) != 2 or v[0] > v[1]:
                    raise ValueError(f"RainParams.{f.name} must be a (lo, hi) pair with lo <= hi, got {v!r}")
        if self.layers[0] < 1:
            raise ValueError(f"RainParams.layers must be >= 1, got {self.layers!r}")
        if not (0.0 <= self.density[0] and self.density[1] <= 1.0):
            raise ValueError(f"RainParams.density must lie in [0, 1], got {self.density!r}")
        if self.length[0] <= 0 or self.thickness[0] <= 0:
            raise ValueError("RainParams.length and thickness must be positive")
        if not (0.0 < self.alpha[0] and self.alpha[1] <= 1.0):
            raise ValueError(f"RainParams.alpha must lie in (0, 1], got {self.alpha!r}")
        for name in ("blur_prob", "haze_prob", "jpeg_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"RainParams.{name} must be a probability, got {p!r}")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError(f"RainParams.jpeg_quality must lie in [1, 100], got {self.jpeg_quality!r}")
        if self.depth < 0 or self.depth_blur < 0:
            raise ValueError(f"RainParams.depth and depth_blur must be >= 0, got {self.depth!r} and {self.depth_blur!r}")


#: Named presets (see each preset's ``description`` for what it imitates; BENCHMARKS.md, "Rendered rain
#: and real rain layers", for its measured calibration). Re-measure with ``python benchmarks/render_calibration.py --data-root DATA``.
PRESETS: dict[str, RainParams] = {
    "light": RainParams(
        layers=(1, 2),
        density=(0.0012, 0.002),
        length=(10.0, 30.0),
        thickness=(0.8, 1.4),
        angle=(60.0, 120.0),
        angle_spread=4.0,
        intensity=(0.38, 0.58),
        blur_prob=0.5,
        blur_sigma=(0.3, 1.0),
        haze_prob=0.0,
        jpeg_prob=0.3,
        jpeg_quality=(85, 98),
        description=(
            "Rain100L / light-SIRR look: thin, sparse, short-to-medium streaks, no haze."
        ),
    ),
    "medium": RainParams(
        layers=(1, 3),
        density=(0.002, 0.005),
        length=(15.0, 50.0),
        thickness=(0.8, 1.8),
        angle=(65.0, 115.0),
        angle_spread=6.0,
        intensity=(0.25, 0.5),
        blur_prob=0.5,
        blur_sigma=(0.4, 0.9),
        haze_prob=0.2,
        alpha=(0.9, 0.98),
        jpeg_prob=0.3,
        jpeg_quality=(80, 98),
        description=(
            "Between the two (dense-SIRR look): denser medium-length streaks, sometimes a light veil."
        ),
    ),
    "heavy": RainParams(
        layers=(2, 3),
        density=(0.003, 0.007),
        length=(30.0, 80.0),
        thickness=(1.0, 2.2),
        angle=(78.0, 102.0),
        angle_spread=8.0,
        intensity=(0.25, 0.5),
        blur_prob=0.5,
        blur_sigma=(0.4, 0.9),
        haze_prob=0.3,
        alpha=(0.85, 0.97),
        jpeg_prob=0.3,
        jpeg_quality=(80, 98),
        description=(
            "Rain100H / RainTrainH look: dense, long, crossing streaks (2-3 layers up to 8 degrees "
            "apart), sometimes a haze veil."
        ),
    ),
    "real": RainParams(
        layers=(2, 4),
        density=(0.0015, 0.006),
        length=(20.0, 60.0),
        thickness=(1.0, 2.0),
        angle=(65.0, 115.0),
        angle_spread=10.0,
        intensity=(0.15, 0.4),
        blur_prob=0.7,
        blur_sigma=(0.5, 1.2),
        haze_prob=0.8,
        alpha=(0.75, 0.95),
        atmospheric_light=(0.75, 1.0),
        jpeg_prob=0.7,
        jpeg_quality=(60, 95),
        depth=2.0,
        depth_blur=2.5,
        description=(
            "Photographed rain (InternetData147 look; rendered as Rain100H and RainCityscapes were, "
            "I = T(B + R) + (1 - T)A): 2-4 layers at several depths, the near ones wide, long, faint and "
            "defocused, the far ones thin and dense, usually over a fog veil, usually JPEG-compressed."
        ),
    ),
}

#: The presets ``preset: mixed`` draws from (a training source): the Rain100-style three, as the shipped training
#: presets were trained with; ``real`` is named on its own.
MIXED: tuple[str, ...] = ("heavy", "light", "medium")


# --------------------------------------------------------------------------- measurement


def _as_float01(img: np.ndarray) -> np.ndarray:
    return to_float(img) if img.dtype == np.uint8 else np.asarray(img, dtype=np.float32)


def y_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, peak 255) between two RGB images on MATLAB's Y channel, as protocol ``y``.

    Images are uint8, or float in [0, 1] (rounded to uint8 first, like predictions).
    """
    return calculate_psnr(quantize(a), quantize(b), test_y_channel=True)


def dominant_orientation(layer: np.ndarray) -> tuple[float, float]:
    """Dominant streak direction of a grey map via the gradient structure tensor (Scharr gradients).

    Returns ``(angle, coherence)``: the angle in degrees in [0, 180), counter-clockwise from
    the x axis as displayed (90 = vertical), perpendicular to the dominant gradient direction;
    coherence ``(λ1 − λ2) / (λ1 + λ2)`` in [0, 1] (1 = perfectly oriented, 0 = isotropic).
    """
    g = np.asarray(layer, dtype=np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    # Scharr derivatives: far more rotation-invariant than central differences, which bias thin
    # streaks toward the diagonals by up to ~10 degrees.
    p = np.pad(g, 1, mode="edge")
    dx = p[:, 2:] - p[:, :-2]
    dy = p[2:, :] - p[:-2, :]
    gx = 3.0 * (dx[:-2] + dx[2:]) + 10.0 * dx[1:-1]
    gy = -(3.0 * (dy[:, :-2] + dy[:, 2:]) + 10.0 * dy[:, 1:-1])  # rows grow downward; y points up
    jxx, jyy, jxy = float(np.mean(gx * gx)), float(np.mean(gy * gy)), float(np.mean(gx * gy))
    trace = jxx + jyy
    if trace <= 0:
        return float("nan"), 0.0
    grad_angle = 0.5 * math.degrees(math.atan2(2.0 * jxy, jxx - jyy))
    coherence = math.sqrt((jxx - jyy) ** 2 + 4.0 * jxy**2) / trace
    return (grad_angle + 90.0) % 180.0, coherence


def rain_statistics(rainy: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Statistics of the rain in a (rainy, clean) pair of ``H×W×3`` RGB images (uint8 or [0, 1] float).

    The rain layer is ``rainy − clean`` averaged over the channels (floats in [0, 1]). Returns:

    ``mean``
        mean of the rain layer (mean added brightness; haze counts too).
    ``coverage``
        fraction of pixels where the rain layer exceeds 0.1.
    ``orientation``
        dominant streak direction in degrees (:func:`dominant_orientation`; 90 = vertical).
    ``coherence``
        how strongly oriented the layer is (0–1).
    ``y_psnr``
        PSNR of rainy vs clean on MATLAB's Y channel, dB (:func:`y_psnr`).
    ``width``
        the streaks' width in pixels across their direction (:func:`streak_width`; NaN without streaks).
    """
    r, c = _as_float01(rainy), _as_float01(clean)
    if r.shape != c.shape or r.ndim != 3 or r.shape[2] != 3:
        raise ValueError(f"rainy and clean must be matching H×W×3 images, got {r.shape} and {c.shape}")
    layer = (r - c).mean(axis=2)
    angle, coherence = dominant_orientation(layer)
    return {
        "mean": float(layer.mean()),
        "coverage": float((layer > 0.1).mean()),
        "orientation": angle,
        "coherence": coherence,
        "y_psnr": y_psnr(rainy, clean),
        "width": streak_width(layer, angle),
    }


#: The veil and the scene's slow changes are taken out of a rain layer before its streaks' width is measured:
#: a Gaussian high-pass of this σ (px), wider than any streak.
WIDTH_HIGHPASS_SIGMA = 16.0


def streak_width(layer: np.ndarray, angle: float, max_width: float = 40.0) -> float:
    """The width (px) of the streaks of a grey rain layer ``layer`` running at ``angle`` degrees (:func:`dominant_orientation`).

    The layer is high-passed (:data:`WIDTH_HIGHPASS_SIGMA`: a uniform veil is not a streak), and its
    autocorrelation is read across the streaks' direction: twice the distance where it falls to half its peak
    (its full width at half maximum). For streaks of constant brightness across that is their width (a little
    less for streaks several pixels wide, which the high-pass narrows); blur widens it. It does not depend on
    how many streaks there are or how bright they are, so it compares rendered and real rain layers. A veil
    that follows the scene (haze over a textured photo) adds the scene's own structure: compare layers alike.
    NaN when the layer has no structure or ``angle`` is NaN; ``max_width`` when it does not fall to half by then.

    >>> layer = np.zeros((64, 64), np.float32); layer[:, 30:32] = 1.0  # one vertical streak 2 px wide
    >>> round(streak_width(layer, 90.0))
    2
    """
    g = np.asarray(layer, dtype=np.float64)
    if not math.isfinite(angle):
        return float("nan")
    h, w = g.shape
    ph, pw = _next_fast_len(2 * h), _next_fast_len(2 * w)  # zero padding: a linear, not circular, correlation
    spec = np.fft.rfft2(g - g.mean(), s=(ph, pw))
    fy = np.fft.fftfreq(ph)[:, None]
    fx = np.fft.rfftfreq(pw)[None, :]
    spec *= 1.0 - np.exp(-2.0 * (math.pi * WIDTH_HIGHPASS_SIGMA) ** 2 * (fx * fx + fy * fy))
    ac = np.fft.irfft2(np.abs(spec) ** 2, s=(ph, pw))
    if not ac[0, 0] > 1e-12:
        return float("nan")
    ac /= ac[0, 0]
    th = math.radians(angle)
    across = (-math.sin(th), -math.cos(th))  # (column, row) steps perpendicular to the streaks (rows grow downward)
    previous = 1.0
    for step in np.arange(0.25, max_width / 2 + 0.25, 0.25):
        x, y = step * across[0], step * across[1]
        x0, y0 = math.floor(x), math.floor(y)
        fx_, fy_ = x - x0, y - y0
        value = sum(  # bilinear, wrapped (the autocorrelation's negative lags sit at the far end)
            wgt * ac[(y0 + dy) % ph, (x0 + dx) % pw]
            for dy, dx, wgt in ((0, 0, (1 - fy_) * (1 - fx_)), (0, 1, (1 - fy_) * fx_), (1, 0, fy_ * (1 - fx_)), (1, 1, fy_ * fx_))
        )
        if value <= 0.5:
            r = step - 0.25 + 0.25 * (previous - 0.5) / max(previous - value, 1e-12)
            return float(2.0 * r)
        previous = value
    return float(max_width)


# --------------------------------------------------------------------------- streaks


def _next_fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (fast FFT size)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def line_kernel(angle: float, length: float, thickness: float, taper: bool = True) -> np.ndarray:
    """Anti-aliased line segment (peak 1) of ``length`` × ``thickness`` pixels at ``angle`` degrees.

    Returned as a square odd-sized float32 array centred on the middle pixel. With ``taper`` the
    brightness falls off as ``sqrt(1 − (2t/L)²)`` toward the ends (t: distance along the line).
    A thickness below 1 gives a 1-pixel line scaled by ``thickness``.

    >>> k = line_kernel(90.0, 9, 1, taper=False)
    >>> k.shape, float(k[:, k.shape[1] // 2].sum()), float(k.sum())
    ((13, 13), 9.0, 9.0)
    """
    width = max(float(thickness), 1.0)
    gain = min(float(thickness), 1.0)
    half = int(math.ceil(0.5 * (length + width))) + 1
    r = np.arange(-half, half + 1, dtype=np.float32)
    dx = r[None, :]
    dy = -r[:, None]  # y up
    th = math.radians(angle)
    ct, st = math.cos(th), math.sin(th)
    t = dx * ct + dy * st
    p = -dx * st + dy * ct
    along = np.clip(0.5 * length + 0.5 - np.abs(t), 0.0, 1.0)
    if taper:
        along = along * np.sqrt(np.clip(1.0 - (2.0 * t / (length + 1.0)) ** 2, 0.0, 1.0))
    across = np.clip(0.5 * width + 0.5 - np.abs(p), 0.0, 1.0)
    return (gain * along * across).astype(np.float32)


def _embed_wrapped(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Place a centred odd kernel into a zero array of ``shape`` with its centre at (0, 0), wrapping."""
    out = np.zeros(shape, dtype=np.float32)
    kh, kw = kernel.shape
    ch, cw = kh // 2, kw // 2
    rows = (np.arange(kh) - ch) % shape[0]
    cols = (np.arange(kw) - cw) % shape[1]
    if kh <= shape[0] and kw <= shape[1]:
        out[rows[:, None], cols[None, :]] = kernel
    else:  # kernel larger than the image (tiny images): wrapped taps accumulate
        np.add.at(out, (rows[:, None], cols[None, :]), kernel)
    return out


def _uniform(rng: np.random.Generator, r: Range) -> float:
    lo, hi = r
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def render_streaks(
    shape: tuple[int, int],
    params: RainParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """The summed, clipped streak map ``Σ_l S_l`` (``H×W`` float32 in [0, 1]) for one image."""
    h, w = shape
    ph, pw = _next_fast_len(h), _next_fast_len(w)
    n = int(rng.integers(params.layers[0], params.layers[1] + 1))
    dominant = _uniform(rng, params.angle)
    blur = params.blur_prob > 0 and rng.random() < params.blur_prob
    sigma = _uniform(rng, params.blur_sigma) if blur else 0.0

    depths = _layer_depths(n, params, rng)

    stack = np.empty((2 * n, ph, pw), dtype=np.float32)
    gains = np.empty(n, dtype=np.float32)
    for i in range(n):
        near = 1.0 + params.depth * depths[i]  # 1 without depth: the draws as they were
        density = _uniform(rng, params.density) / near**2
        seeds = np.flatnonzero(rng.random(ph * pw, dtype=np.float32) < density)
        layer = stack[2 * i].reshape(-1)
        layer[:] = 0.0
        layer[seeds] = rng.uniform(0.5, 1.0, size=seeds.size)
        angle = dominant + (_uniform(rng, (-params.angle_spread, params.angle_spread)) if params.angle_spread else 0.0)
        length = _uniform(rng, params.length) * near
        thickness = _uniform(rng, params.thickness) * near
        stack[2 * i + 1] = _embed_wrapped(line_kernel(angle, length, thickness), (ph, pw))
        gains[i] = _uniform(rng, params.intensity) / near

    spec = np.fft.rfft2(stack)  # float32 in -> complex64
    fy = np.fft.fftfreq(ph).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(pw).astype(np.float32)[None, :]
    if params.depth_blur > 0:  # each layer its own blur: the near ones are defocused
        sigmas = (sigma + params.depth_blur * depths).astype(np.float32)
        blurs = np.exp(-2.0 * (math.pi * sigmas[:, None, None]) ** 2 * (fx * fx + fy * fy)[None])
        total = np.einsum("l,lij->ij", gains.astype(np.complex64), spec[0::2] * spec[1::2] * blurs)
    else:
        total = np.einsum("l,lij->ij", gains.astype(np.complex64), spec[0::2] * spec[1::2])
        if sigma > 0:
            total *= np.exp(-2.0 * (math.pi * sigma) ** 2 * (fx * fx + fy * fy))
    streaks = np.fft.irfft2(total, s=(ph, pw))[:h, :w]
    return np.clip(streaks, 0.0, 1.0).astype(np.float32, copy=False)


def _layer_depths(n: int, params: RainParams, rng: np.random.Generator) -> np.ndarray:
    """Each layer's depth in [0, 1], far to near (module docstring, "Depth"): all 0 without depth (no draw, so the
    presets without depth render as they always did), else evenly spaced, or U(0, 1) for a single layer."""
    if params.depth == 0 and params.depth_blur == 0:
        return np.zeros(n, dtype=np.float64)
    if n == 1:
        return np.array([rng.random()])
    return np.linspace(0.0, 1.0, n)


def jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (float in [0, 1] or uint8, ``H×W×3``) encoded as JPEG at ``quality`` (Pillow, 4:2:0) and decoded:
    float32 in [0, 1]. The one JPEG re-encoding of training data (rendered rain, the image gate's judgement views)."""
    u8 = to_u8(img)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return to_float(np.asarray(im.convert("RGB")))


def render_rain(clean: np.ndarray, params: RainParams, rng: np.random.Generator) -> np.ndarray:
    """Render rain on ``clean`` (``H×W×3`` float32 in [0, 1] or uint8); returns float32 in [0, 1]."""
    return render_rain_pair(clean, params, rng)[0]


def render_rain_pair(
    clean: np.ndarray, params: RainParams, rng: np.random.Generator, streaks_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(rainy, target)``: rain rendered on ``clean`` as :func:`render_rain` does (the same draws, the same rainy
    image), and the image a model should return for it: ``clean`` itself, or with ``streaks_only`` ``clean`` under
    the same veil and JPEG compression as the rainy one (``α·B + (1 − α)·A``, encoded at the same quality): only
    the streaks are rain to remove; fog and compression are the photo's and stay.

    >>> rng = np.random.default_rng(0)
    >>> clean = np.full((32, 32, 3), 0.4, np.float32)
    >>> rainy, target = render_rain_pair(clean, replace(PRESETS["real"], haze_prob=1.0, jpeg_prob=0.0), rng, True)
    >>> bool(target.mean() > 0.45), bool(np.allclose(target, target[0, 0]))  # the veil brightens it, evenly
    (True, True)
    """
    b = _as_float01(clean)
    if b.ndim != 3 or b.shape[2] != 3:
        raise ValueError(f"clean must be an H×W×3 RGB image, got shape {b.shape}")
    s = render_streaks(b.shape[:2], params, rng)
    out, target = b + s[:, :, None], b
    if params.haze_prob > 0 and rng.random() < params.haze_prob:
        alpha = _uniform(rng, params.alpha)
        a = _uniform(rng, params.atmospheric_light)
        out = alpha * out + (1.0 - alpha) * a
        if streaks_only:  # a blend of two images in [0, 1]: in [0, 1]
            target = (alpha * b + (1.0 - alpha) * a).astype(np.float32, copy=False)
    out = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
    if params.jpeg_prob > 0 and rng.random() < params.jpeg_prob:
        q = int(rng.integers(params.jpeg_quality[0], params.jpeg_quality[1] + 1))
        out = jpeg_round_trip(out, q)
        if streaks_only:
            target = jpeg_round_trip(target, q)
    return out, target


class RainRenderer:
    """Synthetic rain renderer: ``RainRenderer("heavy").render(clean, rng) -> rainy``.

    ``params`` is a :class:`RainParams`, a preset name from :data:`PRESETS` or a dict of
    :class:`RainParams` fields overriding the default ranges. Keyword overrides are applied on
    top (``RainRenderer("heavy", jpeg_prob=0)``).
    """

    def __init__(self, params: RainParams | str | dict[str, Any] = "medium", **overrides: Any) -> None:
        if isinstance(params, str):
            if params not in PRESETS:
                raise ValueError(f"unknown rain preset {params!r}; choose one of {sorted(PRESETS)}")
            params = PRESETS[params]
        elif isinstance(params, dict):
            params = RainParams(**params)
        elif not isinstance(params, RainParams):
            raise TypeError(f"params must be a RainParams, preset name or dict, got {type(params).__name__}")
        if overrides:
            params = replace(params, **overrides)
        self.params: RainParams = params

    def render(self, clean: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Rainy version of ``clean`` (``H×W×3``, float32 in [0, 1]); pass ``rng`` for reproducible output."""
        return render_rain(clean, self.params, rng if rng is not None else np.random.default_rng())

    def render_pair(
        self, clean: np.ndarray, rng: np.random.Generator | None = None, streaks_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(rainy, target)`` of :func:`render_rain_pair`."""
        return render_rain_pair(clean, self.params, rng if rng is not None else np.random.default_rng(), streaks_only)

    __call__ = render

    def __repr__(self) -> str:
        return f"RainRenderer({self.params!r})"
