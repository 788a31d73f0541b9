"""Compiled inference: the KPN's low-resolution stage through ``torch.compile`` (inductor, with freezing).

:func:`compile_model` wraps a model that declares the staged interface (:mod:`derain.models.interface`:
EfDeRain and its variants) in a runner, :class:`CompiledModel`, whose calls run the model's own ``forward`` with
its low-resolution stage ``features`` (the encoder-decoder that predicts the kernels: every convolution of the
network but the fusion) compiled: ``model(x, features=compiled_stage)``. The model itself is not changed. Inductor's
``freezing`` (switched on around each call: a global setting of inductor's, so compiled models are
for one thread at a time) treats the weights as constants: they are cast once to the compute dtype
and folded into one generated graph with the ReLUs,
pooling, upsampling and concatenations. The full-resolution stage (upsampling the kernels, the
dilated filtering, the fusion and the gate) stays in the fused C kernel.

Costs and limits (``BENCHMARKS.md``, "Compiled path"):

* each image size compiles at its first call (batches run one image at a time on that graph):
  seconds to tens of seconds, less when inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default
  under the system temp folder) holds that graph. It pays for long videos and folders of one image size, not for a single photo: opt-in
  (``Derainer(compile=True)``, ``--compile``), except ``derain video``, which compiles where
  :func:`compile_pays` says so;
* after ``torch._dynamo.config.recompile_limit`` graphs (8, counted over every compiled
  model of the process: one per model and input size) further ones run eager (torch logs a warning);
* the weights are frozen at the first call of each size: a compiled model must not be trained,
  moved or changed after (copies, ``copy.deepcopy``, compile their own; pickling is refused);
* with gradients enabled the eager stage runs;
* where compilation fails (no C++ compiler, an unsupported platform), the first call logs one
  warning and the model runs eager from then on, with the same results.

Results equal eager's to bf16 rounding (tests: every bundled model, two sizes).
"""

from __future__ import annotations

import copy
import inspect
import logging
import pickle
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..models.interface import is_staged

__all__ = ["CompileError", "CompiledModel", "compile_model", "compile_pays", "is_compiled"]

log = logging.getLogger(__name__)


# What compiling buys and costs on 2 cores (BENCHMARKS.md, "Compiled path"): ms saved per megapixel and
# image (default 33 at 481x321 and 1920x1080; fast 13 and 10-11) against 18-23 s for the first size's
# compilation. Both doubled: the ratio of the smallest saving (fast's) to the cost, with a margin.
SAVED_S_PER_MEGAPIXEL = 0.02
FIRST_COMPILE_S = 40.0


def compile_pays(images: int, width: int, height: int) -> bool:
    """Whether compiling is expected to win its first compilation back over ``images`` of ``width×height``.

    >>> compile_pays(1, 6000, 4000), compile_pays(1500, 1920, 1080), compile_pays(1500, 481, 321)
    (False, True, False)
    """
    return images * width * height / 1e6 * SAVED_S_PER_MEGAPIXEL > FIRST_COMPILE_S


