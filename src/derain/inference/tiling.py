"""Tiled inference: run a model on overlapping tiles and blend them, so memory stays bounded.

:func:`derain_tiled` cuts an image into ``tile × tile`` windows that overlap by at least
``overlap`` pixels, runs ``fn`` on each and accumulates the results (float32) with raised-cosine
cross-fade weights centred in each overlap, so there are no seams. Tiles are spread evenly and the
last one ends at the border (shifted inward, never padded), so every tile has the same size.
The weights are separable (a product of one weight per row and per column), so the normaliser is
two 1-D sums rather than a full-size buffer: the only full-size buffer is the output.

:func:`derain_array` does the same for an ``H×W×3`` array (uint8, uint16 or float) and returns one of
its dtype, converting one tile at a time and finishing the output a band of rows at a time: besides
the input and output arrays, memory holds one band (``tile`` rows) in float32, however large the image.

:func:`resolve_tile` is the automatic policy used by :meth:`Derainer.run_tiled`,
:func:`derain.derain` and ``derain run``: ``tile=None`` tiles images of more than
:data:`AUTO_TILE_PIXELS` pixels with :data:`AUTO_TILE`-pixel tiles; ``0`` never tiles.

>>> import torch
>>> x = torch.rand(1, 3, 70, 90)
>>> y = derain_tiled(lambda t: t * 0.5, x, tile=32, overlap=8)
>>> y.shape, torch.allclose(y, x * 0.5)
(torch.Size([1, 3, 70, 90]), True)
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..errors import InvalidArgument
from ..io.images import PIXEL_TOP, quantize_pixels, unit_float

__all__ = [
    "AUTO_TILE",
    "AUTO_TILE_PIXELS",
    "DEFAULT_OVERLAP",
    "check_tile",
    "JUDGE_PIXELS",
    "derain_array",
    "derain_tiled",
    "judgement_view",
    "resolve_tile",
    "tile_spans",
    "tile_starts",
]

#: Images with more pixels than this are tiled when no tile size is given (about 1 MP).
AUTO_TILE_PIXELS = 1024 * 1024
#: Tile side used by the automatic policy.
AUTO_TILE = 512
#: Default overlap between neighbouring tiles, in pixels.
DEFAULT_OVERLAP = 32
#: A model that judges each image as a whole (rain or not) judges an image larger than this on a copy
#: downscaled to fit (:func:`judgement_view`), tiled or not, so every tile gets the same judgement.
JUDGE_PIXELS = AUTO_TILE_PIXELS


def resolve_tile(tile: int | None, height: int, width: int) -> int | None:
    """The tile side to use for an image, or None for one pass over the whole image.

    ``tile=None``: automatic (:data:`AUTO_TILE` above :data:`AUTO_TILE_PIXELS` pixels);
    ``0``: never tile; ``N``: tiles of ``N`` (None when the image fits in one tile).

    >>> resolve_tile(None, 1000, 1000), resolve_tile(None, 4000, 6000), resolve_tile(0, 4000, 6000), resolve_tile(256, 200, 200)
    (None, 512, None, None)
    """
    if tile is None:
        return AUTO_TILE if height * width > AUTO_TILE_PIXELS else None
    check_tile(tile, 0)
    if tile == 0 or (height <= tile and width <= tile):
        return None
    return int(tile)


def tile_spans(length: int, tile: int, overlap: int, align: int = 1, congruent: bool = False) -> list[tuple[int, int]]:
    """``(start, size)`` of the fewest tiles of at most ``tile`` covering ``length`` with overlaps of at least
    ``overlap`` (and, with ``align``, starts on its grid: small tiles then take more of them).

    Spread evenly; the first starts at 0 and the last ends at ``length``. With ``align`` > 1 every start is a
    multiple of ``align`` (tiles are ``tile`` rounded down to a multiple of it, the last one to ``length``): a network
    that halves its input ``k`` times (``config.multiple`` = 2^k, the image at its canvas's top-left) computes a
    pixel alike only at offsets that differ by multiples of 2^k, so aligned tiles give what one pass over the whole
    image gives wherever a tile holds the context the network reads. A network that centres its input on its canvas
    (:func:`~derain.ops.padding.pad_canvas`) offsets it by an amount that depends on the input's size modulo 2^k:
    with ``congruent`` every tile's size equals ``length`` modulo ``align`` (the largest such size up to ``tile``),
    so each tile sits on its canvas as the whole image does. Tiles too small to align (``tile − overlap <
    2·align``) are not aligned.

    >>> tile_spans(1000, 512, 32), tile_spans(300, 512, 32)
    ([(0, 512), (244, 512), (488, 512)], [(0, 300)])
    >>> tile_spans(2562, 512, 32, align=32)
    [(0, 512), (416, 512), (832, 512), (1248, 512), (1664, 512), (2080, 482)]
    >>> tile_spans(2562, 512, 32, align=32, congruent=True)
    [(0, 482), (416, 482), (832, 482), (1248, 482), (1664, 482), (2080, 482)]
    """
    if length <= tile:
        return [(0, length)]
    if align > 1 and tile - overlap >= 2 * align:
        # the tiles' size: `tile` down to the grid, or (congruent) the largest up to `tile` equal to `length` modulo `align`
        size = tile - (tile - length) % align if congruent else tile // align * align
        last = -(-(length - size) // align) * align  # the last tile ends at `length` and is at most `size`
        n = max(2, math.ceil((length - overlap) / (size - overlap)))
        while True:
            starts = [round(i * last / (n - 1)) // align * align for i in range(n - 1)] + [last]
            if all(a + size - b >= overlap for a, b in zip(starts, starts[1:])):
                return [(a, size) for a in starts[:-1]] + [(last, length - last)]
            n += 1
    n = math.ceil((length - overlap) / (tile - overlap))
    return [(round(i * (length - tile) / (n - 1)), tile) for i in range(n)]


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """The starts of :func:`tile_spans`.

    >>> tile_starts(1000, 512, 32), tile_starts(300, 512, 32), tile_starts(992, 512, 32)
    ([0, 244, 488], [0], [0, 480])
    """
    return [start for start, _ in tile_spans(length, tile, overlap, align)]


def _rise(pos: np.ndarray, centre: float, width: float) -> np.ndarray:
    """0 before ``centre - width/2``, 1 after ``centre + width/2``, raised cosine in between."""
    if width <= 0:
        return (pos >= centre).astype(np.float64)
    t = np.clip((pos - (centre - width / 2)) / width, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _axis_weights(spans: list[tuple[int, int]], overlap: int) -> list[np.ndarray]:
    """One 1-D weight per tile: 1 inside, cross-fading to 0 across the middle of each overlap with a neighbour."""
    weights = []
    for i, (s, size) in enumerate(spans):
        pos = np.arange(s, s + size) + 0.5
        w = np.ones(size)
        if i > 0:
            a, b = s, spans[i - 1][0] + spans[i - 1][1]  # overlap with the previous tile: [a, b)
            w *= _rise(pos, (a + b) / 2, min(overlap, b - a))
        if i < len(spans) - 1:
            a, b = spans[i + 1][0], s + size
            w *= 1.0 - _rise(pos, (a + b) / 2, min(overlap, b - a))
        weights.append(w)
    return weights


def check_tile(tile: int | None, overlap: int = DEFAULT_OVERLAP, *, blame: str = "tile") -> None:
    """The one rule of a tile plan: an overlap of 0 or more, and tiles (where there are any: ``None`` or 0
    is no tiling) of more than twice the overlap, so each tile keeps a middle of its own.
    :class:`~derain.errors.InvalidArgument` names ``--tile`` or, with ``blame="overlap"``, ``--tile-overlap``.

    >>> check_tile(512, 32), check_tile(0, 32), check_tile(None, 32)
    (None, None, None)
    >>> check_tile(64, 32)
    Traceback (most recent call last):
    ...
    derain.errors.InvalidArgument: tile must be 0 or more than twice the tile overlap (64), got 64
    """
    if overlap < 0:
        raise InvalidArgument(f"tile overlap must be >= 0, got {overlap}", option="--tile-overlap")
    if tile is not None and tile < 0:
        raise InvalidArgument(f"tile must be >= 0, got {tile}", option="--tile")
    if tile and 2 * overlap >= tile:
        if blame == "overlap":
            raise InvalidArgument(f"tile overlap must be less than half the tile ({tile}), got {overlap}", option="--tile-overlap")
        raise InvalidArgument(f"tile must be 0 or more than twice the tile overlap ({2 * overlap}), got {tile}", option="--tile")


def _plan(height: int, width: int, tile: int, overlap: int, align: int = 1, congruent: bool = False) -> tuple[list[tuple[int, np.ndarray]], list[tuple[int, np.ndarray]], torch.Tensor, torch.Tensor]:
    """The tiling of an image: (start, 1-D weight) per tile row and column (a tile's size is its weight's
    length; :func:`tile_spans`), and the reciprocal of the weights' sums per row and column (the normaliser)."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    check_tile(tile, overlap, blame="overlap")
    ys, xs = tile_spans(height, tile, overlap, align, congruent), tile_spans(width, tile, overlap, align, congruent)
    rows = [(s, w) for (s, _), w in zip(ys, _axis_weights(ys, overlap))]
    cols = [(s, w) for (s, _), w in zip(xs, _axis_weights(xs, overlap))]
    sum_y, sum_x = np.zeros(height), np.zeros(width)
    for s, w in rows:
        sum_y[s : s + len(w)] += w
    for s, w in cols:
        sum_x[s : s + len(w)] += w
    inv_y = torch.from_numpy((1.0 / sum_y).astype(np.float32))
    inv_x = torch.from_numpy((1.0 / sum_x).astype(np.float32))
    return rows, cols, inv_y, inv_x


def derain_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int = AUTO_TILE,
    overlap: int = DEFAULT_OVERLAP,
    align: int = 1,
    congruent: bool = False,
) -> torch.Tensor:
    """Apply ``fn`` (``(B, C, h, w)`` → ``(B, C', h, w)``) to ``image`` in overlapping tiles and blend.

    ``image`` is ``(C, H, W)`` or ``(B, C, H, W)``; the result has the same layout, float32, on the
    device ``fn`` returns. Tiles are at most ``tile × tile`` (:func:`tile_spans`: with ``align``, they start at
    multiples of it; with ``congruent`` too, they are as long as the image modulo it); neighbouring tiles overlap by at least
    ``overlap`` pixels (``overlap < tile / 2``) and are cross-faded over ``overlap`` pixels in the
    middle of their overlap. An image that fits in one tile is passed to ``fn`` whole.
    """
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    if x.dim() != 4:
        raise ValueError(f"expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(image.shape)}")
    batch, _, height, width = x.shape
    rows, cols, inv_y, inv_x = _plan(height, width, tile, overlap, align, congruent)
    if len(rows) == 1 and len(cols) == 1:
        out = fn(x).float()
        return out[0] if squeeze else out
    out: torch.Tensor | None = None
    for y0, wyv in rows:
        for x0, wxv in cols:
            th, tw = len(wyv), len(wxv)
            pred = fn(x[:, :, y0 : y0 + th, x0 : x0 + tw])
            if pred.dim() != 4 or pred.shape[0] != batch or tuple(pred.shape[-2:]) != (th, tw):
                raise ValueError(f"fn returned shape {tuple(pred.shape)} for a tile of shape {(batch, x.shape[1], th, tw)}")
            if out is None:
                out = torch.zeros(batch, pred.shape[1], height, width, dtype=torch.float32, device=pred.device)
            weight = torch.from_numpy(np.outer(wyv, wxv).astype(np.float32)).to(pred.device)
            out[:, :, y0 : y0 + th, x0 : x0 + tw].addcmul_(pred.float(), weight)
            del pred
    assert out is not None
    inv_x, inv_y = inv_x.to(out.device), inv_y.to(out.device)
    for r0 in range(0, height, 256):  # normalise in row blocks: no second full-size buffer
        r1 = min(r0 + 256, height)
        out[:, :, r0:r1].mul_(inv_y[r0:r1, None] * inv_x[None, :])
    return out[0] if squeeze else out


