"""Wall-clock timing with warm-up; median/min/max in milliseconds; FLOP counting; machine description."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["Timing", "time_call", "model_gflops", "machine_description"]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int


def time_call(
    fn: Callable[[], object],
    warmup: int = 3,
    repeats: int = 10,
    min_seconds: float = 0.0,
    device: str | torch.device = "cpu",
) -> Timing:
    """Time ``fn()`` ``repeats`` times (more until ``min_seconds`` have passed) after ``warmup`` calls.

    On CUDA each call is timed with CUDA events and the device is synchronised before reading
    them; on the CPU with ``time.perf_counter``.

    Example:
        >>> t = time_call(lambda: sum(range(100)), warmup=1, repeats=5)
        >>> t.repeats, t.min_ms <= t.median_ms <= t.max_ms
        (5, True)
    """
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_seconds:
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(statistics.median(samples), min(samples), max(samples), len(samples))


def model_gflops(model: nn.Module, x: torch.Tensor) -> float:
    """GFLOPs of one forward pass on ``x`` (convolutions and matrix products, as torch's FLOP counter counts).

    Example:
        >>> round(model_gflops(nn.Conv2d(8, 16, 3, padding=1), torch.zeros(1, 8, 100, 100)), 5)  # 2·8·9·16·100²
        0.02304
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def machine_description() -> str:
    """CPU model, cores, torch version and threads (and the GPU, where there is one), for benchmark headers."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = torch.backends.cpu.get_cpu_capability()
    text = f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__} ({flags})"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(0)}"
    return text
