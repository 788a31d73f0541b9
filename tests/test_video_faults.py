"""The video fault corpus (:mod:`derain.bench.video_faults`) through ``derain video``, frame by frame and
``--temporal``: a broken file ends in one clear line on stderr and exit 1, with no traceback and no output
or temporary file; an odd but valid one is derained. The CLI runs in-process (its real entry point,
``derain.cli.main.main``) with an identity-initialised efderain-tiny model."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("av")

import derain  # noqa: E402
from derain.bench.video_faults import video_fault_corpus  # noqa: E402
from derain.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    weights = root / "tiny.safetensors"
    derain.save_model(derain.create_model("efderain-tiny", identity_init=True), weights)
    return {f.name: f for f in video_fault_corpus(root / "corpus")}, weights


def test_the_corpus_has_at_least_15_cases(corpus):
    faults, _ = corpus
    assert len(faults) >= 15
    assert {"truncated", "zero-frames", "one-frame", "variable-frame-rate", "odd-size", "one-pixel", "audio-only", "garbage",
            "directory", "unreadable", "wrong-extension", "huge-declared-size", "corrupted-header", "rotated"} <= set(faults)


CASES = [
    "truncated", "truncated-header", "zero-frames", "empty-file", "garbage", "text", "corrupted-header", "audio-only", "directory",
    "missing", "still-image", "unreadable", "huge-declared-size", "one-frame", "variable-frame-rate", "odd-size", "one-pixel",
    "one-pixel-wide", "rotated", "wrong-extension", "with-audio",
]


@pytest.mark.parametrize("temporal", [False, True], ids=["frame", "temporal"])
@pytest.mark.parametrize("name", CASES)
def test_fault_through_derain_video(corpus, name, temporal, tmp_path, capsys):
    faults, weights = corpus
    fault = faults[name]
    if fault.needs_non_root and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop reading")
    out = tmp_path / "out.mp4"
    args = ["video", str(fault.path), "-o", str(out), "--weights", str(weights), "--precision", "fp32", "--threads", "1",
            "--no-compile", *(["--temporal"] if temporal else [])]
    with pytest.raises(SystemExit) as code:
        main(args)
        raise SystemExit(0)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "frame/s" not in line]
    if fault.expect == "fail":
        assert code.value.code == 1, err
        assert len(lines) == 1 and lines[0].startswith("Error:"), err
        assert fault.expect_text in lines[0].lower(), err
        assert not out.exists()
        assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file either
    else:
        assert code.value.code in (0, None), err
        assert out.is_file() and out.stat().st_size > 0
        assert not [p for p in tmp_path.iterdir() if ".part" in p.name]
