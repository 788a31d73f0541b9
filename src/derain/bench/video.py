"""Video deraining with ground truth (``derain bench video``): frame by frame against temporal.

Nothing is downloaded: every clip is generated on the fly, seeded, from the clean photos
(``../shared/data/clean``). A clip is a fixed camera's view of one photo (a crop of it) with moving
objects on straight paths (coloured shapes, or disc cut-outs of other photos), the clean clip being
the truth; rain is drawn independently for every frame:

* ``light`` / ``heavy``: streaks rendered by :func:`derain.data.render.render_streaks` with those presets
  (added light, no per-frame haze or JPEG);
* ``real-light`` / ``real-heavy``: real rain layers (:class:`~derain.data.rain_layers.RainLayerBank`) from
  ``SIRR_val`` / ``JORDER_heavy5``, a random crop, flip and gain per frame;
* ``+fog``: one haze veil over the whole clip (``α·(clean + rain) + (1 − α)·A``; the truth stays fog-free);
* ``+jitter``: the camera shakes by up to ``jitter`` pixels (an integer offset per frame, objects included).

For each clip and mode (``frame`` = the model on every frame, ``temporal`` =
:func:`~derain.inference.temporal.temporal_derain` with the same model) it reports the PSNR and SSIM
(MATLAB Y) overall, on the **static** pixels and on the **moving** pixels (where the clean frame
shows an object, grown by two pixels), each the mean over the frames, and the milliseconds per frame
(the mode's whole work: model and temporal combination; no decoding or encoding; the faster of two runs,
the modes alternated). The input row is the rainy frames themselves.

The yard check (a real fixed-camera video without ground truth) scores the temporal output of
``yard.mp4`` with :func:`derain.bench.real.measure_video`, the same temporal-median measure as
``derain bench real --video``, beside the input and the frame-by-frame model.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError
from ..metrics import rgb_to_y

__all__ = [
    "CLIPS",
    "Clip",
    "ClipSpec",
    "VideoBenchError",
    "VideoBenchReport",
    "VideoRow",
    "make_clip",
    "run_video_bench",
    "score_clip",
]

#: Rain kinds of a clip and where their layers come from (None: rendered).
RAIN_KINDS = {"light": None, "heavy": None, "real-light": "SIRR_val", "real-heavy": "JORDER_heavy5"}


class VideoBenchError(UserError, ValueError):
    """Bad input to the video benchmark (missing data folder, bad size or clip name)."""


@dataclass(frozen=True)
class ClipSpec:
    """One generated clip: its rain, fog, camera jitter (px), objects (``shapes`` or ``cutouts``) and pan (px/frame)."""

    name: str
    rain: str
    fog: bool = False
    jitter: int = 0
    objects: str = "shapes"
    pan: float = 0.0

    def __post_init__(self) -> None:
        if self.rain not in RAIN_KINDS:
            raise VideoBenchError(f"unknown rain {self.rain!r}; choose one of {', '.join(RAIN_KINDS)}")
        if self.objects not in ("shapes", "cutouts"):
            raise VideoBenchError(f"unknown objects {self.objects!r}; choose shapes or cutouts")


#: The benchmark's clips, in table order.
CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec("light", "light"),
    ClipSpec("heavy", "heavy", objects="cutouts"),
    ClipSpec("heavy+fog", "heavy", fog=True),
    ClipSpec("real-light", "real-light", objects="cutouts"),
    ClipSpec("real-heavy+fog", "real-heavy", fog=True),
    ClipSpec("heavy+jitter", "heavy", jitter=3, objects="cutouts"),
    ClipSpec("light+jitter", "light", jitter=3),
)


@dataclass
class Clip:
    """A generated clip: clean and rainy frames (uint8 ``N×H×W×3``) and the moving pixels (bool ``N×H×W``)."""

    spec: ClipSpec
    clean: np.ndarray
    rainy: np.ndarray
    moving: np.ndarray


# --------------------------------------------------------------------------------------------- clips


def clean_photos(root: str | os.PathLike[str], min_side: int) -> list[Path]:
    """The clean photos under ``root`` (recursively, sorted) whose short side is at least ``min_side``."""
    from ..io.images import image_size, is_image_file

    root = Path(root)
    if not root.is_dir():
        raise VideoBenchError(f"{root}: no such folder of clean photos")
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and is_image_file(p):
            w, h = image_size(p)
            if min(w, h) >= min_side:
                out.append(p)
    if not out:
        raise VideoBenchError(f"{root}: no clean photo with a short side of at least {min_side} px")
    return out


def _read_rgb(path: Path) -> np.ndarray:
    from ..io.images import read_image

    return read_image(path)


def _crop(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``h×w`` crop, the photo first scaled up when it is smaller."""
    ih, iw = img.shape[:2]
    scale = max(h / ih, w / iw, 1.0)
    if scale > 1.0:
        img = np.asarray(Image.fromarray(img).resize((math.ceil(iw * scale), math.ceil(ih * scale)), Image.Resampling.LANCZOS))
        ih, iw = img.shape[:2]
    y, x = int(rng.integers(ih - h + 1)), int(rng.integers(iw - w + 1))
    return img[y:y + h, x:x + w]


