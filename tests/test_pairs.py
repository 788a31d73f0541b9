"""Paired-dataset discovery for every layout, and the image reader it relies on."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from derain.evaluation import LAYOUTS, DatasetError, check_sizes, find_pairs, natural_key
from derain.io import ImageReadError, read_image


def _write(folder: Path, names: list[str], size: tuple[int, int] = (8, 6)) -> None:
    """Small RGB images (format from the extension) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", size, (10 * i % 256, 50, 90)).save(folder / name)


def _names(found) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.name for p in found.pairs]


# ----------------------------------------------------------------------------- one test per layout


def test_plain_layout(tmp_path: Path) -> None:
    _write(tmp_path / "rainy", ["b.png", "a.jpg"])
    _write(tmp_path / "clean", ["b.png", "a.png"])  # stems pair, extensions may differ
    found = find_pairs(tmp_path)
    assert found.layout == "plain" and found.warnings == []
    assert [(p.name, p.rainy.name, p.clean.name) for p in found] == [("a", "a.jpg", "a.png"), ("b", "b.png", "b.png")]
    assert found.root == tmp_path and len(found) == 2 and found[0].name == "a"


@pytest.mark.parametrize(
    ("rainy", "clean"),
    [
        (["rain-1.png", "rain-2.png", "rain-10.png"], ["norain-1.png", "norain-2.png", "norain-10.png"]),
        (["1.png", "2.png", "10.png"], ["1.png", "2.png", "10.png"]),
        (["norain-1x2.png", "norain-2x2.png"], ["norain-1x2.png", "norain-2x2.png"]),  # the "small" release
    ],
)
def test_rain100_layout_both_namings(tmp_path: Path, rainy: list[str], clean: list[str]) -> None:
    _write(tmp_path / "rain", rainy)
    _write(tmp_path / "norain", clean)
    found = find_pairs(tmp_path)
    assert found.layout == "rain100" and found.warnings == []
    assert [p.rainy.name for p in found] == rainy  # natural order: 2 before 10
    assert [p.clean.name for p in found] == clean


def test_rain1400_layout_fourteen_to_one(tmp_path: Path) -> None:
    ids = ["2", "10"]
    _write(tmp_path / "rainy_image", [f"{i}_{k}.jpg" for i in ids for k in range(1, 15)])
    _write(tmp_path / "ground_truth", [f"{i}.jpg" for i in ids])
    found = find_pairs(tmp_path)
    assert found.layout == "rain1400" and found.warnings == []
    assert len(found) == 28
    for i in ids:
        group = [p for p in found if p.clean.name == f"{i}.jpg"]
        assert [p.name for p in group] == [f"{i}_{k}" for k in range(1, 15)]
    assert _names(found)[:3] == ["2_1", "2_2", "2_3"] and _names(found)[-1] == "10_14"


def test_rain13k_layout(tmp_path: Path) -> None:
    _write(tmp_path / "input", ["x1.png", "x2.png"])
    _write(tmp_path / "target", ["x1.png", "x2.png"])
    found = find_pairs(tmp_path)
    assert found.layout == "rain13k" and _names(found) == ["x1", "x2"]


def test_spa_layout(tmp_path: Path) -> None:
    _write(tmp_path / "rain", ["001.png", "002.png"])
    _write(tmp_path / "gt", ["001gt.png", "002gt.png"])
    found = find_pairs(tmp_path)
    assert found.layout == "spa" and found.warnings == []
    assert [(p.rainy.name, p.clean.name) for p in found] == [("001.png", "001gt.png"), ("002.png", "002gt.png")]


def test_raindrop_layout(tmp_path: Path) -> None:
    _write(tmp_path / "data", ["0_rain.png", "1_rain.png"])
    _write(tmp_path / "gt", ["0_clean.png", "1_clean.png"])
    found = find_pairs(tmp_path)
    assert found.layout == "raindrop" and found.warnings == []
    assert [(p.rainy.name, p.clean.name) for p in found] == [("0_rain.png", "0_clean.png"), ("1_rain.png", "1_clean.png")]


# ----------------------------------------------------------------------------- detection and errors


def test_forced_layout_and_wrong_forced_layout(tmp_path: Path) -> None:
    _write(tmp_path / "rain", ["001.png"])
    _write(tmp_path / "gt", ["001gt.png"])
    assert find_pairs(tmp_path, layout="spa").layout == "spa"
    with pytest.raises(DatasetError, match="missing folder norain/"):
        find_pairs(tmp_path, layout="rain100")
    with pytest.raises(DatasetError, match="unknown dataset layout 'rain200'"):
        find_pairs(tmp_path, layout="rain200")


def test_unknown_layout_lists_expectations(tmp_path: Path) -> None:
    _write(tmp_path / "images", ["a.png"])
    with pytest.raises(DatasetError) as err:
        find_pairs(tmp_path)
    message = str(err.value)
    assert "images/" in message
    for layout in LAYOUTS.values():
        assert layout.description in message


def test_ambiguous_layout(tmp_path: Path) -> None:
    for sub, name in [("rain", "1.png"), ("norain", "1.png"), ("gt", "1gt.png")]:
        _write(tmp_path / sub, [name])
    with pytest.raises(DatasetError, match="several layouts"):
        find_pairs(tmp_path)
    assert find_pairs(tmp_path, layout="spa").layout == "spa"


def test_missing_root_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "rainy").mkdir()
    _write(tmp_path / "clean", ["a.png"])
    (tmp_path / "rainy" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="rainy: no images"):
        find_pairs(tmp_path)


