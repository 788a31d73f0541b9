"""The paper's tables and figures as commands: speed, quality vs time, ablation, kernel explanation.

Each runs here in a tiny configuration (small images, a 2-image folder, 2 training steps) so the
commands keep working; the real numbers are in BENCHMARKS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import derain
from derain.bench.ablation import ablation_config, ablation_table, in_domain_overrides, run_ablation
from derain.bench import noharm
from derain.errors import InvalidArgument
from derain.bench.noharm import measure_noharm, noharm_table, rain_free_images, run_noharm, web_jpeg
from derain.io.images import read_image
from derain.bench.explain import (
    centre_weight_map,
    dilated_footprint,
    explain_image,
    kernel_entropy_map,
    pick_points,
    plot_explanation,
)
from derain.bench.quality import load_model_spec, plot_quality, run_quality
from derain.bench.speed import RELEASED_PATH, SpeedReport, SpeedRow, build_speed_model, run_speed
from derain.cli.main import cli
from derain.evaluation.evaluate import evaluate



def _need_matplotlib() -> None:
    """Plots need the ``bench`` extra (installed with ``test``, so CI always runs these)."""
    pytest.importorskip("matplotlib")


def _pair_folder(root: Path, n: int = 2, size: tuple[int, int] = (48, 64)) -> Path:
    """A ``rainy/`` + ``clean/`` folder of ``n`` pairs with bright synthetic streaks."""
    rng = np.random.default_rng(0)
    for sub in ("rainy", "clean"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        clean = (rng.random((*size, 3)) * 120 + 60).astype(np.uint8)
        rainy = clean.copy()
        rainy[:, 5 + 7 * i :: 11] = 240
        Image.fromarray(clean).save(root / "clean" / f"{i}.png")
        Image.fromarray(rainy).save(root / "rainy" / f"{i}.png")
    return root


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


class TestSpeed:
    def test_released_path_computes_the_same_function(self) -> None:
        torch.manual_seed(0)
        released = build_speed_model(RELEASED_PATH).eval()
        fast = derain.create_model("efderain-paper").eval()
        fast.load_state_dict(released.state_dict())
        assert released.filter_implementation == "reference" and fast.filter_implementation == "auto"
        x = torch.rand(1, 3, 32, 48)
        with torch.no_grad():
            assert torch.allclose(released(x), fast(x), atol=1e-6)

    def test_rows_ratios_and_skips(self) -> None:
        report = run_speed(["efderain-tiny", RELEASED_PATH], sizes=[(32, 48)], batches=[1, 2], precisions=["fp32", "bf16"], warmup=0, repeats=2)
        cells = [(r.model, r.batch, r.precision) for r in report.rows]
        # the released path runs in fp32 only, as the released code does
        assert cells == [("efderain-tiny", 1, "fp32"), ("efderain-tiny", 1, "bf16"), ("efderain-tiny", 2, "fp32"),
                         ("efderain-tiny", 2, "bf16"), (RELEASED_PATH, 1, "fp32"), (RELEASED_PATH, 2, "fp32")]
        for r in report.rows:
            assert r.repeats == 2 and 0 < r.min_ms <= r.ms <= r.max_ms
            assert r.gflops == pytest.approx(report.rows[0 if r.model == "efderain-tiny" else -1].gflops)
        released = report.rows[-2]
        assert report.speedup_vs_released(released) == pytest.approx(1.0)
        tiny = report.rows[0]
        assert report.speedup_vs_released(tiny) == pytest.approx(released.ms / tiny.ms)
        assert report.speedup_vs_prenet(tiny) is None  # PReNet not in this run
        assert "| efderain-tiny | 48×32 | 1 | fp32 |" in report.table()

    def test_expensive_cells_are_skipped_not_run(self) -> None:
        report = run_speed(["efderain-tiny"], sizes=[(16, 16), (2048, 2048)], batches=[1], precisions=["fp32"], warmup=0, repeats=1, max_cell_seconds=1e-3)
        small, big = report.rows
        assert not small.skipped and big.skipped.startswith("est.")
        assert big.repeats == 0 and "skipped: est." in report.table()

    def test_prenet_ratio(self) -> None:
        report = SpeedReport(rows=[SpeedRow("prenet", (10, 10), 1, "fp32", ms=100.0), SpeedRow("prenet", (10, 10), 1, "bf16", ms=50.0),
                                   SpeedRow("m", (10, 10), 1, "bf16", ms=5.0)])
        assert report.speedup_vs_prenet(report.rows[2]) == pytest.approx(10.0)  # against PReNet's fastest precision
        assert [(m, r.precision) for m, _, _, r in report.fastest()] == [("prenet", "bf16"), ("m", "bf16")]

    def test_released_ratio_uses_the_fp32_row_of_the_same_size_and_batch(self) -> None:
        rows = [SpeedRow(RELEASED_PATH, (10, 10), 1, "fp32", ms=100.0), SpeedRow(RELEASED_PATH, (10, 10), 8, "fp32", ms=60.0),
                SpeedRow(RELEASED_PATH, (20, 20), 8, "fp32", ms=400.0), SpeedRow("m", (10, 10), 8, "bf16", ms=3.0),
                SpeedRow("m", (20, 20), 1, "bf16", ms=3.0)]
        report = SpeedReport(rows=rows)
        assert report.speedup_vs_released(rows[3]) == pytest.approx(20.0)
        assert report.speedup_vs_released(rows[4]) is None  # no released-path row at 20x20 batch 1

    def test_cli_writes_json_and_csv(self, tmp_path: Path) -> None:
        out = CliRunner().invoke(cli, ["bench", "speed", "--model", "efderain-tiny", "--size", "48x32", "--batch", "1", "--batch", "2",
                                       "--precision", "fp32", "--repeats", "2", "--warmup", "0",
                                       "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
        assert out.exit_code == 0, out.output
        rows = json.loads((tmp_path / "s.json").read_text())["rows"]
        assert [(r["size"], r["batch"]) for r in rows] == [([32, 48], 1), ([32, 48], 2)]
        assert (tmp_path / "s.csv").read_text().splitlines()[1].startswith("efderain-tiny,48x32,1,fp32,")

    @pytest.mark.parametrize("args, message", [(["--size", "48by32"], "481x321"), (["--model", "nope"], "nope")])
    def test_cli_bad_input(self, args: list[str], message: str) -> None:
        out = CliRunner().invoke(cli, ["bench", "speed", *args, "--batch", "1", "--precision", "fp32"])
        assert out.exit_code != 0 and message in out.output and "Traceback" not in out.output


class TestQuality:
    def test_points_match_evaluate_and_plot(self, tmp_path: Path) -> None:
        _need_matplotlib()
        data = _pair_folder(tmp_path / "data")
        tiny = tmp_path / "tiny.safetensors"
        derain.save_model(derain.create_model("efderain-tiny"), tiny)
        points = run_quality([str(tiny), "default"], data)
        assert [p.model for p in points] == [f"{tmp_path.name}/tiny.safetensors", "default"]
        reference = evaluate(derain.create_model("default", pretrained=True), data, "y", precision="fp32", progress=False)
        assert points[1].psnr == pytest.approx(reference.metrics["y"]["psnr"], abs=1e-9)
        assert points[1].n == 2 and points[1].params == 1_236_639 and points[1].ms > 0
        plot_quality(points, tmp_path / "q.png")
        assert _png_size(tmp_path / "q.png") == (1000, 400)

    def test_model_specs(self, tmp_path: Path) -> None:
        path = tmp_path / "m.safetensors"
        derain.save_model(derain.create_model("efderain-tiny"), path)
        assert load_model_spec(str(path))[0] == f"{tmp_path.name}/m.safetensors"
        label, model = load_model_spec(f"efderain-tiny={path}")
        assert label == "efderain-tiny (m.safetensors)" and model.config == derain.create_model("efderain-tiny").config

    def test_models_without_weights_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(Exception, match="no bundled weights"):
            load_model_spec("efderain-tiny")  # quality of a random network means nothing

    def test_a_bad_model_spec_ends_the_run_before_any_evaluation(self, tmp_path: Path) -> None:
        data = _pair_folder(tmp_path / "data")
        seen = []
        with pytest.raises(Exception, match="no bundled weights"):
            run_quality(["default", "efderain-tiny"], data, progress=seen.append)
        assert seen == []

    def test_cli(self, tmp_path: Path) -> None:
        _need_matplotlib()
        data = _pair_folder(tmp_path / "data")
        weights = tmp_path / "tiny.safetensors"
        derain.save_model(derain.create_model("efderain-tiny"), weights)
        out = CliRunner().invoke(cli, ["bench", "quality", str(data), "--model", "default", "--model", str(weights),
                                       "--plot", str(tmp_path / "q.png"), "--json", str(tmp_path / "q.json"), "--csv", str(tmp_path / "q.txt")])
        assert out.exit_code == 0, out.output
        assert [p["model"] for p in json.loads((tmp_path / "q.json").read_text())["points"]] == ["default", f"{tmp_path.name}/tiny.safetensors"]
        assert (tmp_path / "q.txt").read_text().startswith("model,dataset,protocol,n,psnr,")  # CSV whatever the suffix
        assert _png_size(tmp_path / "q.png") == (1000, 400)


class TestNoHarm:
    def test_identity_model_is_harmless_and_a_darkening_one_is_caught(self) -> None:
        img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        identity = derain.create_model("efderain-tiny", identity_init=True)
        with torch.no_grad():
            identity.outc.weight.zero_()  # kernels: the centre tap (outc's bias)
            identity.conv_final.weight.mul_(0)
            for c in range(3):
                identity.conv_final.weight[c, c, 1, 1] = 1.0  # exactly the identity
        row = measure_noharm(identity, [img], "x", precision="fp32")
        assert row.psnr_mean == row.psnr_min == 100.0 and row.shift_r == row.shift_b == 0 and row.grey_spread_max == 0
        with torch.no_grad():
            identity.conv_final.weight[2, 2, 1, 1] = 0.9  # blue lowered by 10 %
        row = measure_noharm(identity, [img], "x", precision="fp32")
        assert row.shift_r == 0 and -14 < row.shift_b < -11 and row.psnr_mean < 48  # Y weighs blue least: the shift shows it
        assert row.grey_spread_max == 0  # grey in, grey out: whatever the network's tint
        assert 1 < row.near_grey_spread_mean and 20 < row.near_grey_spread_max < 26  # near-grey 240 -> (240, 240, 217)

    def test_worst_image_and_judged_rainy(self) -> None:
        """The row names the image of the minimum; a model with an image gate counts the images it judges rainy (a
        judgement forced wide open: all of them; shut: none, and each comes back exactly), one without has no count."""

        class DarkenBright(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.where(x.mean() > 0.5, x - 0.05, x)

        rng = np.random.default_rng(0)
        dark, bright = (rng.integers(lo, lo + 60, (32, 40, 3), dtype=np.uint8) for lo in (20, 180))
        row = measure_noharm(DarkenBright(), [dark, bright], "x", precision="fp32", names=["dark.png", "bright.png"])
        assert row.worst == "bright.png" and row.psnr_min < 40 and row.judged_rainy is None
        assert measure_noharm(DarkenBright(), [dark, bright], "x", precision="fp32").worst == ""
        torch.manual_seed(0)
        judging = derain.create_model("efderain-tiny", gate=True, gate_global=True)
        with torch.no_grad():
            judging.gate_global.weight.zero_()
            judging.gate_global.bias.fill_(3.0)
        assert measure_noharm(judging, [dark, bright], "x", precision="fp32").judged_rainy == 2
        with torch.no_grad():
            judging.gate_global.bias.fill_(-3.0)
        shut = measure_noharm(judging, [dark, bright], "x", precision="fp32")
        assert shut.judged_rainy == 0 and shut.psnr_min == 100.0

    def test_sets_and_cli(self, tmp_path: Path) -> None:
        data = _pair_folder(tmp_path / "data", n=3)
        assert [p.name for p in rain_free_images(data)] == ["0.png", "1.png", "2.png"]  # the clean side
        assert [p.name for p in rain_free_images(f"{data}@last2")] == ["1.png", "2.png"]
        assert [p.name for p in rain_free_images(data / "clean")] == ["0.png", "1.png", "2.png"]
        with pytest.raises(ValueError, match="@lastN"):
            rain_free_images(f"{data}@lastx")
        rows = run_noharm(["default"], [f"{data}@last2"])
        assert [(r.model, r.dataset, r.n) for r in rows] == [("default", "data (last2)", 2)]
        runner = derain.load_derainer("default")
        judged = [float(runner.judgement(read_image(p))[0, 0]) for p in rain_free_images(f"{data}@last2")]
        assert rows[0].judged_rainy == sum(j >= 0.5 for j in judged)  # the default judges images as a whole
        assert rows[0].worst in ("1.png", "2.png") or (rows[0].worst == "" and rows[0].psnr_min == 100.0)
        assert f"| default | data (last2) | 2 | {rows[0].psnr_mean:.2f} / {rows[0].psnr_min:.2f} | {rows[0].worst} |" in noharm_table(rows, "auto")
        out = CliRunner().invoke(cli, ["bench", "noharm", "--model", "fast", "--set", str(data), "--json", str(tmp_path / "n.json")])
        assert out.exit_code == 0, out.output
        assert json.loads((tmp_path / "n.json").read_text())[0]["n"] == 3
        out = CliRunner().invoke(cli, ["bench", "noharm", "--set", str(tmp_path / "missing")])
        assert out.exit_code != 0 and "not a folder" in out.output

    def test_web_jpeg_copies(self, tmp_path: Path, monkeypatch) -> None:
        """``jpeg=Q``: each set again as web-size JPEGs, scored against the JPEG (what the user's file holds)."""
        big = np.random.default_rng(1).integers(0, 256, (700, 900, 3), dtype=np.uint8)
        web = web_jpeg(big, 60)
        assert web.shape == (498, 640, 3) and web.dtype == np.uint8
        assert 10 < np.abs(web.astype(int) - np.asarray(Image.fromarray(big).resize((640, 498), Image.LANCZOS), int)).mean() < 60
        data = _pair_folder(tmp_path / "data#1", n=2)  # '#' and '@' in a folder name are the folder's
        seen = []
        rows = run_noharm(["fast"], [f"{data}@last1"], jpeg=80, progress=lambda r: seen.append(r.dataset))
        assert [(r.dataset, r.n) for r in rows] == [("data#1 (last1)", 1), ("data#1 (last1, JPEG q80 ≤640 px)", 1)] and len(seen) == 2
        with pytest.raises(InvalidArgument, match="JPEG quality"):
            run_noharm(["fast"], [str(data)], jpeg=0)
        scored = []
        monkeypatch.setattr(noharm, "measure_noharm", lambda model, images, name, *a: scored.append((name, images)))
        run_noharm(["fast"], [str(data)], jpeg=50, progress=lambda r: None)
        (name0, plain), (name1, web) = scored
        assert name1.endswith("JPEG q50 ≤640 px)") and all(np.array_equal(w, web_jpeg(p, 50)) for p, w in zip(plain, web))
        assert not np.array_equal(plain[0], web[0])  # the copies are what is scored
        out = CliRunner().invoke(cli, ["bench", "noharm", "--model", "fast", "--set", str(data), "--jpeg", "101"])
        assert out.exit_code != 0 and "--jpeg" in out.output and "Traceback" not in out.output


class TestAblation:
    def test_in_domain_configs(self, tmp_path: Path) -> None:
        train_dir = _pair_folder(tmp_path / "RainTrainX", n=3)
        cfg = ablation_config("v4", 10, tmp_path / "runs", "efderain-tiny", in_domain=train_dir, holdout=1)
        assert [(s.kind, Path(s.path)) for s in cfg.sources] == [("paired", train_dir)]
        assert cfg.holdout == {str(train_dir): 1} and not cfg.validation.paired  # one hold-out: out of training, validated
        assert cfg.rainmix  # the variant's own recipe is kept
        with pytest.raises(ValueError, match="holdout"):
            in_domain_overrides(train_dir, 0)

    def test_in_domain_tiny_run(self, tmp_path: Path, shared_data: Path) -> None:
        train_dir = _pair_folder(tmp_path / "train", n=4)
        rows = run_ablation(2, tmp_path / "runs", [], "efderain-tiny", ["crop=32", "batch_size=2", "threads=2"],
                            variants=["v1", "v2"], in_domain=train_dir, holdout=2)
        assert [set(r.validation) for r in rows] == [{"train-holdout2_psnr", "train-holdout2_ssim", "mean_psnr"}] * 2

    def test_variant_configs(self, tmp_path: Path) -> None:
        cfgs = {v: ablation_config(v, 10, tmp_path, model="efderain-tiny") for v in ("v1", "v2", "v3", "v4")}
        assert {v: (c.iterations, c.decay_start, c.model) for v, c in cfgs.items()} == {v: (10, 5, "efderain-tiny") for v in cfgs}
        assert [(c.loss, c.rainmix) for c in cfgs.values()] == [("l1", False), ("l1", False), ("l1_ssim", False), ("l1_ssim", True)]
        assert cfgs["v1"].model_overrides == {"dilations": [1], "fusion": False} and not cfgs["v2"].model_overrides
        assert Path(cfgs["v3"].out_dir) == tmp_path / "v3"
        with pytest.raises(ValueError, match="variant"):
            ablation_config("v5", 10, tmp_path)

    @pytest.mark.slow
    def test_tiny_run_trains_scores_and_resumes(self, tmp_path: Path, shared_data: Path) -> None:
        test_dir = _pair_folder(tmp_path / "test")
        overrides = ["crop=32", "batch_size=2", "holdout={$DERAIN_DATA/RainTrainH_val: 1}", "validation.limit=1", "threads=2"]
        rows = run_ablation(2, tmp_path / "runs", [test_dir], "efderain-tiny", overrides)
        assert [r.variant for r in rows] == ["v1", "v2", "v3", "v4"]
        v1 = derain.load_model(tmp_path / "runs" / "v1" / "best.safetensors")
        assert v1.config.dilations == (1,) and not v1.config.fusion  # the variant's head really is v1
        assert derain.load_model(tmp_path / "runs" / "v2" / "best.safetensors").config.dilations == (1, 2, 3, 4)
        for r in rows:
            assert set(r.validation) >= {"JORDER_heavy5_psnr", "SIRR_val_psnr", "RainTrainH_val-holdout1_psnr", "mean_psnr"}
            assert 5 < r.test["test"]["psnr"] < 60 and r.ms > 0
        table = ablation_table(rows)
        assert all(f"\n| {v} | " in table for v in ("v1", "v2", "v3", "v4")) and "test (test)" in table
        # a second call resumes the finished run instead of training again
        v2 = tmp_path / "runs" / "v2"
        before = {f: (v2 / f).stat().st_mtime_ns for f in ("best.safetensors", "checkpoint.pt")}
        again = run_ablation(2, tmp_path / "runs", [], "efderain-tiny", [*overrides, "threads=1"], variants=["v2"])  # threads: speed only
        assert {f: (v2 / f).stat().st_mtime_ns for f in before} == before
        assert [line.split(",")[0] for line in (v2 / "train_log.csv").read_text().splitlines()[1:]] == ["2"]  # not logged twice
        assert again[0].iterations == 2 and again[0].validation["mean_psnr"] == pytest.approx(rows[1].validation["mean_psnr"])
        # a folder holding another config's run is refused, not silently reused
        with pytest.raises(ValueError, match="another config.*crop"):
            run_ablation(2, tmp_path / "runs", [], "efderain-tiny", [*overrides, "crop=48"], variants=["v2"])


class TestExplain:
    @staticmethod
    def _identity_model() -> torch.nn.Module:
        model = derain.create_model("efderain-cpu")  # identity init: kernels = outc bias = centre tap
        with torch.no_grad():
            model.outc.weight.zero_()
        return model

    def test_identity_kernels(self) -> None:
        image = np.random.default_rng(0).random((40, 56, 3), dtype=np.float32)
        e = explain_image(self._identity_model(), image, points=[(10, 20)])
        assert np.allclose(e.centre_weight, 1.0) and np.allclose(e.entropy, 0.0, atol=1e-6)
        assert np.allclose(e.output, image, atol=0.02)
        fused = e.fused_footprint(10, 20)
        assert fused.shape == (9, 9) and fused[4, 4] == pytest.approx(1.0, abs=0.02)
        assert np.abs(fused).sum() == pytest.approx(abs(fused[4, 4]))
        assert e.points == [(10, 20, "given")]

    @pytest.mark.parametrize("centre", [False, True])
    def test_kernels_are_the_ones_the_output_is_filtered_with(self, centre: bool) -> None:
        """One dilation, no fusion, no gate: every output pixel is its kernel over the 3×3 neighbourhood of the input
        (reflected at the edges, as the forward pass's border reflects it), on either canvas layout."""
        from derain.bench.explain import predict_kernels

        model = derain.create_model("efderain-cpu", fusion=False, dilations=(1,), gate=False, gate_global=False,
                                    unit_kernels=True, centre_canvas=centre)
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        image = np.random.default_rng(1).random((37, 50, 3), dtype=np.float32)
        kernels, output = predict_kernels(model.eval(), image)
        assert kernels.shape == (3, 3, 3, 37, 50) and np.abs(kernels[:, 1, 1] - 1).max() > 0.01  # not the identity
        padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="reflect")
        expected = sum(kernels[:, i, j].transpose(1, 2, 0) * padded[i : i + 37, j : j + 50] for i in range(3) for j in range(3))
        np.testing.assert_allclose(output, np.clip(expected, 0, 1), atol=1e-4)

    def test_maps(self) -> None:
        k = np.zeros((3, 3, 3, 1, 2))
        k[:, 1, 1, 0, 0] = 1.0  # identity at pixel 0
        k[:, :, :, 0, 1] = 1 / 9  # box filter at pixel 1
        assert np.allclose(centre_weight_map(k), [[1.0, 1 / 9]])
        assert np.allclose(kernel_entropy_map(k), [[0.0, 1.0]])
        assert dilated_footprint(np.ones((3, 3)), 3).sum() == 9 and dilated_footprint(np.ones((3, 3)), 3).shape == (7, 7)

    def test_pick_points_finds_the_changed_pixels(self) -> None:
        rng = np.random.default_rng(1)
        image = rng.random((96, 96, 3)).astype(np.float32)
        output = image.copy()
        output[30, 40] += 0.9  # the two pixels the "model" changed most
        output[70, 20] += 0.5
        points = pick_points(image, output, n=4)
        assert points[:2] == [(30, 40, "rain"), (70, 20, "rain")]
        assert [p[2] for p in points[2:]] == ["background", "background"]
        flat = np.full((96, 96, 3), 0.5, np.float32)  # no texture anywhere: no "background" point to show
        assert [p[2] for p in pick_points(flat, flat + 0.1 * (np.arange(96) == 50)[None, :, None], n=4)] == ["rain", "rain"]

    def test_plot_and_cli(self, tmp_path: Path) -> None:
        _need_matplotlib()
        img = tmp_path / "in.png"
        Image.fromarray((np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)).save(img)
        e = explain_image(derain.create_model("default", pretrained=True), np.asarray(Image.open(img), np.float32) / 255, n_points=2)
        plot_explanation(e, tmp_path / "direct.png")
        assert _png_size(tmp_path / "direct.png")[0] > 500
        out = CliRunner().invoke(cli, ["explain", str(img), "-o", str(tmp_path / "fig.png"), "--point", "10,20", "--point", "30,40"])
        assert out.exit_code == 0, out.output
        assert "1: given y=10 x=20 centre weight" in out.output and _png_size(tmp_path / "fig.png")[0] > 500

    @pytest.mark.parametrize(
        "args, message",
        [(["--point", "3"], "Y,X"), (["--point", "500,2"], "outside"), (["--model", "prenet"], "no bundled weights"),
         (["--weights", "PRENET"], "EfDeRain")],
    )
    def test_cli_errors(self, tmp_path: Path, args: list[str], message: str) -> None:
        _need_matplotlib()
        if "PRENET" in args:
            derain.save_model(derain.create_model("prenet"), tmp_path / "prenet.safetensors")
            args = [str(tmp_path / "prenet.safetensors") if a == "PRENET" else a for a in args]
        img = tmp_path / "in.png"
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
        out = CliRunner().invoke(cli, ["explain", str(img), "-o", str(tmp_path / "fig.png"), *args])
        assert out.exit_code != 0 and message in out.output and "Traceback" not in out.output
        assert not (tmp_path / "fig.png").exists()
