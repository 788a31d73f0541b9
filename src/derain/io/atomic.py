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
import shutil
import time
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["atomic_files", "atomic_output", "remove_stale_temporaries", "STALE_SECONDS", "GROUP_LINK"]

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


#: The link inside a folder written by :func:`atomic_files` that names its current group of files.
GROUP_LINK = ".current"
_GROUP = re.compile(r"\.group-[0-9a-f]{8}(\.tmp)?")
_LINK_TMP = re.compile(r"\..+[.-][0-9a-f]{8}\.lnk")


def _symlinks_work(folder: Path) -> bool:
    """Whether relative symlinks can be made in ``folder`` (never on Windows: a link to a folder there needs
    another kind of link, and ``/`` in its target may not resolve)."""
    if os.name == "nt":
        return False
    probe = folder / f".symlink-probe-{secrets.token_hex(4)}.lnk"
    try:
        probe.symlink_to("nowhere")
    except (OSError, NotImplementedError):
        return False
    probe.unlink()
    return True


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk, so a power cut after the swap cannot leave
    the new names pointing at empty files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder
    finally:
        os.close(fd)


def _remove_orphan_groups(folder: Path, current: str | None) -> None:
    """Group folders of earlier calls that are not the current one, and temporary links: left by a kill."""
    now = time.time()
    for entry in folder.glob(".*.lnk"):
        if _LINK_TMP.fullmatch(entry.name) and entry.is_symlink():
            entry.unlink(missing_ok=True)
    for entry in folder.glob(".group-*"):
        try:
            if entry.name == current or not _GROUP.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
                continue
            if entry.name.endswith(".tmp") and now - entry.stat().st_mtime <= STALE_SECONDS:
                continue  # maybe another writer's, still at work
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _replace_with_link(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target`` in one ``os.replace`` (nothing to do if it already is)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.lnk")
    tmp.symlink_to(target)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(folder: str | os.PathLike[str], names: Sequence[str]) -> Iterator[dict[str, Path]]:
    """Write files that must change together (a training checkpoint and its weights): readers see all of
    one write or all of the previous one, never a mix.

    Yields ``{name: path}`` to write, inside a fresh hidden folder ``.group-<hex>.tmp`` of ``folder``. On
    success the files are flushed to disk, the folder is renamed ``.group-<hex>`` and becomes the target
    of the link ``folder/.current`` in one ``os.replace``; each ``folder/NAME`` is a link to
    ``.current/NAME``, so one swap moves every name at once. The previous group is removed after the
    swap; groups and temporary links a killed writer left are removed by the next call. On an exception
    nothing changes. One writer per folder (a training run); a reader that needs several of the files
    from one write resolves ``.current`` once. Where the system has no symbolic links (Windows) the
    files are moved into place one by one, in the order of ``names`` (the last is the commit point).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_files(d, ["a.txt", "b.txt"]) as paths:
    ...     _ = paths["a.txt"].write_text("1"); _ = paths["b.txt"].write_text("1")
    >>> (d / "a.txt").read_text(), (d / "b.txt").read_text(), (d / "a.txt").is_symlink()
    ('1', '1', True)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / GROUP_LINK
    current = os.readlink(link) if link.is_symlink() else None
    _remove_orphan_groups(folder, current)
    work = folder / f".group-{secrets.token_hex(4)}.tmp"
    work.mkdir()
    try:
        yield {name: work / name for name in names}
        missing = [name for name in names if not (work / name).is_file()]
        if missing:
            raise FileNotFoundError(f"atomic_files: {', '.join(missing)} not written")
        for name in names:
            os.chmod(work / name, 0o666 & ~_umask())
            _fsync(work / name)
        _fsync(work)
        if not _symlinks_work(folder):
            for name in names:
                os.replace(work / name, folder / name)
            return
        group = work.with_name(work.name[: -len(".tmp")])
        os.replace(work, group)
        _replace_with_link(link, group.name)
        for name in names:
            _replace_with_link(folder / name, f"{GROUP_LINK}/{name}")
        _fsync(folder)
        if current and current != group.name and _GROUP.fullmatch(current):
            shutil.rmtree(folder / current, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
