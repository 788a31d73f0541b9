"""Real rain (``derain bench real``): how much each model changes real rainy photos and video frames.

Real rainy photos have no ground truth, so this report does not say how *good* a result is: it says
how much a model *changes* a photo, which tells apart a model that leaves real rain where it is (it
returns the photo nearly as it went in) from one that acts on it (or over-acts: a blurred or darkened
photo changes a lot too; the contact sheet is there to look at).

**Photos.** Every image file of one or more folders (searched recursively, in natural sort order:
``2.jpg`` before ``10.jpg``; ``only="odd"``/``"even"`` keeps the files whose numeric stem is odd/even,
as the InternetData147 rule asks: odd-numbered photos are for evaluation only) is read with
:func:`derain.io.images.load_photo` (grey photos as three equal channels, 16-bit ones rounded to 8 bits,
alpha dropped), downscaled with Pillow's LANCZOS so that its long side is at most ``max_side`` px (real
photos come at any size; one size cap keeps the models' receptive fields comparable and the run
bounded), and derained as uint8 by the runner :func:`~derain.inference.loading.load_derainer` makes of each model. For each model:

* the **Y-PSNR between input and output** (MATLAB Y as :func:`derain.metrics.rgb_to_y`, PSNR as
  :func:`derain.metrics.calculate_psnr`; identical images count as :data:`PSNR_CAP` dB), summarised as
  its median and its 10th and 90th percentiles over the photos;
* how many photos come back **unchanged** (above :data:`UNCHANGED_DB`) and **nearly unchanged** (above
  :data:`NEARLY_UNCHANGED_DB`; the unchanged ones included);
* the **mean absolute change** in 8-bit levels (``|output − input|`` over all pixels and RGB channels of
  a photo, averaged over the photos);
* for a model that judges images as a whole (an image gate, ``judges_images``) run at ``auto`` strength:
  how many photos it **judges dry** (its judgement of the whole photo as ``auto`` applies it,
  :meth:`~derain.inference.derainer.DerainerBase.judgement`, below :data:`JUDGED_DRY`). A photo judged rainy and still unchanged was left alone by the
  network itself (its kernels or its per-pixel gate), not by its judgement.

A **peer** (a model that is not bundled, ``prenet=WEIGHTS``: PReNet with its authors' weights, loaded as
``derain bench quality`` loads ``NAME=PATH``) is reported like the others, after them.

**Contact sheet.** One PNG, one row per photo: the input, then each model's output and the peer's, each
cell downscaled to one height and labelled with the model and its Y-PSNR. The rows are sorted by the
first model's Y-PSNR, highest first (the photos it leaves most unchanged first: where it judged the
photo dry, or missed the rain), at most ``sheet_rows`` of them.

**Video** (a fixed camera). Every ``stride``-th frame is taken (downscaled as the photos are). Their
per-pixel, per-channel temporal median is the rain-free **background** (a streak crosses a pixel in a
few frames only). A pixel is **static** when the standard deviation of its Y over the sampled frames,
after removing the brightest :data:`RAIN_TRIM` of its samples (the ones rain brightens), is below
:data:`STATIC_STD` levels: what remains of a rain-only pixel is sensor and compression noise, while
moving leaves, water and people vary in both directions and stay out. In a frame, the **rain pixels**
are the static pixels more than :data:`RAIN_DELTA` Y levels brighter than the background. For the
input frames themselves (the reference row) and each model's output of them:

* **static Y-PSNR**: the PSNR of the frame's Y against the background's on the static pixels, the mean
  over the frames;
* **rain RMS**: the root-mean-square Y error against the background on the rain pixels of all frames
  pooled (what rain is left: the input's is the rain itself), in levels;
* **other static Y-PSNR**: the PSNR on the static pixels that are not rain pixels, the mean over the
  frames (what a model does to the rest of the frame: it should stay at the input's).

The sampled frames are held in memory together (the median needs them all): a short clip, or a larger
``stride`` for a long one.

>>> import numpy as np
>>> from torch import nn
>>> class Same(nn.Module):
...     def forward(self, x):
...         return x
>>> photo = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
>>> from derain.inference.loading import load_derainer
>>> same = load_derainer(Same(), precision="fp32")
>>> rows, per_photo = measure_photos([("same", same)], [("a.png", photo)])
>>> rows[0].n, rows[0].unchanged, rows[0].psnr_median, rows[0].mean_abs_change
(1, 1, 100.0, 0.0)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from ..data.folders import SELECT
from ..data.photos import downscale, photo_files, read_photo
from ..errors import UserError
from ..inference.derainer import DerainerBase, Strength, resolve_strength
from ..io.atomic import write_atomic
from ..io.images import ImageReadError, save_image
from ..metrics import calculate_psnr, rgb_to_y

__all__ = [
    "ONLY",
    "UNCHANGED_DB",
    "NEARLY_UNCHANGED_DB",
    "JUDGED_DRY",
    "PSNR_CAP",
    "STATIC_STD",
    "RAIN_TRIM",
    "RAIN_DELTA",
    "MIN_VIDEO_FRAMES",
    "SHEET_LABEL_HEIGHT",
    "SHEET_GAP",
    "RealBenchError",
    "ModelChange",
    "PhotoChange",
    "SheetRow",
    "VideoRow",
    "VideoReport",
    "RealReport",
    "peer_spec",
    "measure_photos",
    "write_sheet",
    "video_frames",
    "sample_video",
    "measure_video",
    "run_real",
    "short_names",
]

#: ``only`` choices: every file, or the files whose numeric stem is odd / even.
ONLY = SELECT
#: A model's judgement of a whole photo (in (0, 1)) below this counts as "judged dry".
JUDGED_DRY = 0.5
#: Above this Y-PSNR (dB) a photo counts as unchanged.
UNCHANGED_DB = 45.0
#: Above this Y-PSNR (dB) a photo counts as nearly unchanged.
NEARLY_UNCHANGED_DB = 40.0
#: The Y-PSNR reported for identical images (their PSNR is infinite).
PSNR_CAP = 100.0
#: Static pixels: temporal std of Y (rain samples removed) below this many levels.
STATIC_STD = 4.0
#: The brightest fraction of each pixel's samples removed before its std is taken (rain brightens).
RAIN_TRIM = 0.25
#: Rain pixels: static pixels this many Y levels brighter than the background.
RAIN_DELTA = 10.0
#: Fewest sampled frames a temporal median is taken over.
MIN_VIDEO_FRAMES = 3
#: Height in px of the label strip above each contact-sheet cell (two lines of the default font).
SHEET_LABEL_HEIGHT = 26
#: Gap in px around the contact-sheet cells.
SHEET_GAP = 4

#: A model: a spec (``NAME``, ``NAME=PATH`` or ``PATH``, as ``derain bench quality``), a module, or ``(label, module)``.
ModelArg = Union[str, nn.Module, tuple[str, nn.Module]]


class RealBenchError(UserError, ValueError):
    """Bad input to the real-rain report: a folder without images, a bad ``--only`` or peer spec, a video
    too short to sample or without static pixels."""


# --------------------------------------------------------------------------------------------- photos


def peer_spec(spec: str) -> str:
    """A peer spec ``NAME=WEIGHTS`` (``prenet=Rain100H.pth``) tidied; :class:`RealBenchError` for another form."""
    name, eq, path = spec.partition("=")
    if not eq or not name.strip() or not path.strip():
        raise RealBenchError(f"peer {spec!r}: give it as NAME=WEIGHTS, e.g. prenet=../shared/data/peers/prenet/Rain100H.pth")
    return f"{name.strip()}={path.strip()}"


def _runner(model: ModelArg, precision: str, strength: Strength | str = "auto") -> tuple[str, DerainerBase]:
    """``(label, runner)``: a spec loaded by :func:`~derain.inference.loading.load_derainer` (which prepares what
    it loads), a module run as it is; a ``strength`` other than ``auto`` is part of the label."""
    from ..inference.loading import load_derainer
    from .quality import spec_label

    runner = load_derainer(model[1] if isinstance(model, tuple) else model, precision=precision, strength=strength)
    if isinstance(model, tuple):
        label = str(model[0])
    elif isinstance(model, nn.Module):
        label = str(getattr(model, "registry_name", type(model).__name__))
    else:
        label = spec_label(model)
    return (label if strength == "auto" else f"{label} (strength {strength:g})"), runner


def _psnr(mse: float) -> float:
    return PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def _y_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return min(PSNR_CAP, calculate_psnr(a, b, test_y_channel=True))


@dataclass
class PhotoChange:
    """One photo through one model."""

    photo: str
    model: str
    psnr: float  # Y-PSNR output vs input, dB (PSNR_CAP: identical)
    mean_abs_change: float  # mean |output − input| over pixels and RGB channels, 8-bit levels
    thumb: np.ndarray | None = field(default=None, repr=False, compare=False)  # the output, sheet height; not reported
    judgement: float | None = None  # the model's judgement of the whole photo in (0, 1); None: it does not judge

    def to_dict(self) -> dict[str, Any]:
        return {"photo": self.photo, "model": self.model, "psnr": self.psnr, "mean_abs_change": self.mean_abs_change,
                "judgement": self.judgement}


@dataclass
class ModelChange:
    """One row of the photo table: a model over every photo."""

    model: str
    n: int
    unchanged: int  # photos above UNCHANGED_DB
    nearly_unchanged: int  # photos above NEARLY_UNCHANGED_DB (the unchanged ones included)
    psnr_median: float
    psnr_p10: float
    psnr_p90: float
    mean_abs_change: float
    peer: bool = False
    judged_dry: int | None = None  # photos judged below JUDGED_DRY; None: the model does not judge (or not at auto)

    @classmethod
    def of(cls, model: str, changes: Sequence[PhotoChange], peer: bool = False) -> ModelChange:
        psnr = np.array([c.psnr for c in changes], np.float64)
        if not len(psnr):
            nan = float("nan")
            return cls(model, 0, 0, 0, nan, nan, nan, nan, peer)
        p10, p50, p90 = (float(v) for v in np.percentile(psnr, [10, 50, 90]))
        judged = [c.judgement for c in changes]
        dry = None if any(j is None for j in judged) else sum(j < JUDGED_DRY for j in judged)  # type: ignore[operator]
        return cls(
            model, len(psnr), int((psnr > UNCHANGED_DB).sum()), int((psnr > NEARLY_UNCHANGED_DB).sum()), p50, p10, p90,
            float(np.mean([c.mean_abs_change for c in changes])), peer, dry,
        )


def _thumb(rgb: np.ndarray, height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h == height:
        return rgb
    size = (max(1, round(w * height / h)), height)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def measure_photos(
    runners: Sequence[tuple[str, Callable[[np.ndarray], np.ndarray]]],
    photos: Sequence[tuple[str, np.ndarray]],
    *,
    thumb_height: int | None = None,
    peers: int = 0,
    progress: Callable[[ModelChange], None] | None = None,
) -> tuple[list[ModelChange], list[list[PhotoChange]]]:
    """Each ``(label, derain)`` runner on each ``(name, uint8 RGB)`` photo: a row per runner, and its
    :class:`PhotoChange` per photo (with the runner's judgement of the photo where it is a
    :class:`~derain.inference.derainer.DerainerBase` that judges images, at ``auto`` strength).

    The last ``peers`` runners are marked as peers. With ``thumb_height``, each change also keeps the
    output downscaled to that height (:attr:`PhotoChange.thumb`, for :func:`write_sheet`).
    """
    from ..io.progress import track

    rows, per_runner = [], []
    for i, (label, derain) in enumerate(runners):
        changes = []
        for name, rgb in track(photos, desc=label, unit="photo", leave=False):
            out = derain(rgb)
            judged = derain.judgement(rgb) if isinstance(derain, DerainerBase) else None
            changes.append(PhotoChange(
                name, label, _y_psnr(out, rgb), float(np.abs(out.astype(np.int16) - rgb).mean()),
                _thumb(out, thumb_height) if thumb_height else None, None if judged is None else float(judged[0, 0]),
            ))
        row = ModelChange.of(label, changes, peer=i >= len(runners) - peers)
        rows.append(row)
        per_runner.append(changes)
        if progress:
            progress(row)
    return rows, per_runner


# --------------------------------------------------------------------------------------------- sheet


@dataclass
class SheetRow:
    """One contact-sheet row: uint8 RGB cells (any sizes; shown at one height) and a two-line label each."""

    cells: list[np.ndarray]
    labels: list[tuple[str, str]]


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: Any) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return int(right - left)


def write_sheet(rows: Sequence[SheetRow], path: str | os.PathLike[str], height: int = 160) -> tuple[int, int]:
    """Write the rows as one PNG (atomically); return its ``(width, height)``.

    Each cell is downscaled to ``height`` px (aspect kept) under a :data:`SHEET_LABEL_HEIGHT` label strip;
    cells and rows are :data:`SHEET_GAP` px apart, so the sheet is
    ``SHEET_GAP + len(rows) · (SHEET_LABEL_HEIGHT + height + SHEET_GAP)`` px high.
    """
    if not rows:
        raise RealBenchError("a contact sheet needs at least one row")
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    layout = []
    for row in rows:
        thumbs = [_thumb(cell, height) for cell in row.cells]
        widths = [max(t.shape[1], *(_text_width(probe, line, font) + 4 for line in label)) for t, label in zip(thumbs, row.labels)]
        layout.append((thumbs, widths, row.labels))
    row_h = SHEET_LABEL_HEIGHT + height + SHEET_GAP
    width = SHEET_GAP + max(sum(w + SHEET_GAP for w in widths) for _, widths, _ in layout)
    sheet = Image.new("RGB", (width, SHEET_GAP + len(rows) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (thumbs, widths, labels) in enumerate(layout):
        y = SHEET_GAP + r * row_h
        x = SHEET_GAP
        for thumb, w, label in zip(thumbs, widths, labels):
            for k, line in enumerate(label):
                draw.text((x + 2, y + 1 + k * (SHEET_LABEL_HEIGHT // 2)), line, fill=(0, 0, 0), font=font)
            sheet.paste(Image.fromarray(thumb), (x + (w - thumb.shape[1]) // 2, y + SHEET_LABEL_HEIGHT))
            x += w + SHEET_GAP
    save_image(sheet, path, "PNG")
    return sheet.size


# --------------------------------------------------------------------------------------------- video


def video_frames(path: str | os.PathLike[str], stride: int = 20, max_side: int = 640) -> Iterator[np.ndarray]:
    """Every ``stride``-th frame (the first included) of ``path``'s first video stream, uint8 RGB, upright (as a
    player shows it) and downscaled.

    The frames are read as ``derain video`` reads them (:func:`~derain.inference.video.decode_frames`;
    :class:`~derain.inference.video.VideoError`, one line, for a missing or unreadable file, a still image, no video
    stream or a decoding failure).
    """
    from ..inference.video import decode_frames

    if stride < 1:
        raise RealBenchError(f"the video stride must be >= 1, got {stride}")
    for frame in decode_frames(path, stride):
        yield downscale(frame, max_side)


@dataclass
class VideoRow:
    """The input frames (the reference) or one model's outputs of them, against the median background."""

    model: str
    static_psnr: float  # dB, mean over frames
    rain_rms: float  # Y levels, pooled over the rain pixels of every frame (nan: no rain pixel)
    other_psnr: float  # dB on the static non-rain pixels, mean over frames
    peer: bool = False


