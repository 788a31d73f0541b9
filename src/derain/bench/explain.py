"""What the kernel prediction network does, pixel by pixel (``derain explain``; paper Fig. 2c).

For an image, the model's per-pixel kernels are drawn at a few positions — picked automatically
as the pixels the model changes most (rain) and textured pixels it leaves alone (background),
or given — at each dilation (the same 3×3 weights placed ``d`` pixels apart), next to a crop
around the pixel and the fused footprint (each dilation's kernel weighted by the fusion conv's
same-channel centre weight, summed: an approximation that ignores the fusion's cross-channel
and spatial terms). Two heat maps show where the network sees rain: the centre-tap weight (1 =
keep the pixel, low = replace it from its neighbours) and the entropy of the kernel's absolute
weights (0 = one tap, 1 = spread evenly over all taps).

Example:
    >>> import derain
    >>> model = derain.create_model("efderain-tiny")
    >>> e = explain_image(model, np.random.default_rng(0).random((40, 56, 3), dtype=np.float32), n_points=2)
    >>> e.kernels.shape, len(e.points), e.centre_weight.shape
    ((3, 3, 3, 40, 56), 2, (40, 56))
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgument
from ..io.atomic import write_atomic
from ..io.pixels import luma
from ..models.efderain import EfDeRain
from ..ops.padding import pad_canvas
from .plotting import pyplot

__all__ = [
    "KernelExplanation",
    "predict_kernels",
    "centre_weight_map",
    "kernel_entropy_map",
    "pick_points",
    "dilated_footprint",
    "explain_image",
    "plot_explanation",
]


def predict_kernels(model: EfDeRain, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(kernels, output)`` for an ``H×W×3`` float image: kernels ``(C, k, k, H, W)``, output ``H×W×3`` in [0, 1]."""
    if not isinstance(model, EfDeRain):
        raise InvalidArgument(f"explain needs an EfDeRain model (per-pixel kernels), got {type(model).__name__}", option="--model")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        padded, (top, left) = pad_canvas(x, model.border, model.config.multiple, model.centred)  # the forward pass's canvas
        kernels = model.predict_kernels(padded)
        out = model(x).clamp(0, 1)
    k, c, (h, w) = model.config.kernel_size, model.config.in_channels, x.shape[-2:]
    kern = kernels[0, :, top : top + h, left : left + w].float().reshape(c, k, k, h, w).numpy()
    return kern, out[0].permute(1, 2, 0).float().numpy()


