"""Derain a video file with PyAV: decode, derain in batches, re-encode; audio copied as is.

:func:`derain_video` reads ``src`` (any container/codec FFmpeg decodes), runs every frame of its
first video stream through a derainer (anything with ``run_tensor((B, 3, H, W) float [0, 1])``, such
as :class:`~derain.inference.derainer.Derainer` or the ONNX Runtime backend), and writes ``dst``:

* **Same timing.** The output video stream has the input's frame rate, and every frame keeps its
  input timestamp (the encoder works in the input stream's time base), so variable frame rate
  content stays in sync. The muxer may pick its own time base for storage (MP4 does); timestamps
  are rescaled, not renumbered.
* **Audio copied, not re-encoded.** Every audio stream is remuxed packet by packet
  (``add_stream_from_template``). An audio codec the output container cannot hold is dropped with a
  warning (say, Vorbis into ``.mp4`` on an FFmpeg without it); pick a container that holds it
  (``.mkv`` holds everything) to keep it. Subtitle and data streams are not copied.
* **Same resolution, odd sizes included.** The default pixel format is ``yuv420p`` (plays
  everywhere). Its 2×2 chroma subsampling makes x264 and x265 refuse odd sides (mpeg4 and VP9
  take them). For an odd width or height that the codec refuses in ``yuv420p`` the encoder uses a
  format without chroma subsampling (``yuv444p``, else an RGB format the codec has) at the exact
  input size — H.264 in 4:4:4 (High 4:4:4 profile) decodes with FFmpeg/VLC/mpv but not in every
  browser or phone; only a codec with none of those formats gets the frames edge-padded by one
  pixel to even sides (a warning says so, and :attr:`VideoResult.padded` is set).
* **Atomic.** The result is written through :func:`derain.io.atomic.atomic_output` to a hidden
  temporary file next to ``dst`` (``.<name>.<random>.part<ext>``: the container is chosen by the
  extension) and moved over ``dst`` only when complete; on any error or ``KeyboardInterrupt`` the
  temporary file is deleted and ``dst`` is left as it was.

* **Temporal mode** (``temporal=True``, ``derain video --temporal``): for a fixed camera, each output frame
  combines a sliding window of frames (:mod:`derain.inference.temporal`); the model derains only where the
  scene moves, and every frame where the camera moves. The output is the same frames at the same
  timestamps; memory holds the window, not the video.
* **Metadata.** The input's ``creation_time`` (container and video stream) is kept where it has one.

* **Upright frames.** A phone's portrait video stores its frames sideways with a display rotation that players
  apply; the model sees every frame as it is shown (:func:`upright`: rain falls down, as in training), and the
  output stores its frames as the input did, with the same rotation, so it plays upright too (a mirroring in
  the display matrix is neither applied nor kept: PyAV reports the rotation only).

Colour: frames are converted to RGB and back with FFmpeg's default (BT.601) matrices both ways, so
the round trip is consistent; colour tags of the input are not copied.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import InvalidArgument, UserError
from ..io.atomic import atomic_output
from .tiling import DEFAULT_OVERLAP

__all__ = [
    "VideoError",
    "decode_frames",
    "display_rotation",
    "upright",
    "open_video",
    "VideoInfo",
    "VideoResult",
    "CRF_CODECS",
    "TEMP_MARKER",
    "derain_video",
    "parse_bitrate",
    "probe_video",
]

log = logging.getLogger(__name__)

#: Encoders that take a constant-rate-factor (``crf``) option.
CRF_CODECS = frozenset({"libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libsvtav1", "libaom-av1"})
#: CRF used for the CRF codecs when neither ``crf`` nor ``bitrate`` is given (visually near-lossless).
DEFAULT_CRF = 18
#: The temporary output is ``.<name>.<random>.part<ext>`` in the output's folder.
TEMP_MARKER = ".part"
#: Encoder options that stop encoders printing their own logs (x265 writes to stderr itself).
_QUIET_OPTIONS = {"libx265": {"x265-params": "log-level=none"}}
#: Pixel formats without chroma subsampling, tried in order for odd frame sizes.
_FULL_CHROMA = ("yuv444p", "gbrp", "rgb24", "bgr24", "bgr0", "yuvj444p")


class VideoError(UserError):
    """A problem with the user's input or options (bad file, no video stream, codec refused...)."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` finds in a file."""

    width: int
    height: int
    frame_rate: Fraction | None
    frames: int  # 0 when the container does not say
    duration: float | None  # seconds
    codec: str
    audio_codecs: tuple[str, ...]

    @property
    def expected_frames(self) -> int:
        """The frame count as declared, else estimated from the duration and frame rate (0: unknown)."""
        if self.frames or not (self.duration and self.frame_rate):
            return self.frames
        return round(self.duration * self.frame_rate)


