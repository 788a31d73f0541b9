"""A teacher's pairs: real rainy photos without ground truth, paired with the part of a teacher's output to trust.

Real rainy photos have no clean twin, so a model trained on pairs never sees real rain. A stronger, slower network
(the *teacher*: PReNet with its authors' ``Rain100H.pth``) removes much of it, but it also blurs texture, lowers
bright edges and shifts colour. From its output only one thing is taken: **light that rain added**. Per pixel,

* the teacher's removal ``a = min_c (x_c − t_c)``: how much it lowered *every* channel (rain adds light to all
  three about equally; a change of colour, or a pixel the teacher brightened, gives ``a ≤ 0``);
* the photo's own local excess ``e = Y(x) − median_w(Y(x))``: how much brighter the pixel is than the median of
  its ``w×w`` neighbourhood (``Y`` the mean of the channels). A streak narrower than half the window stands out
  of its neighbourhood; the bright side of an edge, a textured surface or a wide bright area does not;
* the trusted removal ``r = min(a, e)`` where it is at least ``floor`` levels, else 0 (what both say, no more),

and the target is ``x − r`` on every channel alike: it only takes light away, never adds colour, and it is the
input wherever the teacher and the photo disagree. The result is a paired folder (``rainy/NAME.png`` the photo as
read, ``clean/NAME.png`` the target; the ``plain`` layout of :mod:`.pairs`) that a training config names as a
``paired`` source, plus ``teacher.json`` (the teacher, the rule's settings, and per photo the trusted fraction and
the mean removal).

>>> x = np.full((9, 9, 3), 100, np.uint8); x[:, 4] = 160          # a bright one-pixel streak
>>> t = np.full((9, 9, 3), 100, np.uint8); t[:, 3:6] = 95           # the teacher removed it and darkened beside it
>>> target = teacher_target(x, t, window=5)
>>> int(target[4, 4, 0]), int(target[4, 3, 0]), int(target[4, 0, 0])  # the streak goes, its neighbours stay
(100, 100, 100)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from ..inference.derainer import DerainerBase
from ..io.atomic import write_atomic
from ..io.images import ImageReadError, save_image
from .photos import read_photo

__all__ = ["TeacherPhoto", "trusted_removal", "teacher_target", "write_teacher_pairs"]

#: The neighbourhood (px) whose median a streak must stand out of; streaks up to about half of it are seen.
WINDOW = 15
#: Removals below this many levels are left in place (noise, JPEG ringing, the teacher's smoothing).
FLOOR = 2.0


def trusted_removal(rainy: np.ndarray, teacher: np.ndarray, window: int = WINDOW, floor: float = FLOOR) -> np.ndarray:
    """The light (levels, float32 ``H×W``) that both the teacher's output and the photo's neighbourhood say rain added
    (see the module docstring). ``rainy`` and ``teacher`` are uint8 ``H×W×3`` of one size."""
    if rainy.shape != teacher.shape or rainy.ndim != 3 or rainy.shape[2] != 3:
        raise ValueError(f"rainy and teacher must be H×W×3 of one size, got {rainy.shape} and {teacher.shape}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3, got {window}")
    x = rainy.astype(np.float32)
    lowered = (x - teacher.astype(np.float32)).min(axis=2)
    y = x.mean(axis=2)
    median = Image.fromarray(np.rint(y).astype(np.uint8), "L").filter(ImageFilter.MedianFilter(window))
    excess = y - np.asarray(median, np.float32)
    removal = np.minimum(lowered, excess)
    removal[removal < floor] = 0.0
    return removal


def teacher_target(rainy: np.ndarray, teacher: np.ndarray, window: int = WINDOW, floor: float = FLOOR) -> np.ndarray:
    """``rainy`` less :func:`trusted_removal` on every channel alike, uint8."""
    removal = trusted_removal(rainy, teacher, window, floor)
    return np.clip(np.rint(rainy.astype(np.float32) - removal[..., None]), 0, 255).astype(np.uint8)


@dataclass
class TeacherPhoto:
    """One photo's pair: its name, size, the fraction of its pixels with a trusted removal and the mean removal (levels)."""

    name: str
    height: int
    width: int
    trusted: float
    mean_removal: float


def write_teacher_pairs(
    files: Sequence[str | os.PathLike[str]],
    teacher: DerainerBase,
    out_dir: str | os.PathLike[str],
    *,
    label: str = "teacher",
    max_side: int = 640,
    window: int = WINDOW,
    floor: float = FLOOR,
    log: Callable[[str], None] = lambda _: None,
) -> list[TeacherPhoto]:
    """Write ``out_dir/rainy/NAME.png`` (each photo read by :func:`~.photos.read_photo`) and ``out_dir/clean/NAME.png``
    (:func:`teacher_target` of the teacher's output) for every file, and ``out_dir/teacher.json``.

    Resumable: a photo whose two files exist is not run again (its line in ``teacher.json`` is kept). Each file is
    written atomically, the target first, so an interrupted run leaves no rainy file without its target. A photo
    that cannot be read is skipped with a logged line; the others go on."""
    out = Path(out_dir)
    (out / "rainy").mkdir(parents=True, exist_ok=True)
    (out / "clean").mkdir(parents=True, exist_ok=True)
    record = out / "teacher.json"
    before = {p["name"]: p for p in json.loads(record.read_text())["photos"]} if record.exists() else {}
    photos: list[TeacherPhoto] = []
    for n, path in enumerate(files, 1):
        name = Path(path).stem
        rainy_file, clean_file = out / "rainy" / f"{name}.png", out / "clean" / f"{name}.png"
        if rainy_file.exists() and clean_file.exists() and name in before:
            photos.append(TeacherPhoto(**before[name]))
            continue
        try:
            x = read_photo(path, max_side)
        except ImageReadError as e:
            log(f"skipped {path}: {e}")
            continue
        removal = trusted_removal(x, teacher(x), window, floor)
        target = np.clip(np.rint(x.astype(np.float32) - removal[..., None]), 0, 255).astype(np.uint8)
        save_image(Image.fromarray(target), clean_file)
        save_image(Image.fromarray(x), rainy_file)
        photos.append(TeacherPhoto(name, x.shape[0], x.shape[1], float((removal > 0).mean()), float(removal.mean())))
        log(f"{n}/{len(files)} {name}: {photos[-1].trusted:.1%} of the pixels lose {photos[-1].mean_removal:.2f} levels on average")
        write_atomic(record, json.dumps({"teacher": label, "max_side": max_side, "window": window, "floor": floor,
                                         "photos": [asdict(p) for p in photos]}, indent=1))
    return photos
