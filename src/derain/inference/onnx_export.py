"""Export a model to ONNX and run it with ONNX Runtime (:class:`OnnxDerainer`).

**What is exported.** EfDeRain pads its input to a multiple of ``config.multiple`` in Python
(:func:`~derain.ops.padding.pad_canvas` computes the padding from ``x.shape`` as Python ints and picks reflect or
replicate padding with an ``if``), which a graph with dynamic height and width cannot hold. So the
exported graph is the model's *core* — kernel prediction, pixel-wise dilation filtering and fusion —
on inputs whose sides are already multiples of ``config.multiple``; the runtime wrapper
(:class:`OnnxDerainer`) pads with the very same :func:`~derain.ops.padding.pad_canvas` before
the session and crops after it, so both backends compute the same function. Models without a
``multiple`` (PReNet: 3×3 convolutions only) are exported whole, with ``multiple = 1``. Batch,
height and width are dynamic: one file serves every image size. The output is unclamped, as the
model's; the wrapper clamps to [0, 1] like :class:`~derain.inference.derainer.Derainer`.

The file carries the padding (multiple, border, the image centred in its canvas or not) and the model's
architecture/config as ONNX metadata (``derain.multiple``, ``derain.border``, ``derain.centred``,
``derain.architecture``, ``derain.config``); input ``image``, output
``derained``, both ``(batch, 3, height, width)`` float32.

**Exporter.** The default is PyTorch's TorchScript-based exporter (``dynamo=False``,
``dynamic_axes``): it exports these models quickly, and its graphs were checked to
match the torch model at sizes other than the traced one. ``dynamo=True`` uses the
``torch.export``-based exporter (PyTorch's default since 2.9) with derived dynamic dimensions
(``multiple × n``); it gives the same results but takes much longer on these graphs (the
pixel filter unrolls into many small slices; BENCHMARKS.md, "ONNX Runtime").

>>> import derain, numpy as np, tempfile, os
>>> model = derain.create_model("efderain-tiny", identity_init=True)
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = export_onnx(model, os.path.join(tmp, "m.onnx"))
...     runner = OnnxDerainer(path, threads=1)
...     runner(np.zeros((21, 30, 3), np.float32)).shape
(21, 30, 3)
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InvalidArgument, UserError
from ..models.interface import inference_form, is_staged
from ..ops.padding import pad_canvas
from ..io.atomic import write_atomic
from .derainer import DerainerBase, Strength, resolve_strength

__all__ = [
    "OnnxFileError",
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxDerainer",
    "export_onnx",
    "exportable_core",
]

DEFAULT_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "derained"
META_MULTIPLE = "derain.multiple"
META_BORDER = "derain.border"
META_CENTRED = "derain.centred"


class _PaddedCore(nn.Module):
    """A staged model's ``padded_forward`` (:mod:`derain.models.interface`: no pad/crop, inputs' sides multiples of
    ``config.multiple``), its filtering as a few large ops (the ``onehot`` path of :mod:`derain.ops.full_resolution`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.padded_forward(x, path="onehot")


def exportable_core(model: nn.Module) -> tuple[nn.Module, int]:
    """The module to export for ``model`` and the multiple its inputs' sides must have.

    Staged models (:class:`~derain.models.interface.StagedModel`, e.g. EfDeRain) with a ``config.multiple`` above 1
    → their padded core; anything else is exported as it is, with multiple 1.
    """
    if is_staged(model) and int(model.config.multiple) > 1:
        return _PaddedCore(model), int(model.config.multiple)
    return model, 1


def _architecture_metadata(model: nn.Module) -> dict[str, str]:
    meta: dict[str, str] = {}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        try:
            meta["derain.config"] = json.dumps(config.to_dict(), sort_keys=True)
        except (TypeError, ValueError):
            pass
    from ..models.architectures import architecture_of

    try:
        meta["derain.architecture"] = architecture_of(model)
    except ValueError:  # any other module exports without an architecture name
        pass
    return meta


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    *,
    dynamo: bool = False,
    example_size: tuple[int, int] | None = None,
) -> Path:
    """Write ``model`` as an ONNX file with dynamic batch, height and width; returns the path.

    The graph is the model's core on inputs padded to ``multiple`` (see the module docstring);
    :class:`OnnxDerainer` does the padding. ``example_size`` (H, W) is the traced input size
    (default: two multiples, at least 32 pixels); the result does not depend on it.
    """
    import onnx

    path = Path(path)
    model = inference_form(model)  # a re-parameterised network exports folded
    device_or_dtype_differs = any(p.device.type != "cpu" or p.dtype != torch.float32 for p in model.parameters())
    if device_or_dtype_differs:
        import copy

        model = copy.deepcopy(model).float().cpu()
    core, multiple = exportable_core(model)
    if example_size is None:
        side = multiple * max(2, -(-32 // multiple))
        example_size = (side, side)
    h, w = example_size
    if h % multiple or w % multiple:
        raise ValueError(f"example_size sides must be multiples of {multiple}, got {example_size}")
    example = torch.rand(1, getattr(getattr(model, "config", None), "in_channels", 3), h, w)

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarning on shape checks, exporter deprecation notice
            if dynamo:
                from torch.export import Dim

                dims = {0: Dim("batch", min=1, max=4096), 2: multiple * Dim("h_blocks", min=1, max=16384 // multiple),
                        3: multiple * Dim("w_blocks", min=1, max=16384 // multiple)}
                if multiple == 1:
                    dims = {0: dims[0], 2: Dim("height", min=2, max=16384), 3: Dim("width", min=2, max=16384)}
                program = torch.onnx.export(
                    core, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                    dynamo=True, dynamic_shapes={next(iter(_forward_arg_names(core))): dims}, external_data=False,
                )
                assert program is not None
                proto = program.model_proto
            else:
                axes = {0: "batch", 2: "height", 3: "width"}
                with tempfile.TemporaryDirectory(prefix="derain-onnx-") as tmp:
                    traced = os.path.join(tmp, "model.onnx")
                    torch.onnx.export(
                        core, (example,), traced, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                        opset_version=opset, dynamo=False, dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                    )
                    proto = onnx.load(traced)
    finally:
        model.train(was_training)

    staged = is_staged(model)
    meta = {META_MULTIPLE: str(multiple), META_BORDER: str(int(model.border) if staged else 0),
            META_CENTRED: str(int(bool(model.centred))) if staged else "0", **_architecture_metadata(model)}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "derain"
    write_atomic(path, proto.SerializeToString())  # a complete file or none (WriteError naming path)
    return Path(path)


def _forward_arg_names(module: nn.Module) -> list[str]:
    import inspect

    return [p for p in inspect.signature(module.forward).parameters]


class OnnxFileError(UserError, ValueError):
    """A file that ONNX Runtime cannot load as an image model."""


class OnnxDerainer(DerainerBase):
    """ONNX Runtime twin of :class:`~derain.inference.derainer.Derainer` (CPU, fp32).

    ``OnnxDerainer(path)`` loads a file written by :func:`export_onnx`;
    :meth:`from_model` exports a model in memory first. ``run_tensor`` takes a ``(B, 3, H, W)``
    float batch in [0, 1] of any size (padded to the file's multiple and cropped back, as the torch
    model does) and returns float32 on the CPU, clamped to [0, 1]; ``derainer(image)`` does the same
    for an ``H×W×3`` float32 numpy image.
    """

    precision = "fp32"
    device = torch.device("cpu")

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes) and not Path(source).is_file():
            raise FileNotFoundError(f"{source}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(source, options, providers=list(providers))
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own pybind exception types
            name = "<bytes>" if isinstance(model, bytes) else source
            raise OnnxFileError(f"{name}: not a loadable ONNX model ({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.multiple = int(meta.get(META_MULTIPLE, "1"))
        self.border = int(meta.get(META_BORDER, "0"))
        self.centred = meta.get(META_CENTRED, "0") == "1"
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise OnnxFileError(f"{'<bytes>' if isinstance(model, bytes) else source}: the ONNX model must have one (B, C, H, W) input")
        self.input_name = inputs[0].name
        self.in_channels = inputs[0].shape[1] if isinstance(inputs[0].shape[1], int) else 3
        self.metadata = dict(meta)
        self._source = model

    @property
    def name(self) -> str:
        """The file's name (``<bytes>`` for a model given as bytes)."""
        return "<bytes>" if isinstance(self._source, bytes) else Path(os.fspath(self._source)).name

    @property
    def params(self) -> int:
        """The number of values in the model's initializers (its weights)."""
        import onnx

        proto = onnx.load_model_from_string(self._source) if isinstance(self._source, bytes) else onnx.load(os.fspath(self._source))
        return sum(int(np.prod(init.dims)) for init in proto.graph.initializer)

    @classmethod
    def from_model(cls, model: nn.Module, threads: int | None = None, opset: int = DEFAULT_OPSET, **kwargs: Any) -> "OnnxDerainer":
        """Export ``model`` (to a temporary file, deleted at once) and load it."""
        with tempfile.TemporaryDirectory(prefix="derain-onnx-") as tmp:
            path = export_onnx(model, Path(tmp) / "model.onnx", opset=opset)
            data = path.read_bytes()
        return cls(data, threads=threads, **kwargs)

    @property
    def tile_align(self) -> int:  # type: ignore[override]
        """Tiles start at multiples of the padding multiple (``derain.multiple``), as the torch backend's do."""
        return self.multiple

    @property
    def tile_congruent(self) -> bool:  # type: ignore[override]
        """Tiles as long as the image modulo the multiple where the file centres its input (``derain.centred``)."""
        return self.centred

    def run_tensor(self, batch: torch.Tensor, strength: Strength | str | None = None, whole: torch.Tensor | None = None) -> torch.Tensor:
        """Derain a ``(B, 3, H, W)`` float batch in [0, 1]; returns float32 on the CPU, clamped to [0, 1].

        The exported graph judges each image (tile) itself: ``strength`` other than ``auto`` is refused
        (a ``ValueError``: it needs the PyTorch backend), ``whole`` is not taken."""
        if resolve_strength(self.strength if strength is None else strength) != "auto" or whole is not None:
            raise InvalidArgument("a strength other than auto needs the PyTorch backend (the ONNX file judges each image itself)", option="--strength")
        if batch.dim() != 4 or batch.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(batch.shape)}")
        x = batch.detach().to("cpu", torch.float32)
        h, w = x.shape[-2:]
        # the model's canvas: its reflect border (EfDeRain.border), then the padding to the multiple
        padded, (top, left) = pad_canvas(x, self.border, self.multiple, self.centred)
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(padded.numpy())})
        return torch.from_numpy(out[:, :, top : top + h, left : left + w]).clamp_(0, 1).contiguous()
