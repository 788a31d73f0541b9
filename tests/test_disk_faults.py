"""A disk that fills up or fails (ENOSPC, EIO) under every file derain writes: one line naming the file, exit
code 1, nothing partial or temporary left, the inputs and the earlier outputs untouched, and a rerun that
finishes only what is missing.

The errors are injected where every byte derain writes goes through (:func:`derain.bench.faults.disk_fault`
replaces :mod:`derain.io.atomic`'s ``write``/``fsync`` through its hook :func:`derain.io.atomic.syscalls`); where the machine lets root mount one, a real 200 KB
tmpfs fills up too (skipped with the reason otherwise).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import derain
from derain.bench.faults import ERRORS, REASON, TINY_MODEL, decodes, disk_fault, photo
from derain.cli.main import main
from derain.io.atomic import WriteError, append_file, syscalls, write_atomic, write_fd


def leftovers(folder: Path) -> list[str]:
    """Hidden temporaries (atomic_output's ``.NAME.<hex>.tmp``, atomic_files' ``.group-*.tmp``) under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if p.name.endswith(".tmp"))


def run_main(argv: list[str], capsys) -> tuple[int, list[str]]:
    """``derain ARGV`` in this process: (exit code, stderr lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    code = exit_info.value.code if isinstance(exit_info.value.code, int) else (0 if exit_info.value.code is None else 1)
    return code, capsys.readouterr().err.splitlines()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return derain.save_model(derain.create_model("efderain-tiny"), tmp_path_factory.mktemp("w") / "tiny.safetensors")


# --- the write helpers ------------------------------------------------------------------------------------


class TestWriteHelpers:
    @pytest.mark.parametrize("name", ERRORS)
    @pytest.mark.parametrize("after", [0, 1000, 70_000])
    def test_write_atomic_fails_whole_and_keeps_the_old_file(self, tmp_path, name, after) -> None:
        target = tmp_path / "a.bin"
        target.write_bytes(b"old")
        data = os.urandom(100_000)
        with disk_fault(ERRORS[name], "a.bin", after) as fault, pytest.raises(WriteError) as info:
            write_atomic(target, data)
        assert fault.failed, "the fault was not reached"
        assert str(info.value) == f"cannot write {target}: {REASON[ERRORS[name]]}"
        assert info.value.errno == ERRORS[name] and isinstance(info.value, OSError) and isinstance(info.value, derain.errors.UserError)
        assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["a.bin"]
        write_atomic(target, data)  # space back: the same call writes it
        assert target.read_bytes() == data

    def test_a_late_error_at_the_flush_fails_the_write(self, tmp_path) -> None:
        """The file system reports the error only when the data is flushed (quota, delayed allocation, NFS)."""
        target = tmp_path / "late.json"
        with disk_fault(errno.EIO, "late.json", at="fsync") as fault, pytest.raises(WriteError, match="late.json: Input/output error"):
            write_atomic(target, "{}")
        assert fault.failed and not list(tmp_path.iterdir())

    def test_short_writes_are_continued(self, tmp_path) -> None:
        """A write that takes fewer bytes than offered (a pipe, a signal, a disk at its limit) is continued, not dropped."""
        data = os.urandom(5000)
        with syscalls(write=lambda fd, chunk: real.write(fd, memoryview(chunk)[:7])) as real:
            assert write_atomic(tmp_path / "x", data).read_bytes() == data

    def test_the_hook_nests_and_puts_the_calls_back(self, tmp_path) -> None:
        calls: list[str] = []
        with syscalls(fsync=lambda fd: calls.append("outer") or outer.fsync(fd)) as outer:
            with disk_fault(errno.EIO, "late.json", at="fsync"), pytest.raises(WriteError):
                write_atomic(tmp_path / "late.json", "{}")
            write_atomic(tmp_path / "ok.json", "{}")
        write_atomic(tmp_path / "ok.json", "{}")
        assert calls == ["outer"]  # late.json failed in the inner hook; ok.json's one flush passed the outer; then none

    def test_write_atomic_flushes_once(self, tmp_path) -> None:
        flushes: list[int] = []
        with syscalls(fsync=lambda fd: flushes.append(fd) or real.fsync(fd)) as real:
            write_atomic(tmp_path / "a.bin", b"data")
        assert len(flushes) == 1

    @pytest.mark.parametrize("name", ERRORS)
    def test_write_fd_in_append_mode_keeps_what_was_there(self, tmp_path, name) -> None:
        """``derain - < x.jpg >> existing.bin``: the offset of an O_APPEND descriptor is 0 before its first write;
        the file is cut back to its length before the call, not to nothing."""
        target = tmp_path / "existing.bin"
        target.write_bytes(b"earlier content\n")
        fd = os.open(target, os.O_WRONLY | os.O_APPEND)
        try:
            with disk_fault(ERRORS[name], "existing.bin", 300) as fault, pytest.raises(WriteError) as info:
                write_fd(fd, os.urandom(10_000), "<stdout>")
            assert fault.failed and fault.written
        finally:
            os.close(fd)
        assert str(info.value) == f"cannot write <stdout> ({target}): {REASON[ERRORS[name]]}"
        assert target.read_bytes() == b"earlier content\n"

    def test_write_fd_cuts_back_to_where_it_began(self, tmp_path) -> None:
        """A descriptor opened for writing, not appending, part written already: cut back to its offset."""
        target = tmp_path / "out.bin"
        target.write_bytes(b"0123456789")
        fd = os.open(target, os.O_WRONLY)
        try:
            os.lseek(fd, 4, os.SEEK_SET)
            with disk_fault(errno.ENOSPC, "out.bin", 100), pytest.raises(WriteError):
                write_fd(fd, os.urandom(1000), "<stdout>")
        finally:
            os.close(fd)
        assert target.read_bytes() == b"0123"

    def test_write_error_pickles_and_copies(self) -> None:
        import copy

        err = WriteError("/out/x.png", OSError(errno.ENOSPC, "No space left on device"), "free some space")
        for again in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
            assert type(again) is WriteError and str(again) == str(err) == "cannot write /out/x.png: No space left on device; free some space"
            assert (again.errno, again.filename, again.hint) == (errno.ENOSPC, "/out/x.png", "free some space")

    @pytest.mark.parametrize("name", ERRORS)
    def test_append_file_never_leaves_half_a_row(self, tmp_path, name) -> None:
        log = tmp_path / "train_log.csv"
        append_file(log, "step,loss\n1,0.5\n")
        with disk_fault(ERRORS[name], "train_log.csv", 5), pytest.raises(WriteError, match="train_log.csv"):
            append_file(log, "2,0.25000000\n")
        assert log.read_text() == "step,loss\n1,0.5\n"


# --- derain run: a photo, a folder, stdout ----------------------------------------------------------------


@pytest.mark.parametrize("name", ERRORS)
def test_photo(tmp_path, capsys, tiny_weights, name) -> None:
    src = photo(tmp_path / "in" / "x.jpg")
    before = src.read_bytes()
    with disk_fault(ERRORS[name], "x.jpg", 500) as fault:
        code, err = run_main(["run", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights)], capsys)
    assert fault.failed and code == 1
    errors = [line for line in err if line.startswith("error:")]
    assert errors == [f"error: {src}: cannot write {tmp_path / 'out' / 'x.jpg'}: {REASON[ERRORS[name]]}"], err
    assert "Traceback" not in "\n".join(err)
    assert not any((tmp_path / "out").rglob("*")) and src.read_bytes() == before


@pytest.mark.parametrize("name", ERRORS)
def test_folder_goes_on_and_a_rerun_writes_only_what_is_missing(tmp_path, capsys, tiny_weights, name) -> None:
    inputs = [photo(tmp_path / "in" / f"p{i}.jpg", seed=i) for i in range(4)]
    before = {p: p.read_bytes() for p in inputs}
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "-o", str(out), "--weights", str(tiny_weights)]
    with disk_fault(ERRORS[name], "p2.jpg", 300) as fault:
        code, err = run_main(argv, capsys)
    assert fault.failed and code == 1
    assert [line for line in err if line.startswith("error:")] == [f"error: {inputs[2]}: cannot write {out / 'p2.jpg'}: {REASON[ERRORS[name]]}"]
    assert ("lack of space" in "\n".join(err)) == (name == "ENOSPC")
    assert err[-1].startswith("3 ok, 1 failed, 0 skipped")
    assert sorted(p.name for p in out.iterdir()) == ["p0.jpg", "p1.jpg", "p3.jpg"]  # no partial p2, no temporaries
    assert all(decodes(out / n) for n in ("p0.jpg", "p1.jpg", "p3.jpg"))
    written = {n: (out / n).read_bytes() for n in ("p0.jpg", "p1.jpg", "p3.jpg")}
    code, err = run_main(argv, capsys)  # space back
    assert code == 0 and err[-1].startswith("1 ok, 0 failed, 3 skipped"), err
    assert sorted(p.name for p in out.iterdir()) == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg"] and decodes(out / "p2.jpg")
    assert all((out / n).read_bytes() == b for n, b in written.items())  # the earlier outputs untouched
    assert all(p.read_bytes() == b for p, b in before.items())


def _derain_stdout(tmp_path: Path, weights: Path, fault: str | None, stdout) -> subprocess.CompletedProcess:
    """``derain - < x.jpg`` in a subprocess, its stdout ``stdout``; ``fault``: ``disk_fault`` arguments to inject."""
    src = photo(tmp_path / "x.jpg")
    code = "from derain.cli.main import main\n"
    if fault:
        code = f"import errno\nfrom derain.bench.faults import disk_fault\nfrom derain.cli.main import main\nwith disk_fault({fault}):\n    main()\n"
    else:
        code += "main()\n"
    with open(src, "rb") as stdin:
        return subprocess.run([sys.executable, "-c", code, "-", "--weights", str(weights)], stdin=stdin, stdout=stdout,
                              stderr=subprocess.PIPE, text=False, timeout=120, check=False)


def test_stdout_appended_to_a_file_keeps_its_content(tmp_path, tiny_weights) -> None:
    """``derain - < x.jpg >> existing.bin``: the write fails part way; the file is cut back to what was there."""
    target = tmp_path / "existing.bin"
    target.write_bytes(b"the user's data\n" * 100)
    with open(target, "ab") as stdout:
        proc = _derain_stdout(tmp_path, tiny_weights, "errno.ENOSPC, 'existing.bin', 300", stdout)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert f"cannot write <stdout> ({target}): No space left on device" in err
    assert target.read_bytes() == b"the user's data\n" * 100


@pytest.mark.parametrize("name", ERRORS)
def test_stdout_to_a_file_is_cut_back(tmp_path, tiny_weights, name) -> None:
    """``derain - > out.jpg``: the write fails part way; out.jpg is left empty (as the shell made it), not cut."""
    target = tmp_path / "out.jpg"
    with open(target, "wb") as stdout:
        proc = _derain_stdout(tmp_path, tiny_weights, f"errno.{name}, 'out.jpg', 300", stdout)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: <stdin>: cannot write <stdout> ({target}): {REASON[ERRORS[name]]}"], err
    assert target.read_bytes() == b""


def test_stdout_to_a_full_device(tmp_path, tiny_weights) -> None:
    """A real ENOSPC: ``/dev/full``."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb") as stdout:
        proc = _derain_stdout(tmp_path, tiny_weights, None, stdout)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and "Exception ignored" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == ["error: <stdin>: cannot write <stdout>: No space left on device"]


