"""Faults to inject, for the tests and ``benchmarks/bench_faults.py``: a disk that fills up or fails (ENOSPC,
EIO) under every file derain writes, and damaged weights files.

* :func:`disk_fault` replaces, inside a ``with`` block, the two system calls through which every byte derain
  writes goes (:mod:`derain.io.atomic`'s ``write`` and ``fsync``, by its hook :func:`~derain.io.atomic.syscalls`): the files whose path contains ``match``
  get ``error`` once ``after_bytes`` of them are written, the write that crosses the limit first coming back
  short, as a disk that fills up answers. Nothing else is changed and nothing is read from the environment:
  it is in effect only where a test or the benchmark enters it.
* :data:`WEIGHTS_DAMAGE`: ways a ``.safetensors`` file written by :func:`~derain.models.checkpoint.save_model`
  can be damaged (flipped bits, cuts, a wrong or malformed hash, a bad header), each with the message that
  refuses it. The header edits name a tensor and the architecture of ``efderain-tiny``; :func:`flip_bit` makes
  one more.
* What the fault tests and the benchmark share: :data:`ERRORS` and :data:`REASON` (the errors injected and the
  reason printed for each), :data:`TINY_MODEL` (a very small model for trainings), :func:`photo` (a JPEG of a
  photo's size) and :func:`decodes`.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..io import atomic

__all__ = [
    "DiskFault", "WEIGHTS_DAMAGE", "disk_fault", "flip_bit", "split_safetensors", "with_header",
    "ERRORS", "REASON", "TINY_MODEL", "photo", "decodes",
]

#: The disk errors injected, by name.
ERRORS = {"ENOSPC": errno_codes.ENOSPC, "EIO": errno_codes.EIO}
#: The reason a message gives for each of :data:`ERRORS` (the system's ``strerror`` on Linux).
REASON = {errno_codes.ENOSPC: "No space left on device", errno_codes.EIO: "Input/output error"}
#: ``model_overrides`` of ``efderain-tiny`` for trainings that must take seconds.
TINY_MODEL = {"widths": [4, 8, 8], "depth": 1, "kernel_level": 1}


def photo(path: Path, seed: int = 0, size: tuple[int, int] = (96, 64)) -> Path:
    """Write a JPEG of smooth random content at ``path`` (so its size is that of a photo, not of a flat colour)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((8, 12, 3)) * 255).astype(np.uint8)).resize(size, Image.BICUBIC)
    noisy = np.clip(np.asarray(img, np.float32) + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy).save(path, quality=95)
    return path


def decodes(path: Path) -> bool:
    """Whether the image at ``path`` decodes whole (a cut file does not)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
        return True
    except (OSError, SyntaxError):
        return False


def _fd_path(fd: int) -> str:
    """The file behind ``fd`` (Linux: ``/proc/self/fd``), or ``<fd N>``."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"<fd {fd}>"


@dataclass
class DiskFault:
    """What :func:`disk_fault` did: the files it failed (their paths as written, temporaries included)."""

    error: int
    match: str
    after_bytes: int
    at: str
    nth: int
    failed: list[str] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)  # per file hit: bytes let through (appends add up)
    seen: list[str] = field(default_factory=list)  # the matching paths, in the order they were first written


@contextlib.contextmanager
def disk_fault(error: int = errno_codes.ENOSPC, match: str = "", after_bytes: int = 0, *, at: str = "write",
               nth: int = 1) -> Iterator[DiskFault]:
    """Fail the ``nth`` path (1-based, in the order they are first written) that contains ``match`` with
    ``OSError(error)``: at ``write`` once ``after_bytes`` are written to it (the crossing write comes back
    short; appends to a log add up), or at ``fsync`` (a late error, as quotas, delayed allocation and network
    file systems give). Later writes to that path fail too; other files are written normally. A temporary's
    path holds its target's name (``.NAME.<hex>.tmp``), so ``match`` may name the file the user sees.
    """
    if at not in ("write", "fsync"):
        raise ValueError(f"at must be 'write' or 'fsync', got {at!r}")
    state = DiskFault(error, match, after_bytes, at, nth)
    real: atomic.Syscalls  # the calls in place before this block, which the hook hands over below: passed on to

    def targeted(fd: int) -> str | None:
        """The path behind ``fd`` if this fault hits it."""
        path = _fd_path(fd)
        if match not in path:
            return None
        if path not in state.seen:
            state.seen.append(path)
        return path if len(state.seen) >= nth and state.seen[nth - 1] == path else None

    def fail(path: str) -> None:
        if path not in state.failed:
            state.failed.append(path)
        raise OSError(error, os.strerror(error))

    def write(fd: int, data: Any) -> int:
        path = targeted(fd) if at == "write" else None
        if path is None:
            return real.write(fd, data)
        done = state.written.get(path, 0)
        room = after_bytes - done
        if room <= 0:
            fail(path)
        n = real.write(fd, memoryview(data)[:room])  # short, as a disk that fills up answers
        state.written[path] = done + n
        return n

    def fsync(fd: int) -> None:
        path = targeted(fd) if at == "fsync" else None
        if path is not None:
            fail(path)
        real.fsync(fd)

    with atomic.syscalls(write=write, fsync=fsync) as real:
        yield state


# --- damaged weights -------------------------------------------------------------------------------------


def split_safetensors(blob: bytes) -> tuple[int, dict[str, Any]]:
    """A safetensors blob's header length and parsed header."""
    size = int.from_bytes(blob[:8], "little")
    return size, json.loads(blob[8 : 8 + size])


