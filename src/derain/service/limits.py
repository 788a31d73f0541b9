"""The service's default limits (no web framework imported, so ``derain --help`` stays fast)."""

from __future__ import annotations

__all__ = [
    "SERVICE_MAX_PIXELS",
    "DEFAULT_MAX_TILE",
    "DEFAULT_MAX_UPLOAD_MB",
    "DEFAULT_MAX_UPLOADS",
    "DEFAULT_QUEUE_SIZE",
    "DEFAULT_UPLOAD_IDLE_S",
    "DEFAULT_UPLOAD_TIMEOUT_S",
]

#: Pixel limit of an upload (40 MP: a 7700×5200 photo), checked from the header before decoding: the
#: service's own, lower than the reader's :data:`derain.io.images.DEFAULT_MAX_PIXELS` (100 MP, for
#: local files) and passed to it explicitly, because uploads come from other people.
SERVICE_MAX_PIXELS = 40_000_000
#: Upload size limit in MiB.
DEFAULT_MAX_UPLOAD_MB = 50.0
#: Largest tile side the server runs: one model pass sees at most 1024² pixels (1 MP).
DEFAULT_MAX_TILE = 1024
#: Requests that may wait for a worker before new ones get 503.
DEFAULT_QUEUE_SIZE = 8
#: Uploads read at the same time (each at most the upload size limit); more get 503.
DEFAULT_MAX_UPLOADS = 16
#: An upload that sends nothing for this many seconds gets 408 and gives its place back.
DEFAULT_UPLOAD_IDLE_S = 15.0
#: An upload not complete this many seconds after it started gets 408 (a client trickling bytes).
DEFAULT_UPLOAD_TIMEOUT_S = 120.0
