"""``derain video``: frames, size, frame rate, timestamps and audio survive; errors are one line; writes are atomic.

Test videos are made here with PyAV (H.264 + AAC, 64×48 and 65×49 at 10 fps); the CLI runs through its
real entry point with an identity-initialised efderain-tiny model, so the output must look like the input.
"""

from __future__ import annotations

import glob
import hashlib
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

import derain  # noqa: E402
from derain.inference.video import VideoError, _choose_pix_fmt, derain_video, probe_video  # noqa: E402

FPS = 10
FRAMES = 12
SAMPLE_RATE = 16000


def make_video(path: Path, width: int, height: int, frames: int = FRAMES, fps: int = FPS, audio: bool = True,
               codec: str = "libx264") -> Path:
    """A moving gradient (plus a 440 Hz AAC tone of the same length)."""
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=fps, options={"crf": "12"} if codec == "libx264" else {})
        v.width, v.height = width, height
        v.pix_fmt = "yuv420p" if (width % 2 == 0 and height % 2 == 0) or codec != "libx264" else "yuv444p"
        a = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            img = np.stack([(xx * 3 + i * 7) % 256, (yy * 4 + 60) % 256, np.full_like(xx, 40 + 10 * (i % 10))], -1)
            for packet in v.encode(av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")):
                c.mux(packet)
        for packet in v.encode(None):
            c.mux(packet)
        if a is not None:
            mux_tone(c, a, SAMPLE_RATE * frames // fps, amplitude=0.3)
    return path


def mux_tone(c, a, total: int, amplitude: float) -> None:
    """Encode ``total`` samples of a 440 Hz mono tone into audio stream ``a`` of container ``c``."""
    for k in range(0, total, 1024):
        t = np.arange(k, k + 1024) / SAMPLE_RATE
        frame = av.AudioFrame.from_ndarray((amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, k
        for packet in a.encode(frame):
            c.mux(packet)
    for packet in a.encode(None):
        c.mux(packet)


def make_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        a = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        mux_tone(c, a, SAMPLE_RATE // 2, amplitude=0.0)
    return path


def decode(path: Path) -> tuple[list[float], np.ndarray]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        return [float(f.time) for f in frames], np.stack([f.to_ndarray(format="rgb24") for f in frames]).astype(np.float32)


def streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        audio = [(a.codec_context.name, float(a.duration * a.time_base) if a.duration else None) for a in c.streams.audio]
        return {"size": (vs.codec_context.width, vs.codec_context.height), "rate": vs.average_rate, "audio": audio}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[str]:
    return [p for p in os.listdir(folder) if ".part" in p]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "derain.cli.main", "video", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("video")
    weights = root / "tiny.safetensors"
    derain.save_model(derain.create_model("efderain-tiny", identity_init=True), weights)
    return {
        "root": root,
        "weights": str(weights),
        "even": make_video(root / "rain.mp4", 64, 48),
        "odd": make_video(root / "odd.mp4", 65, 49),
    }


def model_args(work: dict) -> list[str]:
    return ["--weights", work["weights"], "--precision", "fp32", "--threads", "1"]


def test_video_keeps_frames_size_rate_timing_and_audio(work, tmp_path):
    src, out = work["even"], tmp_path / "clean.mp4"
    before = sha(src)
    proc = cli(str(src), "-o", str(out), *model_args(work), "--batch", "5")
    assert proc.returncode == 0, proc.stderr
    assert "12 frames 64x48" in proc.stderr and "1 audio stream copied" in proc.stderr
    assert sha(src) == before  # input untouched
    assert temp_files(tmp_path) == []

    s_in, s_out = streams(src), streams(out)
    assert s_out["size"] == (64, 48)
    assert s_out["rate"] == Fraction(FPS)
    assert [name for name, _ in s_out["audio"]] == ["aac"]
    assert s_out["audio"][0][1] == pytest.approx(s_in["audio"][0][1], abs=0.05)  # remuxed, same length

    t_in, f_in = decode(src)
    t_out, f_out = decode(out)
    assert len(f_out) == len(f_in) == FRAMES
    assert t_out == pytest.approx(t_in, abs=1e-3)  # timestamps preserved
    assert np.abs(f_out - f_in).mean() < 4.0  # identity model: only re-encoding differences (uint8 levels)

    info = probe_video(out)
    assert info.frames == FRAMES and info.audio_codecs == ("aac",)


def test_odd_frame_size_is_kept(work, tmp_path):
    out = tmp_path / "odd_clean.mp4"
    proc = cli(str(work["odd"]), "-o", str(out), *model_args(work), "--no-audio")
    assert proc.returncode == 0, proc.stderr
    s = streams(out)
    assert s["size"] == (65, 49) and s["audio"] == []
    _, f_in = decode(work["odd"])
    _, f_out = decode(out)
    assert f_out.shape == f_in.shape == (FRAMES, 49, 65, 3)
    assert np.abs(f_out - f_in).mean() < 4.0


class Identity:
    """A derainer that returns its input (for in-process tests of the video plumbing)."""

    def run_tensor(self, x):
        return x.clamp(0, 1)


def test_odd_sizes_pixel_format_choice(work, tmp_path):
    x264, mpeg4 = av.codec.Codec("libx264", "w"), av.codec.Codec("mpeg4", "w")
    assert _choose_pix_fmt(x264, None, 64, 48) == ("yuv420p", False)
    assert _choose_pix_fmt(x264, None, 65, 49) == ("yuv444p", False)  # x264 refuses odd sides in 4:2:0
    assert _choose_pix_fmt(mpeg4, None, 65, 49) == ("yuv420p", False)  # mpeg4 takes them
    with pytest.raises(VideoError, match="even frame sides"):
        _choose_pix_fmt(x264, "yuv420p", 65, 49)
    # A container other than MP4, another codec, a bit rate: still the exact size and frame count.
    out = tmp_path / "odd.mkv"
    result = derain_video(Identity(), work["odd"], out, codec="mpeg4", bitrate="2M", batch=3, progress=False)
    assert (result.frames, result.width, result.height, result.padded, result.audio_streams) == (FRAMES, 65, 49, False, 1)
    assert streams(out)["size"] == (65, 49)


def test_not_a_video_is_one_clear_line(work, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    out = tmp_path / "out.mp4"
    proc = cli(str(bad), "-o", str(out), *model_args(work))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "not a readable video" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and temp_files(tmp_path) == []


def test_missing_input_and_no_video_stream(work, tmp_path):
    proc = cli(str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4"), *model_args(work))
    assert proc.returncode == 1 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    audio_only = make_audio_only(tmp_path / "tone.m4a")
    proc = cli(str(audio_only), "-o", str(tmp_path / "o.mp4"), *model_args(work))
    assert proc.returncode == 1 and "no video stream" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.mp4").exists() and temp_files(tmp_path) == []


def test_existing_output_needs_overwrite_and_input_is_never_overwritten(work, tmp_path):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    proc = cli(str(work["even"]), "-o", str(out), *model_args(work))
    assert proc.returncode == 1 and "--overwrite" in proc.stderr
    assert out.read_bytes() == b"keep me"

    src = tmp_path / "input.mp4"
    src.write_bytes(work["even"].read_bytes())
    before = sha(src)
    proc = cli(str(src), "-o", str(src), *model_args(work), "--overwrite")
    assert proc.returncode == 1 and "refusing to overwrite the input" in proc.stderr
    assert sha(src) == before

    proc = cli(str(work["even"]), "-o", str(out), *model_args(work), "--overwrite", "--no-audio")
    assert proc.returncode == 0, proc.stderr
    assert streams(out)["size"] == (64, 48)


def test_interrupt_leaves_no_output_and_no_temp_file(work, tmp_path):
    src = make_video(tmp_path / "long.mp4", 160, 120, frames=1500, fps=25, audio=False, codec="mpeg4")
    out = tmp_path / "long_clean.mp4"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A shell's background job may inherit SIGINT ignored: give the child the default, as a terminal would.
    proc = subprocess.Popen(
        [sys.executable, "-m", "derain.cli.main", "video", str(src), "-o", str(out), *model_args(work), "--batch", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not glob.glob(str(tmp_path / ".long_clean.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted: " + proc.stderr.read()
    time.sleep(0.5)  # well into the frames
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    assert temp_files(tmp_path) == []


def test_text_behind_an_image_signature_is_not_called_a_still_image(tmp_path):
    """FFmpeg opens anything starting with an image signature as an image pipe; only a real image is "a still image"."""
    from PIL import Image

    notes = tmp_path / "notes.mp4"
    notes.write_bytes(b"\x89PNG\r\n\x1a\n" + b"my notes, not a picture\n" * 20)
    with pytest.raises(VideoError, match="not a readable video file") as err:
        probe_video(notes)
    assert "still image" not in str(err.value)
    photo = tmp_path / "photo.mp4"
    Image.new("RGB", (64, 48)).save(photo, "PNG")
    with pytest.raises(VideoError, match="is a still image"):
        probe_video(photo)


def test_a_rotated_video_keeps_its_rotation(tmp_path):
    """A phone's portrait video (a display rotation in its stream) comes out with the same rotation, so players
    show it upright like the input."""
    src = tmp_path / "portrait.mp4"
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.set_display_rotation(-90)
        for i in range(3):
            for packet in v.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")):
                c.mux(packet)
        for packet in v.encode(None):
            c.mux(packet)
    out = tmp_path / "out.mp4"
    model = derain.create_model("efderain-tiny", identity_init=True)
    derain_video(derain.load_derainer(model, precision="fp32"), src, out, progress=False)
    with av.open(str(out)) as c:
        assert next(c.decode(video=0)).rotation == -90
    plain = tmp_path / "plain.mp4"
    derain_video(derain.load_derainer(model, precision="fp32"), make_video(tmp_path / "p.mp4", 32, 32, frames=2, audio=False), plain, progress=False)
    with av.open(str(plain)) as c:
        assert next(c.decode(video=0)).rotation == 0


class _TopRowsBlack:
    """A derainer stub that blacks out the top 8 rows of what it is given and records the frames' sizes."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def run_tensor(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        y = x.clone()
        y[..., :8, :] = 0
        return y


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("rotation", [-90, 90, 180])
@pytest.mark.parametrize("size", [(64, 48), (63, 47)])
def test_a_rotated_video_is_derained_upright(tmp_path, temporal, rotation, size):
    """The model sees a phone's portrait video as players show it (rain falls down the frame, as in training), and
    the output stores it back as the input did, at the same (odd) size: the rows the stub blacked out at the top of
    the upright frame are where the display rotation puts them in the stored frame (-90: a quarter turn clockwise
    to show it, so the stored frame's left columns)."""
    from derain.bench.real import video_frames
    from derain.inference.video import decode_frames, display_rotation

    width, height = size
    src = tmp_path / "portrait.mp4"
    yy, xx = np.mgrid[0:height, 0:width]
    marker = np.stack([np.full_like(xx, 200), 100 + yy, 100 + xx], -1).astype(np.uint8)  # where each pixel is
    with av.open(str(src), "w") as c:
        v = c.add_stream("libx264", rate=FPS, options={"crf": "0"})
        v.width, v.height, v.pix_fmt = width, height, "yuv444p"
        v.set_display_rotation(rotation)
        for _ in range(3):
            for packet in v.encode(av.VideoFrame.from_ndarray(marker, format="rgb24")):
                c.mux(packet)
        for packet in v.encode(None):
            c.mux(packet)
    assert display_rotation(src) % 360 == rotation % 360  # 180 reads back as -180
    shown = next(decode_frames(src))
    expected = np.ascontiguousarray(np.rot90(marker, k={-90: 3, 90: 1, 180: 2}[rotation]))
    assert np.abs(shown.astype(int) - expected).max() <= 3  # as a player shows it (lossless up to YUV rounding)
    assert np.array_equal(next(video_frames(src, stride=1, max_side=640)), shown)
    stub = _TopRowsBlack()
    out = tmp_path / "out.mp4"
    derain_video(stub, src, out, progress=False, temporal=temporal)
    _, frames = decode(out)
    assert frames.shape[1:3] == (height, width)  # stored as the input stores it
    if temporal:  # a still scene: the temporal background, no model; it comes back as it was stored
        assert not stub.sizes
        assert np.abs(frames.astype(int) - marker).max() <= 6
    else:
        assert stub.sizes and all(s == shown.shape[:2] for s in stub.sizes)
        black = np.zeros(shown.shape[:2], bool)
        black[:8] = True
        stored_black = np.rot90(black, k=-{-90: 3, 90: 1, 180: 2}[rotation])
        assert frames[:, stored_black].max() < 20 and frames[:, ~stored_black][..., 0].min() > 180
    with av.open(str(out)) as c:
        assert next(c.decode(video=0)).rotation % 360 == rotation % 360
