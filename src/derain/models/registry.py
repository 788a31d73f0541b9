"""timm-style registry of named model configurations.

>>> import derain
>>> "efderain-paper" in derain.list_models()
True
>>> model = derain.create_model("efderain-tiny")
>>> sum(p.numel() for p in model.parameters()) > 0
True
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgument
from .architectures import ARCHITECTURES, build_architecture
from .checkpoint import load_state_dict_strict, read_model, read_state_dict
from .efderain import PAPER
from .prenet import PReNetConfig

__all__ = [
    "ModelSpec",
    "register_model",
    "list_models",
    "model_spec",
    "create_model",
    "load_model",
    "ARCHITECTURES",
    "build_architecture",
    "bundled_weights_path",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: architecture, config, what it is, and its bundled weights (if any)."""

    name: str
    architecture: str
    config: dict[str, Any]
    description: str
    weights: str | None = None  # file name inside the package's `weights/` folder

    def build(self) -> nn.Module:
        return build_architecture(self.architecture, self.config)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Names of the registered models matching a glob ``pattern`` (only those with bundled weights if ``pretrained``)."""
    return sorted(
        name
        for name, spec in _REGISTRY.items()
        if fnmatch.fnmatch(name, pattern) and (not pretrained or spec.weights is not None)
    )


def model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidArgument(f"unknown model {name!r}; registered models: {', '.join(list_models())}") from None


def bundled_weights_path(name: str) -> Path:
    """Path of the weights shipped in the package for model ``name``."""
    spec = model_spec(name)
    if spec.weights is None:  # a user error: the fix is to name a weights file (PReNet's are the authors')
        raise InvalidArgument(
            f"model {name!r} has no bundled weights: pass its weights file with --weights FILE (weights= in Python); "
            f"models with bundled weights: {', '.join(list_models(pretrained=True)) or 'none'}"
        )
    return Path(str(resources.files("derain") / "weights" / spec.weights))


def create_model(
    name: str, pretrained: bool = False, checkpoint_path: str | os.PathLike[str] | None = None, **overrides: Any
) -> nn.Module:
    """Build the registered model ``name``: the one way a name becomes a model.

    ``pretrained=True`` loads its bundled weights (offline); ``checkpoint_path`` loads a weights file
    into it instead (a raw state dict such as a released ``.pth``, or one of our files). Either way the
    model comes back in eval mode; without weights, as built (train mode, initial weights). Keyword
    ``overrides`` replace config fields (not with weights: they must fit the registered config).
    """
    if pretrained and checkpoint_path is not None:
        raise ValueError("give pretrained=True or checkpoint_path, not both")
    if overrides and (pretrained or checkpoint_path is not None):
        raise ValueError("config overrides cannot be combined with weights (pretrained / checkpoint_path)")
    if pretrained:
        checkpoint_path = bundled_weights_path(name)
    state = read_state_dict(checkpoint_path)[0] if checkpoint_path is not None else None  # the file's problems first
    spec = model_spec(name)
    model = build_architecture(spec.architecture, {**spec.config, **overrides})
    model.registry_name = name  # type: ignore[assignment]
    if state is not None:
        load_state_dict_strict(model, state, source=str(checkpoint_path))
        model.eval()
    return model


def load_model(
    path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A model from a file and/or a registered name, in eval mode (what ``--weights`` / ``--model`` mean):

    * ``load_model()`` — the bundled default model;
    * ``load_model(name="fast")`` — a registered model with its bundled weights;
    * ``load_model("model.safetensors")`` — architecture and config from the file's metadata;
    * ``load_model("v3_rain100H.pth", name="efderain-paper")`` — a file's weights in a registered config
      (``name`` also overrides the config stored in a safetensors file).
    """
    if path is None:
        model = create_model(name or "default", pretrained=True)
    elif name is not None:
        model = create_model(name, checkpoint_path=path)
    else:
        model = read_model(path)
    return model.to(device).eval()


def _efderain(name: str, description: str, weights: str | None = None, **fields: Any) -> None:
    config = {**PAPER.to_dict(), **fields}
    register_model(ModelSpec(name, "efderain", config, description, weights))


def _bundled(name: str, architecture: str, description: str, **overrides: Any) -> None:
    """A registered EfDeRain ``architecture`` (its config with ``overrides``) with weights ``weights/{name}.safetensors``
    in the package."""
    config = {**_REGISTRY[architecture].config, **overrides}
    register_model(ModelSpec(name, "efderain", config, description, f"{name}.safetensors"))