@dataclass
class _Mover:
    """An object on a straight path: pixels (``h×w×3``), opacity mask, start and velocity (rows, cols per frame)."""

    pixels: np.ndarray
    mask: np.ndarray
    start: tuple[float, float]
    velocity: tuple[float, float]

    def place(self, canvas: np.ndarray, truth_mask: np.ndarray, t: int) -> None:
        h, w = self.mask.shape
        y0 = int(round(self.start[0] + self.velocity[0] * t))
        x0 = int(round(self.start[1] + self.velocity[1] * t))
        ch, cw = canvas.shape[:2]
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(ch, y0 + h), min(cw, x0 + w)
        if ys >= ye or xs >= xe:
            return
        m = self.mask[ys - y0:ye - y0, xs - x0:xe - x0]
        region = canvas[ys:ye, xs:xe]
        region[m] = self.pixels[ys - y0:ye - y0, xs - x0:xe - x0][m]
        truth_mask[ys:ye, xs:xe] |= m


def _movers(kind: str, photos: Sequence[Path], ch: int, cw: int, frames: int, rng: np.random.Generator) -> list[_Mover]:
    movers = []
    for _ in range(3):
        side = int(rng.integers(max(8, min(ch, cw) // 6), max(10, min(ch, cw) // 3)))
        yy, xx = np.mgrid[0:side, 0:side]
        if kind == "shapes":
            hue = rng.random()
            colour = np.array([max(0.0, min(1.0, abs(hue * 6 - k) - 1)) for k in (3, 2, 4)]) * 0.8 + 0.1
            colour = np.clip(np.array([1 - colour[0], colour[1], colour[2]]) * 255, 0, 255)
            pixels = np.broadcast_to(colour.astype(np.uint8), (side, side, 3)).copy()
            disc = rng.random() < 0.5
            mask = ((yy - side / 2 + 0.5) ** 2 + (xx - side / 2 + 0.5) ** 2 <= (side / 2) ** 2) if disc else np.ones((side, side), bool)
        else:
            pixels = _crop(_read_rgb(photos[int(rng.integers(len(photos)))]), side, side, rng).copy()
            mask = (yy - side / 2 + 0.5) ** 2 + (xx - side / 2 + 0.5) ** 2 <= (side / 2) ** 2
        speed = float(rng.uniform(1.0, 3.0))
        angle = float(rng.uniform(0, 2 * math.pi))
        vy, vx = speed * math.sin(angle), speed * math.cos(angle)
        # start so that the middle of the path crosses the frame
        cy, cx = rng.uniform(0.25, 0.75) * ch, rng.uniform(0.25, 0.75) * cw
        start = (cy - vy * frames / 2 - side / 2, cx - vx * frames / 2 - side / 2)
        movers.append(_Mover(pixels, mask, start, (vy, vx)))
    return movers


def _rain_source(kind: str, data_root: Path) -> Callable[[tuple[int, int], np.random.Generator], np.ndarray]:
    """``(h, w), rng → H×W`` float32 rain layer in [0, 1] for one frame."""
    folder = RAIN_KINDS[kind]
    if folder is None:
        from dataclasses import replace

        from ..data.render import PRESETS, render_streaks

        params = replace(PRESETS[kind], haze_prob=0.0, jpeg_prob=0.0)
        return lambda shape, rng: render_streaks(shape, params, rng)
    from ..data.rain_layers import RainLayerBank

    path = data_root / folder
    if not path.is_dir():
        raise VideoBenchError(f"{path}: the real rain layers of {kind!r} are missing")
    bank = RainLayerBank.from_folder(path)
    return lambda shape, rng: bank.sample(rng, shape)


def make_clip(
    spec: ClipSpec,
    photos: Sequence[Path],
    *,
    size: tuple[int, int] = (256, 384),
    frames: int = 48,
    seed: int = 0,
    data_root: str | os.PathLike[str] | None = None,
) -> Clip:
    """Generate the clip ``spec`` (module docstring) of ``size = (H, W)`` and ``frames`` frames from ``photos``."""
    rng = np.random.default_rng([seed, sum(map(ord, spec.name))])
    h, w = size
    margin = spec.jitter + int(math.ceil(abs(spec.pan) * frames))
    ch, cw = h + 2 * spec.jitter, w + 2 * spec.jitter + int(math.ceil(abs(spec.pan) * frames))
    background = _crop(_read_rgb(photos[int(rng.integers(len(photos)))]), ch, cw, rng)
    movers = _movers(spec.objects, photos, ch, cw, frames, rng)
    rain = _rain_source(spec.rain, Path(data_root) if data_root else Path("."))
    fog_alpha, fog_light = (float(rng.uniform(0.8, 0.9)), float(rng.uniform(0.8, 0.95))) if spec.fog else (1.0, 0.0)
    clean = np.empty((frames, h, w, 3), np.uint8)
    rainy = np.empty_like(clean)
    moving = np.empty((frames, h, w), bool)
    del margin
    for t in range(frames):
        canvas = background.copy()
        truth = np.zeros((ch, cw), bool)
        for m in movers:
            m.place(canvas, truth, t)
        dy, dx = (int(rng.integers(-spec.jitter, spec.jitter + 1)) for _ in range(2)) if spec.jitter else (0, 0)
        y0, x0 = spec.jitter + dy, spec.jitter + dx + int(round(spec.pan * t))
        clean[t] = canvas[y0:y0 + h, x0:x0 + w]
        moving[t] = truth[y0:y0 + h, x0:x0 + w]
        layer = rain((h, w), rng)
        x = clean[t].astype(np.float32) / 255 + layer[..., None]
        x = fog_alpha * x + (1 - fog_alpha) * fog_light
        rainy[t] = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    grown = F.max_pool2d(torch.from_numpy(moving.astype(np.float32))[:, None], 5, stride=1, padding=2)[:, 0].numpy() > 0
    return Clip(spec, clean, rainy, grown)


# --------------------------------------------------------------------------------------------- scores


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map (Wang et al.: Gaussian 11, σ 1.5, on Y in [0, 255]) of two ``H×W`` arrays, same size (edges replicated)."""
    from ..metrics import gaussian_kernel_1d

    k = torch.from_numpy(gaussian_kernel_1d(11, 1.5).astype(np.float64))
    x = torch.from_numpy(np.stack([a, b]).astype(np.float64))[:, None]

    def blur(v: torch.Tensor) -> torch.Tensor:
        v = F.pad(v, (5, 5, 5, 5), mode="replicate")
        v = F.conv2d(v, k.view(1, 1, 1, -1))
        return F.conv2d(v, k.view(1, 1, -1, 1))

    mu = blur(x)
    sq = blur(x * x) - mu * mu
    cross = blur(x[:1] * x[1:]) - mu[:1] * mu[1:]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    num = (2 * mu[0] * mu[1] + c1) * (2 * cross[0] + c2)
    den = (mu[0] ** 2 + mu[1] ** 2 + c1) * (sq[0] + sq[1] + c2)
    return (num / den)[0].numpy()


def _psnr(err2: np.ndarray) -> float:
    mse = float(err2.mean()) if err2.size else float("nan")
    return 100.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass
class VideoRow:
    """One mode on one clip: PSNR/SSIM (Y) overall, on static and on moving pixels (means over frames), ms per frame."""

    clip: str
    mode: str
    psnr: float
    ssim: float
    psnr_static: float
    ssim_static: float
    psnr_moving: float
    ssim_moving: float
    ms_per_frame: float
    note: str = ""


def score_clip(clip: Clip, outputs: Sequence[np.ndarray], mode: str, ms_per_frame: float = float("nan"), note: str = "") -> VideoRow:
    """``outputs`` (one per frame) against the clip's clean frames."""
    sums: dict[str, list[float]] = {k: [] for k in ("p", "s", "ps", "ss", "pm", "sm")}
    for clean, out, moving in zip(clip.clean, outputs, clip.moving):
        cy, oy = rgb_to_y(clean), rgb_to_y(out)
        err2 = (cy - oy) ** 2
        smap = _ssim_map(cy, oy)
        sums["p"].append(_psnr(err2))
        sums["s"].append(float(smap.mean()))
        sums["ps"].append(_psnr(err2[~moving]))
        sums["ss"].append(float(smap[~moving].mean()))
        if moving.any():
            sums["pm"].append(_psnr(err2[moving]))
            sums["sm"].append(float(smap[moving].mean()))
    m = {k: float(np.mean(v)) if v else float("nan") for k, v in sums.items()}
    return VideoRow(clip.spec.name, mode, m["p"], m["s"], m["ps"], m["ss"], m["pm"], m["sm"], ms_per_frame, note)


# --------------------------------------------------------------------------------------------- running


def _derain_batch(runner: Any, batch: int) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The single-image model on a list of uint8 frames, ``batch`` at a time."""

    def run(frames: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.stack(frames[i:i + batch])).permute(0, 3, 1, 2).float().div_(255.0)
            with torch.inference_mode():
                y = runner.run_tensor(x)
            out.extend(y.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy())
        return out

    return run


def run_modes(clip: Clip, runner: Any, batch: int = 4, options: Any = None, repeats: int = 2) -> list[VideoRow]:
    """The input row, then ``frame`` and ``temporal`` on ``clip`` with ``runner``. Each mode runs ``repeats`` times,
    the modes alternated, and its time is the fastest run: on a shared machine a single run measures the
    neighbours' load as much as the mode (the outputs are the same every run; the first is scored)."""
    from ..inference.temporal import ModelOnCrops, TemporalEngine, temporal_derain

    derain = _derain_batch(runner, batch)
    rows = [score_clip(clip, list(clip.rainy), "input")]
    outputs: dict[str, list[np.ndarray]] = {}
    best = {"frame": math.inf, "temporal": math.inf}
    engine = TemporalEngine(options)
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = derain(list(clip.rainy))
        best["frame"] = min(best["frame"], time.perf_counter() - start)
        outputs.setdefault("frame", out)
        engine = TemporalEngine(options)
        start = time.perf_counter()
        out = list(temporal_derain(iter(clip.rainy), derain, batch=batch, engine=engine, derain_crops=ModelOnCrops(runner)))
        best["temporal"] = min(best["temporal"], time.perf_counter() - start)
        outputs.setdefault("temporal", out)
    n = len(clip.rainy)
    rows.append(score_clip(clip, outputs["frame"], "frame", 1000 * best["frame"] / n))
    rows.append(score_clip(clip, outputs["temporal"], "temporal", 1000 * best["temporal"] / n, model_note(engine, n)))
    return rows


def model_note(engine: Any, frames: int) -> str:
    """Where the temporal engine ran the model: frames, and the share of their pixels (crops or whole frames)."""
    h, w = engine.frame_size or (0, 0)
    share = 100 * engine.model_pixels / max(1, frames * h * w)
    note = f"model on {engine.model_frames}/{frames} frames, {share:.0f} % of pixels"
    return note + (f", camera moved in {engine.moved_frames}" if engine.moved_frames else "")


@dataclass
class YardRow:
    """One mode on the real video: Y-PSNR against the temporal median on static pixels, rain left (RMS levels)."""

    mode: str
    static_psnr: float
    rain_rms: float
    other_psnr: float
    ms_per_frame: float


def _ms(ms: float) -> str:
    """Milliseconds per frame for a table cell (empty where not timed: the input's row)."""
    return "" if math.isnan(ms) else f"{ms:.0f}"


@dataclass
class VideoBenchReport:
    """What :func:`run_video_bench` measured."""

    model: str
    frames: int
    width: int
    height: int
    rows: list[VideoRow] = field(default_factory=list)
    yard: list[YardRow] = field(default_factory=list)
    yard_video: str | None = None
    yard_note: str = ""

    def table(self) -> str:
        lines = [
            f"Clips: {self.frames} frames of {self.width}x{self.height}, model `{self.model}`; PSNR (dB) / SSIM on MATLAB Y.",
            "",
            "| clip | mode | PSNR | SSIM | static PSNR | static SSIM | moving PSNR | moving SSIM | ms/frame | note |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.clip} | {r.mode} | {r.psnr:.2f} | {r.ssim:.4f} | {r.psnr_static:.2f} | {r.ssim_static:.4f} | "
            f"{r.psnr_moving:.2f} | {r.ssim_moving:.4f} | {_ms(r.ms_per_frame)} | {r.note} |"
            for r in self.rows
        ]
        if self.yard:
            lines += [
                "",
                f"Real video {self.yard_video} (no ground truth; against the temporal median of its frames, as "
                f"`derain bench real --video`): {self.yard_note}",
                "",
                "| mode | static Y-PSNR | rain RMS (levels) | other static Y-PSNR | ms/frame |",
                "|---|---|---|---|---|",
            ]
            lines += [f"| {y.mode} | {y.static_psnr:.2f} | {y.rain_rms:.2f} | {y.other_psnr:.2f} | {_ms(y.ms_per_frame)} |"
                      for y in self.yard]
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        from ..io.atomic import atomic_output

        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2, default=float) + "\n")


def yard_check(
    video: str | os.PathLike[str],
    runner: Any,
    *,
    stride: int = 20,
    batch: int = 4,
    strip: str | os.PathLike[str] | None = None,
    strip_frame: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[YardRow], str]:
    """The real-video check: frame-by-frame and temporal outputs of every ``stride``-th frame of ``video`` scored
    by :func:`derain.bench.real.measure_video` (temporal median of the sampled input frames); optionally a
    before/after strip PNG (input | frame by frame | temporal, shown upright)."""
    from ..inference.temporal import ModelOnCrops, TemporalEngine, temporal_derain
    from ..inference.video import decode_frames
    from .real import measure_video

    derain = _derain_batch(runner, batch)
    sampled: list[np.ndarray] = []
    temporal_sampled: list[np.ndarray] = []
    engine = TemporalEngine()
    frames = decode_frames(video)

    def tee() -> Iterator[np.ndarray]:
        for i, f in enumerate(frames):
            if i % stride == 0:
                sampled.append(f)
            yield f

    start = time.perf_counter()
    n = 0
    for i, out in enumerate(temporal_derain(tee(), derain, batch=batch, engine=engine, derain_crops=ModelOnCrops(runner))):
        n += 1
        if i % stride == 0:
            temporal_sampled.append(out)
    ms_temporal = 1000 * (time.perf_counter() - start) / max(1, n)
    if progress:
        progress(f"yard: temporal {n} frames, {ms_temporal:.0f} ms/frame ({model_note(engine, n)})")
    start = time.perf_counter()
    frame_sampled = derain(sampled)
    ms_frame = 1000 * (time.perf_counter() - start) / max(1, len(sampled))
    stack = np.stack(sampled)
    frame_iter, temporal_iter = iter(frame_sampled), iter(temporal_sampled)  # measure_video asks for them in frame order
    report = measure_video(
        [("frame", lambda f: next(frame_iter)), ("temporal", lambda f: next(temporal_iter))],
        stack, video=str(video), stride=stride,
    )
    rows = []
    for row, ms in zip(report.rows, (float("nan"), ms_frame, ms_temporal)):
        rows.append(YardRow(row.model, row.static_psnr, row.rain_rms, row.other_psnr, ms))
    note = (f"{n} frames, {report.frames} sampled (one in {stride}), {report.width}x{report.height}; "
            f"static pixels {100 * report.static_share:.1f} %")
    if strip is not None:
        k = len(sampled) // 2 if strip_frame is None else min(strip_frame // stride, len(sampled) - 1)
        write_strip([sampled[k], frame_sampled[k], temporal_sampled[k]],
                    ["input", "frame by frame", "temporal"], strip)
    return rows, note


def write_strip(images: Sequence[np.ndarray], labels: Sequence[str], path: str | os.PathLike[str], height: int = 320) -> None:
    """Side-by-side PNG of ``images`` (uint8 RGB) scaled to ``height``, each labelled (written atomically)."""
    from PIL import ImageDraw

    from ..io.atomic import atomic_output

    cells = []
    for img, label in zip(images, labels):
        im = Image.fromarray(img)
        im = im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS)
        draw = ImageDraw.Draw(im)
        draw.rectangle((0, 0, 8 + 7 * len(label), 16), fill=(0, 0, 0))
        draw.text((4, 2), label, fill=(255, 255, 255))
        cells.append(im)
    gap = 4
    sheet = Image.new("RGB", (sum(c.width for c in cells) + gap * (len(cells) - 1), height), (255, 255, 255))
    x = 0
    for c in cells:
        sheet.paste(c, (x, 0))
        x += c.width + gap
    suffix = Path(path).suffix or ".png"
    with atomic_output(path, suffix=".tmp" + suffix) as tmp:
        sheet.save(tmp, optimize=True) if suffix.lower() == ".png" else sheet.save(tmp, quality=88)


