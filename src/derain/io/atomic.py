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
import errno
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from ..errors import UserError

__all__ = [
    "atomic_files", "atomic_output", "append_file", "process_umask", "remove_stale_temporaries", "write_atomic", "write_fd", "write_new",
    "WriteError", "DISK_FULL", "STALE_SECONDS", "GROUP_LINK", "Syscalls", "syscalls",
]

#: errno values that only a write can give: the disk (or the user's quota, or the largest file size) is full.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

_CHUNK = 1 << 20


class Syscalls(NamedTuple):
    """The two system calls every byte derain writes goes through (write_new, write_atomic, append_file, write_fd
    and the flush of atomic_output/atomic_files): ``write(fd, data) -> int`` and ``fsync(fd) -> None``."""

    write: Callable[[int, "bytes | bytearray | memoryview"], int]
    fsync: Callable[[int], None]


_calls = Syscalls(os.write, os.fsync)


@contextlib.contextmanager
def syscalls(write: Callable[[int, "bytes | bytearray | memoryview"], int] | None = None,
             fsync: Callable[[int], None] | None = None) -> Iterator[Syscalls]:
    """For fault injection only (tests, :func:`derain.bench.faults.disk_fault`): inside the ``with`` block,
    every write and flush of this module goes through ``write``/``fsync`` (``None`` keeps the one in place).
    Yields the calls it replaced, for the replacements to pass on to; they are put back on leaving, so blocks
    nest. Process-wide (not per thread): enter it around the code under test, never in library code.

    >>> import tempfile, pathlib
    >>> seen = []
    >>> with syscalls(write=lambda fd, data: seen.append(len(data)) or real.write(fd, data)) as real:
    ...     _ = write_atomic(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "abc")
    >>> seen
    [3]
    """
    global _calls
    previous = _calls
    _calls = Syscalls(write or previous.write, fsync or previous.fsync)
    try:
        yield previous
    finally:
        _calls = previous


class WriteError(UserError, OSError):
    """An output could not be written (disk full, quota, I/O error, read-only file system): one line naming the
    file (``filename``) and the system's reason; nothing partial is left of it. Also an :class:`OSError` with
    the system's ``errno``, so ``except OSError`` still catches it."""

    def __init__(self, path: str | os.PathLike[str], err: OSError | int, hint: str = "") -> None:
        code = err if isinstance(err, int) else (err.errno or errno.EIO)
        reason = os.strerror(code) if isinstance(err, int) else (err.strerror or str(err) or os.strerror(code))
        super().__init__(code, reason, str(path))
        self.hint = hint

    def __reduce__(self) -> tuple:
        # OSError's own passes (errno, strerror, filename) to __init__, whose arguments are (path, err, hint)
        return type(self), (self.filename, OSError(self.errno, self.strerror), self.hint), self.__dict__

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}" + (f"; {self.hint}" if self.hint else "")

    def with_hint(self, hint: str, path: str | os.PathLike[str] | None = None) -> WriteError:
        """The same error with ``hint`` after the reason (what is kept, how to go on), naming ``path`` if given."""
        return WriteError(path if path is not None else self.filename, self.errno, hint)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write every byte of ``data`` to ``fd`` (a short write is continued, never ignored); the count written."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        n = _calls.write(fd, view[done : done + _CHUNK])
        if n <= 0:  # a regular file that takes nothing more without saying why
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        done += n
    return done


def _sync(fd: int) -> None:
    """Flush ``fd``'s data to the disk: a write error the file system reports late (quota, delayed allocation,
    network file systems) comes out here. File systems that cannot flush (EINVAL, ENOTSUP) are let be."""
    try:
        _calls.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes | bytearray | memoryview:
    return data.encode("utf-8") if isinstance(data, str) else data


def write_new(path: str | os.PathLike[str], data: bytes | bytearray | memoryview | str, *, shown: str | os.PathLike[str] | None = None) -> Path:
    """Create ``path`` (it must not exist) holding exactly ``data`` (``str``: UTF-8), flushed to disk; any failure
    raises :class:`WriteError` naming ``shown`` (default ``path``) and removes what was written. For files
    inside a hidden work area (:func:`atomic_output`'s temporary, :func:`atomic_files`' group); elsewhere use
    :func:`write_atomic`."""
    path = Path(path)
    data = _as_bytes(data)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise WriteError(shown or path, err) from None
    try:
        try:
            _write_all(fd, data)
            _sync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        path.unlink(missing_ok=True)
        raise WriteError(shown or path, err) from None
    return path


def write_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview | str) -> Path:
    """Write ``data`` (``str``: UTF-8) to ``path`` atomically: all of it, flushed to disk, then swapped in
    (:func:`atomic_output`); or :class:`WriteError` naming ``path``, with ``path`` as it was and nothing left
    behind. The one way derain writes a file whose bytes it holds.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.json"
    >>> write_atomic(target, '{"ok": 1}').read_text()
    '{"ok": 1}'
    """
    path = Path(path)
    with _atomic_output(path, flushed=True) as tmp:  # write_new flushes the temporary itself
        write_new(tmp, data, shown=path)
    return path


