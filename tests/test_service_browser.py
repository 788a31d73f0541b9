"""The web page in a real browser: ``derain serve --port 0`` in a subprocess, headless Chromium driven by Playwright.

Uses Debian's ``chromium`` (``/usr/bin/chromium``; Playwright's own browser download is not used)
and the bundled default model. A second server, started with an access token, checks that the page
asks for the token on 401 and derains the photo once it is entered. Skipped where Chromium or Playwright is missing, except in CI
(``CI`` set), where that is a failure: ``.ci/run`` installs both.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from derain.service.testing import RunningServer, encode_image, rainy_photo, running_server

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def _require(what: str) -> None:
    """Skip without ``what``; in CI, which installs it, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} not found, but CI must run the browser test (.ci/run installs it)")
    pytest.skip(f"{what} not found (apt-get install chromium; pip install playwright)")


def chromium_path() -> str:
    path = os.environ.get("DERAIN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        _require("Chromium (Debian's chromium package)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    """``derain serve --port 0`` (bundled default model) on loopback: the URL it prints, and its stderr log."""
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with running_server(log_path=log) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium under Playwright (checked before the server starts)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("Playwright (pip install playwright)")
    executable = chromium_path()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser, server):
    """The served page in a fresh tab that records every URL it asks for and every script error."""
    context = browser.new_context(accept_downloads=True)
    tab = context.new_page()
    tab.requests = []
    tab.on("request", lambda request: tab.requests.append(request.url))
    tab.console_errors = []
    tab.on("console", lambda msg: msg.type == "error" and tab.console_errors.append(msg.text))
    tab.on("pageerror", lambda exc: tab.console_errors.append(str(exc)))
    tab.goto(server.url + "/")
    yield tab
    context.close()


def fetch_bytes(page, url_expression: str) -> bytes:
    """Bytes of a URL (e.g. the download link's blob:) fetched inside the page."""
    b64 = page.evaluate(
        """async (expr) => {
            const response = await fetch(eval(expr));
            const bytes = new Uint8Array(await response.arrayBuffer());
            let text = "";
            for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
            return btoa(text);
        }""",
        url_expression,
    )
    return base64.b64decode(b64)


def test_pick_a_photo_see_before_after_and_download(page, server):
    base = server.url
    photo = rainy_photo(160, 112, seed=3)
    page.set_input_files("#file", files=[{"name": "street.png", "mimeType": "image/png", "buffer": encode_image(photo)}])
    page.wait_for_selector("body[data-state=done]", timeout=120_000)

    assert page.is_visible("#result") and page.is_visible("#before") and page.is_visible("#after")
    assert "Done: street.png" in page.inner_text("#status")
    assert page.get_attribute("#download", "download") == "street_derained.png"
    took = page.inner_text("#time")
    assert "ms on the server" in took and "ms in all" in took, took

    result = Image.open(io.BytesIO(fetch_bytes(page, "document.getElementById('download').href")))
    result.load()
    assert result.format == "PNG" and result.size == photo.size
    diff = np.abs(np.asarray(result.convert("RGB"), np.float32) - np.asarray(photo, np.float32))
    assert diff.mean() > 1.0, "the page's result equals the input"
    assert page.evaluate("document.getElementById('after').naturalWidth") == photo.width

    # the comparison slider moves the boundary between before and after
    page.eval_on_selector("#slider", "el => { el.value = 20; el.dispatchEvent(new Event('input')); }")
    assert "20%" in page.eval_on_selector("#after", "el => el.style.clipPath")
    assert page.eval_on_selector("#divider", "el => el.style.left") == "20%"

    # nothing but this server was asked for anything
    assert page.requests and all(url.startswith((base, "blob:", "data:")) for url in page.requests), page.requests
    assert not page.console_errors, page.console_errors
    access = server.wait_for_access("/v1/derain")
    assert any(a["status"] == 200 and a["width"] == 160 for a in access), access


def test_drop_a_jpeg_and_choose_webp(page):
    photo = rainy_photo(120, 90, seed=4)
    page.select_option("#format", "webp")
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            document.body.dataset.state = "";
            document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
        }""",
        base64.b64encode(encode_image(photo, "JPEG", quality=92)).decode(),
    )
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    assert page.get_attribute("#download", "download") == "dropped_derained.webp"
    result = Image.open(io.BytesIO(fetch_bytes(page, "document.getElementById('download').href")))
    assert result.format == "WEBP" and result.size == photo.size
    page.select_option("#format", "")


def test_a_file_that_is_no_image_shows_the_error(page):
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}])
    page.wait_for_selector("body[data-state=error]", timeout=60_000)
    status = page.inner_text("#status")
    assert status.startswith("415:") and "not an image" in status, status
    assert page.is_hidden("#result")


def test_the_strength_slider_rederains_the_photo(page, server):
    """Unticking auto strength and setting the slider to 0 derains the last photo again at that strength: the
    input comes back; back to auto, the model's own result."""
    photo = rainy_photo(128, 96, seed=5)
    page.set_input_files("#file", files=[{"name": "slider.png", "mimeType": "image/png", "buffer": encode_image(photo)}])
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    assert page.is_disabled("#strength") and page.inner_text("#strength-value") == "auto"

    page.evaluate("document.body.dataset.state = ''")
    page.uncheck("#strength-auto")  # derains again with the slider's value (100%)
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    page.evaluate("document.body.dataset.state = ''")
    page.eval_on_selector("#strength", "el => { el.value = 0; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }")
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    assert page.inner_text("#strength-value") == "0%"
    result = Image.open(io.BytesIO(fetch_bytes(page, "document.getElementById('download').href")))
    assert np.array_equal(np.asarray(result.convert("RGB")), np.asarray(photo))  # strength 0: the input back
    deadline = time.monotonic() + 10  # the access line is written just after the response
    while {a.get("strength") for a in server.wait_for_access("/v1/derain")} < {"auto", 1.0, 0.0} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {a.get("strength") for a in server.wait_for_access("/v1/derain")} >= {"auto", 1.0, 0.0}
    page.evaluate("document.body.dataset.state = ''")
    page.check("#strength-auto")  # back to auto: the model's own result again
    page.wait_for_selector("body[data-state=done]", timeout=120_000)
    assert page.is_disabled("#strength") and page.inner_text("#strength-value") == "auto"
    result = Image.open(io.BytesIO(fetch_bytes(page, "document.getElementById('download').href")))
    assert not np.array_equal(np.asarray(result.convert("RGB")), np.asarray(photo))


