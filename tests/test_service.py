"""The HTTP service (``derain serve``) through the real app, in-process (FastAPI's TestClient).

Most tests serve ``efderain-tiny`` with random weights (fast); one serves the bundled default,
and a few run ``derain serve --port 0`` in a subprocess. Every status code the service answers is
checked: 200, 400, 401, 404, 405, 413 (bytes, streamed bytes, pixels), 415, 422, 500, 503 with
Retry-After (made deterministic by a model that blocks until the test lets it go), and the 499
logged for a client that disconnects mid-upload; the tile cap that bounds one model pass; and the
access token: every route of the app (enumerated, so a new one cannot be forgotten) refuses a
request without it but the documented public ones, and ``derain serve`` refuses a non-loopback
``--host`` without one.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from PIL import Image
from starlette.routing import BaseRoute, Mount, Route
from starlette.websockets import WebSocketDisconnect
from torch import nn

import derain
from derain.cli import serve as serve_module
from derain.cli.main import cli
from derain.service import create_app
from derain.service.app import is_public
from derain.service.middleware import LOGGER_NAME
from derain.service.testing import encode_image, rainy_photo, running_server


def decoded(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def assert_error(response, status: int, *words: str) -> dict:
    """A JSON error body with the request's ID, the given words, and no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    for word in words:
        assert word in body["error"], body
    assert "Traceback" not in response.text and 'File "' not in response.text and ".py" not in response.text
    return body


PHOTO = rainy_photo()
PNG = encode_image(PHOTO)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return derain.create_model("efderain-tiny")


@pytest.fixture(scope="module")
def client(tiny):
    with TestClient(create_app(tiny, precision="fp32")) as c:
        yield c


# ------------------------------------------------------------------------------------- 200


