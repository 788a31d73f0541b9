"""``derain run INPUT...`` (also plain ``derain INPUT...``): derain photos, files, folders, globs or stdin.

Outputs go to ``-o OUT`` (default ``./derained``) with the input's file name and format; a
folder's images (``--recursive``: its sub-folders too) keep their relative paths under OUT, as do
the files a glob matches (relative to the glob's fixed leading folders). ``--suffix`` and
``--format`` change the name and format. ``-`` reads one image from stdin and writes the result to
stdout in the input's format (or ``--format``).

* An input is never overwritten (that file fails with a clear error); an existing output is
  skipped unless ``--overwrite``; every file is written atomically (:func:`~derain.io.atomic.write_atomic`).
* A full disk or an I/O error fails only the files it hits (``error: PATH: cannot write OUT: reason``),
  leaving nothing partial; so the same command run again, once there is space, writes just the
  missing outputs. With ``-``, a failed write to stdout cuts a redirected file back to what was there before
  (empty for ``>``, its earlier content for ``>>``).
* The model is loaded once; a thread decodes the next image while the current one runs.
* Each failure prints one ``error: PATH: reason`` line and the others still run; a summary
  ``N ok, N failed, N skipped in S s (X images/s)`` ends the run (stderr). The exit code is 0 only
  when no file failed.
"""

from __future__ import annotations

import difflib
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from ..inference.tiling import DEFAULT_OVERLAP
from ..io.atomic import DISK_FULL, WriteError, write_fd
from ..io.images import DEFAULT_MAX_PIXELS, ImageReadError, is_image_file
from .common import (
    compile_option, device_option, model_options, one_line_errors, precision_option, printable, runner_for_cli, strength_option,
    threads_option,
)
from .plan import GLOB_CHARS, Job, parse_shard, plan_jobs

__all__ = ["DefaultRunGroup", "run_cmd", "OUTPUT_FORMATS"]

log = logging.getLogger(__name__)

#: The output formats ``--format`` offers.
OUTPUT_FORMATS = ("jpg", "png", "tiff", "webp")


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
        if os.path.exists(token) or GLOB_CHARS & set(token) or os.sep in token or "." in token:
            return True
        # A bare word that is no file: a typo of a command gets click's "No such command".
        return not difflib.get_close_matches(token, list(self.commands), n=1, cutoff=0.6)


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
    try:
        try:
            sys.stdout.buffer.flush()
        except OSError as err:  # a closed pipe (BrokenPipeError), a full disk: what Python had buffered
            raise WriteError("<stdout>", err) from None
        write_fd(sys.stdout.buffer.fileno(), data, "<stdout>")
    except WriteError as err:  # a full disk, an I/O error, a closed pipe: what was written of it was cut back
        log.debug("stdout failed", exc_info=True)
        click.echo(f"error: <stdin>: {printable(err)}", err=True)
        _summary(0, 1, 0, time.perf_counter() - start)
        _quiet_stdout()
        return 1
    _summary(1, 0, 0, time.perf_counter() - start)
    return 0


def _quiet_stdout() -> None:
    """Point stdout at the null device after a failed write, so that Python's flush at exit cannot fail again
    (a second message, or exit code 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


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
    from ..inference.tiling import AUTO_TILE, check_tile

    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)

    overlap_given = click.get_current_context().get_parameter_source("tile_overlap") != click.core.ParameterSource.DEFAULT
    with one_line_errors():  # the tile is what is too small unless the overlap was chosen
        check_tile(AUTO_TILE if tile is None else tile, tile_overlap, blame="tile" if tile is not None and not overlap_given else "overlap")
    if "-" in inputs:
        if len(inputs) > 1:
            raise click.UsageError("'-' (stdin) cannot be combined with other inputs")
        derainer = runner_for_cli(model_name, weights, onnx_path=onnx_path, device=device, precision=precision, threads=threads,
                                  backend=backend, compile_=compile_, strength=strength)
        args = dict(max_pixels=max_pixels, tile=tile, tile_overlap=tile_overlap, side_by_side=side_by_side, fmt=fmt, quality=quality)
        click.get_current_context().exit(_stdin_to_stdout(derainer, args))

    start = time.perf_counter()
    out_path = Path(out_dir)
    named_a_folder = out_dir.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)) or out_path.is_dir()
    if is_image_file(out_path) and not named_a_folder:  # `-o out.jpg` would make a folder named out.jpg
        raise click.BadParameter(f"{out_dir} looks like a file name: -o names the output folder, where each input keeps "
                                 "its name (--suffix and --format change it; a folder of that name: end it with /)",
                                 param_hint="'-o' / '--output'")
    plan = plan_jobs(inputs, out_path, recursive, suffix, fmt, overwrite, parse_shard(shard))
    for path, reason in plan.errors:
        click.echo(f"error: {printable(path)}: {printable(reason)}", err=True)
    if not plan.jobs and not plan.skipped and not plan.errors:
        if plan.other_shards:  # a job array's task with nothing to do has succeeded
            click.echo(f"shard {shard}: none of the {plan.other_shards} images found belong to this shard", err=True)
            return
        raise click.ClickException("no images found in the inputs")
    ok, failed = 0, len(plan.errors)
    if plan.jobs or plan.skipped:  # the model options are checked even when every output exists already
        derainer = runner_for_cli(model_name, weights, onnx_path=onnx_path, device=device, precision=precision, threads=threads,
                                  backend=backend, compile_=compile_, strength=strength)
    if plan.jobs:
        ok, run_failed = _run_jobs(derainer, plan.jobs, out_path, tile, tile_overlap, fmt, quality, side_by_side, max_pixels,
                                   overwrite=overwrite)
        failed += run_failed
    hint = "; existing outputs were kept (--overwrite replaces them)" if plan.skipped else ""
    _summary(ok, failed, len(plan.skipped), time.perf_counter() - start, hint)
    if failed:
        click.get_current_context().exit(1)


def _run_jobs(derainer: Any, jobs: list[Job], out_dir: Path, tile: int | None, overlap: int, fmt: str | None,
              quality: int, side_by_side: bool, max_pixels: int, *, overwrite: bool = False) -> tuple[int, int]:
    from ..io.images import save_photo
    from ..io.progress import progress_bar

    slots = threading.Semaphore(2)  # decoded images alive: the one being derained and one prefetched
    decoded: queue.Queue = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(target=_prefetch, args=(jobs, max_pixels, slots, decoded, stop), name="derain-prefetch", daemon=True)
    reader.start()
    ok = failed = 0
    disk_full: list[Job] = []
    bar = progress_bar(len(jobs), desc="derain", unit="img", file=sys.stderr, disable=len(jobs) < 2)  # a bar on a terminal, lines in a log

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
            save_photo(photo, result, job.dst, format=fmt, quality=quality)
        except WriteError as err:  # nothing of job.dst was left: a rerun writes it
            log.debug("%s failed", job.shown, exc_info=True)
            if err.errno in DISK_FULL:
                disk_full.append(job)
            return str(err)
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
                bar.write(f"error: {printable(job.shown)}: {printable(reason)}")
    finally:
        stop.set()
        slots.release()
        bar.close()
    if disk_full:
        rerun = ("run the same command again; with --overwrite it writes the outputs already written again too "
                 "(without it, only the missing ones)" if overwrite else
                 "run the same command again; the outputs already written are skipped")
        click.echo(f"note: {len(disk_full)} output{'s' if len(disk_full) > 1 else ''} not written for lack of space "
                   f"(no partial files were left): free some space and {rerun}", err=True)
    return ok, failed
