"""Paired rainy/clean datasets: discover the (rainy, clean) file pairs of every common layout.

Layouts (:data:`LAYOUTS`; reference.md §6), each a rainy and a clean sub-folder of the dataset root:

=============  =====================================  ======================================
layout         rainy                                  clean
=============  =====================================  ======================================
``plain``      ``rainy/NAME``                         ``clean/NAME`` (the data in ../shared/data)
``rain100``    ``rain/NAME`` or ``rain/rain-N``       ``norain/NAME`` or ``norain/norain-N``
``rain1400``   ``rainy_image/{id}_{1..14}.jpg``       ``ground_truth/{id}.jpg`` (14 to 1)
``rain13k``    ``input/NAME``                         ``target/NAME``
``spa``        ``rain/NNN.png``                       ``gt/NNNgt.png``
``raindrop``   ``data/N_rain.png``                    ``gt/N_clean.png``
=============  =====================================  ======================================

Files are matched by a key derived from the file stem (extensions may differ, e.g. a ``.jpg``
input with a ``.png`` target); several rainy files may share one clean file. Only images
(``png jpg jpeg bmp tif tiff webp``, any case) directly inside the two folders are considered.
A file without a partner becomes a warning naming it (an error with ``strict=True``).

>>> import tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for sub, name in [("rain", "rain-2.png"), ("rain", "rain-10.png"), ("norain", "norain-2.png"), ("norain", "norain-10.png")]:
...     (root / sub).mkdir(exist_ok=True)
...     Image.new("RGB", (4, 4)).save(root / sub / name)
>>> found = find_pairs(root)
>>> found.layout, [p.name for p in found.pairs], found.warnings
('rain100', ['rain-2', 'rain-10'], [])
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path


from ..errors import UserError
from ..io.images import IMAGE_EXTENSIONS, image_size, is_image_file

__all__ = ["LAYOUTS", "DatasetError", "Layout", "Pair", "PairSet", "check_sizes", "find_pairs", "natural_key"]


class DatasetError(UserError, ValueError):
    """A dataset folder is missing, empty, of an unknown layout, or (with ``strict``) inconsistent."""


@dataclass(frozen=True)
class Pair:
    """A rainy image, its clean ground truth, and a name (the rainy file's stem)."""

    rainy: Path
    clean: Path
    name: str


@dataclass
class PairSet:
    """The pairs found under ``root`` (sorted by natural name order), the layout, and warnings."""

    root: Path
    layout: str
    pairs: list[Pair]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> Pair:
        return self.pairs[index]


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders digit runs by value: ``rain-2`` < ``rain-10``, ``1_2`` < ``1_14``.

    >>> sorted(["rain-10", "rain-2", "rain-1"], key=natural_key)
    ['rain-1', 'rain-2', 'rain-10']
    """
    parts = re.split(r"(\d+)", name)
    return tuple((int(p), p) if p.isdigit() else p.lower() for p in parts) + (name,)


def _strip(pattern: str) -> Callable[[str], str | None]:
    """Key function: the stem with ``pattern`` removed if it matches, else the stem unchanged.

    Rain100 uses ``^(?:no)?rain-`` on both sides: ``rain-1`` ↔ ``norain-1``, and identical names
    (``norain-1x2`` in both folders, as in the "small" release) still match.
    """
    regex = re.compile(pattern)
    return lambda stem: regex.sub("", stem)


def _require(pattern: str) -> Callable[[str], str | None]:
    """Key function: group ``key`` of ``pattern`` if the stem matches it fully, else None (file ignored)."""
    regex = re.compile(pattern)

    def key(stem: str) -> str | None:
        match = regex.fullmatch(stem)
        return match.group("key") if match else None

    return key


@dataclass(frozen=True)
class Layout:
    """A dataset layout: two sub-folders and how a file stem maps to the key that pairs them.

    A key function returning None marks a file that does not follow the naming (it is reported).
    """

    name: str
    rainy_dir: str
    clean_dir: str
    rainy_key: Callable[[str], str | None]
    clean_key: Callable[[str], str | None]
    description: str

    def folders(self, root: Path) -> tuple[Path | None, Path | None]:
        """The rainy and clean folders under ``root`` (folder names matched case-insensitively), None if absent."""
        return _subdir(root, self.rainy_dir), _subdir(root, self.clean_dir)


def _same(stem: str) -> str:
    return stem


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in [
        Layout("plain", "rainy", "clean", _same, _same, "rainy/NAME + clean/NAME"),
        Layout("rain100", "rain", "norain", _strip(r"^(?:no)?rain-"), _strip(r"^(?:no)?rain-"),
               "Rain100H/L: rain/NAME + norain/NAME, or rain/rain-N + norain/norain-N"),
        Layout("rain1400", "rainy_image", "ground_truth", _require(r"(?P<key>.+)_\d+"), _same,
               "Rain1400: rainy_image/{id}_{1..14}.jpg + ground_truth/{id}.jpg"),
        Layout("rain13k", "input", "target", _same, _same, "Rain13K: input/NAME + target/NAME"),
        Layout("spa", "rain", "gt", _same, _require(r"(?P<key>.+)gt"), "SPA: rain/NNN.png + gt/NNNgt.png"),
        Layout("raindrop", "data", "gt", _require(r"(?P<key>.+)_rain"), _require(r"(?P<key>.+)_clean"),
               "Raindrop: data/N_rain.png + gt/N_clean.png"),
    ]
}


def _subdir(root: Path, name: str) -> Path | None:
    exact = root / name
    if exact.is_dir():
        return exact
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: natural_key(p.name))


def _expected() -> str:
    return "; ".join(f"{name}: {layout.description}" for name, layout in LAYOUTS.items())


def _detect(root: Path) -> Layout:
    found = [layout for layout in LAYOUTS.values() if None not in layout.folders(root)]
    if not found:
        present = sorted(p.name + "/" for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"{root}: no known paired-dataset layout (sub-folders present: {', '.join(present) or 'none'}); "
            f"expected one of: {_expected()}"
        )
    if len(found) > 1:
        names = ", ".join(layout.name for layout in found)
        raise DatasetError(f"{root}: matches several layouts ({names}); pass layout= explicitly")
    return found[0]


def check_sizes(pairs: Sequence[Pair]) -> list[str]:
    """Warnings for pairs whose rainy and clean images differ in size, or cannot be opened (headers only)."""
    problems: list[str] = []
    sizes: dict[Path, tuple[int, int] | str] = {}
    for pair in pairs:
        for path in (pair.rainy, pair.clean):
            if path not in sizes:
                try:
                    sizes[path] = image_size(path)
                except (OSError, ValueError, SyntaxError) as err:
                    sizes[path] = f"cannot open {path}: {err}"
                    problems.append(str(sizes[path]))
        rainy, clean = sizes[pair.rainy], sizes[pair.clean]
        if isinstance(rainy, tuple) and isinstance(clean, tuple) and rainy != clean:
            problems.append(
                f"size mismatch: {pair.rainy} is {rainy[0]}x{rainy[1]} but {pair.clean} is {clean[0]}x{clean[1]}"
            )
    return problems


def find_pairs(
    root: str | os.PathLike[str],
    layout: str = "auto",
    strict: bool = False,
    verify_sizes: bool = False,
) -> PairSet:
    """Find the (rainy, clean) pairs of the dataset at ``root``.

    ``layout`` is a key of :data:`LAYOUTS` or ``"auto"`` (chosen by the sub-folders present).
    Rainy or clean files without a partner, and (with ``verify_sizes``) size mismatches, are
    listed in ``.warnings``; ``strict=True`` raises :class:`DatasetError` for them instead. A
    missing root or folder, no images, no pairs, or an unknown layout raise :class:`DatasetError`.
    """
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"dataset folder {base} does not exist")
    if layout == "auto":
        chosen = _detect(base)
    elif layout in LAYOUTS:
        chosen = LAYOUTS[layout]
    else:
        raise DatasetError(f"unknown dataset layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    rainy_dir, clean_dir = chosen.folders(base)
    for folder, name in ((rainy_dir, chosen.rainy_dir), (clean_dir, chosen.clean_dir)):
        if folder is None:
            raise DatasetError(f"{base}: missing folder {name}/ for layout {chosen.name!r} ({chosen.description})")
    assert rainy_dir is not None and clean_dir is not None
    rainy_files, clean_files = _images(rainy_dir), _images(clean_dir)
    extensions = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    for folder, files in ((rainy_dir, rainy_files), (clean_dir, clean_files)):
        if not files:
            raise DatasetError(f"{folder}: no images (looked for {extensions})")

    warnings: list[str] = []
    clean_by_key: dict[str, Path] = {}
    for path in clean_files:
        key = chosen.clean_key(path.stem)
        if key is None:
            warnings.append(f"clean file {path} does not follow the {chosen.name} naming ({chosen.description})")
        elif key in clean_by_key:
            warnings.append(f"clean files {clean_by_key[key]} and {path} have the same key {key!r}; using the first")
        else:
            clean_by_key[key] = path

    pairs: list[Pair] = []
    used: set[str] = set()
    for path in rainy_files:
        key = chosen.rainy_key(path.stem)
        if key is None:
            warnings.append(f"rainy file {path} does not follow the {chosen.name} naming ({chosen.description})")
        elif key not in clean_by_key:
            warnings.append(f"rainy file {path} has no clean partner in {clean_dir}")
        else:
            pairs.append(Pair(rainy=path, clean=clean_by_key[key], name=path.stem))
            used.add(key)
    warnings += [f"clean file {path} has no rainy partner in {rainy_dir}" for key, path in clean_by_key.items() if key not in used]
    if not pairs:
        raise DatasetError(f"{base}: no rainy/clean pairs found for layout {chosen.name!r} ({chosen.description})")
    pairs.sort(key=lambda p: natural_key(p.name))
    if verify_sizes:
        warnings += check_sizes(pairs)
    if strict and warnings:
        raise DatasetError(f"{base}: {len(warnings)} problem(s) with the dataset:\n" + "\n".join(warnings))
    return PairSet(root=base, layout=chosen.name, pairs=pairs, warnings=warnings)