def _pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``h×w×3`` uint8 / uint16 / float → ``(1, 3, h, w)`` float32 in [0, 1]."""
    unit = np.ascontiguousarray(unit_float(pixels))  # as Photo.rgb
    if not unit.flags.writeable:  # float input as it is (Pillow's arrays are read-only; torch wants writable ones)
        unit = unit.copy()
    return torch.from_numpy(unit).permute(2, 0, 1)[None]


def _store(out: np.ndarray, rows: slice, values: torch.Tensor) -> None:
    """Write ``(C, n, W)`` float values in [0, 1] into ``out[rows]``: as they are into float, rounded into
    integers (:func:`~derain.io.images.quantize_pixels`, as photos are written)."""
    hwc = values.permute(1, 2, 0).numpy()
    out[rows] = hwc if out.dtype not in PIXEL_TOP else quantize_pixels(hwc, 16 if out.dtype == np.uint16 else 8)


def judgement_view(image: np.ndarray | torch.Tensor, max_pixels: int = JUDGE_PIXELS) -> torch.Tensor:
    """The copy of an image that a model judges as a whole: ``(B, 3, h, w)`` float32, the image itself (as
    float) when it has at most ``max_pixels`` pixels, else its area average over ``f×f`` blocks with the
    smallest integer ``f`` that fits (the blocks at the right and bottom edges may be partial).

    ``image`` is an ``H×W×3`` array (uint8, uint16 or float; converted a band of rows at a time, so memory
    beyond it is the small copy) or a ``(B, 3, H, W)`` float tensor.

    >>> judgement_view(np.full((3000, 2000, 3), 255, np.uint8)).shape  # 6 MP: f = 3
    torch.Size([1, 3, 1000, 667])
    >>> judgement_view(torch.ones(2, 3, 40, 50)).shape
    torch.Size([2, 3, 40, 50])
    """
    height, width = (image.shape[0], image.shape[1]) if isinstance(image, np.ndarray) else image.shape[-2:]
    f = 1
    while math.ceil(height / f) * math.ceil(width / f) > max_pixels:
        f += 1
    if isinstance(image, torch.Tensor):
        x = image.float()
        return x if f == 1 else torch.nn.functional.avg_pool2d(x, f, f, ceil_mode=True)
    if f == 1:
        return _pixels_to_tensor(image)
    band = f * max(1, 256 // f)  # whole blocks of rows
    parts = [
        torch.nn.functional.avg_pool2d(_pixels_to_tensor(image[y : y + band]), f, f, ceil_mode=True)
        for y in range(0, height, band)
    ]
    return torch.cat(parts, dim=2)


def derain_array(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    tile: int | None = AUTO_TILE,
    overlap: int = DEFAULT_OVERLAP,
    *,
    grey: bool = False,
    align: int = 1,
    congruent: bool = False,
) -> np.ndarray:
    """Apply ``fn`` (``(1, 3, h, w)`` float in [0, 1] → the same shape) to an ``H×W×3`` image in
    overlapping, blended tiles as :func:`derain_tiled` does; returns an array of the input's dtype
    (uint8, uint16; float input → float32), integers rounded from the blended float result. With
    ``grey`` the result is ``H×W×1``: the mean of the three channels, rounded once.

    Tiles are converted to float one at a time and the output is finished one band of tile rows at a
    time, so memory beyond the input and output is one band. ``tile=None`` runs ``fn`` once on the
    whole image. The values equal :func:`derain_tiled` on the float image (``align``, ``congruent`` as there), then rounding.

    >>> img = (np.arange(70 * 90 * 3) % 256).astype(np.uint8).reshape(70, 90, 3)
    >>> out = derain_array(lambda t: 1 - t, img, tile=32, overlap=8)
    >>> out.dtype, bool((out == 255 - img).all())
    (dtype('uint8'), True)
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
    if image.dtype not in PIXEL_TOP and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected uint8, uint16 or float pixels, got {image.dtype}")
    height, width = image.shape[:2]
    out = np.empty((height, width, 1 if grey else 3), image.dtype if image.dtype in PIXEL_TOP else np.float32)

    def finish(rows: slice, values: torch.Tensor) -> None:
        _store(out, rows, values.mean(0, keepdim=True) if grey else values)

    if tile is None or (height <= tile and width <= tile):
        finish(slice(0, height), fn(_pixels_to_tensor(image))[0].float().cpu())
        return out
    rows, cols, inv_y, inv_x = _plan(height, width, tile, overlap, align, congruent)
    carry: torch.Tensor | None = None  # rows of the band so far that the next band's tiles also cover
    for i, (y0, wyv) in enumerate(rows):
        th = len(wyv)
        band = torch.zeros(3, th, width)
        if carry is not None:
            band[:, : carry.shape[1]] = carry
        for x0, wxv in cols:
            tw = len(wxv)
            pred = fn(_pixels_to_tensor(image[y0 : y0 + th, x0 : x0 + tw]))
            if tuple(pred.shape) != (1, 3, th, tw):
                raise ValueError(f"fn returned shape {tuple(pred.shape)} for a tile of shape {(1, 3, th, tw)}")
            band[:, :, x0 : x0 + tw].addcmul_(pred[0].float().cpu(), torch.from_numpy(np.outer(wyv, wxv).astype(np.float32)))
            del pred
        end = rows[i + 1][0] if i + 1 < len(rows) else y0 + th  # rows above `end` get no more tiles
        done = band[:, : end - y0]
        done.mul_(inv_y[y0:end, None] * inv_x[None, :])
        finish(slice(y0, end), done)
        carry = band[:, end - y0 :].clone()
    return out
