"""``derain bench real``: how much models change real rainy photos, the contact sheet, the video part, the CLI.

Models here are tiny modules whose effect is known exactly (identity, a 10-level darkening, a scaling,
an oracle that returns the clean background), so the numbers the report gives can be checked against
the ones computed by hand; one test runs the bundled ``fast`` model on three real InternetData147 photos.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from derain.bench.real import (
    MIN_VIDEO_FRAMES,
    PSNR_CAP,
    SHEET_GAP,
    SHEET_LABEL_HEIGHT,
    RealBenchError,
    run_real,
    sample_video,
)
from derain.cli.main import cli
from derain.data.photos import PhotoFolderError, photo_files, read_photo
from derain.errors import UserError
from derain.inference.video import VideoError
from derain.metrics import calculate_psnr
from derain.models.gate import GATE_GAIN

Y_WEIGHT_SUM = (65.481 + 128.553 + 24.966) / 255  # Y levels per level of R = G = B


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Darken(nn.Module):
    """Every channel ``levels`` 8-bit levels lower."""

    def __init__(self, levels: float) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.levels / 255


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class Oracle(nn.Module):
    """Returns the clean background for frames of its size (every streak removed, nothing else touched),
    anything else as it is."""

    def __init__(self, background: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("background", torch.from_numpy(background).permute(2, 0, 1).float().div(255)[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.background.shape[-2:]:
            return x
        return self.background.expand(x.shape[0], -1, -1, -1)


def _photos(folder: Path, n: int = 3, seed: int = 0, size: tuple[int, int] = (40, 56)) -> list[np.ndarray]:
    """``n`` random photos (values 10..255, so a 10-level darkening never clips) as ``0.png`` ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = [rng.integers(10, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i}.png")
    return images


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Lossless H.264 (4:4:4, qp 0), so what is decoded is what was written up to the RGB/YUV rounding."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv444p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _rainy_video(path: Path, n: int = 30, seed: int = 0) -> tuple[np.ndarray, tuple[slice, slice]]:
    """A fixed camera: a smooth background, bright random streaks in every frame, and a flickering block
    (noise, not rain) in the top-left corner. Returns the background and the block."""
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([40 + 2 * xx, 60 + 2 * yy, 90 + xx + yy], axis=-1).clip(0, 255).astype(np.uint8)
    block = (slice(0, 12), slice(0, 12))
    frames = []
    for _ in range(n):
        frame = background.astype(np.int16)
        for _ in range(12):  # streaks: 8 px slanted lines, +90 levels
            y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(2, w - 2))
            for t in range(8):
                frame[y0 + t, x0 + t // 4] += 90
        frame[block] = rng.integers(0, 256, (12, 12, 3))
        frames.append(frame.clip(0, 255).astype(np.uint8))
    _write_video(path, frames)
    return background, block


class TestPhotos:
    def test_identity_leaves_every_photo_unchanged_and_an_unreadable_one_is_skipped(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", n=3)
        (tmp_path / "p" / "broken.png").write_bytes(b"not a png")
        skipped: list[Exception] = []
        report = run_real([("same", Identity())], [tmp_path / "p"], precision="fp32", on_skip=skipped.append)
        (row,) = report.rows
        assert (row.model, row.n, row.unchanged, row.nearly_unchanged) == ("same", 3, 3, 3)
        assert row.psnr_median == row.psnr_p10 == row.psnr_p90 == PSNR_CAP and row.mean_abs_change == 0
        assert [p.photo for p in report.photos] == ["0.png", "1.png", "2.png"]
        assert len(skipped) == 1 and "broken.png" in str(skipped[0]) and report.skipped == [str(skipped[0])]
        assert "| same | 3 | 3 | 3 | - | 100.00 | 100.00 | 100.00 | 0.00 |" in report.table()

    def test_darkening_by_10_levels_gives_the_psnr_computed_by_hand(self, tmp_path: Path) -> None:
        images = _photos(tmp_path / "p", n=4)
        report = run_real([("dark", Darken(10)), ("same", Identity())], [tmp_path / "p"], precision="fp32")
        expected = 20 * math.log10(255 / (10 * Y_WEIGHT_SUM))  # Y moves by 10 · (65.481 + 128.553 + 24.966) / 255
        dark, same = report.rows
        assert expected == pytest.approx(29.45, abs=0.01)
        assert [p.psnr for p in report.photos if p.model == "dark"] == pytest.approx([expected] * 4, abs=1e-6)
        assert dark.psnr_median == pytest.approx(expected, abs=1e-6) and dark.mean_abs_change == pytest.approx(10)
        assert (dark.n, dark.unchanged, dark.nearly_unchanged) == (4, 0, 0) and same.unchanged == 4
        # the same PSNR as the project's metric on the image darkened here
        assert calculate_psnr(images[0] - 10, images[0], test_y_channel=True) == pytest.approx(expected)
        d = json.loads(json.dumps(report.to_dict()))
        assert [m["model"] for m in d["models"]] == ["dark", "same"] and len(d["photos"]) == 8 and d["video"] is None

    def test_counts_and_percentiles(self, tmp_path: Path) -> None:
        folder = tmp_path / "p"
        folder.mkdir()
        for i, level in enumerate([20, 60, 100, 140, 180]):
            Image.fromarray(np.full((16, 24, 3), level, np.uint8)).save(folder / f"{i}.png")
        # x -> 0.99 x: level L moves by round(0.01 L) -> 0, 1, 1, 1, 2 levels; Y by that times Y_WEIGHT_SUM
        report = run_real([("scale", Scale(0.99))], [folder], precision="fp32")
        moved = np.array([0, 1, 1, 1, 2]) * Y_WEIGHT_SUM
        psnr = [PSNR_CAP if m == 0 else 20 * math.log10(255 / m) for m in moved]
        assert [p.psnr for p in report.photos] == pytest.approx(psnr)
        row = report.rows[0]
        assert (row.unchanged, row.nearly_unchanged) == (4, 5)  # 49.3 dB x3 and 100 > 45; 43.3 > 40 only
        assert row.psnr_median == pytest.approx(psnr[1]) and row.psnr_p10 == pytest.approx(np.percentile(psnr, 10))
        assert row.psnr_p90 == pytest.approx(np.percentile(psnr, 90)) and row.mean_abs_change == pytest.approx(1.0)

    def test_files_sorted_naturally_and_filtered_by_odd_or_even(self, tmp_path: Path) -> None:
        folder = tmp_path / "set" / "rainy"
        folder.mkdir(parents=True)
        for name in ["1.jpg", "2.png", "3.png", "10.png", "11.png", "notes.txt", "cover.png"]:
            (folder / name).write_bytes(b"x")
        assert [p.name for p in photo_files([tmp_path / "set"])] == ["1.jpg", "2.png", "3.png", "10.png", "11.png", "cover.png"]
        assert [p.name for p in photo_files([tmp_path / "set"], "odd")] == ["1.jpg", "3.png", "11.png"]
        assert [p.name for p in photo_files([tmp_path / "set"], "even")] == ["2.png", "10.png"]
        with pytest.raises(FileNotFoundError, match="not a folder"):
            photo_files([tmp_path / "missing"])
        (tmp_path / "empty").mkdir()
        with pytest.raises(PhotoFolderError, match="no image files"):
            photo_files([tmp_path / "empty"])

    def test_photos_are_downscaled_to_max_side(self, tmp_path: Path) -> None:
        Image.fromarray(np.full((300, 1000, 3), 77, np.uint8)).save(tmp_path / "wide.png")
        Image.fromarray(np.full((30, 20), 200, np.uint8), "L").save(tmp_path / "grey.png")
        assert read_photo(tmp_path / "wide.png", 640).shape == (192, 640, 3)
        grey = read_photo(tmp_path / "grey.png", 640)
        assert grey.shape == (30, 20, 3) and grey.dtype == np.uint8 and (grey == 200).all()


class TestSheet:
    def test_rows_are_the_least_changed_photos_first(self, tmp_path: Path) -> None:
        folder = tmp_path / "p"
        folder.mkdir()
        levels = {"a.png": 200, "b.png": 40, "c.png": 120, "d.png": 0, "e.png": 80}  # x0.8 changes them by 20 % of that
        for name, level in levels.items():
            Image.fromarray(np.full((30, 40, 3), level, np.uint8)).save(folder / name)
        sheet, height = tmp_path / "out" / "sheet.png", 32
        report = run_real([("scale", Scale(0.8)), ("same", Identity())], [folder], precision="fp32",
                          sheet=sheet, sheet_rows=3, sheet_height=height)
        assert report.sheet_order == ["d.png", "b.png", "e.png"]  # black is unchanged, then the darkest
        img = np.asarray(Image.open(sheet).convert("RGB"))
        row_h = SHEET_LABEL_HEIGHT + height + SHEET_GAP
        assert img.shape[0] == SHEET_GAP + 3 * row_h
        for r, name in enumerate(report.sheet_order):
            y = SHEET_GAP + r * row_h + SHEET_LABEL_HEIGHT + height // 2
            line = img[y, :, 0]
            assert int(line[np.argmax(line != 255)]) == levels[name], name  # the input cell comes first (on white)
            assert {levels[name], round(levels[name] * 0.8)} <= {int(v) for v in img[y, :, 0]}  # then the outputs
        assert not list((tmp_path / "out").glob(".*"))  # written atomically: no temporary left

    def test_cli_writes_sheet_and_json(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", n=2, size=(24, 32))
        (tmp_path / "p" / "bad.jpg").write_bytes(b"")
        weights = tmp_path / "tiny.safetensors"
        import derain

        derain.save_model(derain.create_model("efderain-tiny", identity_init=True), weights)
        out = CliRunner().invoke(cli, ["bench", "real", str(tmp_path / "p"), "--model", str(weights), "--precision", "fp32",
                                       "--sheet", str(tmp_path / "s.png"), "--sheet-rows", "1", "--json", str(tmp_path / "r.json")])
        assert out.exit_code == 0, out.output
        assert "| model | photos | unchanged |" in out.stdout
        assert out.stderr.count("skipped: ") == 1 and "bad.jpg" in out.stderr
        d = json.loads((tmp_path / "r.json").read_text())
        assert d["models"][0]["n"] == 2 and len(d["sheet_order"]) == 1 and len(d["skipped"]) == 1
        assert Image.open(tmp_path / "s.png").size[1] == SHEET_GAP + SHEET_LABEL_HEIGHT + 160 + SHEET_GAP


class TestStrength:
    @staticmethod
    def _changing_model(path: Path, scale: float = 0.3) -> Path:
        """A tiny model whose random weights (noise of ``scale`` on its init) change every photo, saved to ``path``."""
        import derain

        torch.manual_seed(0)
        model = derain.create_model("efderain-tiny")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * scale)
        derain.save_model(model, path)
        return path

    def test_strength_zero_returns_every_photo_unchanged(self, tmp_path: Path) -> None:
        """``--strength`` reaches the models, not the peer, and names itself in their rows: at 0 a model that changes
        every photo returns each as it went in, while the peer still changes them."""
        _photos(tmp_path / "p", n=2, size=(24, 32))
        weights = self._changing_model(tmp_path / "tiny.safetensors")
        rows = {}
        for strength in ("auto", "0"):
            out = CliRunner().invoke(cli, ["bench", "real", str(tmp_path / "p"), "--model", str(weights), "--precision", "fp32",
                                           "--peer", f"efderain-tiny={weights}", "--strength", strength,
                                           "--json", str(tmp_path / f"{strength}.json")])
            assert out.exit_code == 0, out.output
            rows[strength] = json.loads((tmp_path / f"{strength}.json").read_text())["models"]
        model, peer = rows["0"]
        assert rows["auto"][0]["unchanged"] == 0 and "(strength" not in rows["auto"][0]["model"]
        assert model["unchanged"] == 2 and model["model"].endswith("(strength 0)")
        assert peer["unchanged"] == 0 and "(strength" not in peer["model"]

    def test_strength_given_as_text_in_python(self, tmp_path: Path) -> None:
        """``run_real(strength="0.5")`` reads the text as ``derain run --strength 0.5`` does: half the change."""
        _photos(tmp_path / "p", n=2, size=(24, 32))
        weights = self._changing_model(tmp_path / "tiny.safetensors", scale=0.02)  # changes that are not clipped
        full = run_real([str(weights)], [tmp_path / "p"], precision="fp32", strength="1").rows[0]
        half = run_real([str(weights)], [tmp_path / "p"], precision="fp32", strength="0.5").rows[0]
        assert half.model.endswith("(strength 0.5)") and full.model.endswith("(strength 1)")
        assert 0.4 * full.mean_abs_change < half.mean_abs_change < 0.6 * full.mean_abs_change
        with pytest.raises(UserError):
            run_real([str(weights)], [tmp_path / "p"], precision="fp32", strength="lots")


class TestJudgement:
    @staticmethod
    def _judging_model(path: Path, bias: float) -> Path:
        """A tiny model with an image gate whose judgement is ``sigmoid(GATE_GAIN * bias)`` on every image (its weight zeroed)."""
        import derain

        torch.manual_seed(0)
        model = derain.create_model("efderain-tiny", gate=True, gate_global=True)
        with torch.no_grad():
            model.gate_global.weight.zero_()
            model.gate_global.bias.fill_(bias)
        derain.save_model(model, path)
        return path

    def test_judged_dry_counts_the_photos_the_image_gate_closes(self, tmp_path: Path) -> None:
        """A model that judges every photo dry is counted as judging all of them dry (and leaves them unchanged); one
        that judges every photo rainy, none; a model without an image gate, and one run at a set strength, have no
        count (``-`` in the table), and each photo's judgement is in the JSON."""
        _photos(tmp_path / "p", n=3, size=(24, 32))
        dry = self._judging_model(tmp_path / "dry.safetensors", -3.0)
        rainy = self._judging_model(tmp_path / "rainy.safetensors", 0.2)
        report = run_real([str(dry), str(rainy), Identity()], [tmp_path / "p"], precision="fp32")
        rows = {r.model: r for r in report.rows}
        assert [r.judged_dry for r in report.rows] == [3, 0, None]
        assert report.rows[0].unchanged == 3
        judgements = [p.judgement for p in report.photos if p.model == report.rows[1].model]
        np.testing.assert_allclose(judgements, [1 / (1 + math.exp(-0.2 * GATE_GAIN))] * 3, rtol=0, atol=1e-6)
        assert all(p.judgement is None for p in report.photos if p.model == report.rows[2].model)
        table = report.table().splitlines()
        assert "judged dry" in table[2] and table[4].split("|")[5].strip() == "3" and table[6].split("|")[5].strip() == "-"
        forced = run_real([str(dry)], [tmp_path / "p"], precision="fp32", strength="1").rows[0]
        assert forced.judged_dry is None and forced.unchanged == 0, rows


    def test_the_judgement_reported_is_the_one_applied(self) -> None:
        """Each photo's reported judgement equals the factor the bundled default (its image gate's bias lowered)
        applies inside the same photo's derain (odd sizes: the model pads them), and differs between photos."""
        from derain.bench.real import measure_photos
        from derain.inference.loading import load_derainer

        runner = load_derainer("default", precision="fp32")
        with torch.no_grad():  # its judgements of these small images, all near 1, brought to mid-range
            runner.model.gate_global.bias -= 0.85
        applied: list[float] = []
        runner.model.gate_global.register_forward_hook(
            lambda _m, _i, out: applied.append(float(torch.sigmoid(out.float() * GATE_GAIN)[0, 0])))
        rng = np.random.default_rng(5)
        flat = np.full((37, 53, 3), 90, np.uint8)
        streaks = flat.copy()
        streaks[:, ::6] = 230  # bright vertical lines
        photos = [("flat.png", flat), ("lines.png", streaks), ("noise.png", rng.integers(0, 256, (64, 45, 3), dtype=np.uint8))]
        _, per_photo = measure_photos([("default", runner)], photos)
        reported = [c.judgement for c in per_photo[0]]
        assert applied[0::2] == pytest.approx(applied[1::2], abs=1e-6)  # the derain's own, then the report's
        assert reported == pytest.approx(applied[0::2], abs=1e-6)
        assert max(reported) - min(reported) > 0.01, reported


class TestVideo:
    def test_oracle_beats_the_input_and_identity_matches_it(self, tmp_path: Path) -> None:
        video = tmp_path / "rain.mp4"
        background, block = _rainy_video(video, n=30)
        _photos(tmp_path / "p", n=1)
        report = run_real([("same", Identity()), ("oracle", Oracle(background))], [tmp_path / "p"], precision="fp32",
                          video=video, video_stride=3)
        v = report.video
        assert v is not None and (v.frames, v.width, v.height, v.stride) == (10, 64, 48, 3)
        block_share = 144 / (48 * 64)
        assert 0.8 < v.static_share <= 1 - block_share  # the flickering block is not static, the streaks are
        assert 0.005 < v.rain_share < 0.1
        inp, same, oracle = v.rows
        assert inp.model == "input (reference)" and inp.rain_rms > 40  # the streaks: +90 levels, Y +77
        assert same.static_psnr == pytest.approx(inp.static_psnr) and same.rain_rms == pytest.approx(inp.rain_rms)
        assert oracle.static_psnr > inp.static_psnr + 20 and oracle.rain_rms < 1
        # off the streaks the decoded input is exactly its median (lossless video); the oracle's background is the
        # one before encoding, a YUV rounding away from it
        assert inp.other_psnr == PSNR_CAP and 50 < oracle.other_psnr < PSNR_CAP
        table = report.table()
        assert "| input (reference) |" in table and "| oracle |" in table and "10 frames (one in 3)" in table

    def test_short_or_unreadable_video(self, tmp_path: Path) -> None:
        video = tmp_path / "rain.mp4"
        _rainy_video(video, n=6)
        assert sample_video(video, 2).shape == (3, 48, 64, 3)
        with pytest.raises(RealBenchError, match=f"at least {MIN_VIDEO_FRAMES}"):
            sample_video(video, 3)
        (tmp_path / "fake.mp4").write_text("not a video")
        with pytest.raises(VideoError, match="not a readable video"):
            sample_video(tmp_path / "fake.mp4")


class TestCliErrors:
    @pytest.mark.parametrize(
        "args, message",
        [
            (lambda t: [str(t / "missing")], "not a folder"),
            (lambda t: [str(t / "empty")], "no image files"),
            (lambda t: [str(t / "even"), "--only", "odd"], "no image file with an odd number"),
            (lambda t: [str(t / "p"), "--video", str(t / "fake.mp4")], "not a readable video"),
            (lambda t: [str(t / "p"), "--video", str(t / "none.mp4")], "no such file"),
            (lambda t: [str(t / "p"), "--peer", "prenet"], "NAME=WEIGHTS"),
            (lambda t: [str(t / "p"), "--peer", f"prenet={t / 'none.pth'}"], "no such file"),
            (lambda t: [str(t / "p"), "--peer", f"prenet={t / 'fake.mp4'}"], "fake.mp4"),
            (lambda t: [str(t / "broken")], "no readable photo"),
            (lambda t: [str(t / "p"), "--sheet", str(t)], "is a folder"),
        ],
        ids=["missing folder", "empty folder", "no odd file", "not a video", "no video", "peer without =",
             "peer file missing", "peer file not weights", "no readable photo", "sheet is a folder"],
    )
    def test_one_line_and_non_zero_exit(self, tmp_path: Path, args: Callable[[Path], list[str]], message: str) -> None:
        _photos(tmp_path / "p", n=1, size=(8, 8))
        (tmp_path / "empty").mkdir()
        (tmp_path / "even").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "even" / "2.png")
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "1.png").write_bytes(b"junk")
        (tmp_path / "fake.mp4").write_text("not a video")
        out = CliRunner().invoke(cli, ["bench", "real", *args(tmp_path), "--model", "fast"])
        lines = [line for line in out.stderr.splitlines() if not line.startswith("skipped: ")]
        assert out.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], out.output
        assert out.stdout == ""


