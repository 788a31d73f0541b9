"""How a model runs: the declared interface that compiled inference, ONNX export and reduced precision use.

A model that implements :class:`StagedModel` runs in two stages:

1. ``features(x)``: the low-resolution stage on an input whose sides are multiples of ``config.multiple``
   (every convolution of a kernel-prediction network but the fusion), returning a tuple of tensors. It is
   pure tensor code: :func:`derain.inference.compiled.compile_model` compiles exactly this.
2. ``full_resolution(image, features, out_size, *, whole, path, return_gate)``: the rest (the kernels
   upsampled, the image filtered and fused, the gate), usually through
   :func:`derain.ops.full_resolution.dilation_filter_fuse`, which picks the fused C kernel or an eager
   ``path`` (``"onehot"``: what an ONNX export traces).

:func:`staged_forward` joins them with the padding (``border`` on every side, then to ``config.multiple``,
the image at the canvas's top-left or, ``centred``, in its middle: :func:`~derain.ops.padding.pad_canvas`) and
the crop; a model's ``forward(x, return_gate=False, whole=None, *, features=None)`` calls it, running
``features`` (a compiled stage) in place of ``self.features`` where given. No one patches a model: a
compiled model is a runner (:class:`~derain.inference.compiled.CompiledModel`) that calls
``model(x, features=compiled_stage)``; an export traces ``padded_forward(x, path="onehot")``; precision
keeps the layers of ``autocast_modules()`` in the compute dtype.

A new architecture gets these paths by implementing the members below; subclassing
:class:`~derain.models.efderain.EfDeRain` gives them all. One that changes ``forward`` (a refinement after
the full-resolution stage, say) must take ``features=None`` and pass it on to ``super().forward``, and
keep ``padded_forward`` its function on inputs already padded by ``border`` and to the multiple.
A model without the interface (PReNet) runs eager, in fp32 layers, and exports whole.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from torch import Tensor, nn

from ..ops.padding import pad_canvas

__all__ = ["FeatureStage", "StagedModel", "inference_form", "is_staged", "staged_forward"]

#: The low-resolution stage: a padded ``(B, C, H, W)`` batch → the features ``full_resolution`` takes.
FeatureStage = Callable[[Tensor], tuple[Tensor, ...]]


@runtime_checkable
class StagedModel(Protocol):
    """The members a model declares (see the module docstring)."""

    #: ``multiple`` (input sides for ``features``), ``in_channels``, ``to_dict()`` (export metadata)
    config: Any
    #: inputs stay in the plain layout under reduced precision (else channels_last, like the prepared weights)
    channels_last_input: bool

    @property
    def border(self) -> int:
        """Pixels of reflect padding on every side before the network (0: none)."""

    @property
    def centred(self) -> bool:
        """Whether the image sits in the middle of its padded canvas (else at its top-left, the slack bottom/right)."""

    @property
    def reach(self) -> int:
        """Pixels beyond an output pixel that its full-resolution stage reads (filter taps and fusion)."""

    @property
    def judges_images(self) -> bool:
        """Whether it judges each image as a whole: then ``image_gate(x)`` ``(B, 1)`` and ``forward(x, whole=...)``."""

    def features(self, x: Tensor) -> tuple[Tensor, ...]:
        """The low-resolution stage (compiled by compiled inference)."""

    def full_resolution(
        self, image: Tensor, features: tuple[Tensor, ...], out_size: tuple[int, int] | None = None, *,
        whole: Tensor | None = None, path: str | None = None, return_gate: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The output (and gate) from ``features``: at least ``out_size`` of ``image``'s top-left."""

    def padded_forward(self, x: Tensor, path: str | None = None) -> Tensor:
        """The function on an input already padded (what an ONNX export traces, with ``path="onehot"``)."""

    def autocast_modules(self) -> list[nn.Module]:
        """The layers that run only under autocast: reduced precision stores their weights in the compute dtype."""

    def image_gate(self, x: Tensor) -> Tensor:
        """Each image's judgement ``(B, 1)`` (``judges_images`` models)."""


def _protocol_members(protocol: type) -> tuple[str, ...]:
    """The members ``protocol`` declares, in their order: its annotated attributes, then its methods and properties."""
    declared = [name for name, value in vars(protocol).items() if callable(value) or isinstance(value, property)]
    return tuple(name for name in dict.fromkeys([*vars(protocol).get("__annotations__", {}), *declared]) if not name.startswith("_"))


#: The names :func:`is_staged` looks for: read off :class:`StagedModel`, so the protocol is their one source.
_MEMBERS = _protocol_members(StagedModel)


def is_staged(model: object) -> bool:
    """Whether ``model`` implements :class:`StagedModel` (has its members; a runner that forwards attribute lookups to
    its model, such as :class:`~derain.inference.compiled.CompiledModel`, counts). Not ``isinstance(model,
    StagedModel)``: from Python 3.12 that looks members up statically, past such a runner's ``__getattr__``."""
    return all(hasattr(model, name) for name in _MEMBERS)


def staged_forward(
    model: StagedModel, x: Tensor, features: FeatureStage | None = None, *, return_gate: bool = False, whole: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor | None]:
    """``model`` on ``(B, C, H, W)`` images of any size: padded, ``features`` (default ``model.features``) and
    ``model.full_resolution``, cropped back. With ``return_gate`` also the gate (or None); ``whole`` ``(B, 1)``:
    each image's factor on the gate in place of the model's own judgement (``judges_images`` models)."""
    cfg = model.config
    if x.dim() != 4 or x.shape[1] != cfg.in_channels:
        raise ValueError(f"expected input of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
    if whole is not None and (not model.judges_images or whole.numel() != x.shape[0]):
        raise ValueError(f"whole takes one factor per image ({x.shape[0]}) of a model with gate_global")
    # The output's pixels need the full-resolution stage of `reach` pixels around them: the rest of the padding
    # to the multiple is cut off before it. With a `border`, the image is first reflect-padded by it on every
    # side (no tap of a kept pixel falls on a filter's zero padding, which darkens borders); without one, as
    # released, the reach comes from the padding to the multiple (bottom/right, or around a centred image).
    lead, h, w = model.border, x.shape[-2], x.shape[-1]
    padded, (top, left) = pad_canvas(x, lead, cfg.multiple, model.centred)
    size = (min(padded.shape[-2], top + h + model.reach), min(padded.shape[-1], left + w + model.reach))
    feats = (model.features if features is None else features)(padded)
    needed = (top + h + lead, left + w + lead)
    out, gate = model.full_resolution(padded[..., : size[0], : size[1]], feats, needed, whole=whole, return_gate=return_gate)
    out = out[..., top : top + h, left : left + w]
    if not return_gate:
        return out
    return out, None if gate is None else gate[..., top : top + h, left : left + w]


def inference_form(model: nn.Module) -> nn.Module:
    """The module inference runs for ``model``: ``model.inference_form()`` where it declares one (a network trained with
    re-parameterisable branches folds them into its plain twin, the same function at the plain network's cost), else
    ``model`` itself. Returns a new module or ``model``; never changes ``model``."""
    form = getattr(model, "inference_form", None)
    return form() if callable(form) else model
