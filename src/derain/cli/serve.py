"""``derain serve``: the HTTP API and web page (:mod:`derain.service`) on uvicorn.

The address is bound before the model loads, so a port in use or a bad host fails at once with
one line; ``--port 0`` picks a free port. Once the model is loaded, one line on stderr names the
address actually bound (``derain serve: http://HOST:PORT (model ...)``; scripts and tests read the
port from it). The access log is one JSON line per request on stderr (``--log-level warning``
silences it). SIGTERM or Ctrl-C stops it gracefully (requests in flight finish) with exit status 0; a second Ctrl-C
stops it at once (exit status 1).

Who may use it: ``--token TOKEN`` or the environment variable ``DERAIN_TOKEN`` (the option wins;
the variable keeps the token out of ``ps``) makes every request but the web page's files and
``/healthz`` send ``Authorization: Bearer TOKEN`` (:mod:`derain.service.app`). A ``--host`` that other
machines can reach (any address outside 127.0.0.0/8 and ::1, e.g. ``0.0.0.0``) is refused without a
token, with one line and exit status 2 (:class:`OpenToAnyone`), unless ``--allow-anyone`` says
that anyone who reaches the port may use it; the check is made on the address the host resolves
to, before anything is bound.

Each of the ``--workers`` inference threads runs its own team of torch threads, so torch gets
``--threads`` threads (default: torch's own count, normally the physical cores, divided by
``--workers``, at least 1) rather than every worker using every core.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys

import click

from ..service import limits
from .common import model_options, one_line_errors, precision_option, runner_for_cli

__all__ = ["OpenToAnyone", "serve_cmd", "bind_socket", "is_loopback", "threads_per_worker"]

LOG_LEVELS = ("debug", "info", "warning", "error")


class OpenToAnyone(click.ClickException):
    """``--host`` is reachable from other machines and no token is set: refused with one line, exit status 2
    (a usage error, but without the usage text), unless ``--allow-anyone``."""

    exit_code = 2

    def __init__(self, host: str, address: str) -> None:
        shown = host if host == address else f"{host} ({address})"
        super().__init__(
            f"--host {shown} can be reached from other machines, and without an access token anyone there could use "
            "this server: set one (--token or DERAIN_TOKEN), or pass --allow-anyone to serve them all"
        )


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP address as ``getaddrinfo`` gives it) can be reached only from this machine:
    127.0.0.0/8, ::1, or 127.0.0.0/8 mapped into IPv6. Wildcards (``0.0.0.0``, ``::``) are every interface.

    >>> [is_loopback(a) for a in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1")]
    [True, True, True, True]
    >>> [is_loopback(a) for a in ("0.0.0.0", "::", "192.168.1.4", "fe80::1%1", "::ffff:10.0.0.1", "example.org")]
    [False, False, False, False, False, False]
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def bind_socket(host: str, port: int, *, loopback_only: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6), or a ``click.ClickException`` saying why not.

    With ``loopback_only``, an address other machines can reach (:func:`is_loopback`, judged on the address
    ``host`` resolves to, so ``localhost`` passes and ``0.0.0.0`` does not) raises :class:`OpenToAnyone`
    before anything is bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise click.ClickException(f"cannot resolve host {host!r}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    if loopback_only and not is_loopback(str(address[0])):
        raise OpenToAnyone(host, str(address[0]))
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


def _access(sock: socket.socket, token: str | None) -> str:
    """Who may use the server, for the startup line (never the token itself)."""
    if token is not None:
        return "access token required"
    return "this machine only" if is_loopback(str(sock.getsockname()[0])) else "open to anyone who reaches it"


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
@click.option("--token", envvar="DERAIN_TOKEN", show_envvar=True, metavar="TOKEN",
              help="Access token: every request but the web page's files and /healthz must send "
                   "'Authorization: Bearer TOKEN' (the page asks for it). Prefer the environment variable: "
                   "a command line is visible to other users.")
@click.option("--allow-anyone", is_flag=True,
              help="Serve a --host other machines can reach (e.g. 0.0.0.0) without --token: anyone who reaches it may use it.")
def serve_cmd(host, port, model_name, weights, precision, workers, threads, queue_size, max_uploads, upload_idle_timeout,
              upload_timeout, max_pixels, max_upload_mb, max_tile, log_level, token, allow_anyone) -> None:
    """Serve the HTTP API and the web page: POST /v1/derain, GET /healthz, GET /v1/models, / and /docs.

    \b
    derain serve                                   # http://127.0.0.1:8000
    curl -F file=@photo.jpg http://127.0.0.1:8000/v1/derain -o derained.jpg
    DERAIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') derain serve --host 0.0.0.0
    curl -H "Authorization: Bearer $DERAIN_TOKEN" -F file=@photo.jpg http://HOST:8000/v1/derain -o derained.jpg
    """
    import torch
    import uvicorn

    from ..service.app import check_token, create_app

    with one_line_errors():  # a token that cannot be one: before anything is bound or loaded
        token = check_token(token)
    sock = bind_socket(host, port, loopback_only=token is None and not allow_anyone)
    try:
        torch.set_num_threads(threads or threads_per_worker(torch.get_num_threads(), workers))
        derainer = runner_for_cli(model_name, weights, precision=precision)
        with one_line_errors():  # bad limits
            app = create_app(derainer, workers=workers, queue_size=queue_size, max_pixels=max_pixels,
                             max_upload_mb=max_upload_mb, max_tile=max_tile,
                             max_uploads=max_uploads, upload_idle_timeout=upload_idle_timeout,
                             upload_timeout=upload_timeout, token=token)
        _json_lines_to_stderr(log_level)
        info = app.state.model_info
        n_threads = torch.get_num_threads()
        click.echo(f"derain serve: {_url(sock)} (model {info.name}, {info.params:,} parameters, {info.precision}, "
                   f"{workers} worker{'s' if workers > 1 else ''}, {n_threads} torch thread{'s' if n_threads > 1 else ''} each, "
                   f"queue {queue_size}, {_access(sock, token)})", err=True)
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
