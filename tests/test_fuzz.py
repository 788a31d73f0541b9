"""The fuzz corpus (:mod:`fuzz_corpus`: 70 generated unusual and malformed files) through the CLI and the service.

Nothing may crash: no traceback, no partial or temporary file, one clear error per bad file, the
right HTTP status for each, and the valid files derained to the right size with their pixels kept
(a tiny identity-initialised model stands in for the bundled one).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from fuzz_corpus import FuzzFile, corpus, write_corpus
from PIL import Image, ImageOps

import derain
from derain.service import create_app

STATUS = {"ok": {200}, "corrupt": {400}, "not_image": {415}, "too_large": {413}, "unsupported": {400}, "either": {200, 400, 415}}
LOSSLESS = (".png", ".tif", ".bmp", ".gif")


@pytest.fixture(scope="module")
def model():
    return derain.create_model("efderain-tiny", identity_init=True)


def test_corpus_is_large_and_covers_every_outcome():
    files = corpus()
    assert len(files) >= 50
    assert {f.expect for f in files} == set(STATUS)


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode == "F":
            return np.asarray(img, dtype=np.float64) * 255.0
        if img.mode in ("I;16", "I"):
            return np.asarray(img, dtype=np.float64) / 257.0
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def _assert_derained_well(entry: FuzzFile, out: bytes) -> None:
    """Right size, and (identity-like model) the pixels of the input: exactly-ish for lossless formats."""
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == entry.size, (entry.name, img.size)
    if entry.expect != "ok":
        return
    a, b = _pixels(entry.data), _pixels(out)
    if a.ndim != b.ndim:  # grey in, kept grey out, or the other way round
        a, b = (x if x.ndim == 2 else x.mean(-1) for x in (a, b))
    diff = np.abs(np.nan_to_num(a, nan=0.0, posinf=0.0) - b)
    finite = np.isfinite(a)
    lossless = entry.name.lower().endswith(LOSSLESS) and not entry.name.startswith("png_named")
    limit = 0.6 if lossless else 6.0
    assert diff[finite].mean() <= limit, (entry.name, diff[finite].mean())


class TestService:
    @pytest.fixture(scope="class")
    @classmethod
    def client(cls, model):
        with TestClient(create_app(model, precision="fp32"), raise_server_exceptions=False) as c:
            yield c

    @pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "raw"])
    def test_every_file_gets_its_status(self, client, multipart):
        wrong = []
        for entry in corpus():
            if multipart:
                r = client.post("/v1/derain", files={"file": (entry.name, entry.data)})
            else:
                r = client.post("/v1/derain", content=entry.data, headers={"content-type": "application/octet-stream"})
            if r.status_code not in STATUS[entry.expect]:
                wrong.append((entry.name, entry.expect, r.status_code, r.text[:120]))
                continue
            if r.status_code == 200:
                _assert_derained_well(entry, r.content)
            else:
                body = r.json()
                assert set(body) == {"error", "request_id"} and "\n" not in body["error"], (entry.name, body)
                assert "Traceback" not in r.text and ".py" not in r.text, (entry.name, r.text)
        assert not wrong, wrong
        health = client.get("/healthz").json()["queue"]
        assert health["admitted"] == 0 and health["running"] == 0


@pytest.mark.slow
def test_cli_over_the_corpus(tmp_path, model):
    entries = write_corpus(tmp_path / "in")
    weights = tmp_path / "tiny.safetensors"
    derain.save_model(model, weights)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [sys.executable, "-m", "derain.cli.main", "run", "in", "-o", "out", "--weights", str(weights), "--threads", "1"],
        cwd=tmp_path, capture_output=True, timeout=300, env=env,
    )
    err = proc.stderr.decode()
    assert "Traceback" not in err and "Warning" not in err, err
    assert proc.returncode == 1
    errors = {line.split(": ", 2)[1]: line for line in err.splitlines() if line.startswith("error: ")}
    out = tmp_path / "out"
    written = {p.name for p in out.iterdir()}
    assert not [n for n in written if n.startswith(".") or n.endswith(".tmp")], written  # nothing partial
    for name, entry in entries.items():
        here = f"in/{name}"
        if entry.expect == "ok" or (entry.expect == "either" and name in written):
            assert here not in errors and name in written, (name, errors.get(here))
            _assert_derained_well(entry, (out / name).read_bytes())
        else:
            assert here in errors and name not in written, name
            assert len(errors[here]) < 400
    assert len(written) + len(errors) == len(entries)
    for text, expect in (("corrupt or truncated", "either"), ("not an image", "not_image"), ("too large", "too_large"),
                         ("not supported", "unsupported"), ("empty file", "corrupt")):
        assert any(text in line for line in errors.values()), text
