"""The compiled inference path (derain.inference.compiled): equal to eager, eager where it cannot compile."""

from __future__ import annotations

import copy
import logging
import pickle

import numpy as np
import pytest
import torch

import derain
from derain.inference.compiled import CompileError, compile_model, is_compiled
from derain.inference.derainer import Derainer

pytestmark = pytest.mark.precision  # floating-point paths compared: CI runs these under capped instruction sets too


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return derain.create_model("efderain-tiny")


@pytest.fixture(autouse=True)
def _fresh_compiler() -> None:
    """Each test starts below the compiler's per-process recompile limit (shared by every EfDeRain instance)."""
    torch._dynamo.reset()


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class TestCompileModel:
    """Mechanics, with dynamo's ``eager`` backend (graph capture without code generation: quick)."""

    @staticmethod
    def compiled_and_reference() -> tuple[torch.nn.Module, torch.nn.Module]:
        return compile_model(_tiny().eval(), backend="eager"), _tiny().eval()

    def test_same_output_from_a_captured_graph(self) -> None:
        model, reference = self.compiled_and_reference()
        x = torch.rand(1, 3, 40, 56)
        graphs = _graphs()
        with torch.inference_mode():
            assert torch.equal(model(x), reference(x))
        assert _graphs() == graphs + 1
        assert is_compiled(model) and not is_compiled(reference)

    def test_a_batch_runs_on_the_single_image_graph(self) -> None:
        model, reference = self.compiled_and_reference()
        x = torch.rand(3, 3, 40, 56)
        graphs = _graphs()
        with torch.inference_mode():
            assert torch.equal(model(x[:1]), reference(x[:1]))
            torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)
        assert _graphs() == graphs + 1

    def test_gradients_run_eager(self) -> None:
        model = compile_model(_tiny(), backend="eager")
        graphs = _graphs()
        model(torch.rand(1, 3, 32, 32)).mean().backward()  # training never runs the frozen graph
        assert model.outc.weight.grad is not None and _graphs() == graphs

    def test_a_copy_runs_its_own_weights(self) -> None:
        model = compile_model(_tiny().eval(), backend="eager")
        twin = copy.deepcopy(model)
        with torch.no_grad():
            for p in twin.parameters():
                p.mul_(0.5)
        x = torch.rand(1, 3, 32, 32)
        assert twin.model is not model.model
        with torch.inference_mode():
            expected = twin.model.features(x)[0]  # the copy's eager stage, on its halved weights
            assert torch.equal(twin.features(x)[0], expected)
            assert not torch.equal(model.features(x)[0], expected)
            assert torch.equal(model.features(x)[0], model.model.features(x)[0])
        assert is_compiled(twin)

    def test_a_copy_of_a_structure_holding_the_runner_twice_holds_one_copy(self) -> None:
        model = compile_model(_tiny().eval(), backend="eager")
        first, second = copy.deepcopy([model, model])
        assert first is second and first is not model and first.model is not model.model

    def test_attributes_set_on_the_runner_are_the_models(self) -> None:
        model = _tiny().eval()
        runner = compile_model(model, backend="eager")
        runner.filter_implementation = "reference"
        assert model.filter_implementation == "reference" and "filter_implementation" not in runner.__dict__
        runner.note = 1  # a new one too: every attribute but the runner's own is the model's
        assert model.note == 1 and runner.note == 1
        del runner.note
        assert not hasattr(model, "note")
        runner.eval()
        assert not runner.training and not model.training and runner.train().training and model.training

    def test_the_runner_declares_the_staged_interface(self) -> None:
        from derain.models.interface import _MEMBERS, StagedModel, is_staged

        assert {"config", "features", "full_resolution", "border", "image_gate"} <= set(_MEMBERS)
        assert set(StagedModel.__annotations__) <= set(_MEMBERS)
        assert is_staged(compile_model(_tiny(), backend="eager")) and not is_staged(derain.create_model("prenet"))

    def test_pickling_is_refused(self) -> None:
        with pytest.raises(pickle.PicklingError, match="state_dict"):
            pickle.dumps(compile_model(_tiny(), backend="eager"))

    def test_rejects_other_architectures(self) -> None:
        prenet = derain.create_model("prenet")
        with pytest.raises(CompileError, match="EfDeRain"):
            compile_model(prenet)
        with pytest.raises(CompileError, match="EfDeRain"):
            Derainer(prenet, compile=True)

    def test_derainer_leaves_the_callers_module_alone(self) -> None:
        model = _tiny()  # training mode, fp32, on the CPU: Derainer would otherwise use it as it is
        before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
        runner = Derainer(model, precision="bf16", compile=True)
        assert is_compiled(runner.model) and runner.model is not model
        assert runner.model.model is not model  # the runner wraps a copy, not the caller's module
        assert not any(p is q for p in runner.model.parameters() for q in model.parameters())
        assert model.training and all(not m.__dict__.get("_forward_hooks") for m in model.modules())
        after = model.state_dict()
        assert after.keys() == before.keys()
        for name, (value, stride) in before.items():  # dtype, layout and every bit as they were
            assert after[name].dtype == value.dtype and after[name].stride() == stride and torch.equal(after[name], value), name

    def test_derainer_names_the_compiled_model(self) -> None:
        model = _tiny()
        assert Derainer(model, precision="fp32", compile=True).name == Derainer(model, precision="fp32").name == "efderain-tiny"
        del model.registry_name
        assert Derainer(model, precision="fp32", compile=True).name == type(model).__name__ != "CompiledModel"


