"""``derain serve``: the HTTP API and web page (:mod:`derain.service`) on uvicorn.

The address is bound before the model loads, so a port in use or a bad host fails at once with
one line; ``--port 0`` picks a free port. Once the model is loaded, one line on stderr names the
address actually bound (``derain serve: http://HOST:PORT (model ...)``; scripts and tests read the
port from it). The access log is one JSON line per request on stderr (``--log-level warning``
silences it). SIGTERM or Ctrl-C stops it gracefully (requests in flight finish) with exit status 0; a second Ctrl-C
stops it at once (exit status 1).

Each of the ``--workers`` inference threads runs its own team of torch threads, so torch gets
``--threads`` threads (default: torch's own count, normally the physical cores, divided by
``--workers``, at least 1) rather than every worker using every core.
"""

from __future__ import annotations

import logging
import socket
import sys

import click

from ..service import limits
from .common import model_options, one_line_errors, precision_option, runner_for_cli

__all__ = ["serve_cmd", "bind_socket", "threads_per_worker"]

LOG_LEVELS = ("debug", "info", "warning", "error")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6), or a ``click.ClickException`` saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise click.ClickException(f"cannot resolve host {host!r}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def threads_per_worker(total: int, workers: int) -> int:
    """Torch threads for each of ``workers`` inference threads sharing ``total`` (at least 1).

    >>> threads_per_worker(16, 1), threads_per_worker(16, 3), threads_per_worker(2, 4)
    (16, 5, 1)
    """
    return max(1, total // workers)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def _json_lines_to_stderr(level: str) -> None:
    """Send the ``derain.service`` logger (JSON access lines, errors) to stderr, one message per line as is."""
    log = logging.getLogger("derain.service")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port (0: any free port).")
@model_options
@precision_option("auto")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inference threads: images derained at the same time.")
@click.option("--threads", type=click.IntRange(min=1),
              help="Torch threads per worker [default: torch's thread count (the cores) // --workers].")
@click.option("--queue-size", type=click.IntRange(min=0), default=limits.DEFAULT_QUEUE_SIZE, show_default=True,
              help="Uploaded requests admitted beyond the running ones (waiting for a worker); "
                   "more get 503 with Retry-After.")
@click.option("--max-uploads", type=click.IntRange(min=1), default=limits.DEFAULT_MAX_UPLOADS, show_default=True,
              help="Uploads read at the same time; more get 503 with Retry-After.")
@click.option("--upload-idle-timeout", type=click.FloatRange(min=0, min_open=True), default=limits.DEFAULT_UPLOAD_IDLE_S,
              show_default=True, help="Seconds an upload may send nothing before it gets 408.")
@click.option("--upload-timeout", type=click.FloatRange(min=0, min_open=True), default=limits.DEFAULT_UPLOAD_TIMEOUT_S,
              show_default=True, help="Seconds an upload may take in all before it gets 408.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=limits.SERVICE_MAX_PIXELS, show_default=True,
              help="Larger images get 413 (checked from the header, before decoding).")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=limits.DEFAULT_MAX_UPLOAD_MB, show_default=True,
              help="Larger uploads get 413 (MiB).")
@click.option("--max-tile", type=click.IntRange(min=65), default=limits.DEFAULT_MAX_TILE, show_default=True,
              help="Largest tile side: images over 1 MP are always tiled with at most this, whatever ?tile= asks.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True,
              help="info: one JSON access-log line per request on stderr.")
def serve_cmd(host, port, model_name, weights, precision, workers, threads, queue_size, max_uploads, upload_idle_timeout,
              upload_timeout, max_pixels, max_upload_mb, max_tile, log_level) -> None:
    """Serve the HTTP API and the web page: POST /v1/derain, GET /healthz, GET /v1/models, / and /docs.

    \b
    derain serve                                   # http://127.0.0.1:8000
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/derain -o derained.jpg
    """
    import torch
    import uvicorn

    from ..service.app import create_app

    sock = bind_socket(host, port)
    try:
        torch.set_num_threads(threads or threads_per_worker(torch.get_num_threads(), workers))
        derainer = runner_for_cli(model_name, weights, precision=precision)
        with one_line_errors():  # bad limits
            app = create_app(derainer, workers=workers, queue_size=queue_size, max_pixels=max_pixels,
                             max_upload_mb=max_upload_mb, max_tile=max_tile,
                             max_uploads=max_uploads, upload_idle_timeout=upload_idle_timeout,
                             upload_timeout=upload_timeout)
        _json_lines_to_stderr(log_level)
        info = app.state.model_info
        n_threads = torch.get_num_threads()
        click.echo(f"derain serve: {_url(sock)} (model {info.name}, {info.params:,} parameters, {info.precision}, "
                   f"{workers} worker{'s' if workers > 1 else ''}, {n_threads} torch thread{'s' if n_threads > 1 else ''} each, "
                   f"queue {queue_size})", err=True)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False)
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            # uvicorn shuts down gracefully on SIGTERM / Ctrl-C, then raises the signal again: a stop asked for
            # and carried out is a success (exit 0), not an abort
            if not server.should_exit or server.force_exit:  # not asked, or a second Ctrl-C cut requests short
                raise
    finally:
        sock.close()