def test_the_api_docs_page_lists_the_endpoints_from_this_server_alone(browser, server):
    """``/docs`` in a fresh tab: the endpoints of ``/openapi.json`` listed, no request to any other host."""
    context = browser.new_context()
    tab = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        tab.goto(server.url + "/docs")
        tab.wait_for_selector("body[data-state=done]", timeout=30_000)
        listed = tab.inner_text("#endpoints")
        for text in ("POST", "/v1/derain", "GET", "/healthz", "/v1/models", "strength", "multipart/form-data", "503"):
            assert text in listed, text
        assert requests and all(url.startswith((server.url, "data:")) for url in requests), requests
        assert server.url + "/openapi.json" in requests
        assert not errors, errors
    finally:
        context.close()


TOKEN = "Pg7-Browser_Token.4kQ~9zR+Xw/T"


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory) -> Iterator[RunningServer]:
    """``derain serve --port 0 --token TOKEN`` on loopback."""
    log = tmp_path_factory.mktemp("serve-token") / "stderr.log"
    with running_server("--token", TOKEN, log_path=log) as running:
        yield running


def test_the_page_asks_for_the_token_and_then_derains(browser, guarded_server):
    """With a token set the page still loads; it asks for the token (the server answered 401), says when one
    is wrong, and once the right one is entered derains the photo picked before. The token lives in the tab's
    sessionStorage and goes only to this server, as the Bearer header."""
    server = guarded_server
    context = browser.new_context()
    tab = context.new_page()
    requests: list[str] = []
    auth: list[str | None] = []
    errors: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("request", lambda request: "/v1/" in request.url and auth.append(request.headers.get("authorization")))
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium reports each 401 it received as a console error: those are this test's own, anything else is not
    tab.on("console", lambda msg: msg.type == "error" and "401" not in msg.text and errors.append(msg.text))
    try:
        tab.goto(server.url + "/")
        tab.wait_for_selector("body[data-state=token]", timeout=30_000)  # asked on load: /v1/models said 401
        assert tab.is_visible("#login") and tab.get_attribute("#token", "type") == "password"
        assert "needs an access token" in tab.inner_text("#status")

        photo = rainy_photo(96, 64, seed=6)
        tab.evaluate("document.body.dataset.state = ''")
        tab.set_input_files("#file", files=[{"name": "locked.png", "mimeType": "image/png", "buffer": encode_image(photo)}])
        tab.wait_for_selector("body[data-state=token]", timeout=60_000)  # the upload got 401 too
        assert tab.is_hidden("#result")

        tab.fill("#token", "Wrong-token-but-well-formed-1234")
        tab.evaluate("document.body.dataset.state = ''")
        tab.click("#login button[type=submit]")
        tab.wait_for_selector("body[data-state=token]", timeout=60_000)
        assert "not accepted" in tab.inner_text("#status") and tab.is_visible("#login")
        assert tab.evaluate("sessionStorage.getItem('derain-token')") is None  # a refused token is forgotten

        tab.fill("#token", TOKEN)
        tab.click("#login button[type=submit]")
        tab.wait_for_selector("body[data-state=done]", timeout=120_000)  # the photo picked before, derained
        assert tab.is_hidden("#login") and "Done: locked.png" in tab.inner_text("#status")
        result = Image.open(io.BytesIO(fetch_bytes(tab, "document.getElementById('download').href")))
        assert result.size == photo.size
        diff = np.abs(np.asarray(result.convert("RGB"), np.float32) - np.asarray(photo, np.float32))
        assert diff.mean() > 1.0, "the page's result equals the input"
        assert tab.evaluate("sessionStorage.getItem('derain-token')") == TOKEN
        assert tab.evaluate("localStorage.length") == 0 and tab.evaluate("document.cookie") == ""
    finally:
        context.close()

    assert requests and all(url.startswith((server.url, "blob:", "data:")) for url in requests), requests
    assert auth[-1] == f"Bearer {TOKEN}" and auth[0] is None, auth
    assert not errors, errors
    statuses = [a["status"] for a in server.wait_for_access("/v1/derain")]
    deadline = time.monotonic() + 10  # the access line is written just after the response
    while 200 not in statuses and time.monotonic() < deadline:
        time.sleep(0.05)
        statuses = [a["status"] for a in server.wait_for_access("/v1/derain")]
    assert statuses == [401, 401, 200], statuses
    assert TOKEN not in server.log_path.read_text()
