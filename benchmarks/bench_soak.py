"""Soak test of ``derain serve`` on loopback: memory, open files, latency and errors over a long run.

    python benchmarks/bench_soak.py [--requests 20000] [--clients 8] [--model default|fast] [--workers 1]
        [--threads N] [--slices 10] [--warmup-slices 1] [--max-minutes 90] [--photos 48]
        [--data ../shared/data/clean] [--timeout 120] [--json soak.json]

    python benchmarks/bench_soak.py --requests 300 --clients 4      # a short run (not a soak verdict)

Starts ``derain serve --port 0`` on ``127.0.0.1`` (:func:`derain.service.testing.running_server`), cuts
``--photos`` real photos from the clean-photo folder (``--data``; every image in it, recursively) to 640×480
(centre crop to 4:3, resized) and encodes them as JPEG (quality 90) at run time, then sends ``--requests``
``POST /v1/derain`` from ``--clients`` threads, each on its own keep-alive connection, each request a photo
of the set in turn. Bounded: the request count is fixed, each request has a timeout, the whole run stops at
``--max-minutes``, and only loopback is contacted.

While it runs, a sampler reads the server's RSS (``/proc/PID/status``) and open file descriptors
(``/proc/PID/fd``) every second. The run is cut into ``--slices`` equal time slices; per slice the table
shows requests, errors, p50/p99 latency (client side, whole request), RSS and open files. The first
``--warmup-slices`` are warm-up (the model's first passes, allocator growth). Verdict against the targets:

* RSS growth after warm-up at most 10 % (the last slice's median RSS against the first slice after warm-up);
* open files flat (the last slice's median count at most 2 above the first slice after warm-up);
* p99 at most 3× p50 (over all requests after warm-up);
* 0 errors (anything but a 200 with a JPEG of 640×480: another status, a timeout, a connection error).

A run shorter than 15 minutes is reported as a short run: its figures are a smoke test, not a soak verdict.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from derain.bench.timing import machine_description
from derain.service.testing import ServerStartError, running_server

SIZE = (640, 480)
SOAK_SECONDS = 15 * 60
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clean"
TARGET_RSS_GROWTH = 0.10
TARGET_P99_OVER_P50 = 3.0
TARGET_FD_SLACK = 2


def photo_bodies(folder: Path, count: int, quality: int = 90) -> list[bytes]:
    """``count`` real photos from ``folder`` (recursively, sorted), centre-cropped to 4:3 and resized to 640×480, as JPEG."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"))
    if not files:
        raise SystemExit(f"{folder}: no photos found (--data names the clean-photo folder)")
    step = max(1, len(files) // count)
    bodies = []
    for path in files[::step][:count]:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            cw, ch = (w, w * 3 // 4) if w * 3 <= h * 4 else (h * 4 // 3, h)
            left, top = (w - cw) // 2, (h - ch) // 2
            img = img.crop((left, top, left + cw, top + ch)).resize(SIZE, Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            bodies.append(buf.getvalue())
    return bodies


@dataclass
class Sample:
    t: float  # seconds since the start of the load
    rss_mb: float
    fds: int


@dataclass
class Done:
    t: float  # when the answer was complete, seconds since the start
    ms: float
    error: str | None


def proc_sample(pid: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) of process ``pid``."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def sampler(pid: int, start: float, stop: threading.Event, out: list[Sample], every: float = 1.0) -> None:
    while not stop.is_set():
        try:
            rss, fds = proc_sample(pid)
        except OSError:
            return  # the server is gone: the clients' errors will say so
        out.append(Sample(time.perf_counter() - start, rss, fds))
        stop.wait(every)


def load(url: str, bodies: list[bytes], n_requests: int, clients: int, timeout: float, deadline: float, start: float) -> list[Done]:
    address = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    counter = iter(range(n_requests))
    done: list[Done] = []

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(address.hostname, address.port, timeout=timeout)

    def client() -> None:
        conn = connect()
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                error = None
                try:
                    conn.request("POST", "/v1/derain", body=bodies[i % len(bodies)], headers={"Content-Type": "image/jpeg"})
                    response = conn.getresponse()
                    data = response.read()
                    if response.status != 200:
                        error = f"HTTP {response.status}"
                    else:
                        with Image.open(io.BytesIO(data)) as img:  # the header only: cheap beside the server's work
                            if img.size != SIZE or img.format != "JPEG":
                                error = f"wrong answer {img.format} {img.size}"
                except (OSError, http.client.HTTPException) as err:
                    error = type(err).__name__
                    conn.close()
                    conn = connect()
                t1 = time.perf_counter()
                with lock:
                    done.append(Done(t1 - start, (t1 - t0) * 1000, error))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"soak-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


@dataclass
class Slice:
    start_s: float
    end_s: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    rss_mb: float  # median of the samples in the slice
    fds: float  # median


@dataclass
class SoakResult:
    machine: str
    model: str
    precision: str
    workers: int
    clients: int
    requests_asked: int
    requests_done: int
    seconds: float
    short_run: bool
    slices: list[Slice]
    errors: dict[str, int]
    rss_growth: float
    fd_growth: float
    p50_ms: float
    p99_ms: float
    verdict: dict[str, bool] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(done: list[Done], samples: list[Sample], seconds: float, n_slices: int, warmup: int) -> tuple[list[Slice], dict[str, Any]]:
    width = seconds / n_slices
    slices = []
    for k in range(n_slices):
        lo, hi = k * width, (k + 1) * width if k < n_slices - 1 else float("inf")
        in_slice = [d for d in done if lo <= d.t < hi]
        ok = [d.ms for d in in_slice if d.error is None]
        smp = [s for s in samples if lo <= s.t < hi] or [min(samples, key=lambda s: abs(s.t - lo))] if samples else []
        slices.append(Slice(lo, min(hi, seconds), len(in_slice), sum(d.error is not None for d in in_slice), percentile(ok, 50),
                            percentile(ok, 99), statistics.median(s.rss_mb for s in smp) if smp else float("nan"),
                            statistics.median(s.fds for s in smp) if smp else float("nan")))
    first, last = slices[min(warmup, n_slices - 1)], slices[-1]
    after = [d.ms for d in done if d.error is None and d.t >= first.start_s]
    return slices, {
        "rss_growth": (last.rss_mb - first.rss_mb) / first.rss_mb if first.rss_mb else float("nan"),
        "fd_growth": last.fds - first.fds,
        "p50_ms": percentile(after, 50),
        "p99_ms": percentile(after, 99),
    }


def table(r: SoakResult) -> str:
    lines = ["| slice | time (s) | requests | errors | p50 (ms) | p99 (ms) | RSS (MB) | open files |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for k, s in enumerate(r.slices):
        lines.append(f"| {k + 1} | {s.start_s:.0f}–{s.end_s:.0f} | {s.requests} | {s.errors} | {s.p50_ms:.0f} | {s.p99_ms:.0f} | "
                     f"{s.rss_mb:.0f} | {s.fds:.0f} |")
    return "\n".join(lines)


def verdict_lines(r: SoakResult) -> list[str]:
    mark = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    lines = [
        f"- RSS growth after warm-up: {r.rss_growth * 100:+.1f} % (target <= {TARGET_RSS_GROWTH * 100:.0f} %): {mark(r.verdict['rss'])}",
        f"- open files after warm-up: {r.fd_growth:+.0f} (target: flat, <= +{TARGET_FD_SLACK}): {mark(r.verdict['fds'])}",
        f"- p99 / p50 after warm-up: {r.p99_ms:.0f} / {r.p50_ms:.0f} ms = {r.p99_ms / r.p50_ms:.2f}x (target <= {TARGET_P99_OVER_P50:g}x): "
        f"{mark(r.verdict['latency'])}",
        f"- errors: {sum(r.errors.values())}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(r.errors.items()))})" if r.errors else "")
        + f" (target 0): {mark(r.verdict['errors'])}",
    ]
    if r.short_run:
        lines.append(f"- **short run** ({r.seconds / 60:.1f} min < {SOAK_SECONDS // 60} min): a smoke test of the harness, not a soak verdict")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--model", default="default", help="Bundled model the server runs (default or fast).")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, help="Server's torch threads per worker [default: cores // workers].")
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--warmup-slices", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=90.0, help="The run stops here whatever the count.")
    parser.add_argument("--photos", type=int, default=48, help="How many different photos to send, in turn.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder of clean photos to cut the requests from.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Per-request timeout in seconds.")
    parser.add_argument("--json", type=Path, help="Also write the result here.")
    args = parser.parse_args(argv)
    if min(args.requests, args.clients, args.workers, args.slices, args.photos) < 1 or not 0 <= args.warmup_slices < args.slices:
        parser.error("--requests, --clients, --workers, --slices, --photos must be >= 1 and --warmup-slices in [0, slices)")
    if not Path("/proc/self/fd").is_dir():
        raise SystemExit("bench_soak reads /proc/PID (Linux only)")
    bodies = photo_bodies(args.data.resolve(), args.photos)
    serve_args = ["--model", args.model, "--precision", args.precision, "--workers", str(args.workers),
                  "--queue-size", str(args.clients), "--log-level", "warning"]
    serve_args += ["--threads", str(args.threads)] if args.threads else []
    samples: list[Sample] = []
    stop = threading.Event()
    try:
        with running_server(*serve_args) as server:
            start = time.perf_counter()
            watcher = threading.Thread(target=sampler, args=(server.process.pid, start, stop, samples), daemon=True)
            watcher.start()
            try:
                done = load(server.url, bodies, args.requests, args.clients, args.timeout, start + args.max_minutes * 60, start)
                seconds = time.perf_counter() - start
            finally:  # also on Ctrl-C or a failed load: the sampler stops before the server does
                stop.set()
                watcher.join()
            health = server.health
    except ServerStartError as err:
        raise SystemExit(str(err)) from None
    slices, figures = summarize(done, samples, seconds, args.slices, args.warmup_slices)
    errors = Counter(d.error for d in done if d.error)
    missing = args.requests - len(done)
    if missing:
        errors["not sent (--max-minutes)"] += missing
    result = SoakResult(
        machine=machine_description(), model=health["model"]["name"], precision=health["model"]["precision"], workers=args.workers,
        clients=args.clients, requests_asked=args.requests, requests_done=len(done), seconds=seconds, short_run=seconds < SOAK_SECONDS,
        slices=slices, errors=dict(errors), **figures,
    )
    result.verdict = {
        "rss": result.rss_growth <= TARGET_RSS_GROWTH,
        "fds": result.fd_growth <= TARGET_FD_SLACK,
        "latency": result.p99_ms <= TARGET_P99_OVER_P50 * result.p50_ms,
        "errors": not errors,
    }
    print(f"derain serve soak on loopback: {machine_description()}")
    print(f"model {result.model} ({result.precision}), {args.workers} worker(s), {args.clients} clients, {len(done)} of {args.requests} "
          f"requests of {len(bodies)} real 640×480 JPEG photos in {seconds:.0f} s ({len(done) / seconds:.2f} requests/s)\n")
    print(table(result))
    print()
    print("\n".join(verdict_lines(result)))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 0 if all(result.verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
