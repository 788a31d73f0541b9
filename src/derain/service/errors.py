"""JSON error responses: ``{"error": "...", "request_id": "..."}``, never a traceback.

:class:`ApiError` is what the service's own code raises; :func:`install_error_handlers` makes
FastAPI's routing errors (404, 405), request validation (422) and :class:`ApiError` all answer in
that one shape. Unexpected exceptions are answered by the request middleware
(:mod:`derain.service.middleware`) with a bare ``500`` and logged with their traceback.

>>> import json
>>> json.loads(error_response(413, "too big", "abc").body)
{'error': 'too big', 'request_id': 'abc'}
"""

from __future__ import annotations

from typing import Any, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "ErrorBody", "error_response", "install_error_handlers", "request_id_of"]


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    request_id: str


class ApiError(Exception):
    """An error to answer with ``status`` and a JSON body; ``headers`` go on the response (e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def request_id_of(request: Request) -> str:
    """The request's ID, set by the request middleware (``-`` outside it)."""
    return str(getattr(request.state, "request_id", "-"))


def error_response(status: int, message: str, request_id: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A JSON error response in the service's one shape."""
    return JSONResponse({"error": message, "request_id": request_id}, status_code=status, headers=dict(headers or {}))


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "body", "path", "header")]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Answer :class:`ApiError`, HTTP errors (404, 405, ...) and validation errors (422) as JSON errors."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, request_id_of(request), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), request_id_of(request), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in exc.errors())
        return error_response(422, f"invalid request: {problems}", request_id_of(request))