class CompileError(UserError, ValueError):
    """The model cannot run compiled (it does not declare the staged interface, as EfDeRain does)."""


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` is a :class:`CompiledModel` still running compiled (no fallback to eager since; sizes beyond
    the recompile limit still run eager)."""
    return isinstance(model, CompiledModel) and not model.stage.failed


class _CompiledStage:
    """``model``'s ``features``, compiled, called with freezing on; the eager method where compilation fails."""

    def __init__(self, model: nn.Module, compiled: Any, failed: bool = False) -> None:
        self.model, self.compiled, self.failed = model, compiled, failed

    def eager(self, x: torch.Tensor) -> Any:
        return self.model.features(x)

    def __call__(self, x: torch.Tensor) -> Any:
        if self.failed or torch.is_grad_enabled():  # frozen weights: inference only; training runs eager
            return self.eager(x)
        import torch._inductor.config as inductor_config
        from torch._dynamo.exc import TorchDynamoException

        try:
            with inductor_config.patch(freezing=True):
                if x.shape[0] == 1:
                    return self.compiled(self.model, x)
                # one image at a time: one graph per image size, whatever the batch (a video's last batch is smaller)
                parts = [self.compiled(self.model, x[i : i + 1]) for i in range(x.shape[0])]
                return tuple(torch.cat(p) for p in zip(*parts))
        except TorchDynamoException as err:  # the compiler's own failures (no C++ compiler, ...), not the input's
            self.failed = True
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            log.warning("compiled inference unavailable (%s: %s); running eager", type(err).__name__, first)
            log.debug("compilation failed", exc_info=True)
            return self.eager(x)


class CompiledModel(nn.Module):
    """A staged model run with its low-resolution stage compiled: ``runner(x, return_gate=, whole=)`` is
    ``model(x, return_gate=, whole=, features=<compiled features>)``. Every other attribute is the model's
    (``runner.conv1``, ``runner.image_gate``, ``runner.config``...), read and set (``runner.filter_implementation =
    "reference"`` sets the model's); its one submodule is ``model``. The runner's own: ``model``, ``stage``, its
    methods, ``training`` (which ``train()``/``eval()`` set on both) and names starting with ``_``."""

    _OWN = frozenset({"model", "stage", "training"})

    def __init__(self, model: nn.Module, backend: str = "inductor") -> None:
        super().__init__()
        self.model = model
        # one graph per input size and instance (the compiler guards on the instance passed in)
        self.stage = _CompiledStage(model, torch.compile(type(model).features, backend=backend, dynamic=False))

    def features(self, x: torch.Tensor) -> Any:
        """The model's low-resolution stage, compiled."""
        return self.stage(x)

    def forward(self, x: torch.Tensor, return_gate: bool = False, whole: torch.Tensor | None = None) -> Any:
        return self.model(x, return_gate=return_gate, whole=whole, features=self.stage)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def _is_own(self, name: str) -> bool:
        return name.startswith("_") or name in self._OWN or hasattr(type(self), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if self._is_own(name):
            super().__setattr__(name, value)
        else:  # the model's: set on the runner it would change nothing that runs
            setattr(self.model, name, value)

    def __delattr__(self, name: str) -> None:
        if self._is_own(name):
            super().__delattr__(name)
        else:
            delattr(self.model, name)

    def __deepcopy__(self, memo: dict[int, Any]) -> "CompiledModel":
        # the copy's own model: its own graphs, never the original's weights
        runner = CompiledModel.__new__(CompiledModel)
        nn.Module.__init__(runner)
        memo[id(self)] = runner  # a structure holding this runner twice holds its one copy twice
        twin = copy.deepcopy(self.model, memo)
        runner.model = twin
        runner.stage = _CompiledStage(twin, self.stage.compiled, self.stage.failed)
        return runner

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise pickle.PicklingError("a compiled model cannot be pickled: save its state_dict, or compile after loading")


def compile_model(model: nn.Module, *, backend: str = "inductor") -> CompiledModel:
    """``model`` as a :class:`CompiledModel` (see the module docs; the model is not changed, a runner already compiled
    is returned as it is).

    ``model`` is one the caller owns, prepared (device, precision layout) before: a
    :class:`~derain.inference.derainer.Derainer` copies a module it was given. Compilation happens at
    the first call of each input size, inside ``torch.inference_mode`` or ``torch.no_grad``.
    ``backend="eager"`` captures the graph without generating code (quick; for tests).

    >>> import derain
    >>> m = compile_model(derain.create_model("efderain-tiny"))
    >>> is_compiled(m)
    True
    """
    if isinstance(model, CompiledModel):
        return model
    if not is_staged(model) or "features" not in inspect.signature(model.forward).parameters:
        raise CompileError(f"compiled inference supports EfDeRain-like models (derain.models.interface), not {type(model).__name__}")
    return CompiledModel(model, backend)