@dataclass
class VideoReport:
    """The video part of the report: what was sampled, the masks' sizes, and one row per model (input first)."""

    video: str
    stride: int
    frames: int  # sampled frames
    width: int
    height: int
    static_share: float  # fraction of the pixels that are static
    rain_share: float  # fraction of the static pixels that are rain pixels, over all sampled frames
    rows: list[VideoRow] = field(default_factory=list)


class _VideoScene:
    """The background, static mask and per-frame rain masks of a sampled video; scores frames against them."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.background_y = rgb_to_y(np.median(frames, axis=0))
        y = np.stack([rgb_to_y(f) for f in frames])
        keep = max(2, len(y) - int(len(y) * RAIN_TRIM))
        self.static = np.sort(y, axis=0)[:keep].std(axis=0) < STATIC_STD
        self.rain = (y - self.background_y > RAIN_DELTA) & self.static
        if not self.static.any():
            raise RealBenchError("the video has no static pixels (is the camera fixed?)")

    def score(self, label: str, outputs: Sequence[np.ndarray], peer: bool = False) -> VideoRow:
        static_psnr, other_psnr = [], []
        rain_sum, rain_n = 0.0, 0
        for out, rain in zip(outputs, self.rain):
            err2 = (rgb_to_y(out) - self.background_y) ** 2
            static_psnr.append(_psnr(float(err2[self.static].mean())))
            other = self.static & ~rain
            other_psnr.append(_psnr(float(err2[other].mean())) if other.any() else float("nan"))
            rain_sum += float(err2[rain].sum())
            rain_n += int(rain.sum())
        rms = math.sqrt(rain_sum / rain_n) if rain_n else float("nan")
        return VideoRow(label, float(np.mean(static_psnr)), rms, float(np.nanmean(other_psnr)), peer)


def sample_video(path: str | os.PathLike[str], stride: int = 20, max_side: int = 640) -> np.ndarray:
    """The frames of :func:`video_frames` as one ``N×H×W×3`` uint8 array; :class:`RealBenchError` below
    :data:`MIN_VIDEO_FRAMES` frames."""
    frames = list(video_frames(path, stride, max_side))
    if len(frames) < MIN_VIDEO_FRAMES:
        raise RealBenchError(
            f"{path}: {len(frames)} frame(s) sampled with stride {stride}; at least {MIN_VIDEO_FRAMES} are needed "
            "(use a smaller stride)"
        )
    return np.stack(frames)


def measure_video(
    runners: Sequence[tuple[str, Callable[[np.ndarray], np.ndarray]]],
    frames: np.ndarray,
    *,
    video: str = "video",
    stride: int = 20,
    peers: int = 0,
    progress: Callable[[VideoRow], None] | None = None,
) -> VideoReport:
    """The video part (module docstring) of the sampled ``frames`` (``N×H×W×3`` uint8, :func:`sample_video`):
    the input row, then one row per ``(label, derain)`` runner (the last ``peers`` of them peers).
    ``video`` and ``stride`` are what the report says the frames are."""
    if len(frames) < MIN_VIDEO_FRAMES:
        raise RealBenchError(f"{video}: {len(frames)} frame(s); at least {MIN_VIDEO_FRAMES} are needed")
    scene = _VideoScene(frames)
    report = VideoReport(
        str(video), stride, len(frames), int(frames.shape[2]), int(frames.shape[1]), float(scene.static.mean()),
        float(scene.rain.sum() / (scene.static.sum() * len(frames))),
    )
    report.rows.append(scene.score("input (reference)", list(frames)))
    if progress:
        progress(report.rows[-1])
    for i, (label, derain) in enumerate(runners):
        report.rows.append(scene.score(label, [derain(f) for f in frames], peer=i >= len(runners) - peers))
        if progress:
            progress(report.rows[-1])
    return report


# --------------------------------------------------------------------------------------------- report


@dataclass
class RealReport:
    """What :func:`run_real` measured: a row per model on the photos, each photo's changes, the video part."""

    rows: list[ModelChange]
    photos: list[PhotoChange]  # every (photo, model), photos in file order, models in row order
    max_side: int
    precision: str
    only: str = "all"
    skipped: list[str] = field(default_factory=list)  # unreadable files, "PATH: reason"
    video: VideoReport | None = None
    sheet_order: list[str] = field(default_factory=list)  # the photos of the contact sheet, top to bottom

    def table(self) -> str:
        """Markdown: the photo table (one row per model), then the video table when there is a video."""
        n = self.rows[0].n if self.rows else 0
        subset = "" if self.only == "all" else f", {self.only}-numbered files only"
        lines = [
            f"Real rainy photos: Y-PSNR of each model's output against its input (how much it changes them; no ground "
            f"truth), {n} photos{subset}, long side <= {self.max_side} px, precision {self.precision}; unchanged: "
            f"> {UNCHANGED_DB:g} dB, nearly unchanged: > {NEARLY_UNCHANGED_DB:g} dB; change: mean |output - input| in "
            f"8-bit levels; judged dry: the model's judgement of the whole photo below {JUDGED_DRY:g} (-: it does not "
            "judge, or runs at a set strength)",
            "",
            "| model | photos | unchanged | nearly unchanged | judged dry | Y-PSNR median | p10 | p90 | mean change (levels) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            name = f"{r.model} (peer)" if r.peer else r.model
            lines.append(
                f"| {name} | {r.n} | {r.unchanged} | {r.nearly_unchanged} | {'-' if r.judged_dry is None else r.judged_dry} | "
                f"{r.psnr_median:.2f} | {r.psnr_p10:.2f} | "
                f"{r.psnr_p90:.2f} | {r.mean_abs_change:.2f} |"
            )
        if self.video is not None:
            v = self.video
            lines += [
                "",
                f"Video {Path(v.video).name}: {v.frames} frames (one in {v.stride}), {v.width}x{v.height}; background: "
                f"their temporal median; static pixels ({100 * v.static_share:.1f} %): Y std < {STATIC_STD:g} levels once "
                f"the brightest {100 * RAIN_TRIM:g} % of samples are removed; rain pixels ({100 * v.rain_share:.2f} % of "
                f"the static ones): > {RAIN_DELTA:g} levels above the background",
                "",
                "| model | static Y-PSNR (dB) | rain-pixel RMS (levels) | other static Y-PSNR (dB) |",
                "|---|---:|---:|---:|",
            ]
            for row in v.rows:
                name = f"{row.model} (peer)" if row.peer else row.model
                lines.append(f"| {name} | {row.static_psnr:.2f} | {row.rain_rms:.2f} | {row.other_psnr:.2f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (NaN as null), with the machine it ran on."""
        from .timing import machine_description

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        photos = [p.to_dict() for p in self.photos]
        return clean({
            "machine": machine_description(),
            "max_side": self.max_side,
            "precision": self.precision,
            "only": self.only,
            "thresholds_db": {"unchanged": UNCHANGED_DB, "nearly_unchanged": NEARLY_UNCHANGED_DB},
            "models": [asdict(r) for r in self.rows],
            "photos": photos,
            "skipped": list(self.skipped),
            "sheet_order": list(self.sheet_order),
            "video": asdict(self.video) if self.video is not None else None,
        })

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """:meth:`to_dict` as JSON, written atomically."""
        write_atomic(path, json.dumps(self.to_dict(), indent=2))


def short_names(files: Sequence[Path]) -> list[str]:
    """File names, or paths with their parent folder where two files share a name."""
    names = [f.name for f in files]
    if len(set(names)) == len(names):
        return names
    return [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in files]


def run_real(
    models: Sequence[ModelArg],
    folders: Sequence[str | os.PathLike[str]],
    *,
    peer: str | None = None,
    only: str = "all",
    max_side: int = 640,
    precision: str = "auto",
    video: str | os.PathLike[str] | None = None,
    video_stride: int = 20,
    sheet: str | os.PathLike[str] | None = None,
    sheet_rows: int = 12,
    sheet_height: int = 160,
    strength: Strength | str = "auto",
    on_skip: Callable[[ImageReadError], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RealReport:
    """The real-rain report (module docstring) of ``models`` (and the ``peer`` spec) on the photos of ``folders``.

    Everything that can be checked first is: the folders, the models, the peer and the video (whose sampled
    frames are read before the first photo is derained), so a bad input ends the run before its long part.
    An unreadable photo is left out and passed to ``on_skip``; :class:`RealBenchError` when none is readable.
    ``sheet``: write the contact sheet there (at most ``sheet_rows`` rows, cells ``sheet_height`` px high).
    ``strength``: the models' (not the peer's) strength, as ``derain run --strength`` (``auto``: their judgement).
    """
    strength = resolve_strength(strength)
    if max_side < 1:
        raise RealBenchError(f"max_side must be >= 1, got {max_side}")
    if sheet_rows < 1 or sheet_height < 1:
        raise RealBenchError("the contact sheet needs at least one row of at least 1 px")
    files = photo_files(folders, only)
    runners = [_runner(m, precision, strength) for m in models]
    if peer is not None:
        runners.append(_runner(peer_spec(peer), precision))
    if not runners:
        raise RealBenchError("no model to measure")
    frames = sample_video(video, video_stride, max_side) if video is not None else None

    photos, skipped = [], []
    for name, path in zip(short_names(files), files):
        try:
            photos.append((name, read_photo(path, max_side)))
        except ImageReadError as err:
            skipped.append(str(err))
            if on_skip:
                on_skip(err)
    if not photos:
        raise RealBenchError(f"no readable photo in {', '.join(str(f) for f in folders)}")

    peers = int(peer is not None)

    def said_photos(row: ModelChange) -> None:
        if progress:
            judged = "" if row.judged_dry is None else f", {row.judged_dry} judged dry"
            progress(f"{row.model}: {row.n} photos, Y-PSNR median {row.psnr_median:.2f} dB, "
                     f"{row.unchanged} unchanged, {row.nearly_unchanged} nearly unchanged{judged}")

    def said_video(row: VideoRow) -> None:
        if progress:
            progress(f"{row.model} on {Path(str(video)).name}: static {row.static_psnr:.2f} dB, "
                     f"rain RMS {row.rain_rms:.2f}, other static {row.other_psnr:.2f} dB")

    rows, per_runner = measure_photos(runners, photos, thumb_height=sheet_height if sheet else None, peers=peers,
                                      progress=said_photos)
    if sheet:
        order = sorted(range(len(photos)), key=lambda i: (-per_runner[0][i].psnr, i))[:sheet_rows]
        lines = []
        for i in order:
            name, rgb = photos[i]
            cells = [rgb] + [changes[i].thumb for changes in per_runner]
            labels = [(name, f"input {rgb.shape[1]}x{rgb.shape[0]}")]
            labels += [(changes[i].model, f"{changes[i].psnr:.2f} dB") for changes in per_runner]
            lines.append(SheetRow([c for c in cells if c is not None], labels))
        write_sheet(lines, sheet, sheet_height)
        for changes in per_runner:
            for change in changes:
                change.thumb = None
    resolved_precision = runners[0][1].precision
    shown = f"{precision} ({resolved_precision})" if precision != resolved_precision else precision
    report = RealReport(rows, [changes[i] for i in range(len(photos)) for changes in per_runner], max_side, shown,
                        only, skipped)
    if sheet:
        report.sheet_order = [photos[i][0] for i in order]
    if frames is not None:
        report.video = measure_video(runners, frames, video=str(video), stride=video_stride, peers=peers,
                                     progress=said_video)
    return report
