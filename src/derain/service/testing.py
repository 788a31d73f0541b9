"""Helpers for testing and load-testing the service: a synthetic rainy photo and a real ``derain serve``.

* :func:`rainy_photo` — a colour gradient with rendered rain streaks (deterministic per ``seed``);
* :func:`encode_image` — a Pillow image as the bytes of a file format;
* :func:`running_server` — ``derain serve --port 0`` in a subprocess: the URL it prints is read
  from its stderr (a log file, kept for the caller), ``/healthz`` is awaited, and the process is
  stopped on exit. Nothing is fetched from anywhere but that server.

Used by ``tests/test_service*.py`` and ``benchmarks/bench_service.py``; no web framework imported.

>>> photo = rainy_photo(48, 32, seed=1)
>>> photo.size, photo.mode, encode_image(photo)[:4]
((48, 32), 'RGB', b'\\x89PNG')
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from ..data.render import RainRenderer
from ..io.pixels import to_u8

__all__ = ["RunningServer", "ServerStartError", "encode_image", "rainy_photo", "running_server"]

#: The line ``derain serve`` prints (stderr) once the model is loaded and the socket is bound.
_URL_LINE = re.compile(r"derain serve: (http://\S+)")


def rainy_photo(width: int = 96, height: int = 64, seed: int = 0, rain: str = "heavy") -> Image.Image:
    """A colour gradient with rendered ``rain`` (``light``/``medium``/``heavy``) streaks, RGB."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    clean = np.stack([x / width, y / height, 0.5 + 0.3 * np.sin(x / 9.0)], axis=2) * 0.8
    rainy = RainRenderer(rain).render(clean.astype(np.float32), np.random.default_rng(seed))
    return Image.fromarray(to_u8(rainy, "half-up"))


def encode_image(img: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    """``img`` written as ``fmt`` (Pillow's name: ``PNG``, ``JPEG``, ``WEBP``...; ``jpg`` is accepted) with ``params``."""
    fmt = fmt.upper()
    buf = io.BytesIO()
    img.save(buf, "JPEG" if fmt == "JPG" else fmt, **params)
    return buf.getvalue()


class ServerStartError(RuntimeError):
    """``derain serve`` exited, or did not print its URL and answer ``/healthz`` in time (the message has its log)."""


@dataclass
class RunningServer:
    """A started ``derain serve``: its base URL, the ``/healthz`` answer, its stderr log and the process."""

    url: str
    health: dict[str, Any]
    log_path: Path
    process: subprocess.Popen

    def log_lines(self) -> list[str]:
        """The stderr lines so far (the startup line, then one JSON access line per request)."""
        return self.log_path.read_text(errors="replace").splitlines()

    def access_log(self) -> list[dict[str, Any]]:
        """The JSON access-log entries so far."""
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]

    def wait_for_access(self, path: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The access-log entries for ``path``, once there is at least one (the line is written just after the response)."""
        deadline = time.monotonic() + timeout
        while not (entries := [a for a in self.access_log() if a.get("path") == path]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return entries


@contextlib.contextmanager
def running_server(*args: str, log_path: str | Path | None = None, timeout: float = 180.0) -> Iterator[RunningServer]:
    """``derain serve --host 127.0.0.1 --port 0 ARGS...`` until the block ends (terminated, killed if stuck).

    ``args`` are more ``derain serve`` options (a later ``--host``/``--port`` wins). Stderr goes to
    ``log_path`` (default: a temporary file, removed afterwards). Raises :class:`ServerStartError`
    when the server exits or is not ready within ``timeout`` seconds.
    """
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="derain-serve-"))) / "stderr.log"
        log_path = Path(log_path)
        cmd = [sys.executable, "-m", "derain.cli.main", "serve", "--host", "127.0.0.1", "--port", "0", *args]
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            url, health = _wait_ready(proc, log_path, time.monotonic() + timeout, timeout)
            yield RunningServer(url, health, log_path, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen, log_path: Path, deadline: float, timeout: float) -> tuple[str, dict[str, Any]]:
    """The URL the server printed, once its ``/healthz`` says ok."""
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"derain serve exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        if url is None:
            found = _URL_LINE.search(log_path.read_text(errors="replace"))
            url = found.group(1) if found else None
        if url is not None:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    health = json.load(r)
                if health.get("status") == "ok":
                    return url, health
            except OSError:
                pass
        time.sleep(0.1)
    raise ServerStartError(f"derain serve was not ready in {timeout:.0f} s:\n{log_path.read_text(errors='replace')}")
