"""Compiled inference: the KPN's low-resolution stage through ``torch.compile`` (inductor, with freezing).

:func:`compile_model` makes an EfDeRain model run its
:meth:`~derain.models.efderain.EfDeRain.features` (the encoder-decoder that predicts the kernels:
every convolution of the network but the fusion) compiled, on that model instance only. Inductor's
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
* after ``torch._dynamo.config.recompile_limit`` graphs (8, counted over every compiled EfDeRain
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
import logging
import pickle
from typing import Any

import torch
from torch import nn

from ..errors import UserError

__all__ = ["CompileError", "compile_model", "compile_pays", "is_compiled"]

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
    """The model cannot run compiled (not an EfDeRain model)."""


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` runs its low-resolution stage compiled: :func:`compile_model` applied and no
    fallback to eager since (sizes beyond the recompile limit still run eager)."""
    stage = model.__dict__.get("features")
    return isinstance(stage, _CompiledStage) and not stage.failed


class _CompiledStage:
    """``features`` of ``model``, compiled, called with freezing on; the eager method where compilation fails."""

    def __init__(self, model: nn.Module, compiled: Any, failed: bool = False) -> None:
        self.model, self.compiled, self.failed = model, compiled, failed

    def eager(self, x: torch.Tensor) -> Any:
        return type(self.model).features(self.model, x)

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

    def __deepcopy__(self, memo: dict[int, Any]) -> "_CompiledStage":
        # the copy's own model: its own graphs (the compiler guards on the instance), never the original's weights
        return _CompiledStage(copy.deepcopy(self.model, memo), self.compiled, self.failed)

    def __reduce__(self) -> Any:
        raise pickle.PicklingError("a compiled model cannot be pickled: save its state_dict, or compile after loading")


def compile_model(model: nn.Module, *, backend: str = "inductor") -> nn.Module:
    """Run ``model``'s low-resolution stage compiled (in place; the model is returned); see the module docs.

    ``model`` is one the caller owns, prepared (device, precision layout) before: a
    :class:`~derain.inference.derainer.Derainer` copies a module it was given. Compilation happens at
    the first call of each input size, inside ``torch.inference_mode`` or ``torch.no_grad``.
    ``backend="eager"`` captures the graph without generating code (quick; for tests).

    >>> import derain
    >>> m = compile_model(derain.create_model("efderain-tiny"))
    >>> is_compiled(m)
    True
    """
    from ..models.efderain import EfDeRain

    if not isinstance(model, EfDeRain):
        raise CompileError(f"compiled inference supports EfDeRain models, not {type(model).__name__}")
    if not isinstance(model.__dict__.get("features"), _CompiledStage):
        compiled = torch.compile(EfDeRain.features, backend=backend, dynamic=False)  # one graph per input size and instance
        model.features = _CompiledStage(model, compiled)  # type: ignore[method-assign]  # this instance only
    return model
