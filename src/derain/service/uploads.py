"""Reading an upload with a size limit: a multipart ``file`` field or a raw image body.

The limit is enforced while the body streams in: a ``Content-Length`` over it is refused before
anything is read, and a body without one (chunked) is cut off as soon as it passes the limit
(``413``). Multipart bodies may carry :data:`MULTIPART_SLACK` bytes of headers and boundaries on
top of the file, whose own size is then checked against the limit exactly.

Slow clients cannot hold the server: an upload that sends nothing for ``idle_timeout`` seconds, or
is not complete ``timeout`` seconds after it started, gets ``408`` (:class:`UploadTimeout`); and at
most ``max_uploads`` uploads are read at once (:class:`UploadSlots`; more get ``503``), apart from
the inference queue, so stalled uploads never keep a finished upload from a worker.

A client that disconnects before its upload is complete raises :class:`ClientAborted`: answered
(into the void) and logged with status :data:`CLIENT_CLOSED` (499) and no traceback, not as a
server error.

>>> describe_bytes(52_428_800), describe_bytes(1536)
('50 MiB', '1.5 KiB')
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import Iterator

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from .errors import ApiError
from .middleware import Message, Receive

__all__ = [
    "CLIENT_CLOSED",
    "MULTIPART_SLACK",
    "ClientAborted",
    "Upload",
    "UploadSlots",
    "UploadTimeout",
    "describe_bytes",
    "read_upload",
]

#: Bytes allowed on top of the file's own limit for a multipart body's headers and boundaries.
MULTIPART_SLACK = 64 * 1024
#: The form field that carries the image in a multipart upload.
FILE_FIELD = "file"
#: Status logged for a request whose client disconnected during its upload (nginx's "client closed request").
CLIENT_CLOSED = 499


class ClientAborted(ApiError):
    """The client disconnected before its upload was complete (nobody is left to answer)."""

    def __init__(self) -> None:
        super().__init__(CLIENT_CLOSED, "client closed the connection during the upload")


class UploadTimeout(ApiError):
    """The upload stalled (no data for the idle timeout) or was not complete within its deadline: 408."""

    def __init__(self, message: str) -> None:
        super().__init__(408, message)


class UploadSlots:
    """At most ``limit`` uploads read at the same time; :meth:`take` raises 503 with ``Retry-After`` past it.

    Used from the event loop only (no lock needed).

    >>> slots = UploadSlots(1)
    >>> with slots.take():
    ...     try:
    ...         slots.take().__enter__()
    ...     except ApiError as err:
    ...         print(err.status, err.headers)
    503 {'Retry-After': '1'}
    >>> slots.active
    0
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_uploads must be >= 1, got {limit}")
        self.limit = limit
        self.active = 0

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise ApiError(503, f"server busy: {self.active} uploads in progress; retry in 1 s", {"Retry-After": "1"})
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


@dataclass(frozen=True)
class Upload:
    """The uploaded image's bytes and, for a multipart upload, the client's file name."""

    data: bytes
    filename: str | None = None


def describe_bytes(n: float) -> str:
    """A byte count the way people read it (binary units)."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:g} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload too large: the limit is {describe_bytes(limit)}")


def _limited(receive: Receive, limit: int, idle_timeout: float | None, timeout: float | None) -> Receive:
    """``receive`` that raises 413 once more than ``limit`` body bytes have arrived, and 408 when a message
    takes over ``idle_timeout`` seconds or the body is not complete ``timeout`` seconds after the first call."""
    received = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout is not None else math.inf

    async def limited_receive() -> Message:
        nonlocal received
        wait = min(idle_timeout if idle_timeout is not None else math.inf, deadline - loop.time())
        try:
            message = await (asyncio.wait_for(receive(), max(wait, 0.0)) if wait < math.inf else receive())
        except TimeoutError:
            if loop.time() >= deadline:
                raise UploadTimeout(f"upload timed out: not complete within {timeout:g} s") from None
            raise UploadTimeout(f"upload timed out: no data for {idle_timeout:g} s") from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    return limited_receive


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, "invalid Content-Length header") from None


async def read_upload(
    request: Request, limit: int, *, idle_timeout: float | None = None, timeout: float | None = None
) -> Upload:
    """The image in ``request``: the ``file`` field of a multipart form, else the whole body.

    Raises :class:`ApiError` 413 past ``limit`` bytes (the file; a multipart body may add
    :data:`MULTIPART_SLACK`), 400 for an empty body or a form without a ``file`` field,
    :class:`UploadTimeout` (408) when no data comes for ``idle_timeout`` seconds or the body is not
    complete within ``timeout`` seconds (None: no limit), and :class:`ClientAborted` (499) when the
    client disconnects before the body is complete.
    """
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    body_limit = limit + MULTIPART_SLACK if multipart else limit
    declared = _declared_length(request)
    if declared is not None and declared > body_limit:
        raise _too_large(limit)
    bounded = Request(request.scope, _limited(request.receive, body_limit, idle_timeout, timeout))
    try:
        if multipart:
            upload = await _multipart_file(bounded)
        else:
            chunks = [chunk async for chunk in bounded.stream()]
            upload = Upload(b"".join(chunks))
    except ClientDisconnect:
        raise ClientAborted() from None
    if len(upload.data) > limit:
        raise _too_large(limit)
    if not upload.data:
        raise ApiError(400, "empty upload: send an image as the multipart field 'file' or as the request body")
    return upload


async def _multipart_file(request: Request) -> Upload:
    async with request.form(max_files=1, max_fields=16) as form:
        field = form.get(FILE_FIELD)
        if not isinstance(field, UploadFile):
            raise ApiError(400, f"multipart upload without a file in the field {FILE_FIELD!r}")
        return Upload(await field.read(), field.filename)