@dataclass
class VideoResult:
    """What :func:`derain_video` wrote."""

    frames: int
    seconds: float
    width: int
    height: int
    pix_fmt: str
    codec: str
    audio_streams: int
    padded: bool = False
    dropped_audio: list[str] = field(default_factory=list)
    note: str = ""  # what the temporal mode did (empty frame by frame)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def parse_bitrate(text: str | int) -> int:
    """``"4M"`` → 4000000, ``"800k"`` → 800000, ``"2500000"`` → 2500000 (bits per second).

    >>> parse_bitrate("4M"), parse_bitrate("800k"), parse_bitrate(1500)
    (4000000, 800000, 1500)
    """
    if isinstance(text, int):
        value = float(text)
    else:
        s = text.strip().lower().removesuffix("bps").removesuffix("b/s")
        scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(s[-1:], 1.0)
        if scale != 1.0:
            s = s[:-1]
        try:
            value = float(s) * scale
        except ValueError:
            raise InvalidArgument(f"bitrate must look like 4M, 800k or 2500000, got {text!r}", option="--bitrate") from None
    if not value >= 1000:
        raise InvalidArgument(f"bitrate must be at least 1k (bits/s), got {text!r}", option="--bitrate")
    return int(value)


def open_video(src: str | os.PathLike[str]) -> Any:
    """The PyAV container of the video file ``src`` (to be closed: a context manager); every failure to open it
    as a video with a video stream is a :class:`VideoError` with one clear line."""
    import av

    path = Path(src)
    if not path.exists():
        raise VideoError(f"{src}: no such file")
    if path.is_dir():
        raise VideoError(f"{src}: is a folder, not a video file")
    try:
        container = av.open(str(path), "r")
    except av.error.FFmpegError as err:
        raise VideoError(f"{src}: not a readable video file ({err.strerror or err})") from None
    except OSError as err:
        raise VideoError(f"{src}: cannot open ({err.strerror or err})") from None
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in ("image2", "tiff", "webp", "tty"):
        container.close()
        if _is_image(path):
            raise VideoError(f"{src}: is a still image, not a video (use `derain run` for photos)")
        raise VideoError(f"{src}: not a readable video file (FFmpeg can only read it as {fmt})")
    if not container.streams.video:
        container.close()
        raise VideoError(f"{src}: has no video stream")
    return container


def _is_image(path: Path) -> bool:
    """Whether ``path`` reads as an image (header only; no pixel limit)."""
    from ..io.images import ImageReadError, image_size

    try:
        image_size(path, max_pixels=2**62)
        return True
    except ImageReadError:
        return False


