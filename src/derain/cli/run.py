"""``derain run INPUT...`` (also plain ``derain INPUT...``): derain photos, files, folders, globs or stdin.

Outputs go to ``-o OUT`` (default ``./derained``) with the input's file name and format; a
folder's images (``--recursive``: its sub-folders too) keep their relative paths under OUT, as do
the files a glob matches (relative to the glob's fixed leading folders). ``--suffix`` and
``--format`` change the name and format. ``-`` reads one image from stdin and writes the result to
stdout in the input's format (or ``--format``).

* An input is never overwritten (that file fails with a clear error); an existing output is
  skipped unless ``--overwrite``; every file is written atomically.
* The model is loaded once; a thread decodes the next image while the current one runs.
* Each failure prints one ``error: PATH: reason`` line and the others still run; a summary
  ``N ok, N failed, N skipped in S s (X images/s)`` ends the run (stderr). The exit code is 0 only
  when no file failed.
"""

from __future__ import annotations

import difflib
import errno
import glob
import logging
import os
import queue
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import click

from ..inference.tiling import DEFAULT_OVERLAP
from ..io.images import DEFAULT_MAX_PIXELS, PHOTO_EXTENSIONS, ImageReadError, extension_for, resolve_format
from .common import compile_option, device_option, model_options, precision_option, printable, strength_option, threads_option

__all__ = ["DefaultRunGroup", "run_cmd", "OUTPUT_FORMATS"]

log = logging.getLogger(__name__)

#: ``--format`` choices and the extension each writes.
#: The output formats ``--format`` offers.
OUTPUT_FORMATS = ("jpg", "png", "tiff", "webp")
_GLOB_CHARS = set("*?[")


class DefaultRunGroup(click.Group):
    """A click group where ``derain PHOTO...`` means ``derain run PHOTO...``.

    The first argument after the group's own options is routed to ``run`` unless it is a
    subcommand, ``--help``/``--version``, or a bare word that looks like a mistyped subcommand. A
    subcommand's name wins over a file or folder of that name, with a note saying how to derain it.
    """

    group_flags = ("-v", "--verbose")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        i = 0
        while i < len(args) and args[i] in self.group_flags:
            i += 1
        if i < len(args) and "run" in self.commands and self._routes_to_run(args[i]):
            args.insert(i, "run")
        elif i < len(args) and args[i] in self.commands and args[i] != "run" and os.path.exists(args[i]):
            click.echo(f"note: '{args[i]}' is the `derain {args[i]}` command; to derain the "
                       f"{'folder' if os.path.isdir(args[i]) else 'file'} '{args[i]}', use: derain run {args[i]}", err=True)
        return super().parse_args(ctx, args)

    def _routes_to_run(self, token: str) -> bool:
        if token in self.commands or token in ("-h", "--help", "--version", "--"):
            return False
        if token == "-" or token.startswith("-"):
            return True  # stdin, or an option of `run` such as -o
        if os.path.exists(token) or _GLOB_CHARS & set(token) or os.sep in token or "." in token:
            return True
        # A bare word that is no file: a typo of a command gets click's "No such command".
        return not difflib.get_close_matches(token, list(self.commands), n=1, cutoff=0.6)


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


def _scan(folder: Path, recursive: bool, exclude: Path, errors: list[tuple[str, str]]) -> Iterator[Path]:
    """Image files in ``folder`` (sorted; hidden files and the output folder left out). Entries named like
    images that are not readable files (dangling or looping symbolic links, folders without
    ``--recursive``, devices) go to ``errors`` instead of being skipped silently."""
    walker = os.walk(folder) if recursive else [(str(folder), [], None)]
    for root, dirs, files in walker:
        root_path = Path(root)
        if dirs is not None:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _is_within((root_path / d).resolve(), exclude))
        names = files if files is not None else [p.name for p in root_path.iterdir()]
        for name in sorted(names):
            path = root_path / name
            if name.startswith(".") or path.suffix.lower() not in PHOTO_EXTENSIONS:
                continue
            if path.is_file():
                yield path
            else:
                errors.append((str(path), _not_a_file(path)))


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
        if _GLOB_CHARS & set(part):
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
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = list(_scan(path, recursive, out_real, errors))
            if not files:
                log.warning("%s: no images found%s", item, "" if recursive else " (use --recursive for sub-folders)")
            elif not recursive and (subs := _subfolders(path, out_real)):
                log.warning("%s: %d sub-folder%s not searched (--recursive takes them)", item, subs, "" if subs == 1 else "s")
            found += [(f, f.relative_to(path), str(f)) for f in files]
        elif path.is_file():
            found.append((path, Path(path.name), item))
            named.add(os.path.realpath(path))
        elif _GLOB_CHARS & set(item):
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

    own_outputs = {os.path.realpath(out_dir / _out_name(rel, suffix, fmt)) for _, rel, _ in found} if suffix else set()
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


