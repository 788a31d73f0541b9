"""The compiled inference path (derain.inference.compiled): equal to eager, eager where it cannot compile."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import derain
from derain.inference.compiled import can_compile, compile_model, is_compiled
from derain.inference.derainer import Derainer


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return derain.create_model("efderain-tiny")


class TestCompileModel:
    """Mechanics, with dynamo's ``eager`` backend (graph capture without code generation: quick)."""

    def test_same_output_and_marked(self) -> None:
        model = compile_model(_tiny().eval(), backend="eager")
        reference = _tiny().eval()
        x = torch.rand(1, 3, 40, 56)
        with torch.inference_mode():
            assert torch.equal(model(x), reference(x))
        assert is_compiled(model) and not is_compiled(reference)

    def test_gradients_run_eager(self) -> None:
        model = compile_model(_tiny(), backend="eager")
        x = torch.rand(1, 3, 32, 32)
        model(x).mean().backward()  # training never runs the frozen graph
        assert model.outc.weight.grad is not None

    def test_rejects_other_architectures(self) -> None:
        prenet = derain.create_model("prenet")
        assert not can_compile(prenet)
        with pytest.raises(TypeError, match="EfDeRain"):
            compile_model(prenet)
        with pytest.raises(ValueError, match="EfDeRain"):
            Derainer(prenet, compile=True)

    def test_derainer_leaves_the_callers_module_alone(self) -> None:
        model = _tiny()  # training mode, fp32, on the CPU: Derainer would otherwise use it as it is
        runner = Derainer(model, precision="fp32", compile=True)
        assert runner.model is not model and is_compiled(runner.model)
        assert "features" not in model.__dict__ and model.training


def _without_compiler() -> object:
    import torch._inductor.config as inductor

    return inductor.patch({"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False})


@pytest.mark.slow
class TestCompiledInference:
    """Inductor for real: every bundled model equals its eager twin; eager where no compiler is found."""

    @pytest.mark.parametrize("name", derain.list_models(pretrained=True))
    def test_equals_eager(self, name: str) -> None:
        from torch._dynamo.utils import counters

        graphs = counters["stats"]["unique_graphs"]
        eager = Derainer(name, precision="auto")
        compiled = Derainer(name, precision="auto", compile=True)
        rng = np.random.default_rng(0)
        for shape in ((96, 128, 3), (70, 90, 3)):  # a second size: the recompiled (dynamic) graph
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
                out = compiled(image)
            diff = np.abs(out.astype(int) - eager(image).astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01, (shape, diff.max(), diff.mean())
        assert is_compiled(compiled.model) and counters["stats"]["unique_graphs"] >= graphs + 2  # both sizes compiled

    def test_falls_back_without_a_compiler(self) -> None:
        eager = Derainer(_tiny(), precision="fp32")
        compiled = Derainer(_tiny(), precision="fp32", compile=True)
        x = torch.rand(1, 3, 48, 64)
        with _without_compiler(), pytest.warns(RuntimeWarning, match="running eager"):
            out = compiled.run_tensor(x)
        assert torch.equal(out, eager.run_tensor(x))
        assert not is_compiled(compiled.model)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once: later calls run eager quietly
            assert torch.equal(compiled.run_tensor(x), out)


def test_cli_compile_is_for_the_torch_backend(tmp_path) -> None:
    from click.testing import CliRunner

    from PIL import Image

    from derain.cli.main import cli

    photo = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (90, 120, 200)).save(photo)
    result = CliRunner().invoke(cli, ["run", str(photo), "-o", str(tmp_path / "out"), "--compile", "--backend", "onnxruntime"])
    assert result.exit_code == 2 and "--compile applies to the torch backend" in result.output
    assert not (tmp_path / "out").exists()
