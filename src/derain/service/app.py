"""The HTTP service: :func:`create_app` builds the FastAPI app that ``derain serve`` runs.

Endpoints:

* ``POST /v1/derain``: the image as the multipart field ``file`` or as the raw body; query
  ``format`` (``png``/``jpeg``/``webp``; default: the input's format), ``quality`` (1-100, JPEG and
  WebP), ``tile`` (tile side; default automatic; ``0``: one pass, only for images of at most 1 MP:
  larger ones are always tiled, with tiles of at most ``max_tile``), ``strength`` (``auto``, the default:
  the model judges the image; ``0``..``1``: that much removal). Answers the derained image
  with its content type, ``Content-Disposition`` (``<name>_derained.<ext>``) and ``Server-Timing``
  (queue, decode, derain, encode, total).
* ``GET /healthz``: ``{"status": "ok", "model": {...}, "queue": {...}}``.
* ``GET /v1/models``: ``{"models": [{"name", "params", "precision"}]}``.
* ``GET /``: the web page (``pages/index.html`` after the shared ``pages/head.html``, with its scripts and
  stylesheets in ``static/``: plain HTML/JS/CSS, nothing from elsewhere).
* ``GET /openapi.json``: the OpenAPI description; ``GET /docs``: a page listing its endpoints
  (``pages/docs.html``: plain JS that reads ``/openapi.json``, nothing from elsewhere, where
  FastAPI's Swagger UI and ReDoc pages would load their code from a CDN).
* ``GET /static/*``: the pages' scripts and stylesheets, as they are (the page fragments in ``pages/``
  are not served by themselves).

Access: with ``token`` set (``derain serve --token``/``DERAIN_TOKEN``), every request must send
``Authorization: Bearer TOKEN`` except the public ones, :func:`is_public`: ``GET``/``HEAD`` of ``/``,
``/docs``, ``/static/*`` (the pages' own JS/CSS, the same for everyone and shipped with derain:
a browser's navigation cannot send the header, so the page loads, asks for the token and sends it
on its own requests) and ``/healthz`` (a load balancer's liveness probe has no token; it tells the
model's name and the queue's counts, nothing that derains an image). Everything else (the API,
``/openapi.json``, unknown paths, other methods) gets 401 with ``WWW-Authenticate: Bearer`` and the
body ``{"error": "unauthorized", ...}``, the same for a missing, wrong or malformed token, before any
routing: :class:`TokenMiddleware` compares SHA-256 digests with :func:`hmac.compare_digest`, so
neither the token's characters nor its length show in the answer's timing. The token is kept only
as that digest and is never logged (the access log has no headers). No token is taken from the
query string, which the access log records.

Errors are JSON ``{"error", "request_id"}``: 400 (corrupt image, empty or malformed upload), 401, 404,
405, 408 (upload stalled for ``upload_idle_timeout`` s or not complete within ``upload_timeout`` s),
413 (upload over ``max_upload_mb``, or more than ``max_pixels`` pixels), 415 (not an image),
422 (bad query options), 503 with ``Retry-After`` (``max_uploads`` uploads being read, or
``workers + queue_size`` requests already admitted), 500 (a bug: logged with its traceback, never
sent). A client that disconnects during its upload is logged with status 499 (no traceback; not a
server error).

The model is loaded once, when the app is built. A request first reads its upload in one of
``max_uploads`` upload slots (:class:`~derain.service.uploads.UploadSlots`), with the timeouts
above, so slow or stalled clients only ever hold upload slots, which they give back when they time
out; then it takes a place among ``workers`` inference threads and ``queue_size`` waiting requests
(:mod:`derain.service.inference_pool`), off the event loop. Uploads held in memory are bounded by
``max_uploads + workers + queue_size`` (times ``max_upload_mb``), and one model pass by ``max_tile``².

>>> import derain
>>> from fastapi.testclient import TestClient
>>> app = create_app(derain.create_model("efderain-tiny"), precision="fp32")
>>> with TestClient(app) as client:
...     client.get("/v1/models").json()["models"][0]["name"]
'efderain-tiny'
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import re
import string
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ..errors import InvalidArgument
from ..inference.api import get_derainer
from ..inference.derainer import DerainerBase, resolve_strength
from ..inference.loading import ModelSource
from ..inference.tiling import AUTO_TILE, DEFAULT_OVERLAP, check_tile
from .errors import ApiError, ErrorBody, error_response, install_error_handlers
from .inference_pool import InferencePool, QueueFull
from .limits import (
    SERVICE_MAX_PIXELS,
    DEFAULT_MAX_TILE,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_MAX_UPLOADS,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_UPLOAD_IDLE_S,
    DEFAULT_UPLOAD_TIMEOUT_S,
)
from .middleware import ASGIApp, Receive, RequestContextMiddleware, Scope, Send
from .pipeline import derain_upload, download_name, media_type
from .uploads import UploadSlots, read_upload

__all__ = [
    "MIN_TOKEN_LENGTH",
    "SERVICE_MAX_PIXELS",
    "DEFAULT_MAX_TILE",
    "DEFAULT_MAX_UPLOAD_MB",
    "DEFAULT_QUEUE_SIZE",
    "Health",
    "ModelInfo",
    "ModelList",
    "OutputFormat",
    "TokenMiddleware",
    "check_token",
    "create_app",
    "is_public",
    "model_info",
]

#: Served as they are under ``/static/``: the pages' scripts and stylesheets.
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The pages' HTML, assembled by :func:`_page_html` (fragments: not served by themselves).
PAGES_DIR = Path(__file__).resolve().parent / "pages"
#: The page loads nothing from anywhere else (results are shown as blob: URLs).
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' blob:; object-src 'none'; base-uri 'none'"


@functools.cache
def _page_html(name: str, title: str) -> str:
    """A page of the service, read and assembled once: the shared head (``pages/head.html``: charset, viewport,
    ``title``, icon, app.css) then the rest of ``pages/<name>`` (its own stylesheets and script, the body)."""
    head = string.Template((PAGES_DIR / "head.html").read_text(encoding="utf-8")).substitute(title=title)
    return head + (PAGES_DIR / name).read_text(encoding="utf-8")


def _html_page(name: str, title: str) -> Response:
    return Response(_page_html(name, title), media_type="text/html", headers={"Content-Security-Policy": PAGE_CSP})


#: Shortest access token taken: 16 random characters of the token alphabet are over 96 bits, out of reach of guessing over HTTP.
MIN_TOKEN_LENGTH = 16
#: RFC 6750's ``b64token``: what an ``Authorization: Bearer`` header carries as it is.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/-]+=*")
#: Paths anyone may ``GET``/``HEAD`` when a token is set (and every ``/static/`` file): see :func:`is_public`.
PUBLIC_PATHS = frozenset({"/", "/docs", "/healthz"})


def check_token(token: str | None) -> str | None:
    """``token`` when it can be an access token, None for none; else :class:`~derain.errors.InvalidArgument`.

    A token is :data:`MIN_TOKEN_LENGTH` or more characters of RFC 6750's token alphabet, so a client
    sends it in the header as it is, and it cannot be guessed. The message never quotes the token.

    >>> check_token(None), check_token("Zx4-7Qm_Lr2.9Vb~Tc8+Yw/")
    (None, 'Zx4-7Qm_Lr2.9Vb~Tc8+Yw/')
    >>> try:
    ...     check_token("hunter2")
    ... except InvalidArgument as err:
    ...     err.option, "hunter2" in str(err)
    ('--token', False)
    """
    if token is None:
        return None
    if len(token) < MIN_TOKEN_LENGTH or not _TOKEN_CHARS.fullmatch(token):
        raise InvalidArgument(
            f"the access token (--token or DERAIN_TOKEN) must be {MIN_TOKEN_LENGTH} or more of the characters "
            "A-Z a-z 0-9 - . _ ~ + / (then = only at the end); make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            option="--token",
        )
    return token


def is_public(method: str, path: str) -> bool:
    """Whether a request needs no token: ``GET``/``HEAD`` of the web page and the docs page with their static
    files (a browser's navigation sends no ``Authorization`` header; they hold nothing secret, and their
    scripts send the token on their own requests), and of ``/healthz`` (liveness probes have no token).

    ``path`` is the ASGI ``path`` as the router sees it; anything not listed, ``/static`` itself and
    paths with ``..`` included, needs the token (fail closed).

    >>> [is_public(m, p) for m, p in [("GET", "/"), ("HEAD", "/healthz"), ("GET", "/static/app.js"), ("POST", "/"),
    ...  ("GET", "/v1/models"), ("GET", "/openapi.json"), ("GET", "/static/../openapi.json"), ("GET", "/nowhere")]]
    [True, True, True, False, False, False, False, False]
    """
    if method not in ("GET", "HEAD") or ".." in path:
        return False
    return path in PUBLIC_PATHS or (path.startswith("/static/") and len(path) > len("/static/"))


class TokenMiddleware:
    """Answers 401 to every request but the public ones (:func:`is_public`) that lacks ``Authorization: Bearer TOKEN``.

    Plain ASGI, inside :class:`~derain.service.middleware.RequestContextMiddleware` (so a 401 has its
    request ID and its access-log line) and before routing (so unknown paths, the static mount and
    FastAPI's ``/openapi.json`` are covered alike, and a 401 says nothing of which routes exist). Only
    the token's SHA-256 digest is kept; a presented token is hashed and compared with
    :func:`hmac.compare_digest`, which takes the same time whatever its characters or length.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._digest = hashlib.sha256(token.encode("ascii")).digest()

    def authorized(self, scope: Scope) -> bool:
        """Whether the request's first ``Authorization`` header is ``Bearer`` (any case) and this token."""
        header = next((v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"), b"")
        scheme, _, value = header.strip().partition(b" ")
        given = value.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or self.authorized(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation (no websocket routes anyway)
        elif is_public(scope.get("method", ""), scope.get("path", "")):
            await self.app(scope, receive, send)
        else:
            request_id = str(scope.get("state", {}).get("request_id", "-"))
            response = error_response(401, "unauthorized", request_id, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)


class OutputFormat(str, Enum):
    """Formats ``POST /v1/derain?format=`` can write."""

    png = "png"
    jpeg = "jpeg"
    jpg = "jpg"
    webp = "webp"


class ModelInfo(BaseModel):
    """The served model."""

    name: str
    params: int
    precision: str


class ModelList(BaseModel):
    """``GET /v1/models``."""

    models: list[ModelInfo]


class Health(BaseModel):
    """``GET /healthz``."""

    status: str
    model: ModelInfo
    queue: dict[str, int]


def model_info(derainer: DerainerBase, name: str | None = None) -> ModelInfo:
    """Name (``name``, else the runner's: the model's registry name or class, an ONNX file's name), parameter
    count and precision."""
    return ModelInfo(name=str(name or derainer.name), params=derainer.params, precision=derainer.precision)


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Corrupt or truncated image, empty upload, or a form without a `file` field",
        408: "The upload sent nothing for `upload_idle_timeout` seconds, or was not complete within `upload_timeout` seconds",
        413: "Upload larger than the size limit, or an image with more pixels than the limit",
        415: "Not an image (or a format Pillow cannot read)",
        422: "Invalid query options",
        503: "`max_uploads` uploads being read, or `workers + queue_size` requests already admitted; see `Retry-After`",
    }.items()
}
_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No `Authorization: Bearer TOKEN` header with this server's access token"}
}
_STRENGTH_HELP = (
    "How much of the rain removal to apply: auto (default) lets the model judge the image (one it finds dry comes "
    "back as it was); a number from 0 (the image back) to 1 (full removal, whatever the model judges)."
)
_TILE_HELP = (
    f"Tile side in pixels (0, or more than {2 * DEFAULT_OVERLAP}); default: automatic ({AUTO_TILE}-pixel tiles above 1 MP). "
    "0: one pass over the whole image, only up to 1 MP. Images above 1 MP are always tiled, with tiles of at most "
    "this server's maximum, {max_tile}; a larger tile or 0 is capped to it."
)
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image: the multipart field `file`, or the raw request body.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "image/*": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}