def _without_compiler() -> object:
    import torch._inductor.config as inductor

    return inductor.patch({"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False})


@pytest.mark.slow
class TestCompiledInference:
    """Inductor for real: every bundled model equals its eager twin; eager where no compiler is found."""

    @pytest.mark.parametrize("name", derain.list_models(pretrained=True))
    def test_equals_eager(self, name: str, caplog: pytest.LogCaptureFixture) -> None:
        graphs = _graphs()
        eager = Derainer(name, precision="auto")
        compiled = Derainer(name, precision="auto", compile=True)
        rng = np.random.default_rng(0)
        for shape in ((96, 128, 3), (70, 90, 3)):  # a second size: a second graph
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            with caplog.at_level(logging.WARNING, "derain"):
                out = compiled(image)
            diff = np.abs(out.astype(int) - eager(image).astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01, (shape, diff.max(), diff.mean())
        assert "running eager" not in caplog.text
        assert is_compiled(compiled.model) and _graphs() == graphs + 2  # both sizes compiled

    def test_weights_are_frozen(self) -> None:
        runner = Derainer(_tiny(), precision="fp32", compile=True)
        x = torch.rand(1, 3, 48, 64)
        first = runner.run_tensor(x)
        with torch.no_grad():
            next(runner.model.conv1.parameters()).add_(0.1)  # constants in the compiled graph: not seen
        assert torch.equal(runner.run_tensor(x), first)

    def test_falls_back_without_a_compiler(self, caplog: pytest.LogCaptureFixture) -> None:
        eager = Derainer(_tiny(), precision="fp32")
        compiled = Derainer(_tiny(), precision="fp32", compile=True)
        x = torch.rand(1, 3, 48, 64)
        with _without_compiler(), caplog.at_level(logging.WARNING, "derain"):
            out = compiled.run_tensor(x)
            assert caplog.text.count("running eager") == 1
            assert torch.equal(out, eager.run_tensor(x)) and not is_compiled(compiled.model)
            assert torch.equal(compiled.run_tensor(x), out)
        assert caplog.text.count("running eager") == 1  # warned once: later calls run eager quietly


def test_cli_compile_is_for_the_torch_backend(tmp_path) -> None:
    from click.testing import CliRunner

    from PIL import Image

    from derain.cli.main import cli

    photo = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (90, 120, 200)).save(photo)
    result = CliRunner().invoke(cli, ["run", str(photo), "-o", str(tmp_path / "out"), "--compile", "--backend", "onnxruntime"])
    assert result.exit_code == 2 and "--compile applies to the torch backend" in result.output
    assert not (tmp_path / "out").exists()


class TestVideoCompilesWhenItPays:
    """``derain video`` without ``--compile/--no-compile``: compiled for long videos only (compilation is lazy: nothing runs here)."""

    @staticmethod
    def info(frames: int, width: int = 1920, height: int = 1080, duration: float | None = None, rate: int | None = None):
        from fractions import Fraction

        from derain.inference.video import VideoInfo

        return VideoInfo(width, height, Fraction(rate) if rate else None, frames, duration, "h264", ())

    @pytest.mark.parametrize(("frames", "duration", "rate", "expected"), [
        (3000, None, None, True),  # 2 minutes of 1080p at 25 frames/s
        (100, None, None, False),  # 4 s
        (0, 120.0, 25, True),  # the container gives no count: duration x rate
        (0, None, None, False),  # nothing known: eager
    ])
    def test_by_length(self, frames, duration, rate, expected) -> None:
        from derain.cli.video import _compile_if_it_pays

        runner = Derainer(_tiny(), precision="fp32")
        _compile_if_it_pays(runner, self.info(frames, duration=duration, rate=rate))
        assert is_compiled(runner.model) is expected

    def test_other_architectures_stay_eager(self) -> None:
        from derain.cli.video import _compile_if_it_pays

        runner = Derainer(derain.create_model("prenet"), precision="fp32")
        _compile_if_it_pays(runner, self.info(100000))
        assert "features" not in runner.model.__dict__