def _frame_rate(stream: Any) -> Fraction | None:
    for rate in (stream.average_rate, getattr(stream, "guessed_rate", None), stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def probe_video(src: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame rate, frame count, duration and codecs of ``src`` (:class:`VideoError` if unreadable)."""
    with open_video(src) as container:
        vs = container.streams.video[0]
        duration = None
        if vs.duration is not None and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            frame_rate=_frame_rate(vs),
            frames=int(vs.frames or 0),
            duration=duration,
            codec=vs.codec_context.name,
            audio_codecs=tuple(a.codec_context.name for a in container.streams.audio),
        )


def _is_subsampled(pix_fmt: str) -> tuple[bool, bool]:
    """(horizontally, vertically) chroma-subsampled?"""
    import av

    fmt = av.VideoFormat(pix_fmt)
    return fmt.chroma_width(64) < 64, fmt.chroma_height(64) < 64


def _encoder_opens(codec: Any, pix_fmt: str, width: int, height: int) -> bool:
    """Whether ``codec`` accepts ``pix_fmt`` at ``width×height`` (a throwaway encoder is opened)."""
    import av

    ctx = av.CodecContext.create(codec.name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25, 1)
    ctx.options = dict(_QUIET_OPTIONS.get(codec.name, {}))
    try:
        ctx.open()
        return True
    except av.error.FFmpegError:
        return False
    finally:
        del ctx


def _choose_pix_fmt(codec: Any, pix_fmt: str | None, width: int, height: int) -> tuple[str, bool]:
    """The encoder's pixel format and whether frames must be padded to even sides.

    Even sizes (and odd ones the codec takes in a subsampled format, like mpeg4 and VP9 do) keep
    ``pix_fmt`` (default ``yuv420p``). For a codec that refuses odd sides in it (x264, x265) the first
    full-chroma format it has is used at the exact size; padding to even sides is the last resort.
    """
    formats = [f.name for f in (codec.video_formats or [])]
    if pix_fmt is not None and formats and pix_fmt not in formats:
        raise VideoError(f"codec {codec.name} does not take pixel format {pix_fmt!r} (it takes: {', '.join(formats)})")
    chosen = pix_fmt or ("yuv420p" if not formats or "yuv420p" in formats else formats[0])
    sub_w, sub_h = _is_subsampled(chosen)
    if not ((sub_w and width % 2) or (sub_h and height % 2)) or _encoder_opens(codec, chosen, width, height):
        return chosen, False
    if pix_fmt is not None:
        raise VideoError(
            f"codec {codec.name} needs even frame sides in {pix_fmt} but the video is {width}x{height}; "
            "leave --pix-fmt out (a format without chroma subsampling is chosen) or use yuv444p"
        )
    for candidate in _FULL_CHROMA:
        if candidate in formats and _encoder_opens(codec, candidate, width, height):
            log.info("odd frame size %dx%d: encoding as %s (no chroma subsampling) at the exact size", width, height, candidate)
            return candidate, False
    return chosen, True


def _encoder_stream(out: Any, codec_name: str, rate: Fraction | None, time_base: Fraction, width: int, height: int,
                    pix_fmt: str | None, bitrate: int | None, crf: float | None, threads: int | None) -> tuple[Any, bool]:
    import av

    try:
        codec = av.codec.Codec(codec_name, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError and friends
        raise VideoError(f"unknown video encoder {codec_name!r} (try libx264, libx265, libvpx-vp9 or mpeg4)") from None
    if codec.type != "video":
        raise VideoError(f"{codec_name!r} is not a video encoder")
    if codec.canonical_name not in out.supported_codecs:
        raise VideoError(
            f"{codec_name} ({codec.canonical_name}) cannot be stored in a {out.format.name} file; "
            f"choose another --codec (this container's default is {out.default_video_codec}) or output file type"
        )
    if crf is not None and codec_name not in CRF_CODECS:
        raise VideoError(f"codec {codec_name} has no CRF setting; use --bitrate instead (CRF codecs: {', '.join(sorted(CRF_CODECS))})")
    fmt, pad = _choose_pix_fmt(codec, pix_fmt, width, height)
    options: dict[str, str] = dict(_QUIET_OPTIONS.get(codec_name, {}))
    if crf is None and bitrate is None and codec_name in CRF_CODECS:
        crf = DEFAULT_CRF
    if crf is not None:
        options["crf"] = f"{crf:g}"
        if codec_name in ("libvpx", "libvpx-vp9"):
            options["b"] = "0"  # constant quality mode
    stream = out.add_stream(codec_name, rate=rate, options=options)
    stream.width = width + (width % 2 if pad else 0)
    stream.height = height + (height % 2 if pad else 0)
    stream.pix_fmt = fmt
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    if bitrate is not None:
        stream.bit_rate = bitrate
    if threads:
        stream.codec_context.thread_count = threads
    return stream, pad


def _copy_audio_streams(out: Any, in_audio: list[Any], dst_path: Path) -> tuple[dict[int, Any], list[str]]:
    """Output streams for the input audio streams the container can hold (index → stream), and the codecs dropped."""
    audio_map: dict[int, Any] = {}
    dropped: list[str] = []
    supported = out.supported_codecs
    for a in in_audio:
        name = a.codec_context.name
        if name not in supported:
            dropped.append(name)
            log.warning("audio stream #%d (%s) cannot be stored in %s; dropped (use .mkv to keep it)", a.index, name, dst_path.suffix or "this container")
            continue
        audio_map[a.index] = out.add_stream_from_template(a)
    return audio_map, dropped


def display_rotation(src: str | os.PathLike[str]) -> int:
    """The rotation (degrees, as FFmpeg's display matrix says: -90 = a quarter turn clockwise; rounded to a quarter
    turn) players apply to ``src``'s frames; 0 where none or where the first frame cannot be decoded (the transcode
    then says why). A mirroring in the matrix is not read (PyAV reports the rotation only)."""
    import av

    try:
        with open_video(src) as container:
            for frame in container.decode(video=0):
                return _frame_rotation(frame)
    except (VideoError, av.error.FFmpegError):
        return 0
    return 0


def _frame_rotation(frame: Any) -> int:
    """A decoded frame's display rotation in degrees, rounded to a quarter turn (:func:`display_rotation`)."""
    return 90 * round((getattr(frame, "rotation", 0) or 0) / 90)


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """``frame`` (``H×W×C``) as a player shows it, for a display rotation in degrees (:func:`display_rotation`);
    ``upright(upright(f, r), -r)`` is ``f`` again (how a derained frame is stored back).

    >>> f = np.arange(6).reshape(2, 3, 1)
    >>> upright(f, -90)[..., 0]  # a quarter turn clockwise: the left column becomes the top row
    array([[3, 0],
           [4, 1],
           [5, 2]])
    >>> bool((upright(upright(f, -90), 90) == f).all())
    True
    """
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k=turns)) if turns else frame