def _prefetch(jobs: list[Job], max_pixels: int | None, slots: threading.Semaphore, out: queue.Queue, stop: threading.Event) -> None:
    """Decode the jobs' images in order into ``out``, at most one ahead of the consumer (``slots``)."""
    from ..io.images import load_photo

    for job in jobs:
        slots.acquire()
        if stop.is_set():
            return
        try:
            item: Any = load_photo(job.src, max_pixels=max_pixels, name=job.shown)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            item = err
        out.put((job, item))
    out.put(None)


def _reason(err: BaseException) -> str:
    if isinstance(err, ImageReadError):
        return err.reason
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}" + (f": {err.filename}" if err.filename else "")
    if isinstance(err, MemoryError):
        return "out of memory (try a smaller --tile)"
    return f"{type(err).__name__}: {err}"


def _process(derainer: Any, photo: Any, tile: int | None, overlap: int, side_by_side: bool) -> tuple[Any, Any]:
    from ..io.images import side_by_side as widen

    result = derainer.derain_photo(photo, tile, overlap)
    if side_by_side:
        return widen(photo, result)
    return photo, result


def _load_derainer(model_name: str | None, weights: str | None, device: str, precision: str, threads: int | None,
                   backend: str = "torch", onnx_path: str | None = None, compile_: bool = False, strength: Any = "auto") -> Any:
    if (backend == "onnxruntime" or onnx_path) and compile_:
        raise click.UsageError("--compile applies to the torch backend, not to onnxruntime")
    if (backend == "onnxruntime" or onnx_path) and strength != "auto":
        raise click.UsageError("--strength other than auto applies to the torch backend (an ONNX file judges each image itself)")
    if backend == "onnxruntime" or onnx_path:
        from .export import onnx_derainer_for_cli

        return onnx_derainer_for_cli(model_name, weights, onnx_path, device, precision, threads)
    import torch

    from derain.inference.derainer import Derainer

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("--device cuda: CUDA is not available on this machine")
    from .common import load_for_cli, one_line_errors

    model = load_for_cli(model_name, weights)
    with one_line_errors():
        return Derainer(model, device=dev, precision=precision, threads=threads, owned=True, compile=compile_, strength=strength)


def _stdin_to_stdout(derainer: Any, args: dict[str, Any]) -> int:
    from ..io.images import encode_photo, load_photo

    if sys.stdout.isatty():
        raise click.UsageError("refusing to write image data to a terminal; redirect stdout (derain - < in.jpg > out.jpg)")
    start = time.perf_counter()
    try:
        photo = load_photo(sys.stdin.buffer.read(), max_pixels=args["max_pixels"], name="<stdin>")
        photo, result = _process(derainer, photo, args["tile"], args["tile_overlap"], args["side_by_side"])
        data = encode_photo(photo, result, args["fmt"], args["quality"])
    except Exception as err:  # noqa: BLE001 - one line, no traceback
        log.debug("stdin failed", exc_info=True)
        click.echo(f"error: <stdin>: {printable(_reason(err))}", err=True)
        _summary(0, 1, 0, time.perf_counter() - start)
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    _summary(1, 0, 0, time.perf_counter() - start)
    return 0


def _summary(ok: int, failed: int, skipped: int, seconds: float, hint: str = "") -> None:
    rate = ok / seconds if seconds > 0 else 0.0
    click.echo(f"{ok} ok, {failed} failed, {skipped} skipped in {seconds:.1f} s ({rate:.2f} images/s){hint}", err=True)


@click.command("run")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default="derained", show_default=True,
              help="Output folder (created); inputs keep their names (and folder structure) inside it.")
@model_options
@click.option("--tile", type=click.IntRange(min=0), default=None,
              help="Tile side in pixels for bounded memory; 0 = never tile [default: 512 above 1 MP].")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=DEFAULT_OVERLAP, show_default=True,
              help="Overlap between tiles in pixels.")
@device_option
@precision_option("auto")
@threads_option()
@compile_option()
@strength_option
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="Inference engine; onnxruntime (CPU, fp32) exports the model to ONNX once per run.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False),
              help="Run this file from `derain export` with onnxruntime (instead of --model/--weights).")
@click.option("-r", "--recursive", is_flag=True, help="Also take images in sub-folders of folder inputs.")
@click.option("--suffix", default="", help="Added to output file names (photo.jpg → photo<SUFFIX>.jpg).")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), help="Output format [default: the input's].")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (default: skip them). Inputs are never overwritten.")
@click.option("--side-by-side", is_flag=True, help="Write input | derained side by side.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images with more pixels (decompression-bomb guard).")
@click.option("--shard", metavar="K/N", help="Only this process's share of the inputs: shard K of N (1-based), "
              "decided per file name, e.g. --shard $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT.")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs (tracebacks of failed files).")
