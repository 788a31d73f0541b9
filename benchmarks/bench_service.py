"""Load test of ``derain serve`` on loopback: requests/s and latency percentiles, as a markdown table.

    python benchmarks/bench_service.py [--requests 200] [--concurrency 8] [--size 481x321]
        [--model NAME] [--precision auto] [--workers 1] [--threads N] [--queue-size N]
        [--format jpeg] [--warmup 3] [--timeout 120] [--json out.json]

Starts ``derain serve --port 0`` in a subprocess on ``127.0.0.1`` (it picks a free port and prints
it; :func:`derain.service.testing.running_server`), waits for ``/healthz``, sends ``--warmup``
requests (not counted), then ``--requests`` ``POST /v1/derain`` requests of one synthetic rainy
photo (``--size``, encoded as ``--format``, sent as the raw body) from ``--concurrency`` client
threads, each on its own keep-alive connection. Bounded: the request count is fixed, each request
has a timeout, and only loopback is ever contacted.

Only successes (a 200 with an image of the right size) count towards requests/s and the latency
percentiles; 503s (busy) and errors (any other status, a wrong size, a connection error) are
reported separately, so instant refusals never flatter the numbers.

The waiting queue is ``--queue-size`` (default: the concurrency), so a run measures throughput
rather than 503s; ``--queue-size 0`` with ``--concurrency`` above ``--workers`` shows the 503s.

Reports successful requests/s, their p50/p95/p99 latency (client side, whole request), the
server's median derain time (from ``Server-Timing``), 503s and errors by kind, the image and the model.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from derain.bench.timing import machine_description
from derain.service.testing import ServerStartError, encode_image, rainy_photo, running_server


@dataclass
class LoadResult:
    model: str
    precision: str
    image: str
    body_bytes: int
    workers: int
    queue_size: int
    requests: int
    concurrency: int
    seconds: float
    ok: int
    requests_per_s: float  # successful (200) requests per second
    p50_ms: float  # latency percentiles of the successful requests
    p95_ms: float
    p99_ms: float
    server_derain_ms: float
    busy_503: int
    errors: int  # neither 200 nor 503
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class LoadRun:
    """What the clients saw: latencies and server derain times of the successes, the rest by kind."""

    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    derain_ms: list[float] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)


def _derain_ms(server_timing: str | None) -> float | None:
    for part in (server_timing or "").split(","):
        name, _, value = part.strip().partition(";dur=")
        if name == "derain" and value:
            return float(value)
    return None


def run_load(url: str, body: bytes, content_type: str, size: tuple[int, int], n_requests: int, concurrency: int,
             timeout: float) -> LoadRun:
    """``n_requests`` POSTs from ``concurrency`` threads; only 200s with the right size are timed."""
    address = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    next_index = iter(range(n_requests))
    run = LoadRun()

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(address.hostname, address.port, timeout=timeout)

    def client() -> None:
        conn = connect()
        try:
            while True:
                with lock:
                    if next(next_index, None) is None:
                        return
                start = time.perf_counter()
                kind, server = None, None
                try:
                    conn.request("POST", "/v1/derain", body=body, headers={"Content-Type": content_type})
                    response = conn.getresponse()
                    data = response.read()
                    if response.status != 200:
                        kind = f"HTTP {response.status}"
                    elif Image.open(io.BytesIO(data)).size != size:
                        kind = "wrong size"
                    else:
                        server = _derain_ms(response.getheader("Server-Timing"))
                except (OSError, http.client.HTTPException) as err:
                    kind = type(err).__name__
                    conn.close()
                    conn = connect()
                elapsed = (time.perf_counter() - start) * 1000.0
                with lock:
                    if kind:
                        run.failures[kind] += 1
                    else:
                        run.latencies_ms.append(elapsed)
                        if server is not None:
                            run.derain_ms.append(server)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - start
    return run


def summarize(run: LoadRun, health: dict, args: argparse.Namespace, image: str, body_bytes: int) -> LoadResult:
    lat = np.asarray(run.latencies_ms)
    pct = [float(np.percentile(lat, q)) if lat.size else float("nan") for q in (50, 95, 99)]
    failures = dict(run.failures)
    busy = failures.pop("HTTP 503", 0)
    return LoadResult(
        model=health["model"]["name"], precision=health["model"]["precision"], image=image, body_bytes=body_bytes,
        workers=args.workers, queue_size=args.queue_size, requests=args.requests, concurrency=args.concurrency,
        seconds=run.seconds, ok=lat.size, requests_per_s=lat.size / run.seconds, p50_ms=pct[0], p95_ms=pct[1], p99_ms=pct[2],
        server_derain_ms=float(np.median(run.derain_ms)) if run.derain_ms else float("nan"),
        busy_503=busy, errors=sum(failures.values()), error_kinds=failures,
    )


def table(r: LoadResult) -> str:
    errors = f"{r.errors}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(r.error_kinds.items()))})" if r.error_kinds else "")
    rows = [
        ("model", f"{r.model} ({r.precision})"),
        ("image", f"{r.image}, {r.body_bytes:,} bytes"),
        ("server", f"{r.workers} worker(s), queue {r.queue_size}"),
        ("requests × concurrency", f"{r.requests} × {r.concurrency}"),
        ("wall time", f"{r.seconds:.1f} s"),
        ("successful (200)", f"{r.ok}"),
        ("**requests/s** (200s only)", f"**{r.requests_per_s:.2f}**"),
        ("latency p50 / p95 / p99 (200s only)", f"{r.p50_ms:.0f} / {r.p95_ms:.0f} / {r.p99_ms:.0f} ms"),
        ("server derain time (median)", f"{r.server_derain_ms:.0f} ms"),
        ("503 busy", f"{r.busy_503}"),
        ("**errors**", f"**{errors}**"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--size", default="481x321", help="WxH of the test photo.")
    parser.add_argument("--format", choices=["jpeg", "png", "webp"], default="jpeg", help="Upload (and so result) format.")
    parser.add_argument("--model", help="Registered model with bundled weights [default: default].")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, help="Server's torch threads per worker [default: cores // workers].")
    parser.add_argument("--queue-size", type=int, help="Server's waiting queue [default: the concurrency].")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="Per-request timeout in seconds.")
    parser.add_argument("--json", type=Path, help="Also write the result here.")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.workers < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--requests, --concurrency, --workers and --threads must be >= 1")
    if args.queue_size is None:
        args.queue_size = args.concurrency
    width, height = (int(v) for v in args.size.lower().split("x"))
    body = encode_image(rainy_photo(width, height, rain="medium"), args.format, **({} if args.format == "png" else {"quality": 90}))
    content_type = f"image/{args.format}"

    serve_args = ["--workers", str(args.workers), "--queue-size", str(args.queue_size), "--log-level", "warning",
                  "--precision", args.precision]
    serve_args += ["--model", args.model] if args.model else []
    serve_args += ["--threads", str(args.threads)] if args.threads else []
    try:
        with running_server(*serve_args) as server:
            run_load(server.url, body, content_type, (width, height), args.warmup, 1, args.timeout)
            run = run_load(server.url, body, content_type, (width, height), args.requests, args.concurrency, args.timeout)
    except ServerStartError as err:
        raise SystemExit(str(err)) from None
    result = summarize(run, server.health, args, f"{width}×{height} {args.format.upper()}", len(body))
    print(f"derain serve load test on loopback: {machine_description()}\n")
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