def decode_frames(src: str | os.PathLike[str], stride: int = 1) -> Iterator[np.ndarray]:
    """Every ``stride``-th frame (the first included) of ``src``'s first video stream: uint8 RGB ``H×W×3``, upright
    (:func:`upright`). Opened by :func:`open_video`; a decoding failure is a :class:`VideoError` too."""
    import av

    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rotation = None
    with open_video(src) as container:
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if rotation is None:  # the first frame's, for every frame (as players apply it)
                    rotation = _frame_rotation(frame)
                if i % stride == 0:
                    yield upright(frame.to_ndarray(format="rgb24"), rotation)
        except av.error.FFmpegError as err:
            raise VideoError(f"{src}: decoding failed: {err.strerror or err}") from None


def _keep_creation_time(inp: Any, vs: Any, out: Any, ovs: Any) -> None:
    """The input's ``creation_time`` (container and video stream) onto the output, where the input has one."""
    for source, target in ((inp, out), (vs, ovs)):
        stamp = (getattr(source, "metadata", None) or {}).get("creation_time")
        if stamp:
            target.metadata["creation_time"] = stamp


def _frame_total(vs: Any, rate: Fraction | None) -> int:
    """The video stream's frame count as declared, else estimated from its duration (0: unknown)."""
    total = int(vs.frames or 0)
    if not total and vs.duration and rate:
        total = round(float(vs.duration * vs.time_base * rate))
    return total