def run_cmd(inputs, out_dir, model_name, weights, tile, tile_overlap, device, precision, threads, compile_, strength, backend, onnx_path, recursive,
            suffix, fmt, quality, overwrite, side_by_side, max_pixels, shard, verbose) -> None:
    """Derain photos: files, folders, globs, or - (stdin to stdout).

    \b
    derain photo.jpg                     -> derained/photo.jpg
    derain run pics/ -r -o clean/        -> clean/<same tree as pics>
    derain run "shots/*.png" --suffix _dr --format jpg
    derain - < rainy.jpg > clean.jpg
    """
    from ..inference.tiling import AUTO_TILE

    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)

    effective_tile = AUTO_TILE if tile is None else tile
    if effective_tile > 0 and 2 * tile_overlap >= effective_tile:
        overlap_given = click.get_current_context().get_parameter_source("tile_overlap") != click.core.ParameterSource.DEFAULT
        if tile is not None and not overlap_given:  # the tile is what is too small
            raise click.BadParameter(f"must be 0 or more than twice the tile overlap ({2 * tile_overlap})", param_hint="--tile")
        raise click.BadParameter(f"must be less than half the tile ({effective_tile})", param_hint="--tile-overlap")
    if "-" in inputs:
        if len(inputs) > 1:
            raise click.UsageError("'-' (stdin) cannot be combined with other inputs")
        derainer = _load_derainer(model_name, weights, device, precision, threads, backend, onnx_path, compile_, strength)
        args = dict(max_pixels=max_pixels, tile=tile, tile_overlap=tile_overlap, side_by_side=side_by_side, fmt=fmt, quality=quality)
        click.get_current_context().exit(_stdin_to_stdout(derainer, args))

    start = time.perf_counter()
    out_path = Path(out_dir)
    plan = plan_jobs(inputs, out_path, recursive, suffix, fmt, overwrite, parse_shard(shard))
    for path, reason in plan.errors:
        click.echo(f"error: {printable(path)}: {printable(reason)}", err=True)
    if not plan.jobs and not plan.skipped and not plan.errors:
        if plan.other_shards:  # a job array's task with nothing to do has succeeded
            click.echo(f"shard {shard}: none of the {plan.other_shards} images found belong to this shard", err=True)
            return
        raise click.ClickException("no images found in the inputs")
    ok, failed = 0, len(plan.errors)
    if plan.jobs:
        derainer = _load_derainer(model_name, weights, device, precision, threads, backend, onnx_path, compile_, strength)
        ok, run_failed = _run_jobs(derainer, plan.jobs, out_path, tile, tile_overlap, fmt, quality, side_by_side, max_pixels)
        failed += run_failed
    hint = "; existing outputs were kept (--overwrite replaces them)" if plan.skipped else ""
    _summary(ok, failed, len(plan.skipped), time.perf_counter() - start, hint)
    if failed:
        click.get_current_context().exit(1)


def _run_jobs(derainer: Any, jobs: list[Job], out_dir: Path, tile: int | None, overlap: int, fmt: str | None,
              quality: int, side_by_side: bool, max_pixels: int) -> tuple[int, int]:
    from tqdm import tqdm

    from ..io.images import save_photo

    slots = threading.Semaphore(2)  # decoded images alive: the one being derained and one prefetched
    decoded: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=_prefetch, args=(jobs, max_pixels, slots, decoded, stop), name="derain-prefetch", daemon=True)
    reader.start()
    ok = failed = 0
    bar = tqdm(total=len(jobs), unit="img", file=sys.stderr, disable=True if len(jobs) < 2 else None, dynamic_ncols=True)

    def one(job: Job, photo: Any) -> str | None:
        """Derain and write one decoded image; the reason it failed, or None."""
        if isinstance(photo, BaseException):
            if not isinstance(photo, Exception):
                raise photo  # KeyboardInterrupt, SystemExit in the reader
            log.debug("%s failed", job.shown, exc_info=photo)
            return _reason(photo)
        try:
            photo, result = _process(derainer, photo, tile, overlap, side_by_side)
        except Exception as err:  # noqa: BLE001 - one line per file, the rest still run
            log.debug("%s failed", job.shown, exc_info=True)
            return f"derain failed: {_reason(err)}"
        try:
            job.dst.parent.mkdir(parents=True, exist_ok=True)
            save_photo(photo, result, job.dst, format=fmt, quality=quality)
        except Exception as err:  # noqa: BLE001
            log.debug("%s failed", job.shown, exc_info=True)
            return f"cannot write {job.dst}: {_reason(err)}"
        return None

    try:
        while (entry := decoded.get()) is not None:
            job = entry[0]
            try:
                reason = one(*entry)
            finally:
                entry = None  # drop the decoded image before the next one is decoded
                slots.release()
                bar.update(1)
            if reason is None:
                ok += 1
            else:
                failed += 1
                tqdm.write(f"error: {printable(job.shown)}: {printable(reason)}", file=sys.stderr)
    finally:
        stop.set()
        slots.release()
        bar.close()
    return ok, failed
