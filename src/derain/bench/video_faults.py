"""A corpus of broken and odd video files, generated on the spot, for fault tests and fault tables.

:func:`video_fault_corpus` writes each case into a folder and returns what ``derain video`` is
expected to do with it: ``fail`` (one clear line on stderr naming the problem, a non-zero exit, no
traceback, no output file and no temporary file left) or ``ok`` (odd but valid: it is derained).
``expect_text`` is a fragment the error line must contain (lower case), where one is fixed.

Nothing is downloaded; every file is made with PyAV (or by writing bytes), a few KB each.

>>> import tempfile
>>> faults = video_fault_corpus(tempfile.mkdtemp())
>>> len(faults) >= 15, sorted({f.expect for f in faults})
(True, ['fail', 'ok'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["VideoFault", "make_test_video", "video_fault_corpus"]


@dataclass(frozen=True)
class VideoFault:
    """One case: its name, the file (or folder) to give ``derain video``, what should happen and why."""

    name: str
    path: Path
    expect: str  # "fail" or "ok"
    expect_text: str = ""  # a fragment of the error line (lower case), where it is fixed
    what: str = ""
    needs_non_root: bool = False  # meaningful only when not running as root (permissions)


def _frame(width: int, height: int, i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([(xx * 5 + i * 9) % 256, (yy * 3 + 40) % 256, np.full_like(xx, 30 + 20 * (i % 8))], -1).astype(np.uint8)


def make_test_video(
    path: str | os.PathLike[str],
    width: int = 64,
    height: int = 48,
    frames: int = 8,
    fps: int = 10,
    *,
    codec: str = "libx264",
    pts: list[int] | None = None,
    rotation: int = 0,
    audio: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A small test video: a moving gradient; ``pts`` (in 1/fps/10 units) for variable frame timing."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as c:
        if metadata:
            c.metadata.update(metadata)
        v = c.add_stream(codec, rate=fps)
        v.width, v.height = width, height
        odd = width % 2 or height % 2
        v.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
        if pts is not None:
            v.time_base = Fraction(1, fps * 10)
            v.codec_context.time_base = Fraction(1, fps * 10)
        if rotation:
            v.set_display_rotation(rotation)
        a = c.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(_frame(width, height, i), format="rgb24")
            if pts is not None:
                f.pts = pts[i]
                f.time_base = Fraction(1, fps * 10)
            for packet in v.encode(f):
                c.mux(packet)
        for packet in v.encode(None):
            c.mux(packet)
        if a is not None:
            _mux_silence(c, a, 16000 * frames // fps)
    return path


def _mux_silence(c: object, a: object, total: int) -> None:
    import av

    for k in range(0, max(total, 1024), 1024):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, k
        for packet in a.encode(frame):  # type: ignore[attr-defined]
            c.mux(packet)  # type: ignore[attr-defined]
    for packet in a.encode(None):  # type: ignore[attr-defined]
        c.mux(packet)  # type: ignore[attr-defined]


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=16000, layout="mono")
        _mux_silence(c, a, 8000)
    return path


def _zero_frames(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()  # the header is written; not a single frame follows
    return path


def video_fault_corpus(folder: str | os.PathLike[str]) -> list[VideoFault]:
    """Write the corpus into ``folder`` (created) and return its cases (module docstring)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = make_test_video(folder / "good.mp4", frames=10)
    data = good.read_bytes()
    cases: list[VideoFault] = []

    def add(name: str, make: Callable[[Path], Path | None], expect: str, text: str = "", what: str = "", *,
            suffix: str = ".mp4", non_root: bool = False) -> None:
        path = folder / f"{name}{suffix}"
        made = make(path)
        cases.append(VideoFault(name, made or path, expect, text, what, non_root))

    def write(content: bytes) -> Callable[[Path], None]:
        return lambda p: p.write_bytes(content) and None

    add("truncated", write(data[: len(data) // 2]), "fail", "", "the second half of the file is missing")
    add("truncated-header", write(data[:200]), "fail", "", "only the first 200 bytes")
    add("zero-frames", _zero_frames, "fail", "", "a video stream without a single frame")
    add("empty-file", write(b""), "fail", "", "0 bytes")
    add("garbage", write(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))), "fail", "not a readable video",
        "random bytes with an .mp4 name")
    add("text", write(b"this is not a video\n" * 10), "fail", "not a readable video", "a text file named .mp4")
    corrupted = bytearray(data)
    for i in range(8, min(len(corrupted), 400)):
        corrupted[i] ^= 0x5A
    add("corrupted-header", write(bytes(corrupted)), "fail", "", "the container's header scrambled")
    add("audio-only", _audio_only, "fail", "no video stream", "an AAC track, no video", suffix=".m4a")
    add("directory", lambda p: p.mkdir() or None, "fail", "folder", "a folder named like a video")
    add("missing", lambda p: None, "fail", "no such file", "a path that does not exist")
    add("still-image", lambda p: _png(p), "fail", "still image", "a PNG named .mp4")
    add("unreadable", lambda p: (p.write_bytes(data), os.chmod(p, 0)) and None, "fail", "", "no read permission",
        non_root=True)
    huge = bytearray(data)
    # declare an absurd frame size in the H.264 SPS? Simpler and container-level: an MP4 box that claims 2 GB
    huge[0:4] = (0x7FFFFFF0).to_bytes(4, "big")
    add("huge-declared-size", write(bytes(huge)), "fail", "", "the first box declares 2 GB")
    add("one-frame", lambda p: make_test_video(p, frames=1), "ok", what="a single frame")
    add("variable-frame-rate", lambda p: make_test_video(p, frames=8, pts=[0, 10, 15, 40, 45, 70, 100, 101]), "ok",
        what="irregular timestamps")
    add("odd-size", lambda p: make_test_video(p, 65, 49, frames=6), "ok", what="65x49")
    add("one-pixel", lambda p: make_test_video(p, 1, 1, frames=4, codec="libx264"), "ok", what="1x1 frames")
    add("one-pixel-wide", lambda p: make_test_video(p, 1, 48, frames=4), "ok", what="1x48 frames")
    add("rotated", lambda p: make_test_video(p, frames=4, rotation=-90), "ok", what="display rotation metadata (phone portrait)")
    add("wrong-extension", lambda p: p.write_bytes(data) and None, "ok", what="an MP4 named .avi", suffix=".avi")
    add("with-audio", lambda p: make_test_video(p, frames=6, audio=True, metadata={"creation_time": "2020-01-02T03:04:05.000000Z"}),
        "ok", what="audio and a creation time")
    return cases


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (32, 24), (100, 120, 140)).save(path, "PNG")
