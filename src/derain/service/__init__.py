"""derain as a local HTTP service (``derain serve``): an API and a web page on FastAPI + uvicorn.

:func:`~derain.service.app.create_app` builds the app (the model loaded once); the modules:

* :mod:`~derain.service.app` — the endpoints and the app factory;
* :mod:`~derain.service.pipeline` — decode, derain, encode one upload (in a worker thread);
* :mod:`~derain.service.inference_pool` — bounded worker threads and waiting queue (503 when full);
* :mod:`~derain.service.uploads` — reading a multipart or raw upload under a size limit;
* :mod:`~derain.service.middleware` — request IDs, timing headers, the JSON access log;
* :mod:`~derain.service.errors` — JSON error bodies, never a traceback;
* :mod:`~derain.service.limits` — the default limits;
* ``static/`` — the web page (plain HTML/JS/CSS, works offline).

FastAPI is imported on first use of :func:`create_app`, not with this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
