"""Atomic file output: a complete file or none, never a half-written one.

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
>>> with atomic_output(target) as tmp:
...     _ = tmp.write_text("done")
>>> target.read_text()
'done'
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_output", "remove_stale_temporaries", "STALE_SECONDS"]

STALE_SECONDS = 60.0  # a temporary file untouched this long belongs to a writer that died (kill -9)


def remove_stale_temporaries(path: str | os.PathLike[str], suffix: str = ".tmp") -> list[Path]:
    """Delete the temporary files that :func:`atomic_output` left for ``path`` when its process was
    killed (``.NAME.<8 hex>.tmp``, not modified for :data:`STALE_SECONDS`); return them.

    >>> import tempfile, pathlib, os
    >>> d = pathlib.Path(tempfile.mkdtemp()); old = d / ".out.png.0123abcd.tmp"; _ = old.write_text("x")
    >>> os.utime(old, (0, 0)); [p.name for p in remove_stale_temporaries(d / "out.png")], old.exists()
    (['.out.png.0123abcd.tmp'], False)
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}{re.escape(suffix)}")
    removed = []
    try:
        candidates = list(path.parent.glob(f".{path.name}.*{suffix}"))
    except OSError:
        return removed
    now = time.time()
    for tmp in candidates:
        try:
            if pattern.fullmatch(tmp.name) and tmp.is_file() and now - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def _umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path``; on success it replaces ``path`` (``os.replace``).

    On any exception (Ctrl-C included; the CLI turns SIGTERM into Ctrl-C) the temporary file is removed
    and ``path`` is untouched; temporaries that a killed process left for ``path`` are removed first
    (:func:`remove_stale_temporaries`). The result gets ordinary permissions (``0o666`` less the umask)
    whatever mode the writer created it with (some libraries create 0600 files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, suffix)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
