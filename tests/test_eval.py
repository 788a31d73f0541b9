"""`derain eval` and `derain.evaluation.evaluate`: results, files, errors, and golden numbers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import derain
from derain.evaluation.evaluate import evaluate
from derain.metrics import calculate_psnr, calculate_ssim


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """Three rainy/clean pairs (plain layout) with known input PSNR."""
    rng = np.random.default_rng(1)
    root = tmp_path / "set"
    for sub in ("rainy", "clean"):
        (root / sub).mkdir(parents=True)
    for i, name in enumerate(["b", "a", "c"]):
        clean = rng.integers(30, 220, (24, 40, 3), dtype=np.uint8)
        rainy = np.clip(clean.astype(int) + rng.integers(0, 2 + 10 * i, clean.shape), 0, 255).astype(np.uint8)
        Image.fromarray(clean).save(root / "clean" / f"{name}.png")
        Image.fromarray(rainy).save(root / "rainy" / f"{name}.png")
    return root


@pytest.fixture()
def tiny_weights(tmp_path) -> Path:
    torch.manual_seed(0)
    return derain.save_model(derain.create_model("efderain-tiny", identity_init=True), tmp_path / "tiny.safetensors")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derain.cli.main", *args], capture_output=True, text=True, timeout=1200)


def test_identity_model_scores_the_input(dataset) -> None:
    """An identity model's prediction is the input: PSNR/SSIM equal the input's, computed independently."""
    result = evaluate(Identity(), dataset, "both", progress=False, precision="fp32")
    assert result.n == 3 and [im.name for im in result.images] == ["a", "b", "c"]
    for im in result.images:
        rainy = np.asarray(Image.open(dataset / "rainy" / f"{im.name}.png"))
        clean = np.asarray(Image.open(dataset / "clean" / f"{im.name}.png"))
        y = im.scores["y"]
        assert y["psnr"] == pytest.approx(calculate_psnr(rainy, clean, test_y_channel=True), abs=1e-9)
        assert y["ssim"] == pytest.approx(calculate_ssim(rainy, clean, test_y_channel=True), abs=1e-9)
        assert y["psnr"] == pytest.approx(y["input_psnr"], abs=1e-9)
        rgb = im.scores["efderain-rgb"]
        assert rgb["psnr"] == pytest.approx(rgb["input_psnr"], abs=1e-9)
    means = result.metrics["y"]
    assert means["psnr"] == pytest.approx(np.mean([im.scores["y"]["psnr"] for im in result.images]))


def test_limit_and_sorted_order(dataset) -> None:
    result = evaluate(Identity(), dataset, "y", limit=2, progress=False, precision="fp32")
    assert [im.name for im in result.images] == ["a", "b"]


def test_cli_json_csv_save_dir(dataset, tiny_weights, tmp_path) -> None:
    proc = cli("eval", str(dataset), "--weights", str(tiny_weights), "--protocol", "both", "--json",
               "--csv", str(tmp_path / "r.csv"), "--save-dir", str(tmp_path / "pred"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # stdout holds only the JSON object
    assert data["n"] == 3
    for protocol in ("y", "efderain-rgb"):
        assert set(data["metrics"][protocol]) >= {"psnr", "ssim", "input_psnr", "input_ssim"}
    assert data["seconds_per_image"]["median"] > 0 and data["threads"] == 1
    with open(tmp_path / "r.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert float(rows[0]["y_psnr"]) == pytest.approx(data["metrics"]["y"]["psnr"] * 3 - sum(float(r["y_psnr"]) for r in rows[1:]), abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["a.png", "b.png", "c.png"]


def test_cli_prepares_the_model_it_loads(dataset, tiny_weights, monkeypatch) -> None:
    """`derain eval --precision bf16` runs the model prepared for bf16 (as `derain run` does), not cast per call."""
    from click.testing import CliRunner

    import derain.inference.derainer as derainer_module
    from derain.cli.main import cli as derain_cli

    prepared = []
    real = derainer_module.prepare_model
    monkeypatch.setattr(derainer_module, "prepare_model", lambda m, p, d="cpu": prepared.append(p) or real(m, p, d))
    result = CliRunner().invoke(derain_cli, ["eval", str(dataset), "--weights", str(tiny_weights), "--precision", "bf16", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert prepared == ["bf16"] and "| y |" in result.output


def test_cli_without_a_model_evaluates_the_bundled_default(dataset) -> None:
    from click.testing import CliRunner

    from derain.cli.main import cli as derain_cli

    result = CliRunner().invoke(derain_cli, ["eval", str(dataset), "--limit", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "default"


def test_cli_table(dataset, tiny_weights) -> None:
    proc = cli("eval", str(dataset), "--weights", str(tiny_weights), "--limit", "1")
    assert proc.returncode == 0, proc.stderr
    assert "| y |" in proc.stdout and "n=1" in proc.stdout and "seconds per image" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "efderain-tiny"], "no bundled weights"),
        (["--weights", "missing.safetensors"], "no such file"),
        (["--model", "nope", "--weights", "x"], "x: no such file"),
    ],
)
def test_cli_errors(dataset, args, message) -> None:
    proc = cli("eval", str(dataset), *args)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bad_dataset(tmp_path, tiny_weights) -> None:
    proc = cli("eval", str(tmp_path / "none"), "--weights", str(tiny_weights))
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    (tmp_path / "rainy").mkdir()
    (tmp_path / "clean").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "rainy" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "rainy" / "y.png")
    Image.new("RGB", (8, 9)).save(tmp_path / "clean" / "x.png")
    proc = cli("eval", str(tmp_path), "--weights", str(tiny_weights), "--strict")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and lines[-3].startswith("Error: ") and "2 problem(s)" in lines[-3], lines  # one per line
    assert "y.png has no clean partner" in lines[-2] and "size mismatch" in lines[-1], lines
    proc = cli("eval", str(tmp_path), "--weights", str(tiny_weights))
    assert proc.returncode == 1 and "size mismatch" in proc.stderr and "x.png" in proc.stderr


def test_rain100l_input_golden(shared_dataset) -> None:
    """The field's sanity value: Rain100L input vs clean, protocol y, 26.90 dB."""
    result = evaluate(Identity(), shared_dataset("Rain100L"), "y", progress=False, precision="fp32")
    assert result.n == 100
    assert result.metrics["y"]["input_psnr"] == pytest.approx(26.90, abs=0.005)


@pytest.mark.slow
def test_prenet_rain100l(shared_dataset, shared_data) -> None:
    """PReNet's official weights through `derain eval`: 37.65 ± 0.05 dB / 0.980 ± 0.002 (independent harness)."""
    proc = cli("eval", str(shared_dataset("Rain100L")), "--model", "prenet",
               "--weights", str(shared_data / "peers" / "prenet" / "Rain100L.pth"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    y = json.loads(proc.stdout)["metrics"]["y"]
    assert y["psnr"] == pytest.approx(37.65, abs=0.05)
    assert y["ssim"] == pytest.approx(0.980, abs=0.002)
