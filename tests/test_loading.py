"""The one way to a runner (``derain.inference.loading.load_derainer``), the error hierarchy, and how the
command line reports the user's errors (one line) and its own bugs (one line that says so)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import derain
from derain.errors import DerainError, InvalidArgument, UserError
from derain.inference.derainer import Derainer
from derain.inference.loading import load_derainer, load_source, parse_source
from derain.inference.onnx_export import OnnxDerainer, export_onnx
from derain.io.images import ImageReadError
from derain.models.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = derain.create_model("efderain-tiny", identity_init=True)
    weights = folder / "tiny.safetensors"
    derain.save_model(model, weights)
    onnx = export_onnx(model, folder / "tiny.onnx")
    return {"weights": weights, "onnx": onnx}


class TestParseSource:
    def test_forms(self, files, tmp_path):
        assert parse_source("fast") == ("fast", None, None)
        assert parse_source(None) == (None, None, None)
        assert parse_source("prenet=peers/Rain100L.pth") == ("prenet", "peers/Rain100L.pth", None)
        assert parse_source(files["weights"]) == (None, str(files["weights"]), None)
        assert parse_source(str(files["onnx"])) == (None, None, str(files["onnx"]))
        assert parse_source("efderain-tiny", files["weights"]) == ("efderain-tiny", str(files["weights"]), None)

    def test_a_missing_file_is_named_as_one(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.safetensors: no such file"):
            parse_source(str(tmp_path / "nope.safetensors"))

    @pytest.mark.parametrize("source, weights", [("model.onnx", "w.safetensors"), ("prenet=a.pth", "b.pth")])
    def test_two_weights_are_refused(self, source, weights):
        with pytest.raises(InvalidArgument, match="leave out"):
            parse_source(source, weights)


class TestLoadDerainer:
    def test_every_source_gives_the_same_runner_output(self, files):
        x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
        module = derain.load_model(files["weights"])
        runners = [
            load_derainer(module, precision="fp32"),
            load_derainer(files["weights"], precision="fp32"),
            load_derainer(str(files["weights"]), precision="fp32"),
            load_derainer("efderain-tiny", weights=files["weights"], precision="fp32"),
            load_derainer(f"efderain-tiny={files['weights']}", precision="fp32"),
        ]
        reference = runners[0].run_tensor(x)
        for runner in runners[1:]:
            assert isinstance(runner, Derainer) and torch.equal(runner.run_tensor(x), reference)
        assert runners[0].model is module and runners[1].model is not module  # a module is used as it is
        onnx = load_derainer(files["onnx"])
        assert isinstance(onnx, OnnxDerainer) and onnx.name == "tiny.onnx" and onnx.params == runners[0].params
        torch.testing.assert_close(onnx.run_tensor(x), reference, rtol=0, atol=1e-3)
        assert load_derainer(onnx) is onnx  # a runner as it is
        assert isinstance(load_derainer(module, backend="onnxruntime"), OnnxDerainer)

    def test_none_is_the_bundled_default(self):
        runner = load_derainer(precision="fp32")
        assert runner.name == "default" and runner.judges_images

    @pytest.mark.parametrize(
        "kwargs, option",
        [
            ({"backend": "tensorrt"}, "--backend"),
            ({"device": "foo"}, "--device"),
            ({"backend": "onnxruntime", "precision": "bf16"}, "--precision"),
            ({"backend": "onnxruntime", "compile": True}, "--compile"),
            ({"backend": "onnxruntime", "strength": 0.5}, "--strength"),
        ],
    )
    def test_options_that_do_not_fit_name_their_option(self, kwargs, option):
        with pytest.raises(InvalidArgument) as err:
            load_derainer(derain.create_model("efderain-tiny"), **kwargs)
        assert err.value.option == option

    def test_errors_are_the_users(self, files, tmp_path):
        (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
        for source, kind in [("nope", InvalidArgument), ("efderain-tiny", InvalidArgument), (str(tmp_path / "photo.jpg"), CheckpointError)]:
            with pytest.raises(kind) as err:
                load_source(source)
            assert isinstance(err.value, UserError) and isinstance(err.value, DerainError)
        assert issubclass(ImageReadError, UserError) and issubclass(CheckpointError, ValueError)


def test_the_service_and_quality_bench_run_an_onnx_file(files, tmp_path):
    """Every user of the seam takes an exported file: the service names it, the quality bench counts its weights."""
    from derain.service import create_app

    with TestClient(create_app(str(files["onnx"]))) as client:
        info = client.get("/v1/models").json()["models"][0]
        assert info["name"] == "tiny.onnx" and info["params"] > 0 and info["precision"] == "fp32"
    from derain.bench.quality import spec_label

    assert spec_label(str(files["onnx"])) == f"{files['onnx'].parent.name}/tiny.onnx"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from derain.cli.main import main; main()", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


class TestCommandLineErrors:
    @pytest.mark.parametrize(
        "args, code, words",
        [
            (["run", "x.jpg", "--model", "nope"], 1, "unknown model 'nope'"),
            (["run", "x.jpg", "--model", "nope.safetensors"], 1, "nope.safetensors: no such file"),
            (["run", "x.jpg", "--backend", "onnxruntime", "--device", "foo"], 2, "--device"),
            (["run", "x.jpg", "--strength", "0.5", "--backend", "onnxruntime"], 2, "--strength other than auto needs the torch backend"),
            (["run", "x.jpg", "--tile", "40"], 2, "more than twice the tile overlap"),
        ],
    )
    def test_the_users_errors_are_one_line(self, tmp_path, args, code, words):
        from PIL import Image

        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.jpg")
        proc = subprocess.run([sys.executable, "-m", "derain.cli.main", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == code and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr

    @pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
    def test_a_bug_says_so_in_one_line_and_verbose_shows_the_traceback(self, tmp_path):
        """An exception that is not the user's (here a registry that breaks) is reported as derain's bug."""
        code = ("import derain.models.registry as r, derain\n"
                "def broken(*a, **k): raise RuntimeError('the registry broke')\n"
                "derain.list_models = broken\n"
                "from derain.cli.main import main\n"
                "import sys; main(sys.argv[1:])\n")
        for verbose in (False, True):
            args = ["-v", "models"] if verbose else ["models"]
            proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
            assert proc.returncode == 1
            assert "internal error (RuntimeError: the registry broke): a bug in derain" in proc.stderr, proc.stderr
            assert ("Traceback" in proc.stderr) == verbose
