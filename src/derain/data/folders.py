"""The data folders a training run reads: where they are, and the hold-out that keeps part of each out of training.

**Where.** A configured path may name the data root as ``${DERAIN_DATA}`` (or ``$DERAIN_DATA``): that is
``derain train --data-root DIR``, else the ``DERAIN_DATA`` variable, else the first existing ``../shared/data``
(:func:`default_data_root`). Other ``${VAR}`` and ``~`` are expanded, and a relative path is resolved against
the folder the run starts in (:func:`expand_path`). :data:`DataPath` does this while a pydantic model is
validated with ``context={"base": FOLDER, "data_root": FOLDER}``, so a config's paths are final once it is valid.

**The hold-out.** ``holdout: {FOLDER: N}`` keeps the last N items of FOLDER, in its sorted order, out of
training, and those items are what validation scores instead: the pairs of a paired folder, or the photos of
a clean-photo folder (validated with rain rendered on them). :class:`HoldOut` is that one description, read by
both sides: a training source takes what :meth:`HoldOut.split_pairs` / :meth:`HoldOut.split_photos` leave for
training, validation takes what they hold out, so the two can only ever be complementary.

>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("a", "b", "c"):
...     Image.new("RGB", (4, 4)).save(root / f"{name}.png")
>>> training, held = HoldOut({str(root): 1}).split_photos(str(root))
>>> [p.name for p in training], [p.name for p in held]
(['a.png', 'b.png'], ['c.png'])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

from ..io.images import is_image_file
from .pairs import DatasetError, Pair, find_pairs

__all__ = ["DATA_ROOT_VARIABLE", "DataPath", "HoldOut", "SELECT", "default_data_root", "expand_in_context", "expand_path",
           "numbered"]

#: The variable that names the data root; presets name their data ``${DERAIN_DATA}/<set>``.
DATA_ROOT_VARIABLE = "DERAIN_DATA"


def default_data_root() -> Path:
    """``$DERAIN_DATA``, else ``../shared/data`` beside the current folder or the source checkout (the first that
    exists), else ``../shared/data`` (a missing folder is reported by the source that needs it)."""
    if os.environ.get(DATA_ROOT_VARIABLE):
        return Path(os.environ[DATA_ROOT_VARIABLE]).expanduser()
    candidates = [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[3] / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0]


def expand_path(path: str, base: Path, data_root: Path) -> str:
    """``path`` with ``${DERAIN_DATA}`` replaced by ``data_root``, other variables and ``~`` expanded, made
    absolute against ``base`` and normalised: two spellings of one folder give one string, so a hold-out
    names the folder a source reads whichever way either is written. ``""`` stays ``""`` (not given).

    >>> expand_path("${DERAIN_DATA}/clean/", Path("/run"), Path("/data")), expand_path("pairs", Path("/run"), Path("/data"))
    ('/data/clean', '/run/pairs')
    """
    if not path:
        return path
    root = str(data_root)
    path = path.replace("${" + DATA_ROOT_VARIABLE + "}", root).replace("$" + DATA_ROOT_VARIABLE, root)
    path = os.path.expandvars(os.path.expanduser(path))
    return os.path.normpath(path) if os.path.isabs(path) else str((base / path).resolve())


def expand_in_context(path: str, context: Mapping[str, Any] | None) -> str:
    """:func:`expand_path` against a validation context's ``base`` and ``data_root`` (default
    :func:`default_data_root`); ``path`` as written when the context names no ``base``."""
    if not context or context.get("base") is None:
        return path
    return expand_path(path, Path(context["base"]), Path(context.get("data_root") or default_data_root()))


def _expand_data_path(path: str, info: ValidationInfo) -> str:
    return expand_in_context(path, info.context)


#: A data folder or file in a pydantic model: expanded by :func:`expand_path` while the model is validated with
#: ``context={"base": ..., "data_root": ...}``, left as written without that context.
DataPath = Annotated[str, AfterValidator(_expand_data_path)]


#: Which files of a folder of numbered photos are read: every file, or those whose stem is an odd / even number.
SELECT = ("all", "odd", "even")


def numbered(path: str | os.PathLike[str], select: str) -> bool:
    """Whether ``select`` (:data:`SELECT`) keeps the file ``path``: ``"all"`` keeps every file, ``"odd"``/``"even"``
    the files whose stem is an odd/even number, and no other file. The one rule that splits a folder of numbered
    photos in halves (InternetData147: the even half may train, the odd half is the real-rain report's).

    >>> [numbered(p, "even") for p in ("2.jpg", "7.jpg", "a.jpg")], numbered("a.jpg", "all")
    ([True, False, False], True)
    """
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")
    if select == "all":
        return True
    stem = Path(path).stem
    return stem.isdigit() and int(stem) % 2 == (1 if select == "odd" else 0)


@dataclass(frozen=True)
class HoldOut:
    """The hold-out: the last ``counts[folder]`` items of each folder (its sorted order) never train; validation
    scores them instead.

    ``photo_folders`` are the folders of clean photos (the ``path`` of a synthetic or rain-layer source): a held-out
    folder that is one of them, or holds one or lies inside one (and is not one of ``pair_folders``, the folders
    read as pairs), holds photos; its photos are held out, and validation renders rain on them. Every other
    held-out folder holds pairs (:func:`~derain.data.pairs.find_pairs`, in ``layouts[folder]`` where a paired
    source names one, else detected).
    """

    counts: Mapping[str, int] = field(default_factory=dict)
    photo_folders: frozenset[str] = frozenset()
    layouts: Mapping[str, str] = field(default_factory=dict)
    pair_folders: frozenset[str] = frozenset()

    def count(self, folder: str) -> int:
        """How many of ``folder``'s last items are held out (0: none)."""
        return self.counts.get(folder, 0)

    def split_pairs(self, folder: str, layout: str | None = None) -> tuple[list[Pair], list[Pair]]:
        """``folder``'s pairs (natural name order) as (training, held out); ``layout`` defaults to the folder's own."""
        pairs = find_pairs(folder, layout=layout or self.layouts.get(folder, "auto")).pairs
        n = self.count(folder)
        return (pairs[:-n], pairs[-n:]) if n else (pairs, [])

    def split_photos(self, folder: str) -> tuple[list[Path], list[Path]]:
        """The images under a clean-photo ``folder`` (sorted paths) as (training, held out); :class:`DatasetError`
        when the folder is missing or leaves no image to train on.

        A photo held out by any held-out photo folder never trains, wherever it is read from: a source on
        ``clean/Urban100`` beside a hold-out of ``clean``'s last 6 leaves those 6 out too, and a source on ``clean``
        leaves out what a hold-out of ``clean/Urban100`` holds."""
        own_training, held = self._own_split(folder)
        elsewhere = {p.resolve() for other, photos in self._held_photos.items() if other != folder for p in photos}
        training = [p for p in own_training if p.resolve() not in elsewhere] if elsewhere else own_training
        if not training:
            raise DatasetError(f"{folder}: {len(own_training) + len(held)} images, none left to train on after the "
                               "hold-out (its own and that of the folders it shares photos with)")
        return training, held

    def _own_split(self, folder: str) -> tuple[list[Path], list[Path]]:
        """``folder``'s images split by its own hold-out count only."""
        root = Path(folder)
        if not root.is_dir():
            raise DatasetError(f"clean image folder {root} does not exist")
        files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
        n = self.count(folder)
        if len(files) <= n:
            raise DatasetError(f"{root}: {len(files)} images, need more than the {n} held out for validation")
        return (files[:-n], files[-n:]) if n else (files, [])

    @cached_property
    def _photo_holdouts(self) -> list[str]:
        """The held-out folders that hold photos: a photo folder, or one that holds one or lies inside one (in the
        order the hold-out names them)."""
        photo_paths = [Path(p).resolve() for p in self.photo_folders]
        pair_paths = [Path(p).resolve() for p in self.pair_folders]
        def related(path: Path, others: list[Path]) -> list[Path]:
            return [o for o in others if path == o or path in o.parents or o in path.parents]
        held = []
        for folder in self.counts:
            path = Path(folder).resolve()
            if not related(path, photo_paths) or path in pair_paths:
                continue
            if pairs := related(path, pair_paths):
                raise DatasetError(f"holdout {folder}: it holds photos and pairs ({pairs[0]}) alike; hold out the "
                                   "photo folder and the pair folder each on its own")
            held.append(folder)
        return held

    @cached_property
    def _held_photos(self) -> dict[str, list[Path]]:
        """Each held-out photo folder's own held-out photos, read once (a folder that is missing or too small holds
        none here: its own split says what is wrong)."""
        held: dict[str, list[Path]] = {}
        for folder in self._photo_holdouts:
            try:
                held[folder] = self._own_split(folder)[1]
            except DatasetError:
                held[folder] = []
        return held

    def held_out_pairs(self) -> dict[str, list[Pair]]:
        """Each held-out paired folder's held-out pairs, in the order the hold-out names the folders."""
        photos = self._photo_holdouts
        return {folder: self.split_pairs(folder)[1] for folder in self.counts if folder not in photos}

    def held_out_photos(self) -> list[Path]:
        """The held-out photos of every held-out photo folder, in the order the hold-out names the folders; a photo
        two nested folders both hold out is listed once."""
        seen: set[Path] = set()
        photos = []
        for folder in self._photo_holdouts:
            for p in self._held_photos[folder] or self._own_split(folder)[1]:  # a folder too small says so here
                if p.resolve() not in seen:
                    seen.add(p.resolve())
                    photos.append(p)
        return photos
