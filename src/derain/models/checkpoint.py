"""Model files, file-level only: our safetensors format (config in the metadata) and released PyTorch state dicts.

* :func:`save_model` writes ``.safetensors`` with ``derain.architecture`` and ``derain.config``
  (JSON) in its metadata, so :func:`read_model` needs nothing else.
* :func:`read_state_dict` reads our files and raw state dicts (``.pth``/``.pt``, e.g. the released
  ``v3_rain100H.pth``, or PReNet's weights) with ``torch.load(weights_only=True)`` (no pickled
  code runs); a ``module.`` prefix from DataParallel is removed. :func:`load_state_dict_strict`
  puts them into a model.

Every load is strict: a file that does not fit the architecture raises :class:`CheckpointError`
naming the first missing, unexpected or mis-shaped key.

Integrity: every ``.safetensors`` file derain writes carries ``derain.sha256`` in its metadata
(:func:`file_digest` says exactly what it covers: the tensor data and the rest of the header), and
:func:`read_state_dict` checks it, so a bit flip or a cut in a weights file is refused in one line instead
of loading a silently wrong model. Files without it (written before it existed, or by other tools, and
raw ``.pth`` state dicts) still load: the hash is checked where present. A safetensors file whose data
section is shorter or longer than its header describes is refused either way; :func:`write_digest` adds
the hash to an older file.

Names of registered models are resolved one level up, by :func:`derain.models.registry.create_model`
and :func:`~derain.models.registry.load_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import Tensor, nn

from ..errors import UserError
from ..io.atomic import write_atomic
from .architectures import architecture_of, build_architecture

__all__ = [
    "DIGEST_KEY",
    "CheckpointError",
    "file_digest",
    "load_state_dict_strict",
    "load_training_state",
    "read_model",
    "read_state_dict",
    "save_model",
    "write_digest",
]

FORMAT_VERSION = "1"
DIGEST_KEY = "derain.sha256"  # metadata key of the file's SHA-256 (:func:`file_digest`)
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header's size


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
    blob = _with_digest(save_safetensors_bytes(tensors, metadata=meta))
    return write_atomic(path, blob)


def _digest(header: Mapping[str, Any], data: bytes | memoryview) -> str:
    """:func:`file_digest` of a parsed header and the data section that follows it."""
    canonical = dict(header)
    meta = canonical.get("__metadata__")
    if isinstance(meta, dict) and DIGEST_KEY in meta:
        canonical["__metadata__"] = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode("ascii")
    digest = hashlib.sha256(len(text).to_bytes(8, "little"))
    digest.update(text)
    digest.update(data)
    return digest.hexdigest()


def _split(blob: bytes, name: str) -> tuple[dict[str, Any], memoryview]:
    """A safetensors file's parsed JSON header and its data section (every byte after the header);
    :class:`CheckpointError` naming ``name`` when the file is cut inside its header or the header is no JSON object."""
    if len(blob) < 8:
        raise CheckpointError(f"{name}: truncated ({len(blob)} bytes, not even the length of a safetensors header)")
    size = int.from_bytes(blob[:8], "little")
    if size > len(blob) - 8:
        raise CheckpointError(f"{name}: truncated ({len(blob)} bytes; its header alone needs {size + 8})")
    try:
        header = json.loads(blob[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{name}: damaged safetensors header (not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: damaged safetensors header (not a JSON object)")
    return header, memoryview(blob)[8 + size :]


def _data_size(header: Mapping[str, Any]) -> int | None:
    """How many bytes of tensor data ``header`` describes (safetensors stores the tensors back to back from
    offset 0, so the largest end offset); None when an entry has no readable offsets (safetensors says why)."""
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            return None
        end = max(end, offsets[1])
    return end


def _check_safetensors(blob: bytes, name: str) -> dict[str, str]:
    """The metadata of the safetensors file ``blob`` after checking that it is whole: its data section has
    exactly the size its header describes, and its ``derain.sha256`` (where it has one) is :func:`file_digest`.
    Anything else raises :class:`CheckpointError`, one line naming ``name``."""
    header, data = _split(blob, name)
    expected = _data_size(header)
    if expected is not None and len(data) < expected:
        raise CheckpointError(f"{name}: truncated ({len(data)} bytes of tensor data; its header describes {expected})")
    if expected is not None and len(data) > expected:
        raise CheckpointError(f"{name}: damaged (extra bytes after the tensor data its header describes: {len(data) - expected})")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{name}: damaged safetensors header (its metadata is not a mapping of strings)")
    meta = dict(meta or {})
    recorded = meta.get(DIGEST_KEY)
    if recorded is not None:
        if not re.fullmatch(r"[0-9a-f]{64}", recorded):
            raise CheckpointError(f"{name}: damaged (its {DIGEST_KEY} is not a SHA-256 in 64 lowercase hex digits: {recorded[:80]!r})")
        if _digest(header, data) != recorded:
            raise CheckpointError(f"{name}: damaged (its contents do not match the SHA-256 recorded in it, {DIGEST_KEY})")
    return meta


def _with_digest(blob: bytes) -> bytes:
    """The safetensors file ``blob`` with ``derain.sha256`` (:func:`file_digest`) set in its metadata: the header
    is written anew (same entries and order, the hash last in the metadata, spaces to a multiple of 8 bytes as
    safetensors pads it) and the data section is copied unchanged."""
    header, data = _split(blob, "safetensors data")
    meta = {k: v for k, v in dict(header.get("__metadata__") or {}).items() if k != DIGEST_KEY}
    stamped = {"__metadata__": {**meta, DIGEST_KEY: _digest(header, data)}}
    stamped.update((k, v) for k, v in header.items() if k != "__metadata__")
    text = json.dumps(stamped, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + bytes(data)


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 (hex) that derain records as ``derain.sha256`` in a ``.safetensors`` file's metadata.

    It covers the whole file but the hash itself and the header's formatting: the SHA-256 of the file as it is
    with its header in canonical form, i.e. of

    1. the canonical header's length, 8 bytes little-endian;
    2. the canonical header: the file's JSON header, parsed, ``derain.sha256`` taken out of ``__metadata__``,
       written by ``json.dumps(header, sort_keys=True, separators=(",", ":"))`` (keys sorted at every level,
       no whitespace, non-ASCII as ``\\uXXXX``), ASCII;
    3. the data section: every byte after the header to the end of the file, as stored (safetensors keeps all
       tensors there back to back, at the offsets its header gives).

    So the tensors' bytes, their names, dtypes, shapes and offsets, and the other metadata (the model's
    architecture and config) are covered; neither the order of keys in the JSON nor the header's padding is.
    Python's ``json`` and ``hashlib`` reproduce it anywhere. This reads the file without checking it.
    """
    path = Path(path)
    header, data = _split(path.read_bytes(), str(path))
    return _digest(header, data)


