"""No harm (``derain bench noharm``): what a model does to photos without rain.

A deraining tool runs on every frame of a dashcam and every photo of a folder, most of them dry, so
a rain-free image must come back as it went in. For each model and each set of rain-free images,
through the user-facing path (:func:`derain.derain` on uint8 RGB, the given precision):

* **identity Y-PSNR**, mean and minimum over the images (protocol ``y``: MATLAB Y, output as uint8), and the
  image of the minimum (its file name, with its folder where two share a name; none where every image comes back
  identical);
* for a model that judges images as a whole (an image gate), how many of the images it **judges rainy** (its
  judgement of the whole image at or above :data:`~derain.bench.real.JUDGED_DRY`): a rain-free image judged rainy is
  left to the network's kernels and per-pixel gate;
* **mean shift** per RGB channel in 8-bit levels (output − input, averaged over each image's pixels, then over
  the images: a global darkening or colour cast shows here);
* **grey spread**: greyscale versions of the same photos (R = G = B in) and eight flat grey cards
  (levels 16 … 240); for each image the spread max − min of the three output channel means, in
  levels, reported as the mean and the maximum (a cast on black-and-white photos shows here). Grey inputs come
  back grey by construction (:meth:`~derain.inference.derainer.DerainerBase.derain_rgb`), so this is 0 through the
  user path;
* **near-grey spread**: the same inputs with blue one level up (255 stays), so the grey rule does not apply: the spread
  of the channel means' change (output − input), the network's own tint on neutral content (a grey sky or wall in a
  colour photo).

Sets: a folder of images (all of them), a paired folder's ``clean/`` images (``FOLDER`` with
``rainy/`` + ``clean/``), or either restricted to its last ``N`` images in sorted order with
``FOLDER@lastN`` (held-out validation images). With ``jpeg=Q`` every set is measured a second time as
web-size JPEGs (:func:`web_jpeg`: long side at most 640 px, re-encoded at quality ``Q``; the identity is
then against that JPEG): real rainy photos are mostly JPEGs, so a model must not take compression for rain.

>>> import numpy as np
>>> from derain.models.registry import create_model
>>> img = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
>>> r = measure_noharm(create_model("efderain-tiny", identity_init=True, channel_fusion=True), [img], "x")
>>> r.n, r.dataset, r.psnr_mean > 20
(1, 'x', True)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.photos import downscale
from ..data.render import jpeg_round_trip
from ..errors import InvalidArgument
from ..inference.loading import ModelSource
from ..metrics import score
from ..io.atomic import write_atomic
from ..io.images import is_image_file, read_image
from ..io.pixels import to_u8
from .real import JUDGED_DRY, short_names

__all__ = ["NoHarmRow", "GREY_LEVELS", "WEB_SIDE", "rain_free_images", "web_jpeg", "measure_noharm", "run_noharm", "noharm_table",
           "write_rows"]

GREY_LEVELS = (16, 48, 80, 112, 144, 176, 208, 240)
WEB_SIDE = 640  # long side of a web-size copy, px


def web_jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` (uint8 RGB) as a web-size JPEG: long side at most :data:`WEB_SIDE` px, encoded at ``quality``, decoded.

    >>> web_jpeg(np.full((800, 1000, 3), 128, np.uint8), 75).shape
    (512, 640, 3)
    """
    return to_u8(jpeg_round_trip(downscale(img, WEB_SIDE), quality))


@dataclass
class NoHarmRow:
    model: str
    dataset: str
    n: int
    psnr_mean: float  # identity Y-PSNR (dB); 100 stands for "identical"
    psnr_min: float
    shift_r: float  # mean output − input, 8-bit levels
    shift_g: float
    shift_b: float
    grey_spread_mean: float  # max − min of the output channel means for R = G = B inputs, levels
    grey_spread_max: float
    near_grey_spread_mean: float  # the same for the inputs with blue +1: max − min of (output − input) channel means
    near_grey_spread_max: float
    worst: str = ""  # the image of psnr_min (its file name; "" where the images came without names)
    judged_rainy: int | None = None  # images the model judges rainy as a whole; None: it does not judge images


def rain_free_images(spec: str | Path) -> list[Path]:
    """The image files of a set spec: ``FOLDER`` or ``FOLDER@lastN`` (a paired folder's ``clean/`` side)."""
    folder, _, last = str(spec).partition("@last")
    root = Path(folder)
    if (root / "clean").is_dir() and (root / "rainy").is_dir():
        root = root / "clean"
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if last:
        if not last.isdigit() or int(last) < 1:
            raise InvalidArgument(f"{spec}: the suffix must be @lastN with N >= 1", option="--set")
        files = files[-int(last) :]
    if not files:
        raise FileNotFoundError(f"{spec}: no images")
    return files


def _grey_spread(derain_fn: Callable[[np.ndarray], np.ndarray], grey: np.ndarray, nudge: bool = False) -> float:
    """max − min over the channels of the mean change (output − input) of a grey image, with ``nudge`` its blue one
    level up first (a near-grey image)."""
    img = np.repeat(grey[..., None], 3, axis=2)
    if nudge:
        img[..., 2] = np.minimum(grey.astype(np.int16) + 1, 255).astype(np.uint8)
    change = (derain_fn(img).astype(np.float64) - img).reshape(-1, 3).mean(0)
    return float(change.max() - change.min())