def centre_weight_map(kernels: np.ndarray) -> np.ndarray:
    """Centre-tap weight per pixel, mean over colour channels: ``(C, k, k, H, W)`` → ``(H, W)``.

    >>> k = np.zeros((3, 3, 3, 2, 2)); k[:, 1, 1] = 1.0
    >>> centre_weight_map(k).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    half = kernels.shape[1] // 2
    return kernels[:, half, half].mean(axis=0)


def kernel_entropy_map(kernels: np.ndarray) -> np.ndarray:
    """Entropy of ``|weights|`` (normalised to sum 1) over the k² taps, divided by log k², mean over channels.

    >>> one_tap = np.zeros((1, 3, 3, 1, 1)); one_tap[0, 1, 1] = 1.0
    >>> even = np.ones((1, 3, 3, 1, 1))
    >>> float(kernel_entropy_map(one_tap)[0, 0]), round(float(kernel_entropy_map(even)[0, 0]), 6)
    (0.0, 1.0)
    """
    c, k = kernels.shape[:2]
    a = np.abs(kernels.reshape(c, k * k, *kernels.shape[3:])).astype(np.float64)
    p = a / np.maximum(a.sum(axis=1, keepdims=True), 1e-12)
    ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1) / np.log(k * k)
    return ent.mean(axis=0).astype(np.float32)


def pick_points(image: np.ndarray, output: np.ndarray, n: int = 4, spacing: int = 24) -> list[tuple[int, int, str]]:
    """``n`` positions ``(y, x, kind)``: about half where the model changes the image most (``rain``),
    the rest textured pixels it changes least (``background``), at least ``spacing`` pixels apart
    and away from the border."""
    h, w = image.shape[:2]
    spacing = max(1, min(spacing, min(h, w) // 6))  # small images: closer points
    change = np.abs(luma(image) - luma(output))
    gy, gx = np.gradient(luma(image))
    texture = np.hypot(gy, gx)
    margin = min(8, h // 4, w // 4)
    valid = np.zeros((h, w), bool)
    valid[margin : h - margin, margin : w - margin] = True
    n_rain = (n + 1) // 2
    # textured: the top 30 % of gradient magnitude, and more than a quarter of a grey level per pixel
    top30 = float(np.quantile(texture[valid], 0.7)) if valid.any() else 0.0
    textured = valid & (texture >= max(top30, 1e-3))
    rain_order = np.argsort(-np.where(valid, change, -np.inf), axis=None)
    candidates = np.flatnonzero(textured)
    background_order = candidates[np.argsort(change.ravel()[candidates], kind="stable")]
    points: list[tuple[int, int, str]] = []
    for kind, order, want in (("rain", rain_order, n_rain), ("background", background_order, n - n_rain)):
        taken = 0
        for flat in order:
            if taken >= want:
                break
            y, x = divmod(int(flat), w)
            if valid[y, x] and all(max(abs(y - py), abs(x - px)) >= spacing for py, px, _ in points):
                points.append((y, x, kind))
                taken += 1
    return points


def dilated_footprint(kernel: np.ndarray, dilation: int, size: int | None = None) -> np.ndarray:
    """A ``k×k`` kernel placed on a ``size×size`` grid with its taps ``dilation`` apart (zeros between).

    >>> dilated_footprint(np.arange(9.0).reshape(3, 3), 2)
    array([[0., 0., 1., 0., 2.],
           [0., 0., 0., 0., 0.],
           [3., 0., 4., 0., 5.],
           [0., 0., 0., 0., 0.],
           [6., 0., 7., 0., 8.]])
    """
    k = kernel.shape[0]
    half = k // 2
    size = size or 2 * half * dilation + 1
    out = np.zeros((size, size), dtype=np.float64)
    c = size // 2
    for i in range(k):
        for j in range(k):
            out[c + (i - half) * dilation, c + (j - half) * dilation] += kernel[i, j]
    return out


@dataclass
class KernelExplanation:
    image: np.ndarray  # H×W×3 in [0, 1]
    output: np.ndarray  # H×W×3 in [0, 1]
    kernels: np.ndarray  # (C, k, k, H, W)
    dilations: tuple[int, ...]
    fusion: np.ndarray  # (C, len(dilations)): fusion conv's same-channel centre weights (1 for v1)
    points: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def centre_weight(self) -> np.ndarray:
        return centre_weight_map(self.kernels)

    @property
    def entropy(self) -> np.ndarray:
        return kernel_entropy_map(self.kernels)

    def kernel_at(self, y: int, x: int) -> np.ndarray:
        """The ``k×k`` kernel at ``(y, x)``, mean over colour channels."""
        return self.kernels[:, :, :, y, x].mean(axis=0)

    def fused_footprint(self, y: int, x: int) -> np.ndarray:
        """Σ_d fusion weight × kernel at dilation d, on the largest dilation's grid, mean over channels."""
        k = self.kernels.shape[1]
        size = 2 * (k // 2) * max(self.dilations) + 1
        total = np.zeros((size, size))
        for c in range(self.kernels.shape[0]):
            for n, d in enumerate(self.dilations):
                total += self.fusion[c, n] * dilated_footprint(self.kernels[c, :, :, y, x], d, size)
        return total / self.kernels.shape[0]


def explain_image(
    model: nn.Module, image: np.ndarray, points: list[tuple[int, int]] | None = None, n_points: int = 4
) -> KernelExplanation:
    """Kernels, output and positions (given ``(y, x)`` or picked by :func:`pick_points`) for an ``H×W×3`` image."""
    model = model.eval().float()
    kernels, output = predict_kernels(model, image)  # type: ignore[arg-type]
    cfg = model.config
    c, nd = cfg.in_channels, len(cfg.dilations)
    if cfg.fusion:
        wt = model.fusion_params()[0].detach().float().numpy()  # as applied
        fusion = np.array([[wt[ch, n * c + ch, 1, 1] for n in range(nd)] for ch in range(c)])
    else:
        fusion = np.ones((c, nd))
    h, w = image.shape[:2]
    if points:
        for y, x in points:
            if not (0 <= y < h and 0 <= x < w):
                raise InvalidArgument(f"point (y={y}, x={x}) is outside the {w}×{h} image", option="--point")
        chosen = [(int(y), int(x), "given") for y, x in points]
    else:
        chosen = pick_points(image, output, n_points)
    return KernelExplanation(image, output, kernels, tuple(cfg.dilations), fusion, chosen)


def plot_explanation(e: KernelExplanation, path: str | os.PathLike[str], crop: int = 33) -> None:
    """One PNG: input, output and the two heat maps with the points marked; then one row per point
    with the crop around it, its kernel at each dilation and the fused footprint."""
    plt = pyplot()
    nd = len(e.dilations)
    cols = max(4, nd + 2)
    rows = 1 + len(e.points)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    panels = [
        (e.image, "input", None),
        (e.output, "output", None),
        (e.centre_weight, "centre-tap weight", "viridis"),
        (e.entropy, "kernel entropy", "magma"),
    ]
    for ax, (img, title, cmap) in zip(axes[0], panels):
        shown = ax.imshow(np.clip(img, 0, 1) if cmap is None else img, cmap=cmap)
        if cmap:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title, fontsize=9)
        for n, (y, x, kind) in enumerate(e.points):
            ax.plot(x, y, marker="o", markersize=7, markerfacecolor="none", markeredgecolor="red" if kind == "rain" else "cyan")
            ax.annotate(str(n + 1), (x, y), xytext=(4, -4), textcoords="offset points", color="yellow", fontsize=8)
    half = crop // 2
    hgt, wid = e.image.shape[:2]
    for r, (y, x, kind) in enumerate(e.points, start=1):
        y0, x0 = min(max(0, y - half), max(0, hgt - crop)), min(max(0, x - half), max(0, wid - crop))
        ax = axes[r, 0]
        ax.imshow(np.clip(e.image[y0 : y0 + crop, x0 : x0 + crop], 0, 1), interpolation="nearest")
        ax.plot(x - x0, y - y0, marker="+", color="red", markersize=10)
        ax.set_title(f"{r}: {kind} (y={y}, x={x})", fontsize=8)
        kernel = e.kernel_at(y, x)
        size = 2 * (kernel.shape[0] // 2) * max(e.dilations) + 1
        grids = [dilated_footprint(kernel, d, size) for d in e.dilations] + [e.fused_footprint(y, x)]
        lim = max(1e-6, max(float(np.abs(g).max()) for g in grids))
        titles = [f"dilation {d}" for d in e.dilations] + ["fused"]
        for c, (g, t) in enumerate(zip(grids, titles), start=1):
            if c >= cols:
                break
            axes[r, c].imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
            axes[r, c].set_title(t, fontsize=8)
    fig.suptitle("Per-pixel kernels (mean over colour channels; red positive, blue negative)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getbuffer())
