"""Evaluate a model on a paired dataset under one or more protocols (``derain eval``).

>>> import derain, tempfile, pathlib, numpy as np
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for sub in ("rainy", "clean"):
...     (root / sub).mkdir()
...     Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(root / sub / "a.png")
>>> result = evaluate(derain.create_model("efderain-tiny"), root, progress=False, precision="fp32")
>>> result.n, sorted(result.metrics)
(1, ['y'])
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..inference.loading import ModelSource, load_derainer
from ..io.atomic import write_atomic
from ..io.images import save_image
from ..io.images import read_image
from ..io.progress import track
from ..metrics import get_protocol, quantize
from ..data.pairs import DatasetError, Pair, PairSet, find_pairs

__all__ = ["ImageResult", "EvalResult", "evaluate", "PROTOCOL_CHOICES", "expand_protocols"]

PROTOCOL_CHOICES = ("y", "efderain-rgb", "both")


def expand_protocols(protocol: str | Sequence[str]) -> list[str]:
    """``"both"`` → both protocols; a name or a list of names → validated list."""
    names = ["y", "efderain-rgb"] if protocol == "both" else [protocol] if isinstance(protocol, str) else list(protocol)
    for n in names:
        get_protocol(n)
    return names


@dataclass
class ImageResult:
    name: str
    seconds: float
    scores: dict[str, dict[str, float]]  # protocol -> psnr, ssim, input_psnr, input_ssim


@dataclass
class EvalResult:
    """Per-image and mean scores of one evaluation run."""

    dataset: str
    layout: str
    model: str
    device: str
    threads: int
    precision: str
    protocols: list[str]
    images: list[ImageResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Mean ``psnr``, ``ssim``, ``input_psnr``, ``input_ssim`` per protocol."""
        keys = ("psnr", "ssim", "input_psnr", "input_ssim")
        return {
            p: {k: float(np.mean([im.scores[p][k] for im in self.images])) for k in keys} for p in self.protocols
        } if self.images else {}

    @property
    def seconds_per_image(self) -> dict[str, float]:
        secs = [im.seconds for im in self.images]
        return {"mean": float(np.mean(secs)), "median": float(statistics.median(secs))} if secs else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "dataset": self.dataset,
            "layout": self.layout,
            "model": self.model,
            "metrics": self.metrics,
            "seconds_per_image": self.seconds_per_image,
            "device": self.device,
            "threads": self.threads,
            "precision": self.precision,
            "warnings": self.warnings,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A markdown summary table."""
        lines = [
            f"{self.model} on {self.dataset} ({self.layout}, n={self.n}; {self.device}, {self.threads} threads, {self.precision})",
            "",
            "| protocol | PSNR | SSIM | input PSNR | input SSIM |",
            "|---|---|---|---|---|",
        ]
        for p, m in self.metrics.items():
            lines.append(f"| {p} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['input_psnr']:.2f} | {m['input_ssim']:.4f} |")
        s = self.seconds_per_image
        if s:
            lines += ["", f"seconds per image: mean {s['mean']:.4f}, median {s['median']:.4f}"]
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """One row per image: name, seconds, then PSNR/SSIM/input PSNR/input SSIM per protocol."""
        cols = [f"{p}_{k}" for p in self.protocols for k in ("psnr", "ssim", "input_psnr", "input_ssim")]
        f = io.StringIO()
        writer = csv.writer(f)
        writer.writerow(["name", "seconds", *cols])
        for im in self.images:
            writer.writerow(
                [im.name, f"{im.seconds:.6f}", *(f"{im.scores[p][k]:.6f}" for p in self.protocols for k in ("psnr", "ssim", "input_psnr", "input_ssim"))]
            )
        write_atomic(path, f.getvalue())


def evaluate(
    model: ModelSource,
    dataset: str | os.PathLike[str] | PairSet | Sequence[Pair],
    protocols: str | Sequence[str] = "y",
    limit: int | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    precision: str = "auto",
    device: str = "cpu",
    layout: str = "auto",
    strict: bool = False,
    progress: bool = True,
    model_name: str | None = None,
) -> EvalResult:
    """Run ``model`` on every (rainy, clean) pair and score it under each protocol.

    ``limit`` takes the first N pairs in sorted file-name order. ``save_dir`` receives the
    predictions of the first protocol as PNG (named after the rainy file). Time per image
    is that of the first protocol's model call (not decoding, metrics or the other protocols).
    """
    names = expand_protocols(protocols)
    if isinstance(dataset, PairSet):
        pairset = dataset
    elif isinstance(dataset, (str, os.PathLike)):
        pairset = find_pairs(dataset, layout=layout, strict=strict, verify_sizes=True)
    else:
        pairset = PairSet(root=Path("."), layout="list", pairs=list(dataset), warnings=[])
    pairs = pairset.pairs[:limit] if limit else pairset.pairs
    derainer = load_derainer(model, device=device, precision=precision)
    result = EvalResult(
        dataset=str(pairset.root),
        layout=pairset.layout,
        model=model_name or derainer.name,
        device=str(derainer.device),
        threads=torch.get_num_threads(),
        precision=derainer.precision,
        protocols=names,
        warnings=list(pairset.warnings),
    )
    out_dir = Path(save_dir) if save_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for pair in track(pairs, desc="eval", unit="img", disable=not progress):  # a bar on a terminal, lines in a log
        rainy, clean = read_image(pair.rainy), read_image(pair.clean)
        if rainy.shape != clean.shape:
            raise DatasetError(f"size mismatch: {pair.rainy} is {rainy.shape[1]}x{rainy.shape[0]}, {pair.clean} is {clean.shape[1]}x{clean.shape[0]}")
        scores: dict[str, dict[str, float]] = {}
        seconds = 0.0
        for n, name in enumerate(names):
            protocol = get_protocol(name)
            model_input = protocol.model_input(rainy)
            t0 = time.perf_counter()
            pred = derainer(model_input)
            if n == 0:  # time one model call per image (the first protocol's)
                seconds = time.perf_counter() - t0
            psnr, ssim = protocol.score(pred, clean)
            in_psnr, in_ssim = protocol.score(model_input, clean)
            scores[name] = {"psnr": psnr, "ssim": ssim, "input_psnr": in_psnr, "input_ssim": in_ssim}
            if out_dir and n == 0:
                save_image(Image.fromarray(quantize(pred, protocol.quantize_mode)), out_dir / f"{pair.name}.png", "PNG")
        result.images.append(ImageResult(pair.name, seconds, scores))
    return result