def write_digest(path: str | os.PathLike[str]) -> Path:
    """Record ``derain.sha256`` in an existing ``.safetensors`` file (one written before derain recorded it, or by
    another tool), atomically: the header alone is written anew, the tensors and the other metadata stay as
    they are. A file that is already damaged (its data cut or longer than described, a recorded hash that does
    not match) raises :class:`CheckpointError` rather than have its damage sealed in."""
    path = Path(path)
    blob = path.read_bytes()
    meta = _check_safetensors(blob, str(path))
    stamped = _with_digest(blob)
    load_safetensors_bytes(stamped)  # safetensors itself must read the result
    if meta.get(DIGEST_KEY) is not None and stamped == blob:
        return path
    return write_atomic(path, stamped)


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
    header_size = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and size - 8 < header_size <= _MAX_HEADER:  # a safetensors file cut inside its header
        return f"truncated ({size} bytes; its header alone needs {header_size + 8})"
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
    something else (an image, text, empty, a folder) raises :class:`CheckpointError` saying what it is.

    This is the one path every weights file is read by (``load_model``, ``create_model(checkpoint_path=)``,
    ``--weights``). A ``.safetensors`` file is refused, one line naming it, when it is cut short, has bytes
    after its tensor data, or its ``derain.sha256`` (:func:`file_digest`) is malformed or does not match; a
    file without that key (older files, other tools' files) is read as before. Raw state dicts carry no hash.
    """
    path = Path(path)
    problem = weights_file_problem(path)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    if path.suffix == ".safetensors":
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
        meta = _check_safetensors(blob, str(path))  # whole, and its recorded SHA-256 (if any) matches
        try:
            return load_safetensors_bytes(blob), meta
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
