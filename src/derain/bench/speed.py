"""Speed of models side by side in one process (``derain bench speed``; paper Fig. 1/4 x-axis).

Every model is timed in the same process, on the same random input, after warm-up: median / min /
max milliseconds per image, for each image size, batch size and precision asked for, plus GFLOPs
per image, achieved GFLOP/s, and two ratios measured in the same run: speed-up over the released
code path (``efderain-paper`` computed the way the released code does: fp32, eager, the stack of
shifted views) and over PReNet (at its fastest precision for that size and batch).

Each cell gets about ``max_cell_seconds``: a cell whose single call is estimated to take more than
half of it (so that not even a warm-up and one timed call fit) is skipped and says so; slow cells
get fewer repeats. The estimate scales the model's slowest measured time per pixel at that
precision (larger inputs fall out of the caches and cost more per pixel), so the cheapest cell of
each precision (measured first) is always run. Each precision
times its own copy of the model (channels_last for reduced precision), so fp32 rows are plain
fp32 eager, like the released code.

Example:
    >>> report = run_speed(["efderain-tiny"], sizes=[(32, 48)], batches=[1], precisions=["fp32"], repeats=2, warmup=1)
    >>> [(r.model, r.size, r.batch, r.precision) for r in report.rows]
    [('efderain-tiny', (32, 48), 1, 'fp32')]
    >>> report.rows[0].ms > 0
    True
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InvalidArgument
from ..inference.precision import autocast, input_layout, prepare_model, resolve_precision
from ..io.atomic import write_atomic
from .timing import machine_description, model_gflops, time_call

__all__ = ["RELEASED_PATH", "DEFAULT_MODELS", "SpeedRow", "SpeedReport", "build_speed_model", "run_speed"]

RELEASED_PATH = "efderain-paper (released path)"
DEFAULT_MODELS = ("default", "fast", "efderain-paper", RELEASED_PATH, "prenet")


def build_speed_model(name: str) -> nn.Module:
    """A model to time: a registered name (bundled weights where it has them, else random init),
    or :data:`RELEASED_PATH` (the paper network with the released code's stacked-shift filtering)."""
    import derain
    from derain.models.registry import model_spec

    if name == RELEASED_PATH:
        model = derain.create_model("efderain-paper")
        model.filter_implementation = "reference"
        return model
    return derain.create_model(name, pretrained=bool(model_spec(name).weights))


@dataclass
class SpeedRow:
    model: str
    size: tuple[int, int]  # (H, W)
    batch: int
    precision: str
    ms: float = float("nan")  # median per image
    min_ms: float = float("nan")
    max_ms: float = float("nan")
    repeats: int = 0
    gflops: float = float("nan")  # per image
    skipped: str = ""

    @property
    def gflop_per_s(self) -> float:
        return self.gflops / (self.ms / 1e3) if self.ms == self.ms and self.ms > 0 else float("nan")


@dataclass
class SpeedReport:
    rows: list[SpeedRow] = field(default_factory=list)
    machine: str = ""
    device: str = "cpu"
    threads: int = 1

    def _lookup(self, model: str, size: tuple[int, int], batch: int, precision: str | None = None) -> float | None:
        times = [
            r.ms for r in self.rows
            if r.model == model and r.size == size and r.batch == batch and not r.skipped and (precision is None or r.precision == precision)
        ]
        return min(times) if times else None

    def speedup_vs_released(self, row: SpeedRow) -> float | None:
        """Released-path time / this row's time (same size and batch; the released path runs in fp32)."""
        ref = self._lookup(RELEASED_PATH, row.size, row.batch, "fp32")
        return ref / row.ms if ref and not row.skipped else None

    def speedup_vs_prenet(self, row: SpeedRow) -> float | None:
        """PReNet's time at its fastest precision / this row's time (same size and batch)."""
        ref = self._lookup("prenet", row.size, row.batch)
        return ref / row.ms if ref and not row.skipped else None

    def fastest(self) -> list[tuple[str, tuple[int, int], int, SpeedRow]]:
        """Each model's fastest row per (size, batch)."""
        best: dict[tuple[str, tuple[int, int], int], SpeedRow] = {}
        for r in self.rows:
            key = (r.model, r.size, r.batch)
            if not r.skipped and (key not in best or r.ms < best[key].ms):
                best[key] = r
        return [(*k, v) for k, v in best.items()]

    def table(self) -> str:
        """Markdown: one row per (model, size, batch, precision), then each model at its fastest precision."""
        f = lambda v, d=1: "—" if v is None or v != v else f"{v:.{d}f}"  # noqa: E731
        lines = [
            f"Machine: {self.machine}; device {self.device}, {self.threads} threads",
            "",
            "| model | size (W×H) | batch | precision | ms/image median | min | max | runs | GFLOPs/image | GFLOP/s | × vs released path | × vs PReNet |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            size = f"{r.size[1]}×{r.size[0]}"
            if r.skipped:
                lines.append(f"| {r.model} | {size} | {r.batch} | {r.precision} | skipped: {r.skipped} | | | | {f(r.gflops)} | | | |")
                continue
            lines.append(
                f"| {r.model} | {size} | {r.batch} | {r.precision} | {f(r.ms)} | {f(r.min_ms)} | {f(r.max_ms)} | {r.repeats} | "
                f"{f(r.gflops)} | {f(r.gflop_per_s)} | {f(self.speedup_vs_released(r), 2)} | {f(self.speedup_vs_prenet(r), 2)} |"
            )
        lines += ["", "Each model at its fastest precision:", "", "| model | size (W×H) | batch | precision | ms/image | × vs released path | × vs PReNet |", "|---|---|---:|---|---:|---:|---:|"]
        for model, size, batch, r in self.fastest():
            lines.append(
                f"| {model} | {size[1]}×{size[0]} | {batch} | {r.precision} | {f(r.ms)} | {f(self.speedup_vs_released(r), 2)} | {f(self.speedup_vs_prenet(r), 2)} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = asdict(r)
            d.update(size=list(r.size), gflop_per_s=r.gflop_per_s, speedup_vs_released=self.speedup_vs_released(r),
                     speedup_vs_prenet=self.speedup_vs_prenet(r))
            rows.append(d)
        return {"machine": self.machine, "device": self.device, "threads": self.threads, "rows": rows}

    def write_json(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, json.dumps(self.to_dict(), indent=2))

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        rows = self.to_dict()["rows"]
        fh = io.StringIO()
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "size": f"{row['size'][1]}x{row['size'][0]}"})
        write_atomic(path, fh.getvalue())


def _cells(sizes: Sequence[tuple[int, int]], batches: Sequence[int]) -> list[tuple[tuple[int, int], int]]:
    """(size, batch) cells, cheapest first, so that estimates for the expensive ones come from measurements."""
    return sorted(((tuple(s), b) for s in sizes for b in batches), key=lambda c: c[0][0] * c[0][1] * c[1])  # type: ignore[misc]


def run_speed(
    models: Sequence[str] = DEFAULT_MODELS,
    sizes: Sequence[tuple[int, int]] = ((321, 481), (1080, 1920)),
    batches: Sequence[int] = (1, 8),
    precisions: Sequence[str] = ("fp32", "bf16"),
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    max_cell_seconds: float = 60.0,
    progress: Any = None,
) -> SpeedReport:
    """Time every model on every (size, batch, precision); see the module docstring.

    ``progress`` (optional) is called with each finished :class:`SpeedRow`.
    """
    import derain

    unknown = [m for m in models if m != RELEASED_PATH and m not in derain.list_models()]
    if unknown:
        raise InvalidArgument(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(derain.list_models())} or {RELEASED_PATH!r}")
    torch.set_flush_denormal(True)  # random released-init weights otherwise produce denormals: 10-40x slower
    report = SpeedReport(machine=machine_description(), device=device, threads=torch.get_num_threads())
    generator = torch.Generator().manual_seed(0)
    for name in models:
        base = build_speed_model(name).eval()
        gflops = {tuple(size): model_gflops(base, torch.zeros(1, 3, *size)) for size in sizes}  # on the CPU, before any move
        prepared = {}  # precision -> a copy of the model in that precision's device and memory format
        per_pixel_ms: dict[str, float] = {}  # precision -> slowest measured ms per pixel (big inputs fall out of cache)
        for size, batch in _cells(sizes, batches):
            for precision in precisions:
                precision = resolve_precision(precision, device)
                if name == RELEASED_PATH and precision != "fp32":
                    continue  # the released code computes in fp32 only
                row = SpeedRow(name, size, batch, precision, gflops=gflops[size])
                pixels = size[0] * size[1] * batch
                estimate = per_pixel_ms.get(precision, 0.0) * pixels / 1e3  # seconds per call
                if estimate > max_cell_seconds / 2:  # not even one warm-up and one timed call fit
                    row.skipped = f"est. {estimate:.0f} s per call > budget"
                else:
                    if precision not in prepared:
                        prepared[precision] = prepare_model(copy.deepcopy(base), precision, device)
                    model = prepared[precision]
                    x = input_layout(torch.rand(batch, 3, *size, generator=generator).to(device), model, precision)
                    slow = estimate > 1.0
                    n_warm = 1 if slow else warmup
                    n_rep = max(1, min(repeats, int((max_cell_seconds - n_warm * estimate) / estimate))) if slow else repeats

                    def call() -> None:
                        with torch.inference_mode(), autocast(precision, device):
                            model(x)

                    t = time_call(call, warmup=n_warm, repeats=n_rep, device=device)
                    row.ms, row.min_ms, row.max_ms, row.repeats = t.median_ms / batch, t.min_ms / batch, t.max_ms / batch, t.repeats
                    per_pixel_ms[precision] = max(per_pixel_ms.get(precision, 0.0), t.min_ms / pixels)
                report.rows.append(row)
                if progress:
                    progress(row)
    return report
