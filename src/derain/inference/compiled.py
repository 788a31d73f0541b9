"""Compiled inference: the KPN's low-resolution stage through ``torch.compile`` (inductor, with freezing).

:func:`compile_model` replaces an EfDeRain model's :meth:`~derain.models.efderain.EfDeRain.features`
(the encoder-decoder that predicts the kernels: every convolution of the network but the fusion) by
its compiled twin, on that model instance only. Inductor's ``freezing`` treats the weights as
constants: they are cast once to the compute dtype (no per-call casts under bf16 autocast), and
convolutions, ReLUs, pooling, upsampling and concatenations become one generated graph. The
full-resolution stage (upsampling the kernels, the dilated filtering, the fusion and the gate) stays
in the fused C kernel, which the compiler cannot improve on.

Costs and limits (measured in ``BENCHMARKS.md``, "Compiled path"):

* the first call compiles for its input size: 15-30 s on 2 cores, a few seconds when inductor's
  on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default under the system temp folder) already holds
  that graph. A second size compiles once more, a graph for every size (the compiler's automatic
  dynamic shapes), so a folder of mixed sizes compiles twice. It pays for videos and large folders,
  not for a single photo, so it is opt-in (``Derainer(compile=True)``, ``--compile``);
* after :data:`MAX_SIZES` recompilations further shapes run eager (the compiler's recompile limit);
* the weights are frozen at the first call: a compiled model must not be trained or changed after;
* where compilation fails (no C++ compiler, an unsupported platform), the first call warns once and
  the model runs eager from then on, with the same results.

Results equal eager's to within bf16 rounding of the kernel features (tests: every bundled model).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["MAX_SIZES", "can_compile", "compile_model", "is_compiled"]

log = logging.getLogger(__name__)

MAX_SIZES = 8  # torch._dynamo's default recompile limit: graphs compiled before further shapes run eager


def can_compile(model: nn.Module) -> bool:
    """Whether :func:`compile_model` applies: an EfDeRain-like model whose forward calls ``features``."""
    from ..models.efderain import EfDeRain

    return isinstance(model, EfDeRain)


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` runs its low-resolution stage compiled (not after a fallback to eager)."""
    return isinstance(model.__dict__.get("features"), _CompiledStage) and not model.__dict__["features"].failed


class _CompiledStage:
    """``features`` compiled, with the eager method as the fallback when compilation fails."""

    def __init__(self, eager: Callable[..., Any], compiled: Callable[..., Any]) -> None:
        self.eager, self.compiled, self.failed = eager, compiled, False

    def __call__(self, x: torch.Tensor) -> Any:
        if self.failed or torch.is_grad_enabled():  # frozen weights: inference only; training runs eager
            return self.eager(x)
        try:
            return self.compiled(x)
        except Exception as err:  # noqa: BLE001 - any compiler failure: the eager path computes the same
            self.failed = True
            warnings.warn(f"compiled inference unavailable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                          "running eager", RuntimeWarning, stacklevel=2)
            log.debug("compilation failed", exc_info=True)
            return self.eager(x)


def compile_model(model: nn.Module, *, backend: str = "inductor") -> nn.Module:
    """Compile ``model``'s low-resolution stage in place (the model is returned); see the module docs.

    Compilation itself happens at the first call (and the first of another input size), inside ``torch.inference_mode``
    or ``torch.no_grad`` (with gradients enabled the eager stage runs). ``model`` should be one the
    caller owns (a :class:`~derain.inference.derainer.Derainer` copies a module it was given).

    >>> import derain
    >>> m = compile_model(derain.create_model("efderain-tiny"))
    >>> is_compiled(m)
    True
    """
    if not can_compile(model):
        raise TypeError(f"compiled inference supports EfDeRain models, got {type(model).__name__}")
    if isinstance(model.__dict__.get("features"), _CompiledStage):
        return model
    eager = model.features
    options = {"freezing": True} if backend == "inductor" else None
    compiled = torch.compile(eager, backend=backend, options=options)  # static first, dynamic from the second shape
    model.features = _CompiledStage(eager, compiled)  # type: ignore[method-assign]  # this instance only
    return model
