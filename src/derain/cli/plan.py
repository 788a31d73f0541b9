"""How ``derain run`` turns its inputs (files, folders, globs) into jobs: which file goes where, which are
skipped or refused, and which belong to this process's shard. No image is read here.

>>> from pathlib import Path
>>> plan = plan_jobs(("missing.jpg",), Path("out"), recursive=False, suffix="", fmt=None, overwrite=False)
>>> plan.jobs, plan.errors
([], [('missing.jpg', 'no such file or directory')])
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import click

from ..io.images import PHOTO_EXTENSIONS, extension_for, resolve_format

__all__ = ["GLOB_CHARS", "Job", "Plan", "in_shard", "parse_shard", "plan_jobs"]

log = logging.getLogger("derain.cli.run")

#: Characters that make an input a glob pattern.
GLOB_CHARS = set("*?[")


@dataclass
class Job:
    """One input file and where its result goes."""

    src: Path
    dst: Path
    shown: str  # the input as the user would recognise it, for messages


@dataclass
class Plan:
    jobs: list[Job]
    errors: list[tuple[str, str]]  # (path, reason) found while planning
    skipped: list[Job]
    other_shards: int = 0  # images found that belong to the other shards


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _scan(folder: Path, recursive: bool, exclude: Path | None, errors: list[tuple[str, str]]) -> Iterator[Path]:
    """Image files in ``folder`` (sorted; hidden files and the output folder ``exclude`` left out). Entries named like
    images that are not readable files (dangling or looping symbolic links, folders without
    ``--recursive``, devices) go to ``errors`` instead of being skipped silently."""
    walker = os.walk(folder) if recursive else [(str(folder), [], None)]
    for root, dirs, files in walker:
        root_path = Path(root)
        if dirs is not None:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and not (exclude is not None and _is_within((root_path / d).resolve(), exclude)))
        names = files if files is not None else [p.name for p in root_path.iterdir()]
        for name in sorted(names):
            path = root_path / name
            if name.startswith(".") or path.suffix.lower() not in PHOTO_EXTENSIONS:
                continue
            if path.is_file():
                yield path
            else:
                errors.append((str(path), _not_a_file(path)))


def _warn_unsearched(folders: list[str], out_dir: Path, outputs: set[str]) -> None:
    """Say so where ``--recursive`` left images in the output folder (inside a searched folder, or its sub-folders
    where it is the searched folder itself) that are not this run's ``outputs``: the output folder's images are
    never inputs. Read as the inputs are (:func:`_scan`: hidden files and folders left out), once."""
    out_real = out_dir.resolve()
    inside = [p for p in _scan(out_real, True, None, []) if os.path.realpath(p) not in outputs]
    for item in folders:
        is_input = out_real == Path(item).resolve()
        left = [p for p in inside if not (is_input and p.parent == out_real)]
        if left:
            where = "in the sub-folders of the output folder" if is_input else f"in the output folder {out_dir}"
            log.warning("%s: %d image%s %s not searched (the output folder holds outputs, not inputs)", item,
                        len(left), "" if len(left) == 1 else "s", where)


def _subfolders(folder: Path, exclude: Path) -> int:
    """How many sub-folders ``--recursive`` would search in ``folder`` (hidden ones and the output folder left out)."""
    return sum(1 for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and not _is_within(p.resolve(), exclude))


def _not_a_file(path: Path) -> str:
    """Why an entry named like an image is not one to read."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symbolic link loop"
        if path.is_symlink():
            return f"dangling symbolic link (to {os.readlink(path)})"
        return f"cannot access ({err.strerror or err})"
    if path.is_dir():
        return "a folder, not an image file (use --recursive to look inside)"
    return "not a regular file"