def with_header(blob: bytes, header: dict[str, Any], indent: int | None = None) -> bytes:
    """``blob`` with its JSON header replaced by ``header`` (the data section unchanged)."""
    size = int.from_bytes(blob[:8], "little")
    text = json.dumps(header, indent=indent).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


Damage = Callable[[bytes], bytes]


def _set_meta(key: str, value: Any) -> Damage:
    def damage(blob: bytes) -> bytes:
        header = split_safetensors(blob)[1]
        header["__metadata__"][key] = value(header["__metadata__"][key]) if callable(value) else value
        return with_header(blob, header)

    return damage


def flip_bit(where: Callable[[bytes, int], int]) -> Damage:
    """A damage that flips one bit (``0x10``) of the byte at ``where(blob, header_size)`` of a safetensors blob."""

    def damage(blob: bytes) -> bytes:
        at = where(blob, split_safetensors(blob)[0])
        return blob[:at] + bytes([blob[at] ^ 0x10]) + blob[at + 1 :]

    return damage


def _replace_in_header(old: bytes, new: bytes) -> Damage:
    def damage(blob: bytes) -> bytes:
        size = split_safetensors(blob)[0]
        at = blob.index(old, 8, 8 + size)
        return blob[:at] + new + blob[at + len(old) :]

    return damage


def _cut(length: Callable[[bytes, int], int]) -> Damage:
    return lambda blob: blob[: length(blob, split_safetensors(blob)[0])]


def _swap_shape(blob: bytes) -> bytes:
    header = split_safetensors(blob)[1]
    return with_header(blob, {k: ({**v, "shape": v["shape"][::-1]} if k == "conv1.conv1.0.weight" else v) for k, v in header.items()})


#: name -> (damage, a regular expression the refusal's message matches), for ``efderain-tiny`` weights.
WEIGHTS_DAMAGE: dict[str, tuple[Damage, str]] = {
    # one flipped bit in the tensor data, at its first byte, in its middle and at its last byte
    "bit in the first data byte": (flip_bit(lambda b, n: 8 + n), "do not match the SHA-256 recorded"),
    "bit in the middle of the data": (flip_bit(lambda b, n: (8 + n + len(b)) // 2), "do not match the SHA-256 recorded"),
    "bit in the last byte": (flip_bit(lambda b, n: len(b) - 1), "do not match the SHA-256 recorded"),
    "a block of data zeroed": (lambda b: b[:-1024] + bytes(512) + b[-512:], "do not match the SHA-256 recorded"),
    # the header: a value, a tensor's name, its shape, the JSON syntax, the length field
    "byte in a metadata value": (_replace_in_header(b"efderain-tiny", b"efderain-tina"), "do not match the SHA-256 recorded"),
    "byte in a tensor name": (_replace_in_header(b'"conv1.conv1.0.weight"', b'"conv1.conv1.0.weighs"'), "do not match the SHA-256 recorded"),
    "shape swapped in the header": (_swap_shape, "do not match the SHA-256 recorded"),
    "byte of the header's JSON syntax": (_replace_in_header(b'"dtype":', b'"dtype";'), r"damaged safetensors header \(not valid JSON"),
    "header length one byte short": (lambda b: (split_safetensors(b)[0] - 1).to_bytes(8, "little") + b[8:],
                                     "extra bytes after the tensor data its header describes: 1"),
    "header length one byte long": (lambda b: (split_safetensors(b)[0] + 1).to_bytes(8, "little") + b[8:], "not valid JSON"),
    # the hash itself
    "a wrong hash": (_set_meta("derain.sha256", hashlib.sha256(b"another file").hexdigest()), "do not match the SHA-256 recorded"),
    "a hash one digit short": (_set_meta("derain.sha256", lambda h: h[:-1]), "its derain.sha256 is not a SHA-256 in 64 lowercase hex digits"),
    "a hash one digit long": (_set_meta("derain.sha256", lambda h: h + "0"), "its derain.sha256 is not a SHA-256 in 64 lowercase hex digits"),
    "a hash that is not hex": (_set_meta("derain.sha256", "g" * 64), "its derain.sha256 is not a SHA-256 in 64 lowercase hex digits"),
    "an empty hash": (_set_meta("derain.sha256", ""), "its derain.sha256 is not a SHA-256 in 64 lowercase hex digits"),
    "the hash of the data alone": (lambda b: _set_meta("derain.sha256", hashlib.sha256(b[8 + split_safetensors(b)[0] :]).hexdigest())(b),
                                   "do not match"),
    # cut or lengthened
    "empty": (_cut(lambda b, n: 0), r"not a weights file \(empty: 0 bytes\)"),
    "cut in the length field": (_cut(lambda b, n: 5), "not a weights file"),
    "cut inside the header": (_cut(lambda b, n: 8 + n // 2), r"truncated \(\d+ bytes; its header alone needs"),
    "cut after the header": (_cut(lambda b, n: 8 + n), r"truncated \(0 bytes of tensor data; its header describes \d+\)"),
    "cut in the middle of the data": (_cut(lambda b, n: (8 + n + len(b)) // 2), r"truncated \(\d+ bytes of tensor data"),
    "cut by one byte": (_cut(lambda b, n: len(b) - 1), r"truncated \(\d+ bytes of tensor data"),
    "bytes appended": (lambda b: b + b"\0" * 16, "extra bytes after the tensor data its header describes: 16"),
    "one byte appended": (lambda b: b + b"x", "extra bytes after the tensor data its header describes: 1"),
}
