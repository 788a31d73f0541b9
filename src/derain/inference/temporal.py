"""Temporal deraining for a fixed camera: every output frame combines a sliding window of frames.

Rain changes from frame to frame while a fixed camera's scene mostly does not, and rain only adds
light to a pixel. So at a pixel the rain-free samples of a window of frames form the *lowest
cluster* of its values: :class:`TemporalEngine` estimates the background of frame ``t`` as the mean
of the samples within ``noise`` levels of the window's minimum (per channel; the mean of that
cluster rather than the minimum itself, which is biased dark by sensor and codec noise). The window
is ``window`` frames centred on ``t`` (the past and, with a delay of ``window // 2`` frames, the
future). An object that crossed the pixel in other frames of the window can darken that estimate (a
ghost of it): the colour test below sends such pixels to the model.

**Where the scene moves** the single-image model's output is used instead (``alpha`` = 1 in the
mask, feathered towards 0): a pixel goes to the model where the frame differs from the background in
a way rain cannot explain:

* *colour*: rain is grey, so a difference whose channels disagree by more than ``colour`` levels
  (channels near saturation left out, since clipping tints added light);
* *persistence*: rain at 25-30 frames/s does not stay on a pixel, so a pixel brighter than the
  background by more than ``persist`` levels in five consecutive frames (``t - 2 .. t + 2``) holds
  something that stays (a bright object); streaks that line up by chance are removed by an opening,
  and in dense rain the threshold rises above what rain does to most pixels;
* the frame's border where a registered window frame has no data.

Each detection is cleaned by a morphological opening (isolated pixels and thin streaks out). Parts of
an object close to the background in colour escape them, so within ``grow`` pixels of a detection the
colour test counts at the lower ``weak`` threshold (rain, grey, still does not pass it, so the static
scene around an object keeps its background). Nothing needs a darkening test: frame ``t`` is in its
own window, so the background is never more than ``noise`` above it. The union
is dilated by ``dilate`` pixels and feathered, so moving cars and people come from the model, not
from a ghost of them. A frame with no motion at all skips the model.

**Camera motion.** Each frame's integer shift against the *anchor* frame (the first frame since the
camera last moved) is measured by phase correlation on the luma of the frame's central
:data:`REGISTER_SIDE` square. Shifts up to ``max_shift`` pixels (wind shaking a mast) are registered:
each frame is moved into the anchor's position as it enters the window, the background and the tests
are computed there, and the result is moved to frame ``t``'s position. A larger shift, or a frame that does not correlate with the anchor, is a
camera move: it starts a new *segment* with that frame as anchor. Frame ``t`` is combined only when
its whole window lies in one segment that has settled (the first segment, or one that began at least
a half window before ``t``); otherwise it is derained by the model alone. A pan keeps starting new
segments, so it is derained frame by frame; :attr:`TemporalEngine.moved_frames` counts such frames
for the caller's note.

**Cost.** The window is one preallocated ring of ``window`` uint8 frames, each copied in once, registered
to its segment's anchor; the statistic and the tests run on integers, a band of rows at a time (the
band's window stays in cache), with no per-frame float copies of the window; registration compares the
central :data:`REGISTER_SIDE` square of luma; the masks are boolean (numpy), feathered on the motion's
bounding box only. The model runs on crops of the frame around the motion (:attr:`FrameDecision.boxes`:
the tiles that need it, grown by :data:`CROP_MARGIN` pixels of context, so the crop's output there is the
full frame's, then to a side of :data:`CROP_SIDES`, so that few shapes recur; :class:`ModelOnCrops`), or on
the whole frame when the crops would cover more than :data:`CROP_SHARE` of it.

Memory is bounded by the window: :class:`TemporalEngine` holds the ring (``window`` frames), references
to the frames not yet decided (``window // 2 + 1``) and one band of scratch, whatever the length of the video.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> scene = rng.integers(0, 200, (24, 32, 3), dtype=np.uint8)
>>> engine = TemporalEngine(TemporalOptions(window=5))
>>> out = []
>>> for i in range(8):
...     rainy = scene.copy(); rainy[:, (3 * i) % 32] = 255  # a "streak" that moves every frame
...     out += engine.push(rainy)
>>> out += engine.finish()
>>> [d.index for d in out] == list(range(8)), bool((out[4].background == scene).all())
(True, True)
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..errors import InvalidArgument

__all__ = [
    "CROP_MARGIN",
    "FrameDecision",
    "ModelOnCrops",
    "TemporalEngine",
    "TemporalOptions",
    "compose",
    "phase_shift",
    "temporal_derain",
]

#: Pixels of context around a crop's useful part (a multiple of the bundled models' 32): with it, the model's
#: output inside a crop is the full frame's (the frame's rain judgement given), so crops need no seams. The
#: bundled `default` reads up to 128 pixels around each output pixel (its deepest level, 1/32 of the frame,
#: through two 3×3 convolutions and the way back up); crops start on its 32-pixel grid (`ModelOnCrops`).
CROP_MARGIN = 128
#: Crop sides (a ladder of multiples of 32, about 1.25× apart): each crop is grown to the next of them.
CROP_SIDES = (64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072, 4096)
#: The model runs on the whole frame when its crops would cover more than this share of it (crops run one
#: at a time, whole frames in batches).
CROP_SHARE = 0.5
#: The side of the central square of luma that registration compares (wide enough for a shake of a few pixels
#: to be measured on texture, small enough that its FFT costs little at 1080p and above).
REGISTER_SIDE = 512
#: Bytes of window data (frames × rows × row bytes) the statistic handles at once: a band of rows that stays in cache.
_BAND_BYTES = 1 << 21


@dataclass(frozen=True)
class TemporalOptions:
    """How :class:`TemporalEngine` combines frames (levels are 8-bit levels).

    Attributes:
        window: frames combined per output frame (odd; the output is ``window // 2`` frames late).
        noise: width of the rain-free cluster above the window's minimum (sensor and codec noise).
        colour: channel disagreement of a difference that rain cannot cause.
        persist: brightening over five consecutive frames that rain cannot cause.
        dilate: pixels the motion mask grows by before it is feathered.
        weak: the colour test's threshold next to a detection (the weak test).
        grow: how far (pixels) from a detection the weak test counts.
        max_shift: camera shake registered, in pixels; a larger shift is a camera move.
        min_correlation: phase-correlation peak below which a frame is taken to show another view.
    """

    window: int = 15
    noise: float = 8.0
    colour: float = 24.0
    persist: float = 24.0
    dilate: int = 8
    max_shift: int = 8
    min_correlation: float = 0.08
    weak: float = 12.0
    grow: int = 32

    def __post_init__(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise InvalidArgument(f"the temporal window must be an odd number of frames >= 3, got {self.window}", option="--window")
        if self.max_shift < 0:
            raise InvalidArgument(f"max_shift must be >= 0, got {self.max_shift}")
        if self.noise < 0 or self.dilate < 0 or self.grow < 0:
            raise InvalidArgument(f"noise, dilate and grow must be >= 0, got {self.noise}, {self.dilate} and {self.grow}")

    @property
    def half(self) -> int:
        return self.window // 2


Box = tuple[int, int, int, int]  # rows y0:y1, columns x0:x1


@dataclass
class FrameDecision:
    """What the engine decided for frame ``index``: its pixels (uint8 ``H×W×3``), the rain-free background
    (None: the whole frame goes to the model) and ``alpha`` (``H×W`` float32 in [0, 1], the share of the
    model's output per pixel; None: no pixel needs the model). ``boxes`` (with ``alpha``): the crops
    ``(y0, y1, x0, x1)`` of the frame the model needs; together their insides (:func:`crop_inside`) hold every
    pixel where ``alpha`` > 0, each with :data:`CROP_MARGIN` pixels of context around it."""

    index: int
    frame: np.ndarray
    background: np.ndarray | None
    alpha: np.ndarray | None
    moved: bool = False  # derained frame by frame because the camera moved
    boxes: list[Box] = field(default_factory=list)

    @property
    def needs_model(self) -> bool:
        return self.background is None or self.alpha is not None

    @property
    def whole_frame(self) -> bool:
        """Whether the model's output is needed for the whole frame (no background, or one crop that is the frame)."""
        h, w = self.frame.shape[:2]
        return self.background is None or self.boxes == [(0, 0 + h, 0, w)] or not self.boxes


# --------------------------------------------------------------------------------------------- registration


@functools.lru_cache(maxsize=8)
def _hann2(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)


def phase_shift(reference: np.ndarray, moved: np.ndarray, limit: int | None = None) -> tuple[int, int, float]:
    """The integer ``(dy, dx)`` with ``moved[y, x] ≈ reference[y + dy, x + dx]`` (two luma images of one size),
    and the phase-correlation peak (1: identical up to the shift; near 0: unrelated). With ``limit`` only shifts
    up to that many pixels are considered (a large object moving across the view cannot win over the scene)."""
    h, w = reference.shape
    win = _hann2(h, w) if h > 2 and w > 2 else 1.0
    a = np.fft.rfft2((reference - reference.mean()) * win)
    b = np.fft.rfft2((moved - moved.mean()) * win)
    cross = b * np.conj(a)
    cross /= np.abs(cross) + 1e-6
    corr = np.fft.irfft2(cross, s=(h, w))
    if limit is not None and 2 * limit + 1 < min(h, w):
        near = np.zeros((h, w), bool)
        near[:limit + 1, :limit + 1] = near[:limit + 1, w - limit:] = True
        near[h - limit:, :limit + 1] = near[h - limit:, w - limit:] = True
        corr = np.where(near, corr, -np.inf)
    peak = int(np.argmax(corr))
    py, px = divmod(peak, w)
    dy = py - h if py > h // 2 else py
    dx = px - w if px > w // 2 else px
    return -dy, -dx, float(corr.flat[peak])


def _register_view(frame: np.ndarray, side: int = REGISTER_SIDE) -> np.ndarray:
    """The luma (float32, BT.601) of the central ``side × side`` square of a frame (all of a smaller frame)."""
    h, w = frame.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    crop = frame[y0:y0 + min(h, side), x0:x0 + min(w, side)]
    return crop[..., 0] * np.float32(0.299) + crop[..., 1] * np.float32(0.587) + crop[..., 2] * np.float32(0.114)


def _shift_into(dst: np.ndarray, src: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``dst[y, x] = src[y + dy, x + dx]``, edges replicated where that falls outside (slices, no index arrays)."""
    h, w = src.shape[:2]
    y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
    if y0 >= y1 or x0 >= x1:  # a shift beyond the frame: every pixel is an edge pixel
        rows, cols = np.clip(np.arange(h) + dy, 0, h - 1), np.clip(np.arange(w) + dx, 0, w - 1)
        dst[...] = src[rows[:, None], cols[None, :]]
        return dst
    dst[y0:y1, x0:x1] = src[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    dst[y0:y1, :x0] = dst[y0:y1, x0:x0 + 1]
    dst[y0:y1, x1:] = dst[y0:y1, x1 - 1:x1]
    dst[:y0] = dst[y0:y0 + 1]
    dst[y1:] = dst[y1 - 1:y1]
    return dst


def _shifted(frame: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = frame[y + dy, x + dx]``, edges replicated where that falls outside."""
    if dy == 0 and dx == 0:
        return frame
    return _shift_into(np.empty_like(frame), frame, dy, dx)


def _border(shape: tuple[int, int], shifts: Iterable[tuple[int, int]]) -> np.ndarray | None:
    """The pixels that some shifted frame has no data for (None: none)."""
    h, w = shape
    shifts = list(shifts)
    dys = [dy for dy, _ in shifts]
    dxs = [dx for _, dx in shifts]
    top, bottom = max(0, -min(dys)), max(0, max(dys))
    left, right = max(0, -min(dxs)), max(0, max(dxs))
    if not (top or bottom or left or right):
        return None
    mask = np.zeros((h, w), bool)
    mask[:top], mask[h - bottom:] = True, True
    mask[:, :left], mask[:, w - right:] = True, True
    return mask


# --------------------------------------------------------------------------------------------- masks (numpy, bool)


def _dilate_axis(mask: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Binary dilation along one axis by a segment of ``2·radius + 1`` (outside the array counts as False):
    shifted ORs with doubling steps, so a radius costs about ``2·log2(radius)`` passes."""
    out = mask.copy()
    reach = 0  # out covers [−reach, +reach] so far
    while reach < radius:
        step = min(reach + 1, radius - reach)  # grow by `step` on each side
        shifted = out.copy()
        a = [slice(None)] * mask.ndim
        b = [slice(None)] * mask.ndim
        a[axis], b[axis] = slice(step, None), slice(None, -step)
        shifted[tuple(a)] |= out[tuple(b)]
        shifted[tuple(b)] |= out[tuple(a)]
        out = shifted
        reach += step
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a square of side ``2·radius + 1``."""
    if radius <= 0:
        return mask
    return _dilate_axis(_dilate_axis(mask, radius, 0), radius, 1)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a square of side ``2·radius + 1`` (outside the array counts as True, as a grey erosion
    with padding that cannot win)."""
    if radius <= 0:
        return mask
    return ~_dilate(~mask, radius)


def _opened(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological opening of a boolean mask (regions narrower than ``2·radius + 1`` px removed)."""
    h, w = mask.shape
    if min(h, w) <= 2 * radius or not mask.any():
        return mask
    return _dilate(_erode(mask, radius), radius)


def _box_mean(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean over a centred window of ``k`` (odd) along ``axis``, edges replicated (float32)."""
    pad = [(0, 0)] * x.ndim
    pad[axis] = (k // 2 + 1, k // 2)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis, dtype=np.float32)
    n = x.shape[axis]
    hi = [slice(None)] * x.ndim
    lo = [slice(None)] * x.ndim
    hi[axis], lo[axis] = slice(k, k + n), slice(0, n)
    return (c[tuple(hi)] - c[tuple(lo)]) / np.float32(k)


def _bbox(mask: np.ndarray) -> Box | None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _crop_boxes(alpha_region: np.ndarray, region: Box, shape: tuple[int, int], margin: int = CROP_MARGIN) -> list[Box]:
    """Crops of a frame of ``shape`` that cover every pixel where ``alpha`` > 0 (``alpha_region`` holds ``alpha`` on
    ``region``) with ``margin`` pixels of context: the frame's ``margin``-pixel tiles that hold such a pixel, grown
    by one tile, grouped into connected groups; one crop per group (its bounding box, grown to sides of
    :data:`CROP_SIDES`); the whole frame when the crops would cover more than :data:`CROP_SHARE` of it."""
    h, w = shape
    gh, gw = -(-h // margin), -(-w // margin)
    grid = np.zeros((gh, gw), bool)
    ys, xs = np.nonzero(alpha_region > 0)
    if ys.size == 0:
        return []
    grid[(ys + region[0]) // margin, (xs + region[2]) // margin] = True
    grid = _dilate(grid, 1)
    seen = np.zeros_like(grid)
    boxes = []
    for gy, gx in zip(*np.nonzero(grid)):
        if seen[gy, gx]:
            continue
        stack, cells = [(gy, gx)], []
        seen[gy, gx] = True
        while stack:
            cy, cx = stack.pop()
            cells.append((cy, cx))
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < gh and 0 <= nx < gw and grid[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        cy_, cx_ = zip(*cells)
        boxes.append((int(min(cy_)) * margin, min(h, (int(max(cy_)) + 1) * margin), int(min(cx_)) * margin, min(w, (int(max(cx_)) + 1) * margin)))
    boxes = [_snap(y0, y1, h) + _snap(x0, x1, w) for y0, y1, x0, x1 in boxes]
    if sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes) > CROP_SHARE * h * w:  # crops would cost about what the frame costs
        return [(0, h, 0, w)]
    return boxes


def _snap(start: int, end: int, size: int) -> tuple[int, int]:
    """``start:end`` grown (around it, kept in ``0:size``) to the next side of :data:`CROP_SIDES` (all of ``size``
    beyond them). A model runs its first input of each shape more slowly (its kernels are prepared per shape), so
    crops take few distinct shapes over a video."""
    side = next((s for s in CROP_SIDES if s >= end - start), size)
    if side >= size:
        return 0, size
    lo = max(0, min(start - (side - (end - start)) // 2, size - side))
    return lo, lo + side


def crop_inside(box: Box, shape: tuple[int, int], margin: int = CROP_MARGIN) -> Box:
    """The part of crop ``box`` whose model output is the full frame's: ``margin`` pixels in from each side that is
    not the frame's edge (at the frame's edge the crop sees what the frame sees)."""
    y0, y1, x0, x1 = box
    h, w = shape
    return (y0 + margin if y0 > 0 else 0, y1 - margin if y1 < h else h, x0 + margin if x0 > 0 else 0, x1 - margin if x1 < w else w)


# --------------------------------------------------------------------------------------------- the engine


class TemporalEngine:
    """The streaming engine (module docstring): :meth:`push` frames (uint8 ``H×W×3``, one size) in order, get
    :class:`FrameDecision` objects back in order, ``window // 2`` frames late; :meth:`finish` returns the rest.

    The caller runs the single-image model on the decisions that need it (the whole frame, or the decision's
    ``boxes``) and blends with :func:`compose`. The frames passed in are not changed; the engine copies each
    into its window (a preallocated ring of ``window`` uint8 frames, registered to the segment's anchor) and
    keeps a reference to the frames not yet decided.
    """

    def __init__(self, options: TemporalOptions | None = None) -> None:
        self.options = options or TemporalOptions()
        o = self.options
        self._pending: deque[np.ndarray] = deque()  # frames pushed, not yet decided (at most half + 1)
        self._shifts: deque[tuple[int, int]] = deque(maxlen=o.window)
        self._segments: deque[int] = deque(maxlen=o.window)
        self._segment_start: dict[int, int] = {}
        self._anchor: np.ndarray | None = None
        self._segment = -1
        self._pushed = 0  # frames pushed
        self._emitted = 0  # decisions returned
        self._size: tuple[int, ...] | None = None
        self._ring: np.ndarray | None = None  # window × H × W × 3 uint8, slot i % window holds frame i (registered)
        self._scratch: dict[str, np.ndarray] = {}
        self.moved_frames = 0
        self.segments = 0
        self.model_frames = 0
        self.model_pixels = 0  # pixels the model was asked for (whole frames and crops)

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the frames pushed (None before the first)."""
        return None if self._size is None else (self._size[0], self._size[1])

    @property
    def held_frames(self) -> int:
        """Frames held in the window now (never more than the window)."""
        return min(self._pushed, self.options.window)

    # ----------------------------------------------------------------------------------- input

    def push(self, frame: np.ndarray) -> list[FrameDecision]:
        """Add the next frame; the decisions that are now ready (none during the first half window)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 H×W×3, got {frame.dtype} {frame.shape}")
        if self._size is None:
            self._size = frame.shape
            self._ring = np.empty((self.options.window, *frame.shape), np.uint8)
        elif frame.shape != self._size:
            raise ValueError(f"frame {self._pushed} is {frame.shape[1]}x{frame.shape[0]}, the first was {self._size[1]}x{self._size[0]}")
        dy, dx = self._register(frame)
        assert self._ring is not None
        slot = self._ring[self._pushed % self.options.window]
        if dy == 0 and dx == 0:
            np.copyto(slot, frame)
        else:  # frame i shows the anchor's view moved by its shift: moved back, it lines up with the anchor
            _shift_into(slot, frame, -dy, -dx)
        self._pending.append(frame)
        self._pushed += 1
        ready = []
        while self._emitted + self.options.half < self._pushed:
            ready.append(self._decide(self._emitted))
            self._emitted += 1
        return ready

    def finish(self) -> list[FrameDecision]:
        """The decisions of the last frames (their windows hold no future beyond the end)."""
        ready = []
        while self._emitted < self._pushed:
            ready.append(self._decide(self._emitted))
            self._emitted += 1
        return ready

    def _register(self, frame: np.ndarray) -> tuple[int, int]:
        o = self.options
        luma = _register_view(frame)
        shift: tuple[int, int] | None = None
        if self._anchor is not None:
            dy, dx, peak = phase_shift(self._anchor, luma, o.max_shift)
            if max(abs(dy), abs(dx)) <= o.max_shift and peak >= o.min_correlation:
                shift = (dy, dx)
        if shift is None:  # the first frame, or the camera moved: a new segment anchored here
            self._segment += 1
            self._segment_start[self._segment] = self._pushed
            self._anchor = luma
            self.segments += 1
            shift = (0, 0)
            for old in [s for s in self._segment_start if s < self._segment - 1]:
                del self._segment_start[old]
        self._shifts.append(shift)
        self._segments.append(self._segment)
        return shift

    # ----------------------------------------------------------------------------------- decision

    def _local(self, index: int) -> int:
        """Position of frame ``index`` in the shift and segment deques."""
        return index - (self._pushed - len(self._shifts))

    def _buffers(self, rows: int) -> dict[str, np.ndarray]:
        """Scratch arrays for a band of ``rows`` rows (allocated once, reused for every band and frame)."""
        s = self._scratch
        if "low" not in s or s["low"].shape[0] != rows:
            w = self._size[1]  # type: ignore[index]
            wide = np.uint8 if int(self.options.noise) * self.options.window < 256 else np.uint16
            s.update(
                low=np.empty((rows, w, 3), np.uint8), d=np.empty((rows, w, 3), np.uint8),
                keep=np.empty((rows, w, 3), bool), total=np.empty((rows, w, 3), wide), count=np.empty((rows, w, 3), np.uint8),
                low5=np.empty((rows, w, 3), np.uint8), diff=np.empty((rows, w, 3), np.int16),
            )
        return s

    def _decide(self, t: int) -> FrameDecision:
        o = self.options
        first = max(0, t - o.half, self._pushed - len(self._shifts))
        last = min(self._pushed - 1, t + o.half)
        frame = self._pending.popleft()
        it = self._local(t)
        seg = self._segments[it]
        idx = range(first, last + 1)
        same = all(self._segments[self._local(i)] == seg for i in idx)
        settled = seg == 0 or self._segment_start.get(seg, t) <= t - o.half
        if not (same and settled) or len(idx) < 2:
            moved = not (same and settled)
            self.moved_frames += moved
            self.model_frames += 1
            self.model_pixels += frame.shape[0] * frame.shape[1]
            return FrameDecision(t, frame, None, None, moved=moved)

        st = self._shifts[it]
        background, colour, weak, lift = self._statistics(t, idx)
        # dense rain lifts most pixels in three frames running: the threshold rises above what rain does to most
        typical = float(np.percentile(lift[::4, ::4], 75)) if lift is not None and lift.size >= 16 else 0.0
        persist = lift > max(o.persist, 2.0 * typical) if lift is not None else np.zeros(colour.shape, bool)
        motion = _opened(colour, 1) | _opened(persist, 2)
        grow_box = _bbox(motion) if o.grow else None
        if grow_box is not None:  # the weak test next to a detection: the parts of an object close to the background
            h, w = motion.shape
            y0, y1 = max(0, grow_box[0] - o.grow), min(h, grow_box[1] + o.grow)
            x0, x1 = max(0, grow_box[2] - o.grow), min(w, grow_box[3] + o.grow)
            motion[y0:y1, x0:x1] |= weak[y0:y1, x0:x1] & _dilate(motion[y0:y1, x0:x1], o.grow)
        if st != (0, 0):  # computed where the anchor is: moved to where frame t is
            background, motion = _shifted(background, *st), _shifted(motion, *st)
        # frame i moved by (s_t - s_i) lines up with frame t: where that leaves no data, the model decides
        border = _border(frame.shape[:2], [(st[0] - self._shifts[self._local(i)][0], st[1] - self._shifts[self._local(i)][1]) for i in idx])
        if border is not None:
            motion |= border
        box = _bbox(motion)
        if box is None:
            return FrameDecision(t, frame, background, None)
        alpha, region, feathered = self._alpha(motion, box)
        boxes = _crop_boxes(feathered, region, frame.shape[:2])
        self.model_frames += 1
        self.model_pixels += sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in boxes)
        return FrameDecision(t, frame, background, alpha, boxes=boxes)

    def _statistics(self, t: int, idx: range) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """For frame ``t`` over the window ``idx``, in the anchor's position: the background (uint8 ``H×W×3``, per
        pixel and channel the rounded mean of the samples within ``noise`` levels of the window's minimum), the
        colour test (bool ``H×W``), the weak one (``weak`` levels) and the lift (int16 ``H×W``: the least channel of the minimum over ``t - 2 ..
        t + 2`` above the background; None with fewer than three such frames). Integer arithmetic, a band of rows
        at a time, on the ring as it is."""
        o = self.options
        assert self._ring is not None and self._size is not None
        h, w = self._size[:2]
        n = o.window
        slots = [i % n for i in idx]
        near = [i % n for i in range(t - 2, t + 3) if i in idx]
        own = t % n
        noise = int(math.floor(o.noise))
        background = np.empty((h, w, 3), np.uint8)
        colour = np.empty((h, w), bool)
        weak = np.empty((h, w), bool)
        lift = np.empty((h, w), np.int16) if len(near) >= 3 else None
        rows = max(1, min(h, _BAND_BYTES // max(1, len(slots) * w * 3)))
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            b = self._buffers(rows)
            k = r1 - r0
            low, d, keep, total, count = b["low"][:k], b["d"][:k], b["keep"][:k], b["total"][:k], b["count"][:k]
            band = [self._ring[s, r0:r1] for s in slots]
            np.minimum(band[0], band[1], out=low)
            for f in band[2:]:
                np.minimum(low, f, out=low)
            total.fill(0)
            count.fill(0)
            for f in band:
                np.subtract(f, low, out=d)  # >= 0: low is the minimum
                np.less_equal(d, noise, out=keep)
                np.multiply(d, keep, out=d)
                np.add(total, d, out=total)
                np.add(count, keep, out=count)
            # low + round(total / count): count >= 1 (the minimum itself)
            bg = background[r0:r1]
            np.add(low, ((total.astype(np.uint16) * 2 + count) // (2 * count.astype(np.uint16))).astype(np.uint8), out=bg)
            # colour: frame t minus the background whose channels disagree; clipping tints added light, so not near 255
            f_t = self._ring[own, r0:r1]
            diff = b["diff"][:k]
            np.subtract(f_t, bg, out=diff, dtype=np.int16)
            c0, c1, c2 = diff[..., 0], diff[..., 1], diff[..., 2]
            spread = np.maximum(np.maximum(c0, c1), c2) - np.minimum(np.minimum(c0, c1), c2)
            bright = np.maximum(np.maximum(f_t[..., 0], f_t[..., 1]), f_t[..., 2])
            colour[r0:r1] = (spread > o.colour) & (bright < 250)
            weak[r0:r1] = (spread > o.weak) & (bright < 250)
            if lift is not None:
                low5 = b["low5"][:k]
                np.minimum(self._ring[near[0], r0:r1], self._ring[near[1], r0:r1], out=low5)
                for s in near[2:]:
                    np.minimum(low5, self._ring[s, r0:r1], out=low5)
                np.subtract(low5, bg, out=diff, dtype=np.int16)
                np.minimum(np.minimum(diff[..., 0], diff[..., 1]), diff[..., 2], out=lift[r0:r1])
        return background, colour, weak, lift

    def _alpha(self, motion: np.ndarray, box: Box) -> tuple[np.ndarray, Box, np.ndarray]:
        """The model's share per pixel: ``motion`` grown by ``dilate`` pixels, feathered by a box blur twice as
        wide as half of that, never below ``motion`` itself; computed on the motion's bounding box grown by that
        reach (zero beyond it). Returns the full ``H×W`` alpha, that region and alpha on it."""
        o = self.options
        h, w = motion.shape
        k = 2 * max(1, o.dilate // 2) + 1
        reach = o.dilate + k
        y0, y1, x0, x1 = max(0, box[0] - reach), min(h, box[1] + reach), max(0, box[2] - reach), min(w, box[3] + reach)
        m = motion[y0:y1, x0:x1]
        grown = _dilate(m, o.dilate).astype(np.float32)
        feathered = _box_mean(_box_mean(grown, k, 1), k, 0)
        np.maximum(feathered, m, out=feathered)
        np.clip(feathered, 0.0, 1.0, out=feathered)
        feathered[feathered < 1e-6] = 0.0  # float round-off of the running sums, not a share
        alpha = np.zeros((h, w), np.float32)
        alpha[y0:y1, x0:x1] = feathered
        return alpha, (y0, y1, x0, x1), feathered


# --------------------------------------------------------------------------------------------- output


def compose(decision: FrameDecision, derained: np.ndarray | Sequence[np.ndarray] | None) -> np.ndarray:
    """The output frame of ``decision`` (uint8 ``H×W×3``): the background where ``alpha`` is 0, the model's
    output where it is 1, blended between. ``derained`` is the model's output for the whole frame, or for each
    of ``decision.boxes`` (a list of crops, in that order)."""
    if decision.background is None:
        if derained is None or not isinstance(derained, np.ndarray):
            raise ValueError(f"frame {decision.index} needs the model's output for the whole frame")
        return derained
    if decision.alpha is None:
        return decision.background
    if derained is None:
        raise ValueError(f"frame {decision.index} needs the model's output")
    shape = decision.frame.shape[:2]
    if isinstance(derained, np.ndarray):
        parts = [((0, shape[0], 0, shape[1]), derained)]
    else:
        if len(derained) != len(decision.boxes):
            raise ValueError(f"frame {decision.index}: {len(derained)} crops for {len(decision.boxes)} boxes")
        parts = list(zip(decision.boxes, derained))
    out = decision.background.copy()
    for box, crop in parts:
        y0, y1, x0, x1 = crop_inside(box, shape) if crop.shape[:2] != shape else box
        a = decision.alpha[y0:y1, x0:x1]
        sub = _bbox(a > 0)
        if sub is None:
            continue
        ys, ye, xs, xe = sub
        a = a[ys:ye, xs:xe, None]
        model = crop[y0 - box[0] + ys:y0 - box[0] + ye, x0 - box[2] + xs:x0 - box[2] + xe].astype(np.float32)
        bg = decision.background[y0 + ys:y0 + ye, x0 + xs:x0 + xe].astype(np.float32)
        out[y0 + ys:y0 + ye, x0 + xs:x0 + xe] = np.clip(np.rint(bg + a * (model - bg)), 0, 255).astype(np.uint8)
    return out


class ModelOnCrops:
    """A single-image runner (:class:`~derain.inference.derainer.DerainerBase`) on crops of a frame: each crop's
    output is what the runner gives for the whole frame there (crops with :data:`CROP_MARGIN` of context; a
    model that judges images as a whole gets the whole frame's judgement, since a crop alone would be judged on
    part of the view). The judgement is made on the first frame and again every ``refresh`` frames: rain over a
    fixed view changes over seconds, and the judgement costs a fair part of a frame's inference."""

    def __init__(self, runner: Any, *, refresh: int = 15, tile: int | None = 0, tile_overlap: int = 32) -> None:
        self.runner = runner
        self.refresh = max(1, refresh)
        self.tile = tile  # as run_tiled: 0 never tiles a crop, None tiles large ones, N uses N×N tiles
        self.tile_overlap = tile_overlap
        self._whole: torch.Tensor | None = None
        self._age = 0

    def _judgement(self, frame: np.ndarray) -> torch.Tensor | None:
        if not hasattr(self.runner, "judgement"):
            return None
        if self._whole is None or self._age >= self.refresh:
            self._whole, self._age = self.runner.judgement(frame), 0
        self._age += 1
        return self._whole

    def __call__(self, frame: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray]:
        from .tiling import derain_tiled, resolve_tile

        whole = self._judgement(frame)
        run = functools.partial(self.runner.run_tensor, whole=whole) if whole is not None else self.runner.run_tensor
        align, congruent = getattr(self.runner, "tile_align", 1), getattr(self.runner, "tile_congruent", False)
        outs = []
        height, width = frame.shape[:2]
        for y0, y1, x0, x1 in boxes:
            # grown to the model's grid: the start up/left to a multiple of its padding multiple (and, for a model
            # that centres its input on its canvas, the end down/right to the frame's size modulo it, at most the
            # frame's edge): a network that halves its input computes a pixel as the whole frame does only where the
            # crop sits on its canvas as the frame does (tile_spans)
            ya, xa = y0 // align * align, x0 // align * align
            yb, xb = (y1 + (height - y1) % align, x1 + (width - x1) % align) if congruent else (y1, x1)
            x = torch.from_numpy(np.ascontiguousarray(frame[ya:yb, xa:xb])).permute(2, 0, 1)[None].float().div_(255.0)
            size = resolve_tile(self.tile, yb - ya, xb - xa)
            with torch.inference_mode():
                y = run(x) if size is None else derain_tiled(run, x, size, self.tile_overlap, align, congruent)
            y = y[0, :, y0 - ya : y1 - ya, x0 - xa : x1 - xa]
            outs.append(y.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy())
        return outs


def temporal_derain(
    frames: Iterable[np.ndarray],
    derain_batch: Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    options: TemporalOptions | None = None,
    *,
    batch: int = 4,
    engine: TemporalEngine | None = None,
    derain_crops: Callable[[np.ndarray, Sequence[Box]], Sequence[np.ndarray]] | None = None,
) -> Iterator[np.ndarray]:
    """Temporally derained frames of ``frames`` (uint8 ``H×W×3`` in, the same out, in order): a generator
    that holds a window of frames and ``batch`` decisions at most. ``derain_batch`` is the single-image
    model on a list of whole frames (uint8 out); it is called in batches, only for frames that need it.
    ``derain_crops`` (e.g. a :class:`ModelOnCrops`), when given, derains only the crops of a frame where the
    scene moves (``frame, boxes → crops``) instead of the whole frame. Pass ``engine`` to read its counters
    afterwards."""
    engine = engine or TemporalEngine(options)
    pending: list[FrameDecision] = []

    def flush() -> Iterator[np.ndarray]:
        whole = [d for d in pending if d.needs_model and (derain_crops is None or d.whole_frame)]
        outs = list(derain_batch([d.frame for d in whole])) if whole else []
        by_index: dict[int, Any] = {d.index: o for d, o in zip(whole, outs)}
        for d in pending:
            if d.needs_model and d.index not in by_index:
                assert derain_crops is not None
                by_index[d.index] = list(derain_crops(d.frame, d.boxes))
        for d in pending:
            yield compose(d, by_index.get(d.index))
        pending.clear()

    for frame in frames:
        for d in engine.push(frame):
            pending.append(d)
            if len(pending) >= batch:
                yield from flush()
    pending.extend(engine.finish())
    while pending:
        head, rest = pending[:batch], pending[batch:]
        pending[:] = head
        yield from flush()
        pending[:] = rest