_efderain(
    "efderain-paper",
    "The authors' released network exactly: widths 64-512, 3 convs per block, kernels at H/2 upsampled, "
    "outc at full resolution, dilations 1,2,3,4 fused by a 3x3 conv (27,395,406 parameters). Table 2 v2-v4.",
)
_efderain(
    "efderain-v1",
    "Paper Table 2 v1: the released KPN with pixel-wise filtering at dilation 1 only, no fusion.",
    dilations=(1,),
    fusion=False,
)
_efderain(
    "efderain-small",
    "CPU-sized: widths 16-128, 3 convs per block, otherwise as released (about 1.7 M parameters).",
    widths=(16, 32, 64, 128, 128),
    outc_at_full_resolution=False,
)
_efderain(
    "efderain-tiny",
    "CPU-fast: widths 8-64, 2 convs per block, kernels predicted at H/4 and upsampled.",
    widths=(8, 16, 32, 64, 64),
    depth=2,
    kernel_level=2,
    outc_at_full_resolution=False,
)
_efderain(
    "efderain-cpu",
    "CPU design of the bundled default: pixel-unshuffle stem (no conv at full resolution), widths 16-128, "
    "2 convs per block, kernels predicted at H/2 (as released) and upsampled, identity init, a fusion that "
    "preserves each colour channel (no global brightness or colour change), and a rain gate (per pixel, times one "
    "value per image: a photo judged dry comes back as it went in).",
    widths=(16, 32, 64, 128, 128),
    depth=2,
    stem=2,
    kernel_level=0,
    outc_at_full_resolution=False,
    identity_init=True,
    channel_fusion=True,
    gate=True,
    gate_global=True,
)
_bundled(
    "default",
    "efderain-cpu",
    "The bundled default: efderain-cpu trained here on RainTrainL pairs, real rain layers on clean photos, rendered "
    "rain at every slant, RainMix, rain-free samples and real rainy photos as labels (experiments/default-he-s1 to -s7, "
    "then derain train default-cpu-v11); see MODEL_CARD.md.",
)
_efderain(
    "efderain-cpu-fast",
    "efderain-cpu with a pixel-unshuffle x4 stem (the KPN starts at H/4), 4 levels of widths 24-192, kernels "
    "predicted at H/4 and upsampled x4: faster than efderain-cpu (BENCHMARKS.md).",
    **{**_REGISTRY["efderain-cpu"].config, "stem": 4, "widths": (24, 48, 96, 192)},
)
_bundled(
    "fast",
    "efderain-cpu-fast",
    "The bundled fast model: efderain-cpu-fast trained here like the default (derain train fast-cpu-v4, then "
    "fast-cpu-v7: the rain gate); faster, less accurate; see MODEL_CARD.md.",
)

_bundled(
    "rain100l",
    "efderain-cpu",
    "In-domain weights for light rain, the paper's protocol: efderain-cpu without rain gates, trained from scratch on "
    "RainTrainL's pairs only (derain train rain100l, two stages); for Rain100L-like rain, not for photos in general "
    "(it filters every image: no gate returns dry photos unchanged); see MODEL_CARD.md.",
    gate=False,
    gate_global=False,
    init="he",
)

# Candidates of the CPU frontier (derain bench frontier; BENCHMARKS.md "The CPU frontier"): no bundled weights.
_CPU = _REGISTRY["efderain-cpu"].config
_FAST = _REGISTRY["efderain-cpu-fast"].config
_efderain(
    "efderain-cpu-w32",
    "efderain-cpu with widths and levels chosen for the CPU: the KPN starts at H/4 (pixel-unshuffle x4), 3 levels "
    "of widths 32-128 (wide enough to keep the vector and matrix units busy), kernels predicted at H/4.",
    **{**_CPU, "stem": 4, "widths": (32, 64, 128)},
)
_efderain(
    "efderain-cpu-d1",
    "efderain-cpu with one 3x3 convolution per block instead of two (kernels still predicted at H/2): the next "
    "default's network where its speed target is to hold (BENCHMARKS.md, \"Where the time goes at 481x321\").",
    **{**_CPU, "depth": 1},
)
register_model(ModelSpec(
    "efderain-cpu-rep", "efderain-rep", {**_CPU, "expand": 2},
    "efderain-cpu trained with re-parameterisable 3x3 convolutions (3x3 + 1x1 + 1x1->3x3 + identity), folded into "
    "plain efderain-cpu for inference (RepEfDeRain.fold): the same inference cost.",
))
register_model(ModelSpec(
    "efderain-cpu-refine", "efderain-refine", {**_CPU, "refine_width": 32, "refine_depth": 4, "refine_scale": 4},
    "efderain-cpu plus a gated residual CNN at H/4 (4 convolutions of width 32) after the filtering: it reaches "
    "16 px around each pixel, past the filtering's 5.",
))
register_model(ModelSpec(
    "efderain-fast-refine", "efderain-refine", {**_FAST, "refine_width": 32, "refine_depth": 4, "refine_scale": 4},
    "efderain-cpu-fast plus the gated H/4 refinement of efderain-cpu-refine.",
))
register_model(ModelSpec(
    "efderain-cpu-prn", "efderain-refine", {**_CPU, "refine_width": 32, "refine_depth": 8, "refine_scale": 1},
    "efderain-cpu plus a residual CNN at full resolution after the filtering (8 convolutions of width 32, gated where "
    "the model has a gate; PRN-like: per-pixel capacity where thin streaks are): the quality tier's candidate, about "
    "4.6x efderain-cpu's FLOPs.",
))
register_model(ModelSpec(
    "efderain-cpu-prnx", "efderain-refine",
    {**_CPU, "refine_width": 32, "refine_depth": 8, "refine_scale": 1, "refine_input": "both"},
    "efderain-cpu-prn whose refinement reads the rainy image beside the filtered one (what the filtering changed "
    "and what it could not): the quality tier's second candidate.",
))
register_model(ModelSpec(
    "efderain-cpu-naf", "efderain-naf", {**_CPU, "depth": 1},
    "efderain-cpu's layout with NAFNet's gated blocks in the KPN (a 3x3 convolution, then one NAF block per level).",
))

register_model(
    ModelSpec(
        "prenet",
        "prenet",
        PReNetConfig().to_dict(),
        "PReNet (Ren et al. CVPR 2019), 6 stages; load the official weights with --weights",
    )
)
