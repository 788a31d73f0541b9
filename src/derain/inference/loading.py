"""The one way from a model to a ready inference runner: :func:`load_derainer`.

Every place that runs a model on images (``derain.derain``, the command line, the service, the benchmarks)
asks this function for its runner, so a name, a weights file, an exported ONNX file or a module means the
same thing everywhere. :func:`~derain.models.registry.create_model` stays the training side's factory.

A source is one of:

* ``None``: the bundled ``default`` model (or the ``weights`` file alone);
* a registered name (its bundled weights), or ``NAME=WEIGHTS`` (a weights file in that registered
  architecture, e.g. ``prenet=Rain100L.pth``); ``weights=`` does the same with a separate argument;
* a weights file (``.safetensors`` with its config in the metadata);
* an exported ONNX file (``.onnx``): run by ONNX Runtime;
* an ``nn.Module`` (never changed: see :class:`~derain.inference.derainer.Derainer`);
* a runner already made (returned as it is).

``backend="onnxruntime"`` runs a torch model through ONNX Runtime (exported in memory). A model loaded
here belongs to its runner, which prepares it in place for the precision.

>>> import derain
>>> runner = load_derainer(derain.create_model("efderain-tiny"), precision="fp32")
>>> type(runner).__name__, runner.precision
('Derainer', 'fp32')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..errors import InvalidArgument
from .derainer import Derainer, DerainerBase, Strength, resolve_strength

__all__ = ["BACKENDS", "ModelSource", "load_derainer", "load_source", "parse_source"]

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")
#: Suffixes that make a source a file even when it does not exist (then a missing file, not an unknown name).
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
ModelSource = Union[str, os.PathLike, nn.Module, DerainerBase, None]


def parse_source(source: str | os.PathLike[str] | None, weights: str | os.PathLike[str] | None = None) -> tuple[str | None, str | None, str | None]:
    """``(name, weights, onnx)`` of a source given as text: a registered name, ``NAME=WEIGHTS``, a weights
    file or an ONNX file (see the module docstring); ``weights`` is a separate weights file.

    >>> parse_source("fast"), parse_source("prenet=Rain100L.pth"), parse_source(None, "my.safetensors")
    (('fast', None, None), ('prenet', 'Rain100L.pth', None), (None, 'my.safetensors', None))
    >>> parse_source("model.onnx")
    (None, None, 'model.onnx')
    """
    text = None if source is None else os.fspath(source)
    weights = None if weights is None else os.fspath(weights)
    if text is not None and text.lower().endswith(".onnx"):
        if weights is not None:
            raise InvalidArgument(f"{text} is the model (an ONNX file): leave out the weights", option="--weights")
        return None, None, text
    if text is not None and "=" in text and not Path(text).exists():
        name, path = text.split("=", 1)
        if weights is not None:
            raise InvalidArgument(f"{text} names its weights: leave out --weights {weights}", option="--weights")
        return name, path, None
    if text is not None and not Path(text).exists() and (Path(text).suffix.lower() in WEIGHT_SUFFIXES or os.sep in text):
        raise FileNotFoundError(f"{text}: no such file")
    if text is not None and Path(text).is_file():
        if weights is not None:
            raise InvalidArgument(f"{text} is a weights file: give --weights alone, or --model NAME with it", option="--weights")
        return None, text, None
    return text, weights, None


def load_source(source: str | os.PathLike[str] | None = None, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """The torch model a source given as text names, in eval mode (not an ONNX file): ``None`` is the
    bundled ``default`` unless ``weights`` is given."""
    from ..models.registry import create_model, load_model

    name, path, onnx = parse_source(source, weights)
    if onnx is not None:
        raise InvalidArgument(f"{onnx}: an ONNX file runs only in ONNX Runtime, not as a torch model")
    if path is None:
        return create_model(name or "default", pretrained=True)
    return load_model(path, name=name)


def load_derainer(
    source: ModelSource = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    backend: str = "torch",
    compile: bool = False,
    threads: int | None = None,
    strength: Strength | str = "auto",
) -> DerainerBase:
    """A ready runner (``run_tensor``, ``derain_rgb``, ``derain_photo``, ...) for ``source``.

    Args:
        source: what to run (see the module docstring).
        weights: a weights file for ``source``'s registered architecture (or alone: its own config).
        device, precision, threads, compile, strength: as :class:`~derain.inference.derainer.Derainer` takes them.
        backend: ``torch``, or ``onnxruntime`` (CPU, fp32; the default for an ONNX file).

    Raises:
        InvalidArgument: options that do not fit together (ONNX Runtime on a GPU or in bf16, ...), an
            unknown name or backend; the loaders' own errors for files (``CheckpointError``, ...).
    """
    if backend not in BACKENDS:
        raise InvalidArgument(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}", option="--backend")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidArgument(str(err), option="--device") from None
    if isinstance(source, DerainerBase):
        if weights is not None or compile:
            raise InvalidArgument("a runner is used as it is: weights and compile do not apply")
        return source
    onnx = None
    if not isinstance(source, nn.Module):
        name, path, onnx = parse_source(source, weights)
    if onnx is not None or backend == "onnxruntime":
        return _onnx_runner(source, weights, onnx, dev, precision, compile, threads, strength)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument("--device cuda: CUDA is not available on this machine")
    if isinstance(source, nn.Module):
        if weights is not None:
            raise InvalidArgument("a module is used with its own weights: leave out weights", option="--weights")
        return Derainer(source, device=dev, precision=precision, threads=threads, compile=compile, strength=strength)
    model = load_source(name, path)
    return Derainer(model, device=dev, precision=precision, threads=threads, owned=True, compile=compile, strength=strength)


def _onnx_runner(
    source: ModelSource, weights: str | os.PathLike[str] | None, onnx: str | None, device: torch.device,
    precision: str, compile: bool, threads: int | None, strength: Strength | str,
) -> DerainerBase:
    """ONNX Runtime runs an exported file, or a torch model exported in memory: CPU, fp32, its own judgement."""
    from .onnx_export import OnnxDerainer

    if device.type != "cpu":
        raise InvalidArgument("the onnxruntime backend runs on the CPU only", option="--device")
    if precision not in ("auto", "fp32"):
        raise InvalidArgument(f"the onnxruntime backend runs in fp32 only (got {precision})", option="--precision")
    if compile:
        raise InvalidArgument("--compile applies to the torch backend, not to onnxruntime", option="--compile")
    if resolve_strength(strength) != "auto":
        raise InvalidArgument("--strength other than auto needs the torch backend (an ONNX file judges each image itself)", option="--strength")
    if onnx is not None:
        return OnnxDerainer(onnx, threads=threads)
    model = source if isinstance(source, nn.Module) else load_source(source, weights)  # type: ignore[arg-type]
    return OnnxDerainer.from_model(model, threads=threads)