def _derain_arrays(derainer: Any, rgb: np.ndarray, *, tile: int | None, tile_overlap: int) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 RGB frames → the derainer's ``(N, H, W, 3)`` uint8 RGB."""
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0)
    if hasattr(derainer, "run_tiled"):  # tile 0: whole frames, each judged as Derainer judges a photo
        y = derainer.run_tiled(x, tile, tile_overlap)
    else:
        y = derainer.run_tensor(x)
    return y.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _pad(arr: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """Frames edge-padded by ``pad`` (rows, columns) for an encoder that needs even sides."""
    return np.pad(arr, ((0, 0), (0, pad[0]), (0, pad[1]), (0, 0)), mode="edge") if any(pad) else arr


def _derain_frames(derainer: Any, frames: list[np.ndarray], *, tile: int | None, tile_overlap: int) -> np.ndarray:
    """Upright ``H×W×3`` uint8 RGB frames → derained ``(N, H, W, 3)`` uint8 RGB."""
    return _derain_arrays(derainer, np.stack(frames), tile=tile, tile_overlap=tile_overlap)


class _FrameByFrame:
    """Every frame through the model, a batch at a time: outputs as soon as their batch is derained."""

    def __init__(self, derain_frames: Any) -> None:
        self._derain_frames = derain_frames

    def push(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._derain_frames(frames))

    def finish(self) -> list[np.ndarray]:
        return []


class _Temporal:
    """The temporal engine over decoded frames: outputs come ``window // 2`` frames late, in order."""

    def __init__(self, derainer: Any, options: Any, *, tile: int | None, tile_overlap: int) -> None:
        from .temporal import ModelOnCrops, TemporalEngine

        self.engine = TemporalEngine(options)
        self._run = functools.partial(_derain_arrays, derainer, tile=tile, tile_overlap=tile_overlap)
        self._crops = ModelOnCrops(derainer, refresh=self.engine.options.window, tile=tile, tile_overlap=tile_overlap)

    def _outputs(self, decisions: list[Any]) -> list[np.ndarray]:
        from .temporal import compose

        whole = [d for d in decisions if d.needs_model and d.whole_frame]
        derained = list(self._run(np.stack([d.frame for d in whole]))) if whole else []
        by_index: dict[int, Any] = {d.index: out for d, out in zip(whole, derained)}
        for d in decisions:
            if d.needs_model and d.index not in by_index:  # the model on the crops where the scene moves
                by_index[d.index] = self._crops(d.frame, d.boxes)
        return [compose(d, by_index.get(d.index)) for d in decisions]

    def push(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        decisions = []
        for f in frames:
            decisions += self.engine.push(f)
        return self._outputs(decisions)

    def finish(self) -> list[np.ndarray]:
        return self._outputs(self.engine.finish())

    def note(self, frames: int) -> str:
        e = self.engine
        h, w = e.frame_size or (0, 0)
        text = f"temporal: the model ran on {e.model_frames} of {frames} frames ({100 * e.model_pixels / max(1, frames * h * w):.0f} % of the pixels)"
        if e.moved_frames:
            text += f"; the camera moved in {e.moved_frames} frames (derained frame by frame there)"
        return text


def _transcode(inp: Any, vs: Any, out: Any, ovs: Any, audio_map: dict[int, Any], processor: Any, batch: int,
               time_base: Fraction, rate: Fraction | None, bar: Any, rotation: int, pad: tuple[int, int]) -> int:
    """Demux ``inp``: video frames derained in batches by ``processor`` (``push``/``finish`` of upright RGB arrays:
    outputs in order, possibly later than their input), turned back as stored (``rotation``), edge-padded by
    ``pad`` (rows, columns) for the encoder and encoded into ``ovs``, audio packets copied; frames written."""
    import av

    pending: list[Any] = []
    timestamps: collections.deque[int] = collections.deque()  # of the frames pushed but not yet written
    written = 0
    last_pts: int | None = None
    step = max(1, int(round(1 / (rate * time_base)))) if rate else 1

    def emit(images: list[np.ndarray]) -> None:
        nonlocal written
        for img in images:
            frame = av.VideoFrame.from_ndarray(_pad(upright(img, -rotation)[None], pad)[0], format="rgb24")
            frame.pts = timestamps.popleft()
            frame.time_base = time_base
            for packet in ovs.encode(frame):
                out.mux(packet)
        written += len(images)

    def flush() -> None:
        if not pending:
            return
        timestamps.extend(f.pts for f in pending)
        emit(processor.push([upright(f.to_ndarray(format="rgb24"), rotation) for f in pending]))
        bar.update(len(pending))
        pending.clear()

    for packet in inp.demux(vs, *[a for a in inp.streams.audio if a.index in audio_map]):
        if packet.stream.index == vs.index:
            for frame in packet.decode():
                if frame.pts is None:  # raw streams: frames at the frame rate
                    frame.pts = 0 if last_pts is None else last_pts + step
                elif last_pts is not None and frame.pts <= last_pts:
                    frame.pts = last_pts + 1  # encoders need strictly increasing timestamps
                last_pts = frame.pts
                pending.append(frame)
                if len(pending) >= batch:
                    flush()
        elif packet.dts is not None:  # a flush packet at EOF has none
            packet.stream = audio_map[packet.stream.index]
            out.mux(packet)
    flush()
    emit(processor.finish())
    for packet in ovs.encode(None):
        out.mux(packet)
    return written


def derain_video(
    derainer: Any,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    batch: int = 4,
    codec: str = "libx264",
    bitrate: int | str | None = None,
    crf: float | None = None,
    pix_fmt: str | None = None,
    threads: int | None = None,
    tile: int | None = 0,
    tile_overlap: int = DEFAULT_OVERLAP,
    audio: bool = True,
    progress: bool | None = None,
    temporal: bool | Any = False,
) -> VideoResult:
    """Derain the first video stream of ``src`` into ``dst`` (atomically); copy its audio as is.

    Args:
        derainer: an object with ``run_tensor`` (and ``run_tiled`` for ``tile != 0``), e.g. a ``Derainer``.
        batch: frames derained together.
        codec: video encoder (FFmpeg name).
        bitrate: target bit rate (``"4M"``, ``800000``); exclusive with ``crf``.
        crf: constant rate factor for the CRF codecs (default :data:`DEFAULT_CRF` when no bitrate).
        pix_fmt: encoder pixel format (default ``yuv420p``; a full-chroma format for odd sizes).
        threads: decoder/encoder threads (the derainer's threads are its own).
        tile: tile side for ``run_tiled`` (0 = whole frames, None = automatic as ``derain run``).
        audio: copy the audio streams.
        progress: progress on stderr, a bar on a terminal and a plain line every few seconds
            otherwise (:func:`derain.io.progress.progress_bar`); False = none (None = True).
        temporal: for a fixed camera, combine a sliding window of frames (:mod:`derain.inference.temporal`;
            True or a :class:`~derain.inference.temporal.TemporalOptions`); the result's ``note`` says
            where the model ran and where the camera moved.

    Raises:
        VideoError: unreadable input, no video stream, refused codec/options, decoding/encoding failure.
        ``dst`` is replaced if it exists (the CLI asks for ``--overwrite``); it is never left half-written.
    """
    import av

    from ..io.progress import progress_bar
    from .temporal import TemporalOptions

    if temporal is not False and temporal is not None and temporal is not True and not isinstance(temporal, TemporalOptions):
        raise InvalidArgument(f"temporal must be True, False or a TemporalOptions, got {temporal!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if crf is not None and bitrate is not None:
        raise VideoError("give either a bitrate or a crf, not both")
    bits = parse_bitrate(bitrate) if bitrate is not None else None
    src_path, dst_path = Path(src), Path(dst)
    if dst_path.exists() and src_path.exists() and os.path.samefile(src_path, dst_path):
        raise VideoError(f"refusing to overwrite the input {src} with the output")
    if not dst_path.parent.is_dir():
        raise VideoError(f"{dst_path.parent}: output folder does not exist")

    start = time.perf_counter()
    try:
        with open_video(src_path) as inp, atomic_output(dst_path, suffix=TEMP_MARKER + dst_path.suffix) as tmp:
            vs = inp.streams.video[0]
            vs.thread_type = "AUTO"
            if threads:
                vs.codec_context.thread_count = threads
            width, height = vs.codec_context.width, vs.codec_context.height
            if width < 1 or height < 1:
                raise VideoError(f"{src}: video stream has no frame size")
            time_base = vs.time_base or Fraction(1, 90000)
            rate = _frame_rate(vs)
            in_audio = list(inp.streams.audio) if audio else []

            try:
                out = av.open(str(tmp), "w", options={"movflags": "+faststart"} if dst_path.suffix.lower() in (".mp4", ".mov", ".m4v") else {})
            except (av.error.FFmpegError, ValueError) as err:
                raise VideoError(f"{dst}: cannot write this file type ({err})") from None
            rotation = display_rotation(src_path)
            with out:
                ovs, pad = _encoder_stream(out, codec, rate, time_base, width, height, pix_fmt, bits, crf, threads)
                if rotation:  # a phone's portrait video plays upright, as the input does
                    ovs.set_display_rotation(rotation)
                audio_map, dropped = _copy_audio_streams(out, in_audio, dst_path)
                if pad:
                    log.warning("codec %s needs even frame sides: %dx%d is padded to %dx%d", codec, width, height, ovs.width, ovs.height)
                bar = progress_bar(_frame_total(vs, rate) or None, desc=dst_path.name, unit="frame", file=sys.stderr,
                                   disable=progress is False)
                _keep_creation_time(inp, vs, out, ovs)
                pad_by = (ovs.height - height, ovs.width - width)
                processor: Any
                if temporal:
                    options = temporal if isinstance(temporal, TemporalOptions) else None
                    processor = _Temporal(derainer, options, tile=tile, tile_overlap=tile_overlap)
                else:
                    processor = _FrameByFrame(functools.partial(_derain_frames, derainer, tile=tile, tile_overlap=tile_overlap))
                try:
                    written = _transcode(inp, vs, out, ovs, audio_map, processor, batch, time_base, rate, bar, rotation, pad_by)
                finally:
                    bar.close()
                if written == 0:
                    raise VideoError(f"{src}: no video frames could be decoded")
                result = VideoResult(
                    frames=written, seconds=0.0, width=ovs.width, height=ovs.height, pix_fmt=ovs.pix_fmt, codec=codec,
                    audio_streams=len(audio_map), padded=pad, dropped_audio=dropped,
                    note=processor.note(written) if isinstance(processor, _Temporal) else "",
                )
    except av.error.FFmpegError as err:
        raise VideoError(f"{src}: video processing failed: {err.strerror or err}") from None
    except OSError as err:  # a full disk or a failing device while the output is written
        raise VideoError(f"{dst}: writing failed: {err.strerror or err}; nothing was written") from None
    result.seconds = time.perf_counter() - start
    return result

