"""ONNX export and the ONNX Runtime backend: same output as torch (within 1e-3) at any size, from one file."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import derain  # noqa: E402
from derain.inference.derainer import Derainer  # noqa: E402
from derain.inference.onnx_export import OnnxDerainer, export_onnx  # noqa: E402
from derain.ops.padding import pad_canvas  # noqa: E402

pytestmark = pytest.mark.precision  # floating-point paths compared: CI runs these under capped instruction sets too


TOL = 1e-3
SIZES = [(1, 37, 53), (2, 64, 48), (2, 53, 37), (1, 5, 7)]  # (batch, H, W): odd, even, tiny (replicate padding)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def perturbed(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A registered model with identity init plus small random weights, so the output depends on them."""
    model = derain.create_model(name, **overrides)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


@pytest.fixture(scope="module", params=[("efderain-tiny", False), ("efderain-cpu", False), ("efderain-cpu", True)],
                ids=["efderain-tiny", "efderain-cpu", "efderain-cpu-centred"])
def exported(request, tmp_path_factory):
    name, centre = request.param
    model = perturbed(name, identity_init=True, centre_canvas=centre)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{name}-{int(centre)}.onnx")
    return model, path


def test_onnxruntime_matches_torch_at_several_sizes_from_one_file(exported):
    model, path = exported
    runner = OnnxDerainer(path, threads=1)
    reference = Derainer(model, precision="fp32")
    gen = torch.Generator().manual_seed(1)
    for b, h, w in SIZES:
        x = torch.rand(b, 3, h, w, generator=gen)
        out = runner.run_tensor(x)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert (out - reference.run_tensor(x)).abs().max().item() <= TOL, (b, h, w)
        # Before clamping too: the exported core plus the wrapper's padding is the model's forward.
        # the model's canvas: its reflect border (EfDeRain.border), then the padding to the multiple, centred or not
        assert (runner.border, runner.centred, runner.tile_congruent) == (model.border, model.centred, model.centred)
        padded, (top, left) = pad_canvas(x, runner.border, runner.multiple, runner.centred)
        (raw,) = runner.session.run(None, {runner.input_name: padded.numpy()})
        with torch.no_grad():
            expected = model(x)
        assert np.abs(raw[:, :, top : top + h, left : left + w] - expected.numpy()).max() <= TOL
        assert 0.02 < (expected - x).abs().mean() or (b, h, w) == (1, 5, 7)  # the weights matter (not an identity)


def test_file_has_dynamic_axes_and_metadata(exported):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "image" and out.name == "derained"
    assert inp.shape[1] == 3 and all(isinstance(d, str) for d in (inp.shape[0], inp.shape[2], inp.shape[3]))
    meta = session.get_modelmeta().custom_metadata_map
    assert int(meta["derain.multiple"]) == model.config.multiple
    assert (meta["derain.border"], meta["derain.centred"]) == (str(model.border), str(int(model.centred)))
    assert meta["derain.architecture"] == "efderain"


def test_numpy_call_and_tiling_match_derainer(exported):
    model, path = exported
    runner = OnnxDerainer(path, threads=1)
    image = np.random.default_rng(0).random((41, 59, 3), dtype=np.float32)
    expected = Derainer(model, precision="fp32")(image)
    assert np.abs(runner(image) - expected).max() <= TOL
    tiled = runner.run_tiled(torch.from_numpy(image).permute(2, 0, 1)[None], tile=32, overlap=4)
    assert tiled.shape == (1, 3, 41, 59)


def test_from_model_and_prenet_exports_whole():
    model = perturbed("prenet", stages=2, channels=8, res_blocks=1)
    runner = OnnxDerainer.from_model(model, threads=1)
    assert runner.multiple == 1
    x = torch.rand(2, 3, 29, 31)
    assert (runner.run_tensor(x) - Derainer(model, precision="fp32").run_tensor(x)).abs().max().item() <= TOL


@pytest.mark.parametrize("name", derain.list_models(pretrained=True))
def test_every_bundled_model_exports(name):
    """Each bundled model (its real weights, gates or none) runs in ONNX Runtime as in torch, at an odd size."""
    model = derain.create_model(name, pretrained=True)
    runner = OnnxDerainer.from_model(model, threads=1)
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2))
    assert (runner.run_tensor(x) - Derainer(model, precision="fp32").run_tensor(x)).abs().max().item() <= TOL


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        OnnxDerainer(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxDerainer(junk)


@pytest.mark.slow
def test_dynamo_exporter_gives_the_same_result(tmp_path):
    # A minimal config: the torch.export-based exporter is slow on the unrolled pixel filter.
    model = perturbed("efderain-tiny", widths=(4, 4, 4), depth=1, kernel_level=0, dilations=(1,), fusion=False)
    path = export_onnx(model, tmp_path / "dynamo.onnx", dynamo=True)
    runner = OnnxDerainer(path, threads=1)
    for b, h, w in SIZES[:2]:
        x = torch.rand(b, 3, h, w)
        assert (runner.run_tensor(x) - Derainer(model, precision="fp32").run_tensor(x)).abs().max().item() <= TOL


# --- CLI: derain export, derain run --backend onnxruntime -------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "derain.cli.main", *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    derain.save_model(perturbed("efderain-tiny", identity_init=True), path)
    return path


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_export_cli_writes_a_loadable_verified_file(weights, tmp_path):
    out = tmp_path / "model.onnx"
    proc = cli("export", "--weights", str(weights), "--format", "onnx", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stderr
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)  # sides multiples of 16
    assert session.run(None, {"image": x})[0].shape == x.shape
    assert [p for p in os.listdir(tmp_path) if p != "model.onnx"] == []  # no temporary files left

    proc = cli("export", "--weights", str(weights), "-o", str(out))
    assert proc.returncode == 1 and "--overwrite" in proc.stderr


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_run_backend_onnxruntime_matches_torch(weights, tmp_path):
    from PIL import Image

    photo = tmp_path / "rain.png"
    rgb = np.random.default_rng(3).integers(0, 256, (49, 65, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(photo)
    common = ["run", str(photo), "--weights", str(weights), "--threads", "1"]
    proc = cli(*common, "-o", str(tmp_path / "torch"), "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    proc = cli(*common, "-o", str(tmp_path / "ort"), "--backend", "onnxruntime")
    assert proc.returncode == 0, proc.stderr
    a = np.asarray(Image.open(tmp_path / "torch" / "rain.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "ort" / "rain.png"), dtype=np.int16)
    assert a.shape == b.shape == rgb.shape
    assert np.abs(a - b).max() <= 2  # within 2/255
    assert np.abs(a - rgb).mean() > 1  # the model changed the image: the comparison means something

    proc = cli(*common, "-o", str(tmp_path / "bad"), "--backend", "onnxruntime", "--precision", "bf16")
    assert proc.returncode == 2 and "fp32 only" in proc.stderr
