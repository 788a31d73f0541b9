"""Wall-clock timing with warm-up; median/min/max in milliseconds."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["Timing", "time_call", "machine_description"]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int


def time_call(fn: Callable[[], object], warmup: int = 3, repeats: int = 10, min_seconds: float = 0.0) -> Timing:
    """Time ``fn()`` ``repeats`` times (more until ``min_seconds`` have passed) after ``warmup`` calls.

    CUDA work is synchronised before each clock read.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Timing(statistics.median(samples), min(samples), max(samples), len(samples))


def machine_description() -> str:
    """CPU model, cores, torch version and threads, for benchmark headers."""
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
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__} ({flags})"
