"""Pairs from a teacher: real rainy photos, each with the trusted part of a stronger model's output as its target.

Real rainy photos have no ground truth, and the rain in them (fine, dense, slanted, veiled) is what rendered rain
misses. A slower model that removes much of it (PReNet with its authors' ``Rain100H.pth``) can label them, but
its output is not all rain removal: it also smooths texture and shifts colour. Of what it changes, this module
keeps only what rain can explain (:func:`trusted_target`):

* rain adds light: only a darkening of the input is kept (the teacher never brightens a target);
* rain is colourless: only the part of the darkening common to the three channels is kept (the smallest of the
  three), taken off every channel alike, so a target never has a colour cast the photo did not have.

``target_c = x_c − min_k max(x_k − t_k, 0)`` for the input ``x`` and the teacher's output ``t``.

:func:`teach` writes such pairs as a paired dataset in the ``plain`` layout (``rainy/NAME.png``,
``clean/NAME.png``: lossless, at the size the teacher saw), which a training source of kind ``paired`` reads. The
photos are read as the real-rain report reads them (:func:`~derain.data.photos.read_photo`: EXIF orientation,
long side at most ``max_side``). InternetData147's even-numbered photos may be labelled this way; its odd-numbered
ones are the report's held-out half and must not be.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from ..io.atomic import WriteError, process_umask
from ..io.images import ImageReadError, save_image
from .photos import photo_files, read_photo

__all__ = ["TeachError", "TeachReport", "check_new_folder", "teach", "trusted_target"]


class TeachError(UserError, ValueError):
    """Bad input to :func:`teach`: an output folder that exists, no readable photo."""


def trusted_target(rainy: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """The target a teacher's output ``teacher`` vouches for on ``rainy`` (both uint8 ``H×W×3``): ``rainy`` less the
    darkening common to its three channels (module docstring), uint8.

    >>> x = np.array([[[200, 150, 100], [50, 60, 70]]], np.uint8)
    >>> t = np.array([[[180, 140, 95], [60, 40, 70]]], np.uint8)  # darker by 20/10/5; brighter and redder
    >>> trusted_target(x, t).tolist()
    [[[195, 145, 95], [50, 60, 70]]]
    """
    if rainy.shape != teacher.shape or rainy.ndim != 3 or rainy.shape[2] != 3:
        raise ValueError(f"rainy and teacher must both be H×W×3 of one size, got {rainy.shape} and {teacher.shape}")
    x = rainy.astype(np.int16)
    removed = np.clip(x - teacher.astype(np.int16), 0, None).min(axis=2, keepdims=True)
    return (x - removed).astype(np.uint8)


def check_new_folder(out: str | os.PathLike[str]) -> Path:
    """``out`` as a path; :class:`TeachError` when it exists (teach never writes into an earlier folder)."""
    out = Path(out)
    if out.exists():
        raise TeachError(f"{out}: exists; give a new folder (teach never writes into an earlier one)")
    return out


@dataclass
class TeachReport:
    """What :func:`teach` wrote: the pairs' names, the mean level taken off per pair, and the photos left out."""

    out: Path
    names: list[str] = field(default_factory=list)
    removed: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def teach(
    folders: Sequence[str | os.PathLike[str]],
    teacher: Callable[[np.ndarray], np.ndarray],
    out: str | os.PathLike[str],
    *,
    only: str = "all",
    max_side: int = 640,
    on_skip: Callable[[ImageReadError], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TeachReport:
    """Label the photos of ``folders`` (``only``: all, odd or even numbers) with ``teacher`` (uint8 RGB in and out)
    and write the pairs under ``out`` (``rainy/`` and ``clean/``, PNG; module docstring).

    ``out`` must not exist: the pairs are written to a new hidden folder beside it (a name of its own, so nothing
    else is touched) that becomes ``out`` only when all are written, so a failed run leaves no half-written dataset
    and never changes an earlier one. ``teacher`` must return uint8 of its input's shape. An unreadable photo is left
    out (passed to ``on_skip``); :class:`TeachError` when none is readable or ``out`` exists,
    :class:`~derain.io.atomic.WriteError` when ``out`` cannot be written.
    """
    out = check_new_folder(out)
    files = photo_files(folders, only)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as err:
        raise WriteError(out, err) from None
    report = TeachReport(out)
    try:
        staging.chmod(0o777 & ~process_umask())  # as a folder made by mkdir (mkdtemp's is private)
        for sub in ("rainy", "clean"):
            (staging / sub).mkdir()
        for n, path in enumerate(files, 1):
            try:
                rainy = read_photo(path, max_side)
            except ImageReadError as err:
                report.skipped.append(str(err))
                if on_skip:
                    on_skip(err)
                continue
            labelled = teacher(rainy)
            if not isinstance(labelled, np.ndarray) or labelled.dtype != np.uint8 or labelled.shape != rainy.shape:
                got = f"{labelled.dtype} {labelled.shape}" if isinstance(labelled, np.ndarray) else type(labelled).__name__
                raise TypeError(f"the teacher must return uint8 pixels of its input's shape {rainy.shape}, got {got}")
            target = trusted_target(rainy, labelled)
            name = _unique(path, report.names)
            save_image(Image.fromarray(rainy), staging / "rainy" / f"{name}.png")
            save_image(Image.fromarray(target), staging / "clean" / f"{name}.png")
            report.names.append(name)
            report.removed.append(float(np.mean(rainy.astype(np.int16) - target)))
            if progress:
                progress(f"{n}/{len(files)} {path.name}: {report.removed[-1]:.2f} levels taken off on average")
        if not report.names:
            raise TeachError(f"no readable photo in {', '.join(str(f) for f in folders)}")
        if out.exists():  # made while this ran: left as it is
            raise TeachError(f"{out}: appeared while teach ran; the pairs were not written")
        try:
            staging.rename(out)
        except OSError as err:
            raise WriteError(out, err) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _unique(path: Path, taken: Sequence[str]) -> str:
    """The pair's name: the file's stem; where another photo took it, its folder's name before it, then a number."""
    name = path.stem if path.stem not in taken else f"{path.parent.name}-{path.stem}"
    n = 2
    while name in taken:
        name = f"{path.parent.name}-{path.stem}-{n}"
        n += 1
    return name
