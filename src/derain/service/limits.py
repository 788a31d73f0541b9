"""The service's default limits (no web framework imported, so ``derain --help`` stays fast)."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_MAX_TILE", "DEFAULT_MAX_UPLOAD_MB", "DEFAULT_QUEUE_SIZE"]

#: Pixel limit of an upload (40 MP: a 7700×5200 photo), checked from the header before decoding.
DEFAULT_MAX_PIXELS = 40_000_000
#: Upload size limit in MiB.
DEFAULT_MAX_UPLOAD_MB = 50.0
#: Largest tile side the server runs: one model pass sees at most 1024² pixels (1 MP).
DEFAULT_MAX_TILE = 1024
#: Requests that may wait for a worker before new ones get 503.
DEFAULT_QUEUE_SIZE = 8