def measure_noharm(
    model: ModelSource, images: Sequence[np.ndarray], dataset: str, label: str | None = None, precision: str = "auto",
    names: Sequence[str] | None = None,
) -> NoHarmRow:
    """Score ``model`` on rain-free uint8 RGB ``images`` (see the module docstring); ``names``: the images' names,
    one per image."""
    from ..inference.api import derain, get_derainer

    if names is not None and len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    derainer = get_derainer(model, "cpu", precision)

    def run(img: np.ndarray) -> np.ndarray:
        return derain(img, model=derainer)

    psnrs, shifts, spreads, near, judged = [], [], [], [], []
    for img in images:
        judgement = derainer.judgement(img)
        judged.append(None if judgement is None else float(judgement[0, 0]) >= JUDGED_DRY)
        out = run(img)
        psnr = score("y", out, img)[0]
        psnrs.append(100.0 if math.isinf(psnr) else min(psnr, 100.0))
        shifts.append((out.astype(np.float64) - img).reshape(-1, 3).mean(0))
        grey = np.round(img.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
        spreads.append(_grey_spread(run, grey))
        near.append(_grey_spread(run, grey, nudge=True))
    h, w = images[0].shape[:2] if images else (64, 64)
    for level in GREY_LEVELS:
        card = np.full((min(h, 256), min(w, 256)), level, np.uint8)
        spreads.append(_grey_spread(run, card))
        near.append(_grey_spread(run, card, nudge=True))
    shift = np.mean(shifts, axis=0) if shifts else np.zeros(3)
    name = label or (model if isinstance(model, str) else getattr(model, "registry_name", type(model).__name__))
    return NoHarmRow(
        str(name), dataset, len(images), float(np.mean(psnrs)) if psnrs else float("nan"),
        float(np.min(psnrs)) if psnrs else float("nan"), *(float(v) for v in shift),
        float(np.mean(spreads)), float(np.max(spreads)), float(np.mean(near)), float(np.max(near)),
        str(names[int(np.argmin(psnrs))]) if names and psnrs and min(psnrs) < 100.0 else "",
        None if not judged or None in judged else sum(judged),
    )


def run_noharm(
    models: Sequence[str],
    sets: Sequence[str],
    precision: str = "auto",
    progress: Callable[[NoHarmRow], None] | None = None,
    jpeg: int | None = None,
) -> list[NoHarmRow]:
    """Every model spec (as ``derain bench quality``: ``NAME``, ``NAME=PATH`` or ``PATH``) on every set spec, and with
    ``jpeg`` on every set's web-size JPEG copies (:func:`web_jpeg`) too."""
    from ..inference.loading import load_derainer
    from .quality import spec_label

    if jpeg is not None and not 1 <= jpeg <= 100:
        raise InvalidArgument(f"JPEG quality must be in 1..100, got {jpeg}", option="--jpeg")
    files = [rain_free_images(spec) for spec in sets]
    loaded = [(_set_name(spec), short_names(paths), [read_image(p) for p in paths]) for spec, paths in zip(sets, files)]
    if jpeg is not None:
        loaded += [(_set_name(spec, f"JPEG q{jpeg} ≤{WEB_SIDE} px"), names, [web_jpeg(img, jpeg) for img in images])
                   for spec, (_, names, images) in zip(sets, loaded)]
    rows = []
    for mspec in models:
        label, model = spec_label(mspec), load_derainer(mspec, precision=precision)
        for name, names, images in loaded:
            row = measure_noharm(model, images, name, label, precision, names)
            rows.append(row)
            if progress:
                progress(row)
    return rows


def _set_name(spec: str, copy: str = "") -> str:
    """``clean (last6)`` for ``…/clean@last6``; with ``copy`` (e.g. ``JPEG q75 ≤640 px``) ``clean (last6, JPEG q75 ≤640 px)``."""
    folder, at, last = spec.partition("@")
    notes = ([last] if at else []) + ([copy] if copy else [])
    return Path(folder).name + (f" ({', '.join(notes)})" if notes else "")


def noharm_table(rows: Sequence[NoHarmRow], precision: str) -> str:
    """Markdown table of the rows."""
    lines = [
        f"No harm on rain-free photos (derain.derain, precision {precision}; shift = output − input in 8-bit levels; "
        "grey spread = max − min of the output channel means for R = G = B inputs: greyscale photos and 8 grey cards; "
        "near-grey: the same with blue one level up, max − min of the channels' mean change; worst: the image of the "
        f"minimum; judged rainy: images the model judges rainy as a whole, judgement >= {JUDGED_DRY:g}, - where it does "
        "not judge images)",
        "",
        "| model | set | n | identity Y-PSNR mean / min (dB) | worst | judged rainy | mean shift R / G / B | grey spread mean / max | "
        "near-grey spread mean / max |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.dataset} | {r.n} | {r.psnr_mean:.2f} / {r.psnr_min:.2f} | {r.worst or '-'} | "
            f"{'-' if r.judged_rainy is None else r.judged_rainy} | "
            f"{r.shift_r:+.2f} / {r.shift_g:+.2f} / {r.shift_b:+.2f} | {r.grey_spread_mean:.2f} / {r.grey_spread_max:.2f} | "
            f"{r.near_grey_spread_mean:.2f} / {r.near_grey_spread_max:.2f} |"
        )
    return "\n".join(lines)


def write_rows(rows: Sequence[NoHarmRow], path: str | Path) -> None:
    write_atomic(path, json.dumps([asdict(r) for r in rows], indent=2))
