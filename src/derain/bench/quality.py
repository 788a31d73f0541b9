"""Quality vs time (``derain bench quality``; paper Fig. 1 and Fig. 4).

Each model is evaluated on one paired folder under one protocol; its time is the median model
time per image of that evaluation (one process, same precision and threads for every model).
The result is a markdown table, JSON/CSV, and a PNG with PSNR vs ms and SSIM vs ms (log x).

Model specs: ``NAME`` (registered, with its bundled weights), ``NAME=PATH`` (PATH loaded into NAME's
architecture, e.g. ``prenet=Rain100L.pth``; labelled ``NAME (file)``), or ``PATH`` (a model file
with its config; labelled ``folder/file``, e.g. ``v1/best.safetensors``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from torch import nn

from ..evaluation.evaluate import evaluate
from ..inference.loading import load_derainer, load_source, parse_source
from ..data.pairs import find_pairs
from ..io.atomic import write_atomic
from .plotting import pyplot
from .timing import machine_description

__all__ = ["QualityPoint", "load_model_spec", "spec_label", "run_quality", "quality_table", "plot_quality", "write_points"]


def load_model_spec(spec: str) -> tuple[str, nn.Module]:
    """``(label, model)`` for ``NAME``, ``NAME=PATH`` or ``PATH`` (see the module docstring), loaded by
    :func:`~derain.inference.loading.load_source`.

    A bare ``NAME`` must have bundled weights: quality is never measured on a random network.
    """
    return spec_label(spec), load_source(spec)


def spec_label(spec: str) -> str:
    """How a model spec is labelled in tables: ``NAME``, ``NAME (file)`` or ``folder/file``.

    >>> spec_label("fast"), spec_label("prenet=peers/Rain100L.pth")
    ('fast', 'prenet (Rain100L.pth)')
    """
    name, path, onnx = parse_source(spec)
    path = path or onnx
    if path is None:
        return spec
    if name is not None:
        return f"{name} ({Path(path).name})"
    return f"{Path(path).parent.name}/{Path(path).name}" if Path(path).parent.name else Path(path).name


@dataclass
class QualityPoint:
    model: str
    dataset: str
    protocol: str
    n: int
    psnr: float
    ssim: float
    input_psnr: float
    input_ssim: float
    ms: float  # median model time per image
    params: int


def run_quality(
    models: Sequence[str],
    dataset: str | os.PathLike[str],
    protocol: str = "y",
    precision: str = "fp32",
    limit: int | None = None,
    progress: Callable[[QualityPoint], None] | None = None,
) -> list[QualityPoint]:
    """Evaluate every model spec on ``dataset``; one :class:`QualityPoint` per model.

    Every spec is loaded before the first evaluation (a bad one ends the run before it starts), each model
    prepared for ``precision`` as ``derain run`` prepares it.
    """
    pairs = find_pairs(dataset)
    loaded = [(spec_label(spec), load_derainer(spec, precision=precision)) for spec in models]
    points = []
    for label, derainer in loaded:
        r = evaluate(derainer, pairs, protocol, limit=limit, progress=False, model_name=label)
        m = r.metrics[protocol]
        point = QualityPoint(
            label, Path(dataset).name, protocol, r.n, m["psnr"], m["ssim"], m["input_psnr"], m["input_ssim"],
            r.seconds_per_image["median"] * 1e3, derainer.params,
        )
        points.append(point)
        if progress:
            progress(point)
    return points


def quality_table(points: Sequence[QualityPoint], precision: str = "fp32") -> str:
    """Markdown table of the points (and the machine they were measured on)."""
    lines = [
        f"Machine: {machine_description()}; precision {precision}",
        "",
        "| model | dataset | protocol | n | PSNR | SSIM | input PSNR / SSIM | ms/image (median) | params |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.model} | {p.dataset} | {p.protocol} | {p.n} | {p.psnr:.2f} | {p.ssim:.4f} | "
            f"{p.input_psnr:.2f} / {p.input_ssim:.4f} | {p.ms:.1f} | {p.params:,} |"
        )
    return "\n".join(lines)


def write_points(points: Sequence[QualityPoint], path: str | os.PathLike[str], format: str = "json") -> None:
    """The points as ``json`` (with the machine) or ``csv``."""
    if format not in ("json", "csv"):
        raise ValueError(f"format must be 'json' or 'csv', got {format!r}")
    rows = [asdict(p) for p in points]
    if format == "json":
        write_atomic(path, json.dumps({"machine": machine_description(), "points": rows}, indent=2))
        return
    fh = io.StringIO()
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["model"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, fh.getvalue())


def plot_quality(points: Sequence[QualityPoint], path: str | os.PathLike[str], title: str | None = None) -> None:
    """PSNR vs ms and SSIM vs ms (log-scale x), one labelled point per model, as a PNG at ``path``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for p in points:
            ax.scatter(p.ms, getattr(p, key), s=40)
            ax.annotate(p.model, (p.ms, getattr(p, key)), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if points:
            ax.axhline(getattr(points[0], f"input_{key}"), color="grey", linestyle=":", linewidth=1, label="rainy input")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("ms per image (log scale)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if points:
        p0 = points[0]
        fig.suptitle(title or f"{p0.dataset}, protocol {p0.protocol}, n={p0.n}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getbuffer())