def create_app(
    model: ModelSource = None,
    *,
    workers: int = 1,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    max_pixels: int | None = SERVICE_MAX_PIXELS,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_tile: int = DEFAULT_MAX_TILE,
    precision: str = "auto",
    max_uploads: int = DEFAULT_MAX_UPLOADS,
    upload_idle_timeout: float | None = DEFAULT_UPLOAD_IDLE_S,
    upload_timeout: float | None = DEFAULT_UPLOAD_TIMEOUT_S,
    token: str | None = None,
) -> FastAPI:
    """Build the service around ``model`` (None: the bundled default; anything :func:`~derain.inference.loading.load_derainer` takes).

    Args:
        model: the model, loaded once here.
        workers: inference threads (requests derained at the same time).
        queue_size: uploaded requests admitted beyond the ``workers`` running ones; beyond that, 503
            with ``Retry-After``.
        max_pixels: larger images get 413 (None: no limit).
        max_upload_mb: larger uploads get 413 (MiB), checked while the body is read.
        max_tile: largest tile side (> 64); images over 1 MP or over ``max_tile²`` pixels are always
            tiled with tiles of at most this, whatever ``?tile=`` asks (see
            :func:`~derain.service.pipeline.server_tile`).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`derain.inference.precision`).
        max_uploads: uploads read at the same time; beyond that, 503 with ``Retry-After``.
        upload_idle_timeout: seconds an upload may send nothing before it gets 408 (None: no limit).
        upload_timeout: seconds an upload may take in all before it gets 408 (None: no limit).
        token: the access token every request but the public ones must send as ``Authorization: Bearer TOKEN``
            (see :func:`check_token`, :func:`is_public`); None: anyone who reaches the server may use it.
    """
    token = check_token(token)
    if max_upload_mb <= 0:
        raise InvalidArgument(f"max_upload_mb must be > 0, got {max_upload_mb}", option="--max-upload-mb")
    if max_pixels is not None and max_pixels < 1:
        raise InvalidArgument(f"max_pixels must be >= 1, got {max_pixels}", option="--max-pixels")
    for name, value in (("upload_idle_timeout", upload_idle_timeout), ("upload_timeout", upload_timeout)):
        if value is not None and not value > 0:
            raise InvalidArgument(f"{name} must be > 0 seconds, got {value}")
    try:
        check_tile(max_tile, DEFAULT_OVERLAP)
    except InvalidArgument as err:
        raise InvalidArgument(f"max_tile: {err}", option="--max-tile") from None
    derainer = get_derainer(model, "cpu", precision)
    pool = InferencePool(workers, queue_size)
    uploads = UploadSlots(max_uploads)
    info = model_info(derainer, "default" if model is None else None)
    upload_limit = int(max_upload_mb * 1024 * 1024)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()

    app = FastAPI(
        title="derain",
        summary="Remove rain from photos on a CPU (EfficientDeRain).",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: /docs is the local page below
        redoc_url=None,
    )
    app.state.pool = pool
    app.state.uploads = uploads
    app.state.derainer = derainer
    app.state.model_info = info
    install_error_handlers(app)
    if token is not None:
        app.add_middleware(TokenMiddleware, token=token)  # added first: inside the request context (IDs, access log)
    app.add_middleware(RequestContextMiddleware)
    api_errors = {**_ERRORS, **(_UNAUTHORIZED if token is not None else {})}
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.post(
        "/v1/derain",
        summary="Derain an image",
        response_class=Response,
        responses={200: {"description": "The derained image", "content": {t: {} for t in ("image/png", "image/jpeg", "image/webp")}}, **api_errors},
        openapi_extra=_UPLOAD_BODY,
    )
    async def derain_image(
        request: Request,
        format: Annotated[OutputFormat | None, Query(description="Output format; default: the input's.")] = None,
        quality: Annotated[int, Query(ge=1, le=100, description="JPEG/WebP quality.")] = 95,
        # a default rather than Annotated: the help names this app's max_tile, a local (annotations are strings here)
        tile: int | None = Query(None, ge=0, description=_TILE_HELP.format(max_tile=max_tile)),
        strength: Annotated[str, Query(description=_STRENGTH_HELP)] = "auto",
    ) -> Response:
        """Remove rain from the uploaded image; the result comes back in the input's format unless `format` says otherwise."""
        try:
            check_tile(tile, DEFAULT_OVERLAP)
        except InvalidArgument as err:
            raise ApiError(422, f"invalid request: {err}") from None
        try:
            chosen = resolve_strength(strength)
        except ValueError as err:
            raise ApiError(422, f"invalid request: {err}") from None
        with uploads.take():
            upload = await read_upload(request, upload_limit, idle_timeout=upload_idle_timeout, timeout=upload_timeout)
        try:
            place = pool.reserve()
        except QueueFull as full:
            raise ApiError(503, str(full), {"Retry-After": str(full.retry_after)}) from None
        with place:
            job = functools.partial(
                derain_upload, derainer, upload.data, max_pixels=max_pixels,
                format=format.value if format else None, quality=quality, tile=tile, max_tile=max_tile,
                name=upload.filename or "<upload>", strength=chosen,
            )
            result = await place.run(job)
        timings = {"queue": place.queue_ms, **result.timings_ms}
        request.state.log_fields.update(
            model=info.name, width=result.width, height=result.height, format=result.format, tile=result.tile, strength=chosen,
            **{f"{k}_ms": round(v, 1) for k, v in timings.items()},
        )
        headers = {
            "Content-Disposition": f'inline; filename="{download_name(upload.filename, result.format)}"',
            "Server-Timing": ", ".join(f"{k};dur={v:.1f}" for k, v in timings.items()),
            "X-Derain-Model": info.name,
        }
        return Response(result.data, media_type=media_type(result.format), headers=headers)

    @app.get("/healthz", response_model=Health, summary="Liveness and load")
    async def healthz() -> Health:
        """`ok` with the served model and the queue's state."""
        return Health(status="ok", model=info, queue=pool.stats())

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/v1/models", response_model=ModelList, summary="The served model",
             responses=dict(_UNAUTHORIZED) if token is not None else None)
    async def models() -> ModelList:
        """The model this server runs: name, parameter count and precision."""
        return ModelList(models=[info])

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> Response:
        return _html_page("index.html", "derain")

    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_page() -> Response:
        return _html_page("docs.html", "derain API")

    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("derain")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0"