def append_file(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Append ``data`` (a log's row) to ``path`` (created if missing) whole or not at all: after a failure the
    file is cut back to its length before the call, so a full disk never leaves half a row; raises
    :class:`WriteError` naming ``path``."""
    path = Path(path)
    data = _as_bytes(data)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise WriteError(path, err) from None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, data)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise WriteError(path, err) from None
    finally:
        os.close(fd)


def write_fd(fd: int, data: bytes | bytearray | memoryview, name: str) -> None:
    """Write all of ``data`` to the open descriptor ``fd`` (stdout), called ``name`` in messages. Where ``fd`` is a
    regular file (``derain - > out.png``, or ``>> log.bin``) the data is flushed to disk and, after a failure, the
    file is cut back to where this write began (for ``>>``, its length before), so no partial image is left in it
    and what was there before is kept. Raises :class:`WriteError`."""
    regular = False
    start: int | None = None  # where to cut back to; None: not known, so never cut
    with contextlib.suppress(OSError):
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        if regular:
            # O_APPEND (the shell's >>): every write goes to the end, whatever the offset (0 before the first write)
            appends = fcntl is not None and bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND)
            start = info.st_size if appends else os.lseek(fd, 0, os.SEEK_CUR)
            name = f"{name} ({os.readlink(f'/proc/self/fd/{fd}')})"  # the file the shell opened, where the system tells
    try:
        _write_all(fd, data)
        if regular:
            _sync(fd)
    except OSError as err:
        if regular and start is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
        raise WriteError(name, err) from None


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


def process_umask() -> int:
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
    (:func:`remove_stale_temporaries`). Before the swap the temporary file is flushed to disk, so a write
    error the file system reports only then (quota, delayed allocation) fails this call instead of leaving a
    short file. A full disk (:data:`DISK_FULL`) met by the writer, and any failure to create the folder, flush
    or swap, raise :class:`WriteError` naming ``path``. The result gets ordinary permissions (``0o666`` less
    the umask) whatever mode the writer created it with (some libraries create 0600 files).
    """
    with _atomic_output(path, suffix) as tmp:
        yield tmp


@contextlib.contextmanager
def _atomic_output(path: str | os.PathLike[str], suffix: str = ".tmp", *, flushed: bool = False) -> Iterator[Path]:
    """:func:`atomic_output`; ``flushed``: the writer flushes the temporary to disk itself (:func:`write_new`),
    so it is not flushed a second time before the swap."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(path, err) from None
    remove_stale_temporaries(path, suffix)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
    try:
        try:
            yield tmp
        except WriteError:
            raise
        except OSError as err:
            if err.errno in DISK_FULL:
                raise WriteError(path, err) from None
            raise
        try:
            if not flushed:
                _flush_file(tmp)
            os.chmod(tmp, 0o666 & ~process_umask())
            os.replace(tmp, path)
        except OSError as err:
            raise WriteError(path, err) from None
    finally:
        tmp.unlink(missing_ok=True)


def _flush_file(path: Path) -> None:
    """:func:`_sync` a written file by its name (the writer, maybe a library, has closed it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _sync(fd)
    finally:
        os.close(fd)


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
    """Flush a folder's entries to disk, so a power cut after the swap cannot leave the new names pointing at
    empty files (files are flushed by :func:`_flush_file`, whose errors count)."""
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(folder / names[0], err) from None
    link = folder / GROUP_LINK
    current = os.readlink(link) if link.is_symlink() else None
    _remove_orphan_groups(folder, current)
    work = folder / f".group-{secrets.token_hex(4)}.tmp"
    try:
        work.mkdir()
    except OSError as err:
        raise WriteError(folder / names[0], err) from None
    try:
        try:
            yield {name: work / name for name in names}
            missing = [name for name in names if not (work / name).is_file()]
            if missing:
                raise FileNotFoundError(f"atomic_files: {', '.join(missing)} not written")
            for name in names:
                os.chmod(work / name, 0o666 & ~process_umask())
                _flush_file(work / name)
        except OSError as err:  # named as the file it was to become
            if not isinstance(err, WriteError) and err.errno not in DISK_FULL and err.errno != errno.EIO:
                raise
            shown = Path(err.filename) if err.filename else folder / names[0]
            raise WriteError(folder / shown.relative_to(work) if work in shown.parents else shown, err) from None
        _fsync(work)
        group = work.with_name(work.name[: -len(".tmp")])
        try:
            if not _symlinks_work(folder):
                for name in names:
                    os.replace(work / name, folder / name)
                return
            os.replace(work, group)
            _replace_with_link(link, group.name)
            for name in names:
                _replace_with_link(folder / name, f"{GROUP_LINK}/{name}")
        except OSError as err:  # a full disk can refuse a link: the names keep pointing at the last whole group
            if group.is_dir() and (not link.is_symlink() or os.readlink(link) != group.name):
                shutil.rmtree(group, ignore_errors=True)
            raise WriteError(folder / names[-1], err) from None
        _fsync(folder)
        if current and current != group.name and _GROUP.fullmatch(current):
            shutil.rmtree(folder / current, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
