"""A bounded pool of inference threads: at most ``workers`` jobs run, at most ``queue_size`` wait.

A request first takes a place (:meth:`InferencePool.reserve`, a context manager) before it reads
its upload, so the
uploads held in memory are bounded too; when every place is taken, :class:`QueueFull` says when to
come back (the HTTP layer turns it into ``503`` with ``Retry-After``). A place is given back when
its job has really finished in its thread (not when the waiting request is cancelled), so the
threads never hold more jobs than the pool admits.

>>> import asyncio
>>> pool = InferencePool(workers=1, queue_size=0)
>>> async def demo():
...     with pool.reserve() as place:
...         try:
...             pool.reserve()
...         except QueueFull as full:
...             print("full, retry after", full.retry_after, "s")
...         return await place.run(sum, [1, 2, 3])
>>> asyncio.run(demo())
full, retry after 1 s
6
>>> pool.admitted, pool.shutdown()
(0, None)
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Callable, TypeVar

__all__ = ["InferencePool", "Place", "QueueFull"]

T = TypeVar("T")


class QueueFull(Exception):
    """Every worker is busy and the waiting queue is full; try again in ``retry_after`` seconds."""

    def __init__(self, admitted: int, retry_after: int) -> None:
        super().__init__(f"server busy: {admitted} requests are running or queued; retry in {retry_after} s")
        self.retry_after = retry_after


class Place:
    """One admitted request's place in the pool; :meth:`run` hands a job to a worker thread."""

    def __init__(self, pool: InferencePool) -> None:
        self._pool = pool
        self._handed_over = False
        self.queue_ms = 0.0  # time the job waited for a free worker

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in a worker thread; the place is released when it finishes there."""
        if self._handed_over:
            raise RuntimeError("a place runs one job")
        self._handed_over = True
        submitted = time.perf_counter()

        def job() -> T:
            started = time.perf_counter()
            self.queue_ms = (started - submitted) * 1000.0
            self._pool._job_started()
            try:
                return fn(*args)
            finally:
                self._pool._job_done(time.perf_counter() - started)

        try:
            future: Future[T] = self._pool._executor.submit(job)
        except BaseException:
            self._pool._release()
            raise
        future.add_done_callback(self._release_if_cancelled)
        return await asyncio.wrap_future(future)

    def _release_if_cancelled(self, future: Future) -> None:
        if future.cancelled():  # dropped before a worker started it (shutdown)
            self._pool._release()

    def close(self) -> None:
        """Give the place back if no job took it over."""
        if not self._handed_over:
            self._handed_over = True
            self._pool._release()

    def __enter__(self) -> Place:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class InferencePool:
    """``workers`` inference threads with room for ``queue_size`` more jobs waiting."""

    def __init__(self, workers: int = 1, queue_size: int = 8) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.workers = workers
        self.queue_size = queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="derain-worker")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._mean_job_s = 1.0  # moving average of a job's time, for Retry-After

    @property
    def capacity(self) -> int:
        """Jobs admitted at most: running plus waiting."""
        return self.workers + self.queue_size

    @property
    def admitted(self) -> int:
        """Requests holding a place now (reading their upload, waiting, or running)."""
        return self._admitted

    def stats(self) -> dict[str, int]:
        """Workers, capacity, and the places taken now."""
        with self._lock:
            return {"workers": self.workers, "queue_size": self.queue_size, "admitted": self._admitted, "running": self._running}

    def retry_after(self) -> int:
        """Seconds after which a place is likely free (whole seconds, at least 1)."""
        waves = math.ceil(self._admitted / self.workers)
        return max(1, math.ceil(waves * self._mean_job_s))

    def reserve(self) -> Place:
        """Take a place, or raise :class:`QueueFull` at once; use it in ``with`` so it is given back (unless a job runs in it)."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise QueueFull(self._admitted, self.retry_after())
            self._admitted += 1
        return Place(self)

    def shutdown(self) -> None:
        """Stop the threads after the running jobs; waiting jobs are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def _job_started(self) -> None:
        with self._lock:
            self._running += 1

    def _job_done(self, seconds: float) -> None:
        with self._lock:
            self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * seconds
            self._admitted -= 1
            self._running -= 1