# --- training: checkpoint, last, best, logs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    for i in range(6):
        photo(root / f"{i:02d}.png", seed=i, size=(72, 56))
    return root


def train_config(clean_folder: Path, out: Path, **extra) -> dict:
    return {
        "model": "efderain-tiny", "model_overrides": TINY_MODEL,
        "sources": [{"kind": "synthetic", "path": str(clean_folder), "preset": "mixed"}],
        "crop": 32, "batch_size": 2, "iterations": 4, "decay_start": 2, "threads": 1, "seed": 3, "log_every": 1,
        "checkpoint_every": 1, "validation": {"synthetic": 2, "every": 1}, "out_dir": str(out), **extra,
    }


def _step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


@pytest.mark.parametrize("name", ERRORS)
@pytest.mark.parametrize("target", ["checkpoint.pt", "last.safetensors", "best.safetensors", "train_log.csv"])
def test_training_keeps_the_last_whole_checkpoint(tmp_path, capsys, clean_folder, name, target) -> None:
    """The 3rd write of TARGET fails (step 3): one line naming it and the checkpoint kept (step 2); the files in
    out_dir are whole and agree; --resume finishes the run."""
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(train_config(clean_folder, out)))
    # every checkpoint and best file is a new path (a new group, a new temporary): the 3rd is step 3's; the log is one
    # path appended to, each row some 30 bytes after a header of 28: its 100th byte is in step 3's row
    nth, after = (1, 100) if target == "train_log.csv" else (3, 100)
    with disk_fault(ERRORS[name], target, after, nth=nth) as fault:
        code, err = run_main(["train", str(cfg)], capsys)
    assert fault.failed and code == 1, err
    (line,) = [e for e in err if e.startswith("Error:")]
    assert line.startswith(f"Error: cannot write {out / target}: {REASON[ERRORS[name]]}; the last checkpoint, step ")
    assert line.endswith(f"is kept in {out} (--resume continues from it)") and "Traceback" not in "\n".join(err)
    assert leftovers(out) == []
    kept = _step(out / "checkpoint.pt")
    meta_step = int(derain.models.checkpoint.read_state_dict(out / "last.safetensors")[1]["step"])
    assert kept == meta_step and f"step {kept}," in line
    derain.load_model(out / "best.safetensors")
    rows = (out / "train_log.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,images_per_s" and all(len(r.split(",")) == 4 for r in rows[1:])
    code, err = run_main(["train", str(cfg), "--resume"], capsys)  # space back
    assert code == 0, err
    assert _step(out / "checkpoint.pt") == 4 and leftovers(out) == []


# --- ONNX export, benchmark and demo outputs --------------------------------------------------------------


@pytest.mark.parametrize("name", ERRORS)
def test_export(tmp_path, capsys, tiny_weights, name) -> None:
    out = tmp_path / "m.onnx"
    with disk_fault(ERRORS[name], "m.onnx", 4096) as fault:
        code, err = run_main(["export", "--weights", str(tiny_weights), "-o", str(out), "--no-verify"], capsys)
    assert fault.failed and code == 1
    assert err == [f"Error: cannot write {out}: {REASON[ERRORS[name]]}"]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ERRORS)