def run_video_bench(
    model: str,
    data_root: str | os.PathLike[str],
    *,
    clips: Sequence[str] | None = None,
    size: tuple[int, int] = (256, 384),
    frames: int = 48,
    seed: int = 0,
    batch: int = 4,
    precision: str = "auto",
    yard: str | os.PathLike[str] | None = None,
    yard_stride: int = 20,
    strip: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> VideoBenchReport:
    """Generate the clips (:data:`CLIPS`, or those named) from ``data_root/clean``, run both modes with ``model``
    (:func:`~derain.inference.loading.load_derainer`), and the yard check when ``yard`` is given."""
    from ..inference.loading import load_derainer

    by_name = {c.name: c for c in CLIPS}
    unknown = [c for c in clips or () if c not in by_name]
    if unknown:
        raise VideoBenchError(f"unknown clip(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
    if frames < 3:
        raise VideoBenchError(f"a clip needs at least 3 frames, got {frames}")
    root = Path(data_root)
    photos = clean_photos(root / "clean", max(size) // 2)
    runner = load_derainer(model, precision=precision)
    report = VideoBenchReport(model, frames, size[1], size[0])
    for name in clips or [c.name for c in CLIPS]:
        clip = make_clip(by_name[name], photos, size=size, frames=frames, seed=seed, data_root=root)
        for row in run_modes(clip, runner, batch):
            report.rows.append(row)
            if progress:
                progress(f"{row.clip} {row.mode}: {row.psnr:.2f} dB, static {row.psnr_static:.2f}, moving {row.psnr_moving:.2f}"
                         + (f", {row.ms_per_frame:.0f} ms/frame" if not math.isnan(row.ms_per_frame) else ""))
    if yard is not None:
        report.yard, report.yard_note = yard_check(yard, runner, stride=yard_stride, batch=batch, strip=strip, progress=progress)
        report.yard_video = Path(yard).name
    return report