def test_fast_on_real_internetdata147_photos(tmp_path: Path, shared_dataset: Callable[[str], Path]) -> None:
    """Three evaluation (odd-numbered) photos of InternetData147 through the bundled ``fast`` model."""
    import shutil

    source = shared_dataset("InternetData147") / "rainy"
    for name in ("1.jpg", "3.jpg", "5.jpg"):
        shutil.copy(source / name, tmp_path / name)
    report = run_real(["fast"], [tmp_path], only="odd", precision="fp32", sheet=tmp_path / "s.png", sheet_rows=3)
    psnr = {p.photo: p.psnr for p in report.photos}
    row = report.rows[0]
    assert row.n == 3 and row.unchanged == sum(v > 45 for v in psnr.values())
    # 3.jpg (light drizzle behind a logo) is left nearly as it is, 5.jpg (visible streaks) is changed most
    assert psnr["3.jpg"] > 44 and 40 < psnr["1.jpg"] < 46 and 30 < psnr["5.jpg"] < 39
    assert 0 < row.mean_abs_change < 3 and report.sheet_order == ["3.jpg", "1.jpg", "5.jpg"]
    assert Image.open(tmp_path / "s.png").size[1] == SHEET_GAP + 3 * (SHEET_LABEL_HEIGHT + 160 + SHEET_GAP)
