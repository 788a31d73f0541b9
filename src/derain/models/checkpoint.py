"""Model files: our safetensors format (config in the metadata) and released PyTorch state dicts.

* :func:`save_model` writes ``.safetensors`` with ``derain.architecture`` and ``derain.config``
  (JSON) in its metadata, so :func:`load_model` needs nothing else.
* :func:`load_model` also reads raw state dicts (``.pth``/``.pt``, e.g. the released
  ``v3_rain100H.pth``, or PReNet's weights) with ``torch.load(weights_only=True)`` (no pickled
  code runs) into a registered architecture named by ``name``; a ``module.`` prefix from
  DataParallel is removed.

Every load is strict: a file that does not fit the architecture raises :class:`CheckpointError`
naming the first missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..io.atomic import atomic_output
from .registry import ARCHITECTURES, build_architecture, bundled_weights_path, model_spec

__all__ = ["CheckpointError", "save_model", "load_model", "load_state_dict_strict", "read_state_dict", "load_training_state"]

FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A model file cannot be read or does not match the architecture."""


def _architecture_of(model: nn.Module) -> str:
    for name, (cls, _) in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise CheckpointError(f"{type(model).__name__} is not a registered architecture ({sorted(ARCHITECTURES)})")


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` to ``path`` (safetensors) atomically, its architecture and config in the metadata.

    ``dtype`` (e.g. ``torch.float16``) converts floating-point tensors to save space.
    """
    path = Path(path)
    meta = {
        "derain.format_version": FORMAT_VERSION,
        "derain.architecture": _architecture_of(model),
        "derain.config": json.dumps(model.config.to_dict()),  # type: ignore[attr-defined]
        "derain.name": str(getattr(model, "registry_name", "")),
        **{str(k): str(v) for k, v in (metadata or {}).items()},
    }
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` file or a raw PyTorch state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            return load_file(str(path)), meta
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad/unsafe pickles
        raise CheckpointError(f"{path}: not a readable PyTorch state dict ({_load_failure(e)})") from None
    for wrapper in ("state_dict", "model", "net", "generator"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj, {}


def _load_failure(e: Exception) -> str:
    """One line for a failed ``torch.load(weights_only=True)`` (torch's own message spans many lines and
    suggests ``weights_only=False``, which would run the file's code)."""
    text = str(e).strip()
    if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
        return "it needs pickled code to load, which derain never runs"
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training checkpoint (``checkpoint.pt``: tensors, numbers, strings, lists and dicts only),
    read with ``torch.load(weights_only=True)``: a file that needs pickled code is refused, never run."""
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad/unsafe pickles
        raise CheckpointError(f"{path}: not a usable training checkpoint ({_load_failure(e)})") from None
    if not isinstance(obj, dict) or "model" not in obj or "step" not in obj:
        raise CheckpointError(f"{path}: not a derain training checkpoint (no model state and step)")
    return obj


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` strictly; raise :class:`CheckpointError` naming the first bad key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: missing key {missing[0]!r} ({len(missing)} missing)")
    if unexpected:
        raise CheckpointError(
            f"{source} does not match {type(model).__name__}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source} does not match {type(model).__name__}: key {key!r} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def load_model(
    path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load a model in eval mode.

    * ``load_model()`` — the bundled default model.
    * ``load_model("model.safetensors")`` — architecture and config from the file's metadata.
    * ``load_model("v3_rain100H.pth", name="efderain-paper")`` — a raw state dict into a registered config
      (``name`` also overrides the config stored in a safetensors file).
    """
    if path is None:
        path = bundled_weights_path(name or "default")
    state, meta = read_state_dict(path)
    if name is not None:
        model = model_spec(name).build()
    elif "derain.architecture" in meta and "derain.config" in meta:
        try:
            config: dict[str, Any] = json.loads(meta["derain.config"])
            model = build_architecture(meta["derain.architecture"], config)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: bad model config in metadata ({e})") from None
    else:
        raise CheckpointError(
            f"{path} carries no architecture; name a registered model for it, e.g. name='efderain-paper'"
        )
    load_state_dict_strict(model, state, source=str(path))
    model.registry_name = name or meta.get("derain.name") or Path(path).stem  # type: ignore[assignment]
    return model.to(device).eval()
