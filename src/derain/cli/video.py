"""``derain video IN -o OUT``: derain every frame of a video; audio copied as is.

Frames are decoded with PyAV, derained in batches and re-encoded (``--codec``, default libx264)
at the input's resolution, frame rate and timestamps; audio streams are remuxed without
re-encoding (see :mod:`derain.inference.video` for odd frame sizes and containers). OUT is written
to a hidden temporary file in its folder and renamed when complete: an error or Ctrl-C removes the
temporary file and leaves no (broken) OUT. The input is never overwritten; an existing OUT needs
``--overwrite``. Exit codes: 0 done, 1 error, 2 bad usage, 130 interrupted.

``--temporal`` (a fixed camera: traffic, security and weather cameras) combines a sliding window of
``--window`` frames per output frame (:mod:`derain.inference.temporal`): the rain-free background of
the static scene, the model where the scene moves, frame by frame where the camera moves (a note
says so). Not for a moving camera (a phone, a car).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import click

from .common import (
    compile_option, device_option, model_options, one_line_errors, precision_option, printable, runner_for_cli, strength_option,
    threads_option,
)

__all__ = ["video_cmd"]

log = logging.getLogger(__name__)


def _default_output(src: Path) -> Path:
    return src.with_name(f"{src.stem}_derained{src.suffix or '.mp4'}")


def _compile_if_it_pays(derainer: Any, info: Any) -> None:
    """``--compile`` left to the command: compile a torch EfDeRain model when the video is long enough to pay."""
    from ..inference.compiled import CompileError, compile_model, compile_pays
    from ..inference.derainer import Derainer

    frames = info.expected_frames
    if not isinstance(derainer, Derainer) or not compile_pays(frames, info.width, info.height):
        return
    try:
        derainer.model = compile_model(derainer.model)  # the Derainer's own copy, prepared
    except CompileError:  # another architecture: eager
        return
    click.echo(f"compiling the network for {info.width}x{info.height} frames first ({frames} frames; --no-compile skips it)", err=True)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@click.command("video")
@click.argument("src", metavar="IN", type=click.Path(dir_okay=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output video [default: IN_derained.<ext>].")
@model_options
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True, help="Frames derained together.")
@click.option("--codec", default="libx264", show_default=True, help="Video encoder (libx264, libx265, libvpx-vp9, mpeg4, ...).")
@click.option("--bitrate", help="Target video bit rate, e.g. 4M or 800k (instead of --crf).")
@click.option("--crf", type=click.FloatRange(min=0), help="Constant rate factor for x264/x265/vp9/av1 [default: 18 without --bitrate].")
@click.option("--pix-fmt", help="Encoder pixel format [default: yuv420p; yuv444p for odd frame sizes].")
@click.option("--tile", type=click.IntRange(min=0), default=0, show_default=True,
              help="Derain frames in tiles of this side (bounded memory for 4K); 0 = whole frames.")
@click.option("--no-audio", is_flag=True, help="Leave the audio out (default: copy every audio stream as is).")
@click.option("--temporal", is_flag=True,
              help="Fixed camera: combine a sliding window of frames per output frame (the model only where the scene "
                   "moves; frame by frame where the camera moves).")
@click.option("--window", type=click.IntRange(min=3), default=15, show_default=True,
              help="With --temporal: frames combined per output frame (odd; the output lags by half of it).")
@device_option
@precision_option("auto")
@threads_option("Torch and codec threads (default: all cores).")
@compile_option(auto=True)
@strength_option
@click.option("--backend", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="Inference engine (onnxruntime: CPU, fp32; the model is exported once).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="Run this file from `derain export` with onnxruntime.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (the input is never overwritten).")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def video_cmd(src, output, model_name, weights, batch, codec, bitrate, crf, pix_fmt, tile, no_audio, temporal, window, device,
              precision, threads, compile_, strength, backend, onnx_path, overwrite, verbose) -> None:
    """Derain a video: every frame, same size, frame rate and timing; audio copied.

    \b
    derain video rainy.mp4 -o clean.mp4
    derain video clip.mkv -o clean.mkv --weights my.safetensors --crf 20 --batch 8
    derain video yard.mp4 -o yard_dry.mp4 --temporal      # a fixed camera
    """
    from ..inference.tiling import DEFAULT_OVERLAP, check_tile
    from ..inference.video import VideoError, derain_video, parse_bitrate, probe_video

    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    from ..inference.temporal import TemporalOptions

    with one_line_errors():
        check_tile(tile, DEFAULT_OVERLAP)
        options = TemporalOptions(window=window) if temporal else None
    if window != 15 and not temporal:
        raise click.UsageError("--window applies to --temporal only")
    if bitrate is not None and crf is not None:
        raise click.UsageError("give --bitrate or --crf, not both")
    if bitrate is not None:
        try:
            parse_bitrate(bitrate)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--bitrate") from None

    src_path = Path(src)
    try:
        info = probe_video(src_path)
    except VideoError as err:
        raise click.ClickException(str(err)) from None
    out = Path(output) if output else _default_output(src_path)
    if os.path.realpath(out) == os.path.realpath(src_path) or (out.exists() and os.path.samefile(out, src_path)):
        raise click.ClickException(f"refusing to overwrite the input {printable(src)} (choose another -o)")
    if out.is_dir():
        raise click.ClickException(f"{printable(out)} is a folder; -o takes a file name such as {printable(out / (src_path.stem + '.mp4'))}")
    if out.exists() and not overwrite:
        raise click.ClickException(f"{printable(out)} exists (use --overwrite to replace it)")
    if not out.parent.is_dir():
        raise click.ClickException(f"{printable(out.parent)}: output folder does not exist")

    derainer = runner_for_cli(model_name, weights, onnx_path=onnx_path, device=device, precision=precision, threads=threads,
                              backend=backend, compile_=bool(compile_), strength=strength)
    if compile_ is None:
        _compile_if_it_pays(derainer, info)
    log.debug("input %s: %s", src, info)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # kill = Ctrl-C: clean up the temporary file
    try:
        result = derain_video(
            derainer, src_path, out, batch=batch, codec=codec, bitrate=bitrate, crf=crf, pix_fmt=pix_fmt,
            threads=threads, tile=tile, audio=not no_audio, temporal=options or False,
        )
    except VideoError as err:
        raise click.ClickException(str(err)) from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: {printable(out)} was not written", err=True)
        click.get_current_context().exit(130)
    except (MemoryError, RuntimeError) as err:
        log.debug("video failed", exc_info=True)
        reason = "out of memory (try a smaller --batch or --tile 512)" if isinstance(err, MemoryError) else str(err).strip().splitlines()[0]
        raise click.ClickException(f"{printable(src)}: derain failed: {reason}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.note:
        click.echo(result.note, err=True)
    audio = f", {result.audio_streams} audio stream{'s' if result.audio_streams != 1 else ''} copied" if result.audio_streams else ""
    pad = " (padded to even sides)" if result.padded else ""
    click.echo(
        f"{result.frames} frames {result.width}x{result.height}{pad} in {result.seconds:.1f} s ({result.fps:.2f} fps) "
        f"-> {out} ({result.codec}, {result.pix_fmt}{audio})",
        err=True,
    )
