"""Model files, file-level only: our safetensors format (config in the metadata) and released PyTorch state dicts.

* :func:`save_model` writes ``.safetensors`` with ``derain.architecture`` and ``derain.config``
  (JSON) in its metadata, so :func:`read_model` needs nothing else.
* :func:`read_state_dict` reads our files and raw state dicts (``.pth``/``.pt``, e.g. the released
  ``v3_rain100H.pth``, or PReNet's weights) with ``torch.load(weights_only=True)`` (no pickled
  code runs); a ``module.`` prefix from DataParallel is removed. :func:`load_state_dict_strict`
  puts them into a model.

Every load is strict: a file that does not fit the architecture raises :class:`CheckpointError`
naming the first missing, unexpected or mis-shaped key. Names of registered models are resolved
one level up, by :func:`derain.models.registry.create_model` and :func:`~derain.models.registry.load_model`.
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

from ..errors import UserError
from ..io.atomic import atomic_output
from .architectures import architecture_of, build_architecture

__all__ = [
    "CheckpointError",
    "load_state_dict_strict",
    "load_training_state",
    "read_model",
    "read_state_dict",
    "save_model",
]

FORMAT_VERSION = "1"


class CheckpointError(UserError, ValueError):
    """A model file cannot be read or does not match the architecture."""


def _architecture(model: nn.Module) -> str:
    try:
        return architecture_of(model)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


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
        "derain.architecture": _architecture(model),
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


def _is_safetensors(head: bytes, size: int) -> bool:
    """safetensors' layout: an 8-byte little-endian header length, then the JSON header (``{``)."""
    return len(head) > 8 and 0 < int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{"


def _file_kind(path: Path, head: bytes) -> str:
    """What a file that holds no weights is, for the message: ``a JPEG image``, ``a text file``, ..."""
    try:
        from PIL import Image, UnidentifiedImageError

        with Image.open(path) as img:  # reads the header only
            fmt = str(img.format or "")
        if fmt:
            return f"{'an' if fmt[0] in 'AEFHILMNORSX' else 'a'} {fmt} image"
    except (UnidentifiedImageError, OSError, ValueError):  # not an image Pillow knows (or a broken one)
        pass
    if head.startswith(b"PK"):
        import zipfile

        if zipfile.is_zipfile(path):
            return "a ZIP archive without PyTorch data"
    if path.suffix.lower() == ".onnx":
        return "an ONNX model, which runs as the model itself: --onnx FILE"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError as err:
            if err.start >= len(head) - 3:  # a character cut by the end of the sample
                return "a text file"
    return "neither safetensors nor a PyTorch state dict"


def weights_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` plainly is not a weights file (``no such file``, ``not a weights file (a JPEG image)``,
    ``... (empty: 0 bytes)``), from its first bytes alone; None when it looks like one (safetensors, or
    PyTorch's zip or legacy pickle format; the load itself may still refuse it). Nothing is unpickled here.

    >>> import tempfile, pathlib
    >>> text = pathlib.Path(tempfile.mkdtemp()) / "notes.pth"
    >>> _ = text.write_text("step 100")
    >>> weights_file_problem(text)
    'not a weights file (a text file)'
    """
    path = Path(path)
    if path.is_dir():
        return "not a weights file (a folder)"
    if path.exists() and not path.is_file():  # a pipe or a device: never opened (reading could block)
        return "not a weights file (not a regular file)"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return f"cannot read ({err.strerror or err})"
    if size == 0:
        return "not a weights file (empty: 0 bytes)"
    if _is_safetensors(head, size) or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return None  # safetensors, or torch.save's legacy format (a pickle, read with weights_only)
    if head.startswith(b"PK"):  # torch.save's zip format holds .../data.pkl
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                if any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist()):
                    return None
        except (zipfile.BadZipFile, OSError):
            return None  # a damaged archive: the load says what is wrong
    return f"not a weights file ({_file_kind(path, head)})"


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a ``.safetensors`` file or a raw PyTorch state dict; a file that is plainly
    something else (an image, text, empty, a folder) raises :class:`CheckpointError` saying what it is."""
    path = Path(path)
    problem = weights_file_problem(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
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


def read_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """The model in a file written by :func:`save_model` (architecture and config from its metadata), in eval mode."""
    state, meta = read_state_dict(path)
    if "derain.architecture" not in meta or "derain.config" not in meta:
        raise CheckpointError(f"{path} carries no architecture; name a registered model for it, e.g. name='efderain-paper'")
    try:
        config: dict[str, Any] = json.loads(meta["derain.config"])
        model = build_architecture(meta["derain.architecture"], config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad model config in metadata ({e})") from None
    load_state_dict_strict(model, state, source=str(path))
    model.registry_name = meta.get("derain.name") or Path(path).stem  # type: ignore[assignment]
    return model.to(device).eval()
