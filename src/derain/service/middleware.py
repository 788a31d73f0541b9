"""Request IDs, timing headers and one structured (JSON) access-log line per request.

:class:`RequestContextMiddleware` is plain ASGI, outermost in the app:

* every response gets ``X-Request-ID`` (the client's own, when it is a short token, else a new
  one), ``X-Process-Time-Ms`` and a ``Server-Timing`` ``total`` entry (after any entries the
  endpoint set, e.g. ``queue``, ``decode``, ``derain``, ``encode``);
* handlers find the ID as ``request.state.request_id``, and may put numbers for the log into
  ``request.state.log_fields``;
* an exception no handler answered becomes a JSON ``500`` without its traceback, which goes to
  the log instead;
* a client that disconnected during its upload is answered (to no one) and logged with status
  ``499`` by the upload reader (:class:`~derain.service.uploads.ClientAborted`): no traceback, not a 500;
* a send that fails (the client's socket reset or broken while the answer goes out: ``OSError``, or
  anyio's ``BrokenResourceError``/``ClosedResourceError`` from a stream the server closed) ends
  the answer there: logged with status ``499`` and ``send_error``, no traceback, no 500 sent after it;
  the request's upload slot and inference place are given back as after any answer;
* when the response is done, one JSON line goes to the ``derain.service`` logger (INFO):
  ``{"event": "request", "request_id", "method", "path", "status", "duration_ms", "bytes_in",
  "bytes_out", "client", ...}``.

>>> valid_request_id("cam-7.frame_0042"), valid_request_id("a b"), valid_request_id("x" * 200)
(True, False, False)
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, MutableMapping

from anyio import BrokenResourceError, ClosedResourceError  # starlette's own dependency

from .errors import error_response

#: What a send raises when the client's connection is gone: the socket's error, or anyio's for its closed stream.
_SEND_FAILURES = (OSError, BrokenResourceError, ClosedResourceError)

__all__ = ["RequestContextMiddleware", "LOGGER_NAME", "valid_request_id"]

#: The logger that receives the access log and the tracebacks of failed requests.
LOGGER_NAME = "derain.service"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def valid_request_id(value: str) -> bool:
    """A client-supplied request ID is kept when it is 1-64 characters of ``A-Za-z0-9._:-``."""
    return bool(_REQUEST_ID.fullmatch(value))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None



_SECRET_PARAMS = re.compile(r"(^|&)((?:access_)?token|password|key)=[^&]*", re.IGNORECASE)


def _redacted(query: str) -> str:
    """The query string with the values of credential-like parameters hidden (a client that puts its token in the
    URL is refused, but the access log must not keep the token).

    >>> _redacted("format=png&token=s3cret&access_token=x")
    'format=png&token=***&access_token=***'
    """
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", query)

class RequestContextMiddleware:
    """Adds request IDs and timing headers, turns unhandled errors into JSON 500s, writes the access log."""

    def __init__(self, app: ASGIApp, logger_name: str = LOGGER_NAME) -> None:
        self.app = app
        self.log = logging.getLogger(logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and valid_request_id(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["log_fields"] = {}
        seen = {"status": 0, "bytes_in": 0, "bytes_out": 0, "started": False, "send_error": None}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes_in"] += len(message.get("body", b""))
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"], seen["started"] = message["status"], True
                elapsed_ms = (time.perf_counter() - start) * 1000.0
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server-timing"]
                timing = [v.decode("latin-1") for k, v in message.get("headers", []) if k.lower() == b"server-timing"]
                timing.append(f"total;dur={elapsed_ms:.1f}")
                headers += [
                    (b"x-request-id", request_id.encode()),
                    (b"x-process-time-ms", f"{elapsed_ms:.1f}".encode()),
                    (b"server-timing", ", ".join(timing).encode("latin-1")),
                ]
                message["headers"] = headers
            if seen["send_error"]:
                return  # the connection is gone: the rest of the answer has nowhere to go
            try:
                await send(message)
            except _SEND_FAILURES as err:  # the client's connection failed while the answer was sent: its problem, not a 500
                seen["send_error"] = getattr(err, "strerror", None) or type(err).__name__
                return
            if message["type"] == "http.response.body":
                seen["bytes_out"] += len(message.get("body", b""))

        try:
            await self.app(scope, counting_receive, send_with_headers)
        except Exception:  # noqa: BLE001 - the client gets a bare 500, the log gets the traceback
            self.log.exception(json.dumps({"event": "error", "request_id": request_id, "path": scope.get("path")}))
            if not seen["started"]:
                response = error_response(500, "internal server error", request_id)
                await response(scope, counting_receive, send_with_headers)
        finally:
            self._access_log(scope, request_id, seen, start, state.get("log_fields") or {})

    def _access_log(self, scope: Scope, request_id: str, seen: dict[str, Any], start: float, fields: dict[str, Any]) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        client = scope.get("client")
        line = {
            "event": "request",
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "query": _redacted(scope.get("query_string", b"").decode("latin-1")) or None,
            "status": 499 if seen["send_error"] else seen["status"] or 500,
            "duration_ms": round((time.perf_counter() - start) * 1000.0, 1),
            "bytes_in": seen["bytes_in"],
            "bytes_out": seen["bytes_out"],
            "client": client[0] if client else None,
            **({"send_error": seen["send_error"], "status_meant": seen["status"]} if seen["send_error"] else {}),
            **fields,
        }
        self.log.info(json.dumps(line, default=str))