def test_multipart_png_comes_back_as_png_of_the_same_size(client):
    r = client.post("/v1/derain", files={"file": ("rain shot.png", PNG, "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == 'inline; filename="rain_shot_derained.png"'
    out = decoded(r.content)
    assert out.format == "PNG" and out.size == PHOTO.size and out.mode == "RGB"
    assert len(r.headers["x-request-id"]) >= 16
    assert float(r.headers["x-process-time-ms"]) > 0
    timing = r.headers["server-timing"]
    for part in ("queue;dur=", "decode;dur=", "derain;dur=", "encode;dur=", "total;dur="):
        assert part in timing, timing


def test_raw_body_and_format_follow_the_input(client):
    jpeg = encode_image(PHOTO, "JPEG", quality=90)
    r = client.post("/v1/derain", content=jpeg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert decoded(r.content).format == "JPEG" and decoded(r.content).size == PHOTO.size


@pytest.mark.parametrize("fmt, media, pil", [("webp", "image/webp", "WEBP"), ("jpeg", "image/jpeg", "JPEG"), ("png", "image/png", "PNG")])
def test_format_option_overrides_the_input_format(client, fmt, media, pil):
    r = client.post(f"/v1/derain?format={fmt}", files={"file": ("x.png", PNG)})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media
    out = decoded(r.content)
    assert out.format == pil and out.size == PHOTO.size


def test_quality_changes_lossy_output(client):
    small = client.post("/v1/derain?format=jpeg&quality=5", content=PNG).content
    large = client.post("/v1/derain?format=jpeg&quality=100", content=PNG).content
    assert len(small) < 0.75 * len(large)


def test_tiling_option_keeps_the_size(client):
    big = rainy_photo(200, 150, seed=1)
    r = client.post("/v1/derain?tile=96", content=encode_image(big))
    assert r.status_code == 200, r.text
    assert decoded(r.content).size == (200, 150)
    whole = decoded(client.post("/v1/derain?tile=0", content=encode_image(big)).content)
    tiled = np.asarray(decoded(r.content), np.float32)
    assert np.abs(tiled - np.asarray(whole, np.float32)).mean() < 3.0


def test_alpha_and_grey_are_kept(client):
    rgba = PHOTO.convert("RGBA")
    rgba.putalpha(77)
    out = decoded(client.post("/v1/derain", content=encode_image(rgba)).content)
    assert out.mode == "RGBA" and out.getpixel((3, 3))[3] == 77
    grey = decoded(client.post("/v1/derain", content=encode_image(PHOTO.convert("L"))).content)
    assert grey.mode == "L" and grey.size == PHOTO.size


def test_default_model_derains_and_changes_the_image():
    with TestClient(create_app()) as c:  # the bundled default model
        assert c.get("/v1/models").json()["models"][0]["name"] == "default"
        r = c.post("/v1/derain", files={"file": ("rain.png", PNG, "image/png")})
    assert r.status_code == 200, r.text
    out = np.asarray(decoded(r.content), np.float32)
    assert out.shape == (PHOTO.height, PHOTO.width, 3)
    diff = np.abs(out - np.asarray(PHOTO, np.float32))
    assert diff.mean() > 1.0, "the default model returned the input unchanged"
    assert r.headers["x-derain-model"] == "default"


# ----------------------------------------------------------------------- info and the page


def test_healthz_models_and_docs(client, tiny):
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["queue"] == {"workers": 1, "queue_size": 8, "admitted": 0, "running": 0}
    models = client.get("/v1/models").json()["models"]
    assert models == [{"name": "efderain-tiny", "params": sum(p.numel() for p in tiny.parameters()), "precision": "fp32"}]
    assert health["model"] == models[0]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/derain"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/*" in body
    assert {"/healthz", "/v1/models"} <= set(spec["paths"])
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page loads from a CDN: not served


def test_docs_page_is_local(client):
    """``/docs`` lists the endpoints from ``/openapi.json`` with the server's own script: no URL of another host."""
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "/static/docs.js" in r.text and "/openapi.json" in r.text
    for asset in ("/static/docs.js", "/static/docs.css", "/static/app.css"):
        served = client.get(asset)
        assert asset in r.text and served.status_code == 200
        assert "http://" not in served.text and "https://" not in served.text, asset
    assert "http://" not in r.text and "https://" not in r.text
    assert "fetch(\"/openapi.json\"," in client.get("/static/docs.js").text  # with the token where the page has one


def test_page_and_its_assets_are_local(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    page = r.text
    for asset in ("/static/app.js", "/static/app.css"):
        assert asset in page
        assert client.get(asset).status_code == 200
    text = page + client.get("/static/app.js").text + client.get("/static/app.css").text
    assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_the_pages_are_whole_and_their_fragments_not_served(client, monkeypatch):
    """``/`` and ``/docs`` are the shared head then the page's own part, assembled once; the parts (``head.html``
    with its ``$title``) are not files under ``/static/``."""
    from derain.service import app as service_app

    for path, title in (("/", "derain"), ("/docs", "derain API")):
        text = client.get(path).text
        assert text.startswith("<!doctype html>") and text.count("<head>") == 1 and f"<title>{title}</title>" in text
        assert "$title" not in text
    for name in ("index.html", "docs.html", "head.html"):
        assert client.get(f"/static/{name}").status_code == 404, name
    reads: list[object] = []
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or real_read(self, *a, **k))
    assert client.get("/").text == client.get("/").text and client.get("/docs").status_code == 200
    assert reads == [] and service_app._page_html.cache_info().currsize >= 2  # no disk read per request


# --------------------------------------------------------------------------- client errors


def test_not_an_image_is_415(client):
    assert_error(client.post("/v1/derain", content=b"hello, this is text"), 415, "not an image")
    assert_error(client.post("/v1/derain", files={"file": ("notes.txt", b"plain text", "text/plain")}), 415)


def test_corrupt_image_is_400(client):
    assert_error(client.post("/v1/derain", content=PNG[: len(PNG) // 2]), 400, "corrupt or truncated")
    assert_error(client.post("/v1/derain", content=encode_image(PHOTO, "JPEG")[:300]), 400)


def test_empty_or_malformed_uploads_are_400(client):
    assert_error(client.post("/v1/derain", content=b""), 400, "empty upload")
    assert_error(client.post("/v1/derain", files={"photo": ("x.png", PNG)}), 400, "'file'")
    assert_error(client.post("/v1/derain", data={"file": "not a file"}, files={"other": ("x", b"x")}), 400, "'file'")
    two = [("file", ("a.png", PNG)), ("file", ("b.png", PNG))]
    assert_error(client.post("/v1/derain", files=two), 400)
    bad = client.post("/v1/derain", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"})
    assert bad.status_code == 400


def test_bad_options_are_422(client):
    assert_error(client.post("/v1/derain?quality=0", content=PNG), 422, "quality")
    assert_error(client.post("/v1/derain?format=gif", content=PNG), 422, "format")
    assert_error(client.post("/v1/derain?tile=16", content=PNG), 422, "tile")
    assert_error(client.post("/v1/derain?tile=-1", content=PNG), 422, "tile")


def test_unknown_route_is_404_and_wrong_method_405(client):
    assert_error(client.get("/v2/derain"), 404)
    r = client.get("/v1/derain")
    assert_error(r, 405)
    assert r.headers["allow"] == "POST"
    assert_error(client.delete("/healthz"), 405)
    assert client.head("/healthz").status_code == 200 and client.head("/").status_code == 200
    assert_error(client.post("/v1/models"), 405)


def test_upload_over_the_byte_limit_is_413(tiny):
    with TestClient(create_app(tiny, precision="fp32", max_upload_mb=10 / 1024)) as c:  # 10 KiB
        big = encode_image(rainy_photo(200, 150))
        assert len(big) > 20_000
        assert_error(c.post("/v1/derain", content=big), 413, "upload too large", "10 KiB")
        assert_error(c.post("/v1/derain", files={"file": ("big.png", big)}), 413, "upload too large")
        # no Content-Length (chunked): cut off while streaming
        chunks = (big[i : i + 4096] for i in range(0, len(big), 4096))
        assert_error(c.post("/v1/derain", content=chunks), 413, "upload too large")
        # a small one still passes, and the refused ones gave their places back
        assert c.post("/v1/derain", content=encode_image(rainy_photo(40, 30))).status_code == 200
        assert c.get("/healthz").json()["queue"]["admitted"] == 0


def asgi_post(app, headers: list[tuple[bytes, bytes]], messages: list[dict]) -> tuple[list[dict], int]:
    """POST /v1/derain straight into the ASGI app, the body as ``messages``; (what was sent, messages read)."""
    incoming = list(messages)
    read, sent = [], []

    async def receive():
        read.append(1)
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(post_scope(app, headers), receive, send))
    return sent, len(read)


def post_scope(app, headers: list[tuple[bytes, bytes]], client_port: int = 1) -> dict:
    """The ASGI scope of ``POST /v1/derain`` with ``headers``."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/derain", "raw_path": b"/v1/derain", "query_string": b"", "root_path": "",
        "headers": headers, "client": ("127.0.0.1", client_port), "server": ("127.0.0.1", 80), "app": app,
    }


def test_declared_length_over_the_limit_is_refused_before_reading(tiny):
    app = create_app(tiny, precision="fp32", max_upload_mb=0.01)
    body = [{"type": "http.request", "body": b"x" * 100, "more_body": False}]
    sent, read = asgi_post(app, [(b"content-length", b"999999999"), (b"content-type", b"image/png")], body)
    assert sent[0]["status"] == 413
    assert not read, "the body was read although Content-Length was over the limit"


@pytest.mark.parametrize("multipart", [False, True], ids=["raw", "multipart"])
def test_client_disconnect_mid_upload_is_a_499_not_a_server_error(tiny, caplog, multipart):
    app = create_app(tiny, precision="fp32")
    if multipart:
        content_type = b"multipart/form-data; boundary=xyz"
        first = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + PNG[:500]
    else:
        content_type, first = b"image/png", PNG[:500]
    headers = [(b"content-length", str(len(PNG) + 200).encode()), (b"content-type", content_type)]
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        sent, _ = asgi_post(app, headers, [{"type": "http.request", "body": first, "more_body": True}])  # then disconnect
    assert sent[0]["status"] == 499
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING], "a client abort was logged as an error"
    assert not any(rec.exc_info for rec in caplog.records)
    (line,) = access_lines(caplog)
    assert line["status"] == 499 and line["path"] == "/v1/derain"
    assert app.state.pool.admitted == 0


def stalled_post(app, first: bytes, declared: int, hold: asyncio.Event) -> dict:
    """A raw POST that sends ``first`` of ``declared`` bytes and then nothing until ``hold`` is set; its first message sent."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": first, "more_body": True}]

    async def receive():
        if messages:
            return messages.pop(0)
        await hold.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = post_scope(app, [(b"content-length", str(declared).encode()), (b"content-type", b"image/png")])

    async def run() -> dict:
        await app(scope, receive, send)
        return sent[0] if sent else {}

    return run()  # a coroutine: the caller gathers it


class TestStalledUploads:
    """Slow clients cannot starve the service: they hold upload slots only, and those time out (408)."""

    def test_stalled_upload_is_408_after_the_idle_timeout_and_gives_its_slot_back(self, tiny, caplog):
        app = create_app(tiny, precision="fp32", upload_idle_timeout=0.3)

        async def scenario():
            hold = asyncio.Event()
            started = time.monotonic()
            first = await stalled_post(app, PNG[:500], len(PNG), hold)
            return first, time.monotonic() - started

        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            first, seconds = asyncio.run(scenario())
        assert first["status"] == 408 and 0.25 < seconds < 5
        assert app.state.uploads.active == 0 and app.state.pool.admitted == 0
        (line,) = access_lines(caplog)
        assert line["status"] == 408

    def test_trickling_upload_is_408_at_the_deadline(self, tiny):
        app = create_app(tiny, precision="fp32", upload_idle_timeout=5, upload_timeout=0.5)
        sent: list[dict] = []

        async def receive():
            await asyncio.sleep(0.05)  # a byte every 50 ms: never idle for long, never done
            return {"type": "http.request", "body": b"x", "more_body": True}

        async def send(message):
            sent.append(message)

        scope = post_scope(app, [(b"content-length", b"100000"), (b"content-type", b"image/png")])
        started = time.monotonic()
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 408 and time.monotonic() - started < 5
        assert b"not complete within 0.5 s" in sent[1]["body"]

    def test_ten_stalled_uploads_do_not_block_a_normal_request(self, tiny):
        """The issue's case: with 10 uploads stalled (more than workers + queue_size), a normal request gets 200."""
        app = create_app(tiny, precision="fp32", workers=1, queue_size=1)
        results: dict[str, object] = {}

        async def scenario():
            hold = asyncio.Event()
            stalled = [asyncio.ensure_future(stalled_post(app, PNG[:100], len(PNG), hold)) for _ in range(10)]
            await asyncio.sleep(0.2)
            results["active"] = app.state.uploads.active
            sent: list[dict] = []
            body = [{"type": "http.request", "body": PNG, "more_body": False}]

            async def receive():
                return body.pop(0) if body else {"type": "http.disconnect"}

            async def send(message):
                sent.append(message)

            scope = post_scope(app, [(b"content-length", str(len(PNG)).encode()), (b"content-type", b"image/png")], 2)
            await asyncio.wait_for(app(scope, receive, send), 60)
            results["normal"] = sent[0]["status"]
            hold.set()  # the stalled clients go away
            results["stalled"] = [s["status"] for s in await asyncio.gather(*stalled)]

        asyncio.run(scenario())
        assert results["active"] == 10 and results["normal"] == 200
        assert results["stalled"] == [499] * 10
        assert app.state.uploads.active == 0 and app.state.pool.admitted == 0

    def test_upload_slots_full_is_503(self, tiny):
        app = create_app(tiny, precision="fp32", max_uploads=2)

        async def scenario():
            hold = asyncio.Event()
            stalled = [asyncio.ensure_future(stalled_post(app, PNG[:100], len(PNG), hold)) for _ in range(3)]
            await asyncio.sleep(0.2)
            hold.set()
            return [s.get("status") for s in await asyncio.gather(*stalled)]

        statuses = asyncio.run(scenario())
        assert sorted(statuses) == [499, 499, 503]


def test_too_many_pixels_is_413(tiny):
    with TestClient(create_app(tiny, precision="fp32", max_pixels=5000)) as c:
        body = assert_error(c.post("/v1/derain", content=PNG), 413, "too large", "6,144 pixels")
        assert "5,000" in body["error"]
        assert c.post("/v1/derain", content=encode_image(rainy_photo(50, 40))).status_code == 200


# ------------------------------------------------------------------- server errors and load


class GatedModel(nn.Module):
    """Returns its input once ``gate`` is set; counts the calls that started."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.started = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.started += 1
        assert self.gate.wait(60), "test never opened the gate"
        return x


class ShapeRecorder(nn.Module):
    """Returns its input; records the (height, width) of every pass."""

    def __init__(self) -> None:
        super().__init__()
        self.passes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append(tuple(x.shape[-2:]))
        return x


class BrokenModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("secret internal detail in /src/model.py")


def wait_for(condition, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_full_queue_is_503_with_retry_after():
    gate = threading.Event()
    model = GatedModel(gate)
    app = create_app(model, workers=1, queue_size=1, precision="fp32")
    pool = app.state.pool
    with TestClient(app) as c:
        answers: dict[int, object] = {}

        def post(i: int) -> None:
            answers[i] = c.post("/v1/derain", content=PNG)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        try:
            # one request running in the worker, one waiting in the queue
            wait_for(lambda: pool.stats()["running"] == 1 and pool.admitted == 2)
            r = c.post("/v1/derain", content=PNG)
            body = assert_error(r, 503, "busy")
            assert int(r.headers["retry-after"]) >= 1
            assert c.get("/healthz").json()["queue"]["admitted"] == 2  # health still answers
        finally:
            gate.set()
            for t in threads:
                t.join(60)
        assert [answers[i].status_code for i in range(2)] == [200, 200]
        assert model.started == 2
        wait_for(lambda: pool.admitted == 0)
        assert c.post("/v1/derain", content=PNG).status_code == 200
    assert body["request_id"] != answers[0].headers["x-request-id"]


@pytest.mark.parametrize(
    "query, size, tile, biggest_pass",
    [
        ("?tile=0", (200, 150), 96, (96, 96)),  # over max_tile²: tiled although 0 asks for one pass
        ("?tile=5000", (200, 150), 96, (96, 96)),  # a tile larger than the image: capped
        ("", (200, 150), 96, (96, 96)),  # automatic (512) capped too
        ("?tile=80", (200, 150), 80, (80, 80)),  # a smaller tile is kept
        ("?tile=0", (90, 70), 0, (70, 90)),  # small enough: one pass, as asked
        ("", (90, 70), 0, (70, 90)),
    ],
)
def test_the_server_caps_the_tile_so_one_pass_stays_bounded(caplog, query, size, tile, biggest_pass):
    model = ShapeRecorder()
    with TestClient(create_app(model, precision="fp32", max_tile=96)) as c, caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        r = c.post(f"/v1/derain{query}", content=encode_image(rainy_photo(*size)))
    assert r.status_code == 200, r.text
    assert decoded(r.content).size == size
    assert max(model.passes) == biggest_pass
    if tile:
        assert len(model.passes) > 1 and all(h <= tile and w <= tile for h, w in model.passes)
    assert [line["tile"] for line in access_lines(caplog) if line["path"] == "/v1/derain"] == [tile]


def test_inference_failure_is_a_bare_500_and_logged(caplog):
    with TestClient(create_app(BrokenModel(), precision="fp32")) as c, caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        r = c.post("/v1/derain", content=PNG)
        assert_error(r, 500, "internal server error")
        assert "secret" not in r.text
        assert c.get("/healthz").json()["queue"]["admitted"] == 0
    failures = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert failures and failures[0].exc_info is not None  # the traceback goes to the log
    assert json.loads(failures[0].getMessage())["request_id"] == r.headers["x-request-id"]


# ---------------------------------------------------------------- request IDs and the log


def access_lines(caplog) -> list[dict]:
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == LOGGER_NAME and rec.levelno == logging.INFO]
    assert all(line["event"] == "request" for line in lines)
    return lines


def test_access_log_is_one_json_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        ok = client.post("/v1/derain?format=webp", files={"file": ("a.png", PNG)})
        missing = client.get("/nowhere")
    lines = access_lines(caplog)
    assert len(lines) == 2
    first, second = lines
    assert first["request_id"] == ok.headers["x-request-id"]
    assert (first["method"], first["path"], first["query"], first["status"]) == ("POST", "/v1/derain", "format=webp", 200)
    assert first["duration_ms"] > 0 and first["bytes_out"] == len(ok.content) and first["bytes_in"] > len(PNG)
    assert (first["width"], first["height"], first["format"], first["model"]) == (96, 64, "WEBP", "efderain-tiny")
    assert first["derain_ms"] > 0 and "queue_ms" in first
    assert (second["status"], second["path"], second["request_id"]) == (404, "/nowhere", missing.headers["x-request-id"])


def test_client_request_id_is_kept_when_sane(client):
    assert client.get("/healthz", headers={"X-Request-ID": "cam-7.frame_42"}).headers["x-request-id"] == "cam-7.frame_42"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert replaced != "bad id\twith spaces" and len(replaced) == 32
    a, b = (client.get("/healthz").headers["x-request-id"] for _ in range(2))
    assert a != b


# ------------------------------------------------------------------------------- the factory


def test_create_app_rejects_bad_limits(tiny):
    for kwargs in ({"workers": 0}, {"queue_size": -1}, {"max_upload_mb": 0}, {"max_pixels": 0}, {"max_tile": 64},
                   {"max_uploads": 0}, {"upload_idle_timeout": 0}, {"upload_timeout": -1}):
        with pytest.raises(ValueError):
            create_app(tiny, **kwargs)
    with pytest.raises(ValueError):
        create_app(tiny, precision="fp64")


# ---------------------------------------------------------------------------- derain serve


def exited_cleanly(result) -> bool:
    """CliRunner keeps an uncaught exception in ``result.exception`` (never in the output): only SystemExit is clean."""
    return result.exception is None or isinstance(result.exception, SystemExit)


def test_serve_rejects_bad_options():
    runner = CliRunner()
    for args, option in (
        (["--workers", "0"], "--workers"), (["--port", "70000"], "--port"), (["--max-upload-mb", "0"], "--max-upload-mb"),
        (["--queue-size", "-1"], "--queue-size"), (["--precision", "x"], "--precision"), (["--threads", "0"], "--threads"),
        (["--max-tile", "64"], "--max-tile"), (["--max-uploads", "0"], "--max-uploads"),
        (["--upload-timeout", "0"], "--upload-timeout"), (["--upload-idle-timeout", "-1"], "--upload-idle-timeout"),
    ):
        result = runner.invoke(cli, ["serve", *args])
        assert result.exit_code == 2 and exited_cleanly(result), (args, result.output, result.exception)
        assert f"Invalid value for '{option}'" in result.output, result.output


def test_serve_reports_a_busy_port_and_bad_weights(tmp_path):
    runner = CliRunner()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = runner.invoke(cli, ["serve", "--port", str(port)])
    assert result.exit_code == 1 and exited_cleanly(result), (result.output, result.exception)
    assert f"Error: cannot listen on 127.0.0.1:{port}" in result.output, result.output
    missing = tmp_path / "missing.safetensors"
    result = runner.invoke(cli, ["serve", "--port", "0", "--weights", str(missing)])
    assert result.exit_code == 1 and exited_cleanly(result), (result.output, result.exception)
    assert result.output.startswith("Error: ") and "missing.safetensors" in result.output, result.output
    result = runner.invoke(cli, ["serve", "--port", "0", "--model", "no-such-model"])
    assert result.exit_code == 1 and exited_cleanly(result), (result.output, result.exception)
    assert result.output.startswith("Error: ") and "no-such-model" in result.output, result.output


def test_serve_on_port_0_prints_the_bound_url_and_caps_the_tile(tmp_path):
    """A real ``derain serve`` subprocess: the printed URL is the port it bound, the options reach the app."""
    args = ("--workers", "2", "--threads", "1", "--queue-size", "3", "--max-tile", "128")
    with running_server(*args, log_path=tmp_path / "serve.log") as server:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.url.startswith("http://127.0.0.1:") and port > 0
        startup = server.log_lines()[0]
        assert startup.startswith(f"derain serve: {server.url} (model default") and "2 workers, 1 torch thread each, queue 3" in startup
        assert server.health["queue"] == {"workers": 2, "queue_size": 3, "admitted": 0, "running": 0}
        request = urllib.request.Request(f"{server.url}/v1/derain?tile=0", data=encode_image(rainy_photo(200, 150)),
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=120) as r:
            assert r.status == 200 and decoded(r.read()).size == (200, 150)
        (line,) = server.wait_for_access("/v1/derain")
        assert (line["status"], line["tile"]) == (200, 128)
    # stopped by SIGTERM (the block's end): a graceful shutdown and exit status 0, not "Aborted!"
    assert server.process.returncode == 0, server.log_lines()[-3:]
    assert "Aborted" not in (tmp_path / "serve.log").read_text()


# ---------------------------------------------------------------------------- the access token

TOKEN = "Zx4-7Qm_Lr2.9Vb~Tc8+Yw/Ka5Nd3Hs"  # fixed: a failure replays as it was
#: The documented public requests (README, Service; derain.service.app.is_public): the pages' files and /healthz.
PUBLIC = {("GET", "/"), ("HEAD", "/"), ("GET", "/docs"), ("HEAD", "/docs"), ("GET", "/healthz"), ("HEAD", "/healthz")}
BAD_CREDENTIALS = {
    "none": {},
    "wrong, same length": {"Authorization": "Bearer " + TOKEN[::-1]},
    "one character short": {"Authorization": "Bearer " + TOKEN[:-1]},
    "one character more": {"Authorization": "Bearer " + TOKEN + "x"},
    "much longer": {"Authorization": "Bearer " + TOKEN * 50},
    "empty": {"Authorization": "Bearer "},
    "no scheme": {"Authorization": TOKEN},
    "basic": {"Authorization": "Basic " + TOKEN},
    "not utf-8": {"Authorization": b"Bearer \xff\xfe" + TOKEN.encode()},
    "other header": {"X-Token": TOKEN, "Cookie": f"token={TOKEN}"},
}
GOOD = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded_app(tiny):
    return create_app(tiny, precision="fp32", token=TOKEN)


@pytest.fixture(scope="module")
def guarded(guarded_app):
    with TestClient(guarded_app) as c:
        yield c


def every_request(app) -> list[tuple[str, str]]:
    """(method, path) of every request the app's routes answer: each method of each route, each file of each
    static mount. A route of another kind fails here, so that a new one is added to this enumeration."""
    requests: list[tuple[str, str]] = []
    for route in app.routes:
        assert isinstance(route, BaseRoute)
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            files = sorted(f.name for f in Path(str(route.app.directory)).iterdir() if f.is_file())
            assert files, route.path
            requests += [(m, f"{route.path}/{name}") for name in files for m in ("GET", "HEAD")]
        elif isinstance(route, Route):  # FastAPI's APIRoute too
            path = route.path_format.replace("{", "").replace("}", "")  # a path parameter gets its own name as value
            requests += [(m, path) for m in sorted(route.methods or ())]
        else:
            pytest.fail(f"route of unknown kind {type(route).__name__} ({route}): teach every_request to call it")
    return requests


def send(client, method: str, path: str, headers: dict) -> object:
    body = PNG if method == "POST" else None
    return client.request(method, path, headers=headers, content=body)


def test_every_route_but_the_public_ones_refuses_requests_without_the_token(guarded, guarded_app, caplog):
    requests = every_request(guarded_app)
    methods = {m for m, _ in requests}
    paths = {p for _, p in requests}
    assert {"/v1/derain", "/v1/models", "/openapi.json", "/docs", "/", "/healthz", "/static/app.js"} <= paths
    # not routes at all, or the wrong method: refused alike, so a 401 tells nothing of which routes exist
    probes = requests + [("GET", "/nowhere"), ("GET", "/static/../openapi.json"), ("GET", "/static"), ("POST", "/"),
                         ("DELETE", "/healthz"), ("GET", "/v1/derain"), ("PUT", "/v1/models"), ("GET", "/healthz/")]
    public = {(m, p) for m, p in probes if (m, p) in PUBLIC or (m in ("GET", "HEAD") and p.startswith("/static/") and ".." not in p)}
    assert public == {(m, p) for m, p in probes if is_public(m, p)}  # the app's rule is the documented one
    assert "POST" in methods and ("GET", "/v1/models") not in public and ("GET", "/openapi.json") not in public
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        for label, headers in BAD_CREDENTIALS.items():
            for method, path in probes:
                r = send(guarded, method, path, headers)
                if (method, path) in public:
                    assert r.status_code == 200, (label, method, path, r.status_code)
                    continue
                assert r.status_code == 401, (label, method, path, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer", (method, path)
                if method != "HEAD":
                    assert assert_error(r, 401)["error"] == "unauthorized", (method, path)  # the same, whatever was wrong
        refused = [line for line in access_lines(caplog) if line["status"] == 401]
    assert len(refused) == len(BAD_CREDENTIALS) * (len(probes) - len(public))
    with pytest.raises(WebSocketDisconnect) as closed, guarded.websocket_connect("/v1/derain"):
        pass
    assert closed.value.code == 1008  # a websocket without the token is closed as a policy violation
    assert TOKEN not in caplog.text and TOKEN[::-1] not in caplog.text and TOKEN[:-1] not in caplog.text


def test_every_route_works_with_the_token(guarded, guarded_app, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        for headers in (GOOD, {"Authorization": f"bearer  {TOKEN} "}):  # the scheme in any case, spaces around
            for method, path in every_request(guarded_app):
                r = send(guarded, method, path, headers)
                assert r.status_code == 200, (method, path, r.status_code, r.text[:200])
                if method == "POST":
                    assert decoded(r.content).size == PHOTO.size
        assert guarded.get("/nowhere", headers=GOOD).status_code == 404  # past the token, the router answers
        assert guarded.get("/v1/models", headers=GOOD).json()["models"][0]["name"] == "efderain-tiny"
        assert guarded.get(f"/v1/models?token={TOKEN}").status_code == 401  # never from the query (the log has it)
    assert TOKEN not in "\n".join(line for line in caplog.text.splitlines() if "token=" not in line)
    spec = guarded.get("/openapi.json", headers=GOOD).json()
    assert "401" in spec["paths"]["/v1/derain"]["post"]["responses"] and "401" in spec["paths"]["/v1/models"]["get"]["responses"]


def test_the_page_the_docs_and_their_files_load_without_the_token(guarded):
    page = guarded.get("/")
    assert page.status_code == 200 and 'id="login"' in page.text and 'type="password"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"] and "<script>" not in page.text
    script = guarded.get("/static/app.js").text
    assert "Authorization" in script and "sessionStorage" in script and "localStorage" not in script
    assert guarded.get("/docs").status_code == 200 and guarded.head("/static/app.css").status_code == 200
    assert guarded.get("/healthz").json()["status"] == "ok"


def test_create_app_rejects_tokens_that_cannot_be_one(tiny):
    for bad in ("", "short-token", "x" * 15, "has spaces in the middle", "tab\tseparated-token-here", "ünïcödé-token-123456",
                "line\nbreak-in-the-token-123", "=equals-first-1234567", "quote\"in-the-token-12345"):
        with pytest.raises(ValueError) as caught:
            create_app(tiny, precision="fp32", token=bad)
        assert caught.value.option == "--token" and (not bad or bad not in str(caught.value)), bad
    assert create_app(tiny, precision="fp32", token="a" * 16 + "==") is not None


def test_serve_passes_the_token_and_refuses_an_open_host_without_one(monkeypatch):
    """Which token reaches the app (the option wins over DERAIN_TOKEN) and when the bind must stay on loopback;
    ``bind_socket`` is stubbed, so nothing is bound or served."""
    from derain.service import app as app_module

    seen: list[tuple] = []
    check_token = app_module.check_token

    def recording_check(token):
        seen.append(("token", token))
        return check_token(token)

    def no_bind(host, port, *, loopback_only=False):
        seen.append(("bind", host, loopback_only))
        raise click.ClickException("stub: not bound")

    monkeypatch.setattr(app_module, "check_token", recording_check)
    monkeypatch.setattr(serve_module, "bind_socket", no_bind)
    runner = CliRunner()
    cases = [
        ([], {}, [("token", None), ("bind", "127.0.0.1", True)]),
        (["--host", "0.0.0.0", "--allow-anyone"], {}, [("token", None), ("bind", "0.0.0.0", False)]),
        (["--host", "0.0.0.0"], {"DERAIN_TOKEN": TOKEN}, [("token", TOKEN), ("bind", "0.0.0.0", False)]),
        (["--token", TOKEN], {"DERAIN_TOKEN": "Other-token-from-the-environment"}, [("token", TOKEN), ("bind", "127.0.0.1", False)]),
        ([], {"DERAIN_TOKEN": ""}, [("token", None), ("bind", "127.0.0.1", True)]),  # set but empty: no token
    ]
    for args, env, expected in cases:
        seen.clear()
        result = runner.invoke(cli, ["serve", "--port", "0", *args], env={"DERAIN_TOKEN": None, **env})
        assert result.exit_code == 1 and "stub: not bound" in result.output, (args, result.output)
        assert seen == expected, (args, env, seen)
    seen.clear()
    result = runner.invoke(cli, ["serve", "--port", "0"], env={"DERAIN_TOKEN": "too-short"})
    assert result.exit_code == 2 and exited_cleanly(result) and "Invalid value for --token" in result.output, result.output
    assert "too-short" not in result.output and not [s for s in seen if s[0] == "bind"]  # refused before binding


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "::ffff:0.0.0.0"])
def test_bind_socket_refuses_an_open_address_before_binding(host):
    with pytest.raises(serve_module.OpenToAnyone) as caught:
        serve_module.bind_socket(host, 0, loopback_only=True)
    assert caught.value.exit_code == 2 and "\n" not in caught.value.message
    assert "--token" in caught.value.message and "--allow-anyone" in caught.value.message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost"])
def test_bind_socket_takes_loopback_addresses(host):
    with serve_module.bind_socket(host, 0, loopback_only=True) as sock:
        assert serve_module.is_loopback(sock.getsockname()[0])


def test_serve_on_every_interface_without_a_token_exits_2_with_one_line():
    """The real command: one line on stderr, nothing on stdout, exit status 2, before anything is bound or
    loaded (bounded: a regression that served would be killed by the timeout)."""
    env = {k: v for k, v in os.environ.items() if k != "DERAIN_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "derain.cli.main", "serve", "--host", "0.0.0.0", "--port", "0"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith("Error: --host 0.0.0.0 ") and "--token or DERAIN_TOKEN" in line and "--allow-anyone" in line


def test_serve_with_a_token_from_the_environment(tmp_path, monkeypatch):
    """A real ``derain serve`` with ``DERAIN_TOKEN`` (inherited): /healthz answers without it (``running_server``
    waits on it), the API only with it; the startup line says so, and neither stderr nor the log holds the token."""
    monkeypatch.setenv("DERAIN_TOKEN", TOKEN)
    with running_server(log_path=tmp_path / "serve.log") as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.log_lines()[0].endswith(", access token required)"), server.log_lines()[0]
        photo = encode_image(rainy_photo(64, 48))
        for headers in ({}, {"Authorization": "Bearer " + TOKEN[::-1]}):
            request = urllib.request.Request(f"{server.url}/v1/derain", data=photo, headers={"Content-Type": "image/png", **headers})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=60)
            assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
            assert json.loads(refused.value.read())["error"] == "unauthorized"
        request = urllib.request.Request(f"{server.url}/v1/derain", data=photo, headers={"Content-Type": "image/png", **GOOD})
        with urllib.request.urlopen(request, timeout=120) as r:
            assert r.status == 200 and decoded(r.read()).size == (64, 48)
        deadline = time.monotonic() + 10
        while len(server.wait_for_access("/v1/derain")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [a["status"] for a in server.wait_for_access("/v1/derain")] == [401, 401, 200]
    assert server.process.returncode == 0
    assert TOKEN not in (tmp_path / "serve.log").read_text() and TOKEN[::-1] not in (tmp_path / "serve.log").read_text()
