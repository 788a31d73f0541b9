"""Memory of ``derain video --temporal`` over a long 1080p clip: does the process grow with the video?

    python benchmarks/bench_video_memory.py [--seconds 60] [--fps 30] [--size 1920x1080] [--window 15]
        [--model default] [--threads N] [--no-compile] [--batch N] [--frame-by-frame] [--max-minutes 4] [--data ../shared/data/clean] [--json mem.json]

Generates a fixed camera's clip on the fly into a temporary folder (deleted afterwards): one clean photo
(the first of ``--data``, scaled to ``--size``) under rain streaks (:func:`derain.data.render.render_streaks`,
``light`` preset; a bank of rain layers drawn once and picked at random per frame, so generating a long
clip stays quick) with a disc crossing the view for two seconds in every ten (so the model runs on crops
of some frames and not at all on others), encoded as H.264 (``ultrafast``, 30 frames/s).

Then runs the real command end to end in a child process (``derain video CLIP -o OUT --temporal``: decoding,
the temporal engine, the model, encoding, muxing) and samples the child's resident memory
(``/proc/PID/status``: ``VmRSS``, and ``VmHWM``, the peak) twice a second, beside the frame count from its
progress lines. ``--max-minutes`` bounds the wall clock: a run still going then is stopped (SIGTERM: the
command deletes its partial output) and the frames it reached are reported; the trend over them is the
result. The table gives the RSS when the run reached 10 %, 25 %, 50 %, 75 % and 100 % of its frames, the
peak, and the window's own size (``window`` frames of ``H×W×3`` bytes) for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_clip(path: Path, photo: Path, width: int, height: int, frames: int, fps: int, seed: int = 0) -> float:
    """Write the clip (module docstring); returns the seconds it took."""
    import av
    from PIL import Image

    from derain.data.render import PRESETS, render_streaks

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    scene = np.asarray(Image.open(photo).convert("RGB").resize((width, height), Image.Resampling.LANCZOS), np.float32)
    bank = []
    for _ in range(16):  # rainy versions of the scene: rain differs from frame to frame, the clip stays cheap to make
        layer = render_streaks((height, width), PRESETS["light"], rng)
        bank.append(np.clip(scene + 255 * layer[..., None], 0, 255).astype(np.uint8))
    radius = height // 10
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = xx**2 + yy**2 <= radius**2
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(frames):
            frame = bank[int(rng.integers(len(bank)))].copy()
            phase = (i % (10 * fps)) / (2 * fps)  # the disc crosses during the first two seconds of every ten
            if phase < 1.0:
                cx = int(-radius + phase * (width + 2 * radius))
                cy = height // 2
                x0, x1 = max(0, cx - radius), min(width, cx + radius + 1)
                if x0 < x1:
                    region = frame[cy - radius:cy + radius + 1, x0:x1]
                    region[disc[:, x0 - (cx - radius):x1 - (cx - radius)]] = (200, 40, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return time.perf_counter() - start


def _status(pid: int) -> tuple[int, int] | None:
    """``(VmRSS, VmHWM)`` of a process in bytes (None once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {k: int(v.split()[0]) * 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", text, re.M)}
    return (values["VmRSS"], values["VmHWM"]) if len(values) == 2 else None


def run(args: argparse.Namespace) -> dict:
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = int(round(args.seconds * args.fps))
    photos = sorted(p for p in Path(args.data).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    if not photos:
        raise SystemExit(f"{args.data}: no photos")
    with tempfile.TemporaryDirectory(prefix="derain-vmem-") as tmp:
        clip, out = Path(tmp) / "clip.mp4", Path(tmp) / "out.mp4"
        made = make_clip(clip, photos[0], width, height, frames, args.fps)
        print(f"clip: {frames} frames of {width}x{height} at {args.fps} frames/s ({frames / args.fps:.0f} s), made in {made:.0f} s",
              flush=True)
        cmd = [sys.executable, "-c", "import sys; from derain.cli.main import main; sys.exit(main())", "video", str(clip),
               "-o", str(out), "--model", args.model]
        if not args.frame_by_frame:
            cmd += ["--temporal", "--window", str(args.window)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.no_compile:
            cmd += ["--no-compile"]
        if args.batch:
            cmd += ["--batch", str(args.batch)]
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
        progress: list[tuple[float, int]] = []  # (seconds, frames pushed) from the progress lines
        lines: list[str] = []

        def read() -> None:
            assert child.stderr is not None
            for line in child.stderr:
                lines.append(line.rstrip())
                m = re.search(r": (\d+)(?:/\d+)? frames?, ", line)  # a progress line ("OUT: 120/900 frame, 0.9 frame/s")
                if m:
                    progress.append((time.perf_counter() - start, int(m.group(1))))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        samples: list[tuple[float, int]] = []
        peak, stopped = 0, False
        while child.poll() is None:
            status = _status(child.pid)
            if status:
                samples.append((time.perf_counter() - start, status[0]))
                peak = max(peak, status[1])
            if not stopped and time.perf_counter() - start > 60 * args.max_minutes:
                child.send_signal(signal.SIGTERM)
                stopped = True
            time.sleep(0.5)
        reader.join(timeout=5)
        wall = time.perf_counter() - start
    if not progress:
        raise SystemExit("no progress from the command:\n" + "\n".join(lines[-20:]))
    done = progress[-1][1]
    if child.returncode not in (0, None) and not stopped:
        raise SystemExit(f"the command failed ({child.returncode}):\n" + "\n".join(lines[-20:]))

    def rss_at(fraction: float) -> tuple[int, float, int]:
        target = fraction * done
        when = next(t for t, n in progress if n >= target)
        rss = min(samples, key=lambda s: abs(s[0] - when))[1]
        return int(round(target)), when, rss

    points = [rss_at(f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
    report = {
        "size": f"{width}x{height}", "fps": args.fps, "clip_frames": frames, "frames_done": done, "stopped_at_limit": stopped,
        "mode": "frame by frame" if args.frame_by_frame else f"--temporal --window {args.window}", "window": args.window, "window_mib": args.window * width * height * 3 / 2**20, "model": args.model,
        "wall_s": wall, "peak_rss_mib": peak / 2**20, "last_lines": [x for x in lines if "frame/s" not in x][-6:],
        "quarters_mib": [[min(r for t, r in samples if lo <= t < hi) / 2**20, max(r for t, r in samples if lo <= t < hi) / 2**20]
                         for lo, hi in ((wall * q / 4, wall * (q + 1) / 4) for q in range(4))],
        "rss_after_10pct_mib": [min(r for t, r in samples if t >= points[0][1]) / 2**20, max(r for t, r in samples if t >= points[0][1]) / 2**20],
        "points": [{"share": s, "frames": n, "seconds": t, "rss_mib": r / 2**20} for s, (n, t, r) in zip((10, 25, 50, 75, 100), points)],
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated clip")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--window", type=int, default=15)
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true", help="pass --no-compile (default: the command decides)")
    parser.add_argument("--batch", type=int, default=0, help="pass --batch N (default: the command's)")
    parser.add_argument("--frame-by-frame", action="store_true", help="without --temporal: the baseline of the same command")
    parser.add_argument("--max-minutes", type=float, default=4.0, help="stop the command after this long (the trend so far is reported)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "clean"))
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    r = run(args)
    print(f"\n`derain video` ({r['mode']}) on {r['frames_done']} of {r['clip_frames']} frames of {r['size']}"
          f" ({'stopped at the time limit' if r['stopped_at_limit'] else 'complete'}, {r['wall_s']:.0f} s); the window is"
          f" {r['window_mib']:.0f} MiB of frames\n")
    print("| share of the run | frames | seconds | RSS (MiB) |")
    print("|---|---|---|---|")
    for p in r["points"]:
        print(f"| {p['share']} % | {p['frames']} | {p['seconds']:.0f} | {p['rss_mib']:.0f} |")
    print("\nRSS min–max per quarter of the run (MiB): " + ", ".join(f"{a:.0f}–{b:.0f}" for a, b in r["quarters_mib"]))
    low, high = r["rss_after_10pct_mib"]
    print(f"\nRSS from 10 % of the run to its end: {low:.0f} to {high:.0f} MiB; peak RSS (VmHWM, start included): {r['peak_rss_mib']:.0f} MiB")
    for line in r["last_lines"]:
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