@pytest.mark.parametrize("kind", ["json", "csv"])
def test_bench_speed_outputs(tmp_path, capsys, name, kind) -> None:
    out = tmp_path / f"speed.{kind}"
    argv = ["bench", "speed", "--model", "efderain-tiny", "--size", "32x24", "--batch", "1", "--precision", "fp32",
            "--repeats", "1", "--warmup", "0", "--threads", "1", f"--{kind}", str(out)]
    with disk_fault(ERRORS[name], out.name, 50) as fault:
        code, err = run_main(argv, capsys)
    assert fault.failed and code == 1
    assert [e for e in err if "cannot write" in e] == [f"Error: cannot write {out}: {REASON[ERRORS[name]]}"]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ERRORS)
def test_demo_picture(tmp_path, capsys, tiny_weights, name) -> None:
    out = tmp_path / "demo.png"
    with disk_fault(ERRORS[name], "demo.png", 1000) as fault:
        code, err = run_main(["demo", "-o", str(out), "--weights", str(tiny_weights)], capsys)
    assert fault.failed and code == 1
    assert err == [f"Error: cannot write {out}: {REASON[ERRORS[name]]}"]
    assert not list(tmp_path.iterdir())


# --- the service: a send that fails -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [*ERRORS, "EPIPE", "ECONNRESET", "BrokenResourceError", "ClosedResourceError"])
def test_service_send_failure_is_logged_not_raised(tiny_weights, caplog, name) -> None:
    """The client's socket fails while the answer is sent (an OSError, or anyio's errors of a stream that is
    gone): no exception out of the app, no traceback, no 500 sent after it; a 499 access line with the reason;
    the request's places given back."""
    import anyio

    from derain.service.app import create_app
    from derain.service.middleware import LOGGER_NAME
    from derain.service.testing import encode_image, rainy_photo

    failure = getattr(anyio, name)() if hasattr(anyio, name) else OSError(getattr(errno, name), os.strerror(getattr(errno, name)))
    reason = failure.strerror if isinstance(failure, OSError) else name
    app = create_app(derain.load_model(tiny_weights), precision="fp32")
    body = encode_image(rainy_photo(48, 32))
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            raise failure
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/derain", "raw_path": b"/v1/derain", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80), "app": app}

    async def one() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
            assert app.state.pool.admitted == 0

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        asyncio.run(one())
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200]  # no 500 after the failure
    assert not any(rec.exc_info for rec in caplog.records) and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith('{"event": "request"')]
    assert len(lines) == 1 and lines[0]["status"] == 499 and lines[0]["status_meant"] == 200
    assert lines[0]["send_error"] == reason