def test_no_pairs_at_all(tmp_path: Path) -> None:
    _write(tmp_path / "rainy", ["a.png"])
    _write(tmp_path / "clean", ["b.png"])
    with pytest.raises(DatasetError, match="no rainy/clean pairs"):
        find_pairs(tmp_path)


def test_extensions_case_insensitive_and_non_images_ignored(tmp_path: Path) -> None:
    _write(tmp_path / "rainy", ["A.PNG", "b.JPEG", "c.webp", "d.bmp", "e.tif"])
    _write(tmp_path / "clean", ["A.png", "b.jpg", "c.png", "d.png", "e.TIFF"])
    (tmp_path / "rainy" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "clean" / "readme.txt").write_text("x")
    found = find_pairs(tmp_path)
    assert _names(found) == ["A", "b", "c", "d", "e"] and found.warnings == []


# ----------------------------------------------------------------------------- warnings, strict, sizes


def test_missing_clean_warns_and_strict_raises(tmp_path: Path) -> None:
    _write(tmp_path / "rainy", ["1.png", "2.png", "3.png"])
    _write(tmp_path / "clean", ["1.png", "3.png", "4.png"])
    found = find_pairs(tmp_path)
    assert _names(found) == ["1", "3"]
    assert len(found.warnings) == 2
    assert str(tmp_path / "rainy" / "2.png") in found.warnings[0] and "no clean partner" in found.warnings[0]
    assert str(tmp_path / "clean" / "4.png") in found.warnings[1] and "no rainy partner" in found.warnings[1]
    with pytest.raises(DatasetError, match="2.png has no clean partner"):
        find_pairs(tmp_path, strict=True)


def test_badly_named_file_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "rainy_image", ["1_1.jpg", "cover.jpg"])
    _write(tmp_path / "ground_truth", ["1.jpg"])
    found = find_pairs(tmp_path)
    assert _names(found) == ["1_1"]
    assert len(found.warnings) == 1 and "cover.jpg does not follow the rain1400 naming" in found.warnings[0]


def test_size_mismatch_reported(tmp_path: Path) -> None:
    _write(tmp_path / "rainy", ["a.png", "b.png"], size=(8, 6))
    _write(tmp_path / "clean", ["a.png"], size=(8, 6))
    _write(tmp_path / "clean", ["b.png"], size=(6, 8))
    assert find_pairs(tmp_path).warnings == []  # not checked unless asked
    found = find_pairs(tmp_path, verify_sizes=True)
    assert len(found.warnings) == 1
    warning = found.warnings[0]
    assert str(tmp_path / "rainy" / "b.png") in warning and str(tmp_path / "clean" / "b.png") in warning
    assert "8x6" in warning and "6x8" in warning
    assert check_sizes(found.pairs) == found.warnings
    with pytest.raises(DatasetError, match="size mismatch"):
        find_pairs(tmp_path, verify_sizes=True, strict=True)


def test_size_check_applies_exif_rotation(tmp_path: Path) -> None:
    _write(tmp_path / "rainy", ["a.jpg"], size=(8, 6))
    (tmp_path / "clean").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 6×8, displayed 8×6
    Image.new("RGB", (6, 8)).save(tmp_path / "clean" / "a.jpg", exif=exif)
    assert find_pairs(tmp_path, verify_sizes=True).warnings == []
    assert read_image(tmp_path / "clean" / "a.jpg").shape == (6, 8, 3)


def test_natural_key() -> None:
    names = ["rain-10", "rain-2", "Rain-3", "rain-1", "1_14", "1_2", "10_1"]
    assert sorted(names, key=natural_key) == ["1_2", "1_14", "10_1", "rain-1", "rain-2", "Rain-3", "rain-10"]


def test_real_raintrainh_val(shared_dataset) -> None:  # type: ignore[no-untyped-def]
    found = find_pairs(shared_dataset("RainTrainH_val"), verify_sizes=True, strict=True)
    assert found.layout == "plain" and len(found) == 18 and found.warnings == []
    assert _names(found) == sorted(_names(found), key=natural_key)


# ----------------------------------------------------------------------------- read_image


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "1", "I;16"])
def test_read_image_modes_become_rgb8(tmp_path: Path, mode: str) -> None:
    ext = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"img{ext}"
    if mode == "I;16":
        Image.fromarray(np.full((5, 7), 257 * 100 + 129, np.uint16)).save(path)
    else:
        Image.new("RGB", (7, 5), (200, 100, 50)).convert(mode).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = read_image(path)
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8
    if mode == "I;16":
        assert img[0, 0].tolist() == [101, 101, 101]  # 25829 / 257 = 100.502 → 101 (scaled, not clipped)
    if mode in ("L", "RGBA"):
        expected = [200, 100, 50] if mode == "RGBA" else [img[0, 0, 0]] * 3
        assert img[0, 0].tolist() == expected


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        read_image(missing)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="text.png: not an image"):
        read_image(text)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-2000])
    with pytest.raises(ImageReadError, match="truncated.png: corrupt or truncated"):
        read_image(truncated)
    assert issubclass(ImageReadError, ValueError)


def test_read_image_pixel_limit(tmp_path: Path) -> None:
    """read_image is load_photo's reader: the same pixel limit (checked from the header), not Pillow's global one."""
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    with pytest.raises(ImageReadError, match="big.png: image too large: 40x30 = 1,200 pixels exceeds the limit of 1,000"):
        read_image(path, max_pixels=1000)
    assert read_image(path, max_pixels=1200).shape == (30, 40, 3)