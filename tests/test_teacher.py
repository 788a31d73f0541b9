"""``derain teach``: real rainy photos labelled by a teacher model, as a paired dataset that training reads.

The teachers here have known effects (a colourless darkening, a brightening, a colour shift, a mix), so what the
trusted target keeps can be checked exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import derain
from derain.cli.main import cli
from derain.data.pairs import find_pairs
from derain.data.teacher import TeachError, teach, trusted_target
from derain.training.config import load_config
from derain.training.dataset import build_sources


def _photos(folder: Path, names: tuple[str, ...] = ("1", "2", "4"), size: tuple[int, int] = (40, 56)) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {n: rng.integers(20, 236, (*size, 3), dtype=np.uint8) for n in names}
    for n, img in images.items():
        Image.fromarray(img).save(folder / f"{n}.png")
    return images


class TestTrustedTarget:
    def test_a_colourless_darkening_is_kept_whole(self) -> None:
        x = np.random.default_rng(1).integers(30, 256, (16, 16, 3), dtype=np.uint8)
        streaks = np.zeros((16, 16, 1), np.uint8)
        streaks[:, 5] = 25  # a streak the teacher removes from every channel alike
        assert np.array_equal(trusted_target(x, x - streaks), x - streaks)

    def test_brightening_and_colour_are_not_trusted(self) -> None:
        x = np.full((8, 8, 3), 100, np.uint8)
        brighter = x + 20
        redder = x.copy()
        redder[..., 1:] -= 15  # green and blue darker, red as it was: a colour shift, no colourless darkening
        assert np.array_equal(trusted_target(x, brighter), x)
        assert np.array_equal(trusted_target(x, redder), x)

    def test_of_a_darkening_with_a_cast_the_common_part_is_kept(self) -> None:
        x = np.full((4, 4, 3), 120, np.uint8)
        t = x - np.array([30, 10, 18], np.uint8)
        target = trusted_target(x, t)
        assert np.array_equal(target, np.full((4, 4, 3), 110, np.uint8))  # 10 off each channel: grey stays grey

    def test_shapes_must_match(self) -> None:
        with pytest.raises(ValueError, match="one size"):
            trusted_target(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


class TestTeach:
    def test_writes_a_paired_dataset_that_training_reads(self, tmp_path: Path) -> None:
        photos = _photos(tmp_path / "p")
        report = teach([tmp_path / "p"], lambda x: x - 7, tmp_path / "pairs")
        assert report.names == ["1", "2", "4"] and report.removed == [7.0, 7.0, 7.0] and not report.skipped
        found = find_pairs(tmp_path / "pairs")
        assert found.layout == "plain" and [p.name for p in found.pairs] == ["1", "2", "4"]
        for name, rgb in photos.items():
            assert np.array_equal(np.asarray(Image.open(tmp_path / "pairs" / "rainy" / f"{name}.png")), rgb)
            assert np.array_equal(np.asarray(Image.open(tmp_path / "pairs" / "clean" / f"{name}.png")), rgb - 7)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "pairs"]  # no staging folder left

    def test_only_the_even_half_and_downscaled_like_the_real_rain_report(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", size=(100, 60))
        report = teach([tmp_path / "p"], lambda x: x, tmp_path / "pairs", only="even", max_side=50)
        assert report.names == ["2", "4"]
        assert Image.open(tmp_path / "pairs" / "rainy" / "2.png").size == (30, 50)

    def test_never_writes_into_an_existing_folder_and_a_failed_run_leaves_nothing(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p")
        (tmp_path / "old").mkdir()
        with pytest.raises(TeachError, match="exists"):
            teach([tmp_path / "p"], lambda x: x, tmp_path / "old")

        def failing(x: np.ndarray) -> np.ndarray:
            raise RuntimeError("teacher failed")

        with pytest.raises(RuntimeError):
            teach([tmp_path / "p"], failing, tmp_path / "pairs")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "p"]

    def test_a_folder_of_the_users_beside_the_output_is_left_alone(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", names=("1",))
        mine = tmp_path / ".pairs.partial"
        mine.mkdir()
        (mine / "mine.txt").write_text("keep")
        teach([tmp_path / "p"], lambda x: x, tmp_path / "pairs")
        assert (mine / "mine.txt").read_text() == "keep"
        assert sorted(p.name for p in tmp_path.iterdir()) == [".pairs.partial", "p", "pairs"]

    def test_photos_of_one_name_in_several_folders_each_get_a_pair(self, tmp_path: Path) -> None:
        for sub in ("a/x", "b/x", "c/x"):
            _photos(tmp_path / "p" / sub, names=("1",))
        _photos(tmp_path / "p" / "a", names=("1",))
        report = teach([tmp_path / "p"], lambda x: x, tmp_path / "pairs")
        assert len(set(report.names)) == 4 and len(list((tmp_path / "pairs" / "clean").iterdir())) == 4

    def test_a_teacher_must_return_uint8_pixels_of_its_input(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", names=("1",))
        with pytest.raises(TypeError, match="uint8"):
            teach([tmp_path / "p"], lambda x: x / 255.0, tmp_path / "pairs")
        with pytest.raises(TypeError, match="shape"):
            teach([tmp_path / "p"], lambda x: x[:-1], tmp_path / "pairs")
        assert not (tmp_path / "pairs").exists() and not list(tmp_path.glob(".pairs*"))

    def test_an_unreadable_photo_is_left_out_and_none_readable_is_an_error(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", names=("1",))
        (tmp_path / "p" / "3.jpg").write_bytes(b"junk")
        skipped: list[str] = []
        report = teach([tmp_path / "p"], lambda x: x, tmp_path / "pairs", on_skip=lambda e: skipped.append(str(e)))
        assert report.names == ["1"] and len(report.skipped) == 1 and "3.jpg" in skipped[0]
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "1.png").write_bytes(b"junk")
        with pytest.raises(TeachError, match="no readable photo"):
            teach([tmp_path / "bad"], lambda x: x, tmp_path / "pairs2")
        assert not (tmp_path / "pairs2").exists()


class TestCli:
    def test_a_model_file_teaches_and_training_reads_its_pairs(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", size=(24, 32))
        weights = tmp_path / "tiny.safetensors"
        model = derain.create_model("efderain-tiny", identity_init=True)
        with torch.no_grad():  # a teacher that darkens: the fusion's bias 5 levels down on every channel
            model.conv_final.bias -= 5 / 255
        derain.save_model(model, weights)
        out = CliRunner().invoke(cli, ["teach", str(tmp_path / "p"), "--weights", str(weights), "--only", "even",
                                       "--precision", "fp32", "-o", str(tmp_path / "pairs")])
        assert out.exit_code == 0, out.output
        assert "wrote 2 pairs" in out.stdout
        rainy = np.asarray(Image.open(tmp_path / "pairs" / "rainy" / "2.png")).astype(int)
        clean = np.asarray(Image.open(tmp_path / "pairs" / "clean" / "2.png")).astype(int)
        assert 4 <= np.median(rainy - clean) <= 6
        cfg = tmp_path / "c.yaml"
        (tmp_path / "grey").mkdir()
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(tmp_path / "grey" / "a.png")
        cfg.write_text(f"model: efderain-tiny\nsources: [{{kind: paired, path: {tmp_path / 'pairs'}}}, {{kind: rain_layers, "
                       f"path: {tmp_path / 'grey'}, layers: [{tmp_path / 'pairs'}]}}]\ncrop: 16\n"
                       f"batch_size: 2\niterations: 1\ndecay_start: 0\nout_dir: {tmp_path / 'run'}\n")
        pairs, layers = build_sources(load_config(cfg))
        rainy_crop, clean_crop = pairs.sample(np.random.default_rng(0), 16)
        assert rainy_crop.shape == clean_crop.shape == (16, 16, 3) and 3.5 / 255 < float((rainy_crop - clean_crop).mean()) < 6.5 / 255
        rainy_crop, clean_crop = layers.sample(np.random.default_rng(0), 16)  # the teacher's rain on another photo
        assert np.all(clean_crop == 90 / 255) and 0.7 * 3.5 / 255 < float((rainy_crop - clean_crop).mean()) < 1.1 * 6.5 / 255

    def test_bad_input_is_one_line(self, tmp_path: Path) -> None:
        _photos(tmp_path / "p", names=("1",))
        (tmp_path / "pairs").mkdir()
        runner = CliRunner()
        out = runner.invoke(cli, ["teach", str(tmp_path / "p"), "--model", "fast", "-o", str(tmp_path / "pairs")])
        assert out.exit_code == 1 and out.stderr.strip().splitlines() == [f"Error: {tmp_path / 'pairs'}: exists; give a new "
                                                                          "folder (teach never writes into an earlier one)"]
        out = runner.invoke(cli, ["teach", str(tmp_path / "p"), "-o", str(tmp_path / "new")])
        assert out.exit_code == 2 and "name the teacher" in out.stderr
        (tmp_path / "file").write_text("x")
        out = runner.invoke(cli, ["teach", str(tmp_path / "p"), "--model", "fast", "-o", str(tmp_path / "file" / "pairs")])
        assert out.exit_code == 1 and len(out.stderr.strip().splitlines()) == 1, out.output
        assert out.stderr.startswith(f"Error: cannot write {tmp_path / 'file' / 'pairs'}: ")