# --- a real full disk: a 200 KB tmpfs ---------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 200 KB tmpfs at ``tmp_path/full`` (root only); unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if proc.returncode:
        pytest.skip(f"mount -t tmpfs is not permitted here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_folder_onto_a_full_tmpfs(tmp_path, capsys, tiny_tmpfs) -> None:
    """The reported bug: 10 photos onto a 200 KB tmpfs reported some files ok of which one was cut (Pillow's
    encoder ignored a short write). Now every file said ok is whole, the others absent; with space, a rerun
    writes only those."""
    inputs = [photo(tmp_path / "in" / f"p{i}.jpg", seed=i, size=(320, 240)) for i in range(10)]
    assert sum(p.stat().st_size for p in inputs) > 300_000
    argv = ["run", str(tmp_path / "in"), "-o", str(tiny_tmpfs), "--model", "fast"]  # a real model: outputs of a photo's size
    code, err = run_main(argv, capsys)
    ok = int(err[-1].split(" ok,")[0])
    written = sorted(p.name for p in tiny_tmpfs.iterdir())
    assert code == 1 and 0 < ok < 10 and len(written) == ok, err
    assert all(decodes(tiny_tmpfs / n) for n in written), "a file reported written is cut"
    failed = [line for line in err if line.startswith("error:")]
    assert len(failed) == 10 - ok and all(line.endswith(": No space left on device") for line in failed)
    kept = {n: (tiny_tmpfs / n).read_bytes() for n in written}
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_tmpfs)], check=True)
    code, err = run_main(argv, capsys)
    assert code == 0 and err[-1].startswith(f"{10 - ok} ok, 0 failed, {ok} skipped"), err
    assert len(list(tiny_tmpfs.iterdir())) == 10 and all(decodes(p) for p in tiny_tmpfs.iterdir())
    assert all((tiny_tmpfs / n).read_bytes() == b for n, b in kept.items())


def test_stdout_onto_a_full_tmpfs(tmp_path, tiny_tmpfs) -> None:
    subprocess.run(["mount", "-o", "remount,size=8k", str(tiny_tmpfs)], check=True)
    src = photo(tmp_path / "big.jpg", size=(320, 240))
    target = tiny_tmpfs / "out.jpg"
    with open(src, "rb") as stdin, open(target, "wb") as stdout:
        proc = subprocess.run([sys.executable, "-m", "derain.cli.main", "-", "--model", "fast"], stdin=stdin,
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot write <stdout> ({target}): No space left on device" in proc.stderr
    assert target.stat().st_size == 0