def _glob_base(pattern: str) -> Path:
    """The fixed leading folders of a glob pattern (``a/b/*/c*.jpg`` → ``a/b``)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _out_name(rel: Path, suffix: str, fmt: str | None) -> Path:
    ext = extension_for(resolve_format(None, fmt)) if fmt else rel.suffix
    return rel.with_name(rel.stem + suffix + ext)


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Whether the input ``name`` (as given on the command line, or found under a folder) belongs to shard ``K/N``.

    Decided by the name's CRC-32 alone, so every process of a job array computes the same split without
    talking to the others, and adding files never moves the others between shards.

    >>> names = [f"img_{i}.jpg" for i in range(1000)]
    >>> shards = [[n for n in names if in_shard(n, (k, 3))] for k in (1, 2, 3)]
    >>> sorted(sum(shards, [])) == sorted(names), [len(s) for s in shards]
    (True, [332, 350, 318])
    """
    if shard is None:
        return True
    k, n = shard
    return zlib.crc32(name.encode("utf-8", "surrogateescape")) % n == k - 1


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` (1 <= K <= N) → ``(K, N)``; None stays None."""
    if text is None:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: a shard looks like K/N, e.g. 2/8", param_hint="--shard") from None
    if not 1 <= k <= n:
        raise click.BadParameter(f"{text!r}: K must be in 1..N", param_hint="--shard")
    return k, n


def plan_jobs(
    inputs: tuple[str, ...], out_dir: Path, recursive: bool, suffix: str, fmt: str | None, overwrite: bool,
    shard: tuple[int, int] | None = None,
) -> Plan:
    """Expand the inputs into jobs; input collisions and missing inputs become errors, existing outputs skips.

    With ``shard = (K, N)`` only the inputs of shard K of N are planned (:func:`in_shard`). Files found
    in a folder or by a pattern that are this plan's own outputs (``a_dr.jpg`` beside ``a.jpg`` with
    ``--suffix _dr`` into the input folder) are results of an earlier run, not inputs.
    """
    out_real = out_dir.resolve()
    found: list[tuple[Path, Path, str]] = []  # (src, rel, shown)
    named: set[str] = set()  # inputs named one by one (never taken for earlier outputs)
    errors: list[tuple[str, str]] = []
    searched: list[str] = []  # folders searched with --recursive that hold the output folder
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = list(_scan(path, recursive, out_real, errors))
            if not files:
                log.warning("%s: no images found%s", item, "" if recursive else " (use --recursive for sub-folders)")
            elif not recursive and (subs := _subfolders(path, out_real)):
                log.warning("%s: %d sub-folder%s not searched (--recursive takes them)", item, subs, "" if subs == 1 else "s")
            if recursive and out_real.is_dir() and _is_within(out_real, path.resolve()):
                searched.append(item)
            found += [(f, f.relative_to(path), str(f)) for f in files]
        elif path.is_file():
            found.append((path, Path(path.name), item))
            named.add(os.path.realpath(path))
        elif GLOB_CHARS & set(item):
            base = _glob_base(item)
            matches = sorted(glob.glob(item, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file() and not _is_within(Path(m).resolve(), out_real)]
            if not files:
                errors.append((item, "no files match this pattern"))
            for f in files:
                try:
                    rel = f.relative_to(base)
                except ValueError:
                    rel = Path(f.name)
                found.append((f, rel, str(f)))
        else:
            errors.append((item, "no such file or directory"))

    outputs = {os.path.realpath(out_dir / _out_name(rel, suffix, fmt)) for _, rel, _ in found}
    if searched:
        _warn_unsearched(searched, out_dir, outputs)
    own_outputs = outputs if suffix else set()
    found = [f for f in found if os.path.realpath(f[0]) in named or os.path.realpath(f[0]) not in own_outputs]
    input_paths = {os.path.realpath(src) for src, _, _ in found}
    everything = len(found)
    found = [f for f in found if in_shard(f[2], shard)]
    errors = [e for e in errors if in_shard(e[0], shard)]
    jobs: list[Job] = []
    skipped: list[Job] = []
    claimed: dict[str, str] = {}
    seen_src: set[str] = set()
    for src, rel, shown in found:
        real_src = os.path.realpath(src)
        if real_src in seen_src:  # the same file named twice (e.g. a file and its folder)
            continue
        seen_src.add(real_src)
        dst = out_dir / _out_name(rel, suffix, fmt)
        real_dst = os.path.realpath(dst)
        if real_dst in input_paths or (dst.exists() and os.path.samefile(dst, src)):
            errors.append((shown, f"refusing to overwrite an input file with the output {dst} (choose another -o or a --suffix)"))
            continue
        if real_dst in claimed:
            errors.append((shown, f"output {dst} would also be written from {claimed[real_dst]} (rename one, or use --suffix)"))
            continue
        claimed[real_dst] = shown
        job = Job(src, dst, shown)
        if dst.exists() and not overwrite:
            skipped.append(job)
        else:
            jobs.append(job)
    return Plan(jobs, errors, skipped, everything - len(found))
