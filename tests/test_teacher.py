"""``derain teach`` and :mod:`derain.data.teacher`: the trusted part of a teacher's output as a paired folder.

Teachers here are tiny modules whose effect is known exactly (one that removes a painted streak and darkens beside
it, one that tints, one that blurs), so what the rule keeps can be checked pixel by pixel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import derain
from derain.cli.main import cli
from derain.data.pairs import find_pairs
from derain.data.teacher import teacher_target, trusted_removal, write_teacher_pairs


def streaked(h: int = 40, w: int = 48, level: int = 90, streak: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A flat grey photo with two-pixel-wide vertical streaks ``streak`` levels brighter, and the clean photo."""
    rng = np.random.default_rng(0)
    clean = np.clip(level + rng.normal(0, 1.0, (h, w, 3)), 0, 255).round().astype(np.uint8)
    rainy = clean.copy()
    rainy[:, 10:12] = np.clip(rainy[:, 10:12].astype(int) + streak, 0, 255)
    rainy[:, 30:32] = np.clip(rainy[:, 30:32].astype(int) + streak, 0, 255)
    return rainy, clean


class TestTrustedRemoval:
    def test_a_teacher_that_removes_the_streaks_gives_back_the_clean_photo(self) -> None:
        rainy, clean = streaked()
        target = teacher_target(rainy, clean)
        assert np.abs(target.astype(int) - clean.astype(int)).max() <= 3  # noise-level: the median is of noisy Y
        assert np.abs(target.astype(int) - clean.astype(int))[:, 10:12].mean() < 1.5  # the 60-level streaks are gone

    def test_only_light_is_taken_and_never_colour(self) -> None:
        rainy, clean = streaked()
        tinted = clean.copy()
        tinted[..., 0] = np.clip(tinted[..., 0].astype(int) + 80, 0, 255)  # the teacher makes red brighter everywhere
        # red went up, even on the streaks: the teacher lowered not every channel, nothing is trusted
        assert np.array_equal(teacher_target(rainy, tinted), rainy)
        tinted[..., 0] -= 60  # red now 20 levels above the clean photo: on the streaks all channels went down >= 40
        assert np.abs(teacher_target(rainy, tinted).astype(int) - rainy.astype(int))[:, 10:12].min() >= 38
        removal = trusted_removal(rainy, np.zeros_like(rainy))  # a teacher that returns black lowers everything
        grey = teacher_target(rainy, np.zeros_like(rainy)).astype(int) - rainy.astype(int)
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()  # the same on R, G, B
        assert removal[:, 10:12].mean() > 50 and removal[:, :8].max() <= 3  # only where the photo stands out

    def test_the_bright_side_of_an_edge_is_not_trusted(self) -> None:
        photo = np.full((32, 32, 3), 40, np.uint8)
        photo[:, 16:] = 200  # a wide bright area: the teacher blurring it lowers its edge
        blurred = photo.copy()
        blurred[:, 16:18] = 120
        assert np.array_equal(teacher_target(photo, blurred), photo)

    def test_small_removals_stay(self) -> None:
        rainy, clean = streaked(streak=1)
        assert np.array_equal(teacher_target(rainy, clean, floor=2.0), rainy)

    def test_bad_arguments(self) -> None:
        rainy, clean = streaked()
        with pytest.raises(ValueError, match="one size"):
            trusted_removal(rainy, clean[:-1])
        with pytest.raises(ValueError, match="odd"):
            trusted_removal(rainy, clean, window=4)


class Darken(nn.Module):
    """A teacher that lowers every pixel brighter than 0.5 to 0.35 (it removes the test's streaks and nothing else)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0.5, torch.full_like(x, 90 / 255), x)


class TestWriteTeacherPairs:
    def photos(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        for n in (1, 2, 4):
            Image.fromarray(streaked()[0]).save(folder / f"{n}.png")
        (folder / "6.png").write_bytes(b"not a png")

    def test_a_paired_folder_that_training_reads(self, tmp_path: Path) -> None:
        self.photos(tmp_path / "in")
        runner = derain.load_derainer(Darken(), precision="fp32")
        files = sorted((tmp_path / "in").glob("*.png"))
        lines: list[str] = []
        photos = write_teacher_pairs(files, runner, tmp_path / "out", label="darken", log=lines.append)
        assert [p.name for p in photos] == ["1", "2", "4"] and any("skipped" in line and "6.png" in line for line in lines)
        pairs = find_pairs(tmp_path / "out", strict=True)
        assert pairs.layout == "plain" and [p.name for p in pairs.pairs] == ["1", "2", "4"]
        target = np.asarray(Image.open(tmp_path / "out" / "clean" / "2.png"))
        rainy = np.asarray(Image.open(tmp_path / "out" / "rainy" / "2.png"))
        assert np.array_equal(rainy, streaked()[0])
        assert np.abs(target.astype(int) - streaked()[1].astype(int)).max() <= 3
        record = json.loads((tmp_path / "out" / "teacher.json").read_text())
        assert record["teacher"] == "darken" and len(record["photos"]) == 3
        assert record["photos"][0]["trusted"] == pytest.approx(4 / 48, abs=0.01)  # 4 of 48 columns

    def test_resumes_without_running_the_teacher_again(self, tmp_path: Path) -> None:
        self.photos(tmp_path / "in")
        files = sorted((tmp_path / "in").glob("*.png"))
        write_teacher_pairs(files, derain.load_derainer(Darken(), precision="fp32"), tmp_path / "out")

        class Fail(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                raise AssertionError("the teacher ran again")

        again = write_teacher_pairs(files, derain.load_derainer(Fail(), precision="fp32"), tmp_path / "out")
        assert [p.name for p in again] == ["1", "2", "4"]


class TestTeachCommand:
    def test_writes_the_even_half(self, tmp_path: Path) -> None:
        TestWriteTeacherPairs().photos(tmp_path / "in")
        weights = tmp_path / "tiny.safetensors"
        derain.save_model(derain.create_model("efderain-tiny"), weights)
        out = CliRunner().invoke(cli, ["teach", str(tmp_path / "in"), "--only", "even", "--teacher", str(weights),
                                       "--precision", "fp32", "-o", str(tmp_path / "out")])
        assert out.exit_code == 0, out.output
        assert sorted(p.name for p in (tmp_path / "out" / "rainy").iterdir()) == ["2.png", "4.png"]
        assert "wrote 2 pairs" in out.output and "skipped" in out.output  # 6.png is even and unreadable

    @pytest.mark.parametrize("args,message", [
        (["--window", "4"], "must be odd"),
        (["--only", "third"], "Invalid value for '--only'"),
    ])
    def test_bad_options(self, tmp_path: Path, args: list[str], message: str) -> None:
        TestWriteTeacherPairs().photos(tmp_path / "in")
        out = CliRunner().invoke(cli, ["teach", str(tmp_path / "in"), "--teacher", "fast", "-o", str(tmp_path / "out"), *args])
        assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output
        assert not (tmp_path / "out").exists()
