"""The fault table: derain's real command line under injected faults, as one markdown table.

    python benchmarks/bench_faults.py [--only ROW_PREFIX ...] [--json faults.json]

Rows, each run in its own Python process (a crash takes only its row down, and is counted):

* **ENOSPC and EIO on every write path**: ``derain x.jpg``, ``derain in/ -o out/`` (one file of four hit; then
  rerun with the space back), ``derain - > out.jpg``, ``derain train`` (checkpoint.pt, last.safetensors,
  best.safetensors, train_log.csv; then ``--resume``), ``derain export`` (ONNX), ``derain bench speed
  --json/--csv``, ``derain demo``, and the service's answer (its send fails). The error is injected with
  :func:`derain.bench.faults.disk_fault` (``write`` and ``fsync`` of :mod:`derain.io.atomic`, through which
  every byte derain writes goes), part way into the file; where root may mount one, a 200 KB tmpfs also
  fills up for real.
* **Damaged weights**: the :data:`~derain.bench.faults.WEIGHTS_DAMAGE` cases, ``derain x.jpg --weights BAD``.
* **Diverging trainings**: lr 1e30, lr 1e6, NaN in every image, NaN in images from step 3, an infinite weight
  in ``init_weights``, a loss that is NaN, and ``lr=.inf`` and lr 1e39 (past float32; both refused by the config).
* **Broken videos**: ``derain.bench.video_faults.video_fault_corpus(folder)`` where that module exists (another
  change brings it); otherwise the row says it was not run.

Each case calls ``derain.cli.main.main(ARGV)`` in the row's process with stdout/stderr captured at the file
descriptors. Columns: **crashed** (a traceback, an "internal error", or an exit code other than the one
expected), **partial file left** (a temporary, a cut output, a non-finite weights file), **wrong output** (not
exactly one line naming the file, an input or earlier output changed, a rerun that did not finish what was
missing, a refusal for the wrong reason). The target is 0 in all three.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from derain.bench.faults import ERRORS, REASON, TINY_MODEL, decodes, photo


@dataclass
class Case:
    """One case's verdict."""

    name: str
    crashed: bool = False
    partial: bool = False
    wrong: bool = False
    note: str = ""


@dataclass
class Row:
    fault: str
    cases: list[Case] = field(default_factory=list)
    note: str = ""

    def counts(self) -> tuple[int, int, int, int]:
        return (len(self.cases), sum(c.crashed for c in self.cases), sum(c.partial for c in self.cases), sum(c.wrong for c in self.cases))


# --- running the CLI in this process ----------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    err: list[str]

    @property
    def crashed_text(self) -> bool:
        text = "\n".join(self.err)
        return "Traceback" in text or "internal error" in text


def call(argv: list[str], stdin: bytes | None = None, stdout: Path | None = None) -> Outcome:
    """``derain ARGV`` here, stderr (and stdout to ``stdout``, else the null device) captured at the descriptors."""
    from derain.cli.main import main

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    saved_stdin = sys.stdin
    with tempfile.TemporaryFile() as err, open(stdout or os.devnull, "wb") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        code = 0
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # noqa: BLE001 - main let something out: that is a crash
            traceback.print_exc()
            code = 99
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sys.stdin = saved_stdin
        err.seek(0)
        return Outcome(code, err.read().decode(errors="replace").splitlines())


def errors_of(outcome: Outcome) -> list[str]:
    return [line for line in outcome.err if line.startswith(("error:", "Error:"))]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp")] if folder.exists() else []


def tiny_weights(folder: Path) -> Path:
    import torch

    import derain

    torch.manual_seed(0)
    return derain.save_model(derain.create_model("efderain-tiny"), folder / "tiny.safetensors")


def judge(name: str, outcome: Outcome, expect_code: int, *, partial: bool, wrong: str | None) -> Case:
    crashed = outcome.crashed_text or outcome.code != expect_code
    note = "; ".join(filter(None, [f"exit {outcome.code}" if outcome.code != expect_code else "", wrong or ""]))
    if crashed and outcome.err:
        note = (note + "; " if note else "") + outcome.err[-1][:160]
    return Case(name, crashed, partial, bool(wrong), note)


# --- ENOSPC / EIO on the write paths ----------------------------------------------------------------------


def _one_line(outcome: Outcome, expected: str) -> str | None:
    lines = errors_of(outcome)
    return None if lines == [expected] else f"error lines {lines!r}, expected [{expected!r}]"


def disk_cases(work: Path, target: str) -> list[Case]:
    """ENOSPC and EIO (and EIO at the flush for some) on one write path."""
    from derain.bench.faults import disk_fault

    weights = tiny_weights(work)
    cases = []
    kinds = [(n, c, "write") for n, c in ERRORS.items()]
    if target in ("photo", "checkpoint.pt", "onnx"):
        kinds.append(("EIO at the flush", errno.EIO, "fsync"))
    for label, code, at in kinds:
        case_dir = work / re.sub(r"\W+", "-", f"{target}-{label}")
        case_dir.mkdir()
        cases.append(DISK_PATHS[target](case_dir, weights, lambda match, after=500, nth=1: disk_fault(code, match, after, at=at, nth=nth),
                                         label, code))
    return cases


def _photo(d: Path, weights: Path, fault: Callable, label: str, code: int) -> Case:
    src = photo(d / "in" / "x.jpg")
    before = src.read_bytes()
    with fault("x.jpg"):
        o = call(["run", str(src), "-o", str(d / "out"), "--weights", str(weights)])
    wrong = _one_line(o, f"error: {src}: cannot write {d / 'out' / 'x.jpg'}: {REASON[code]}")
    wrong = wrong or ("input changed" if src.read_bytes() != before else None)
    return judge(label, o, 1, partial=any((d / "out").rglob("*")) if (d / "out").exists() else False, wrong=wrong)


def _folder(d: Path, weights: Path, fault: Callable, label: str, code: int) -> Case:
    inputs = [photo(d / "in" / f"p{i}.jpg", seed=i) for i in range(4)]
    before = {p: p.read_bytes() for p in inputs}
    out = d / "out"
    argv = ["run", str(d / "in"), "-o", str(out), "--weights", str(weights)]
    with fault("p2.jpg", 300):
        o = call(argv)
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    partial = bool(temporaries(out)) or "p2.jpg" in names or not all(decodes(out / n) for n in names)
    wrong = _one_line(o, f"error: {inputs[2]}: cannot write {out / 'p2.jpg'}: {REASON[code]}")
    if not wrong and names != ["p0.jpg", "p1.jpg", "p3.jpg"]:
        wrong = f"outputs {names}"
    written = {n: (out / n).read_bytes() for n in names if n != "p2.jpg"}
    rerun = call(argv)
    if not wrong and (rerun.code != 0 or not rerun.err or not rerun.err[-1].startswith("1 ok, 0 failed, 3 skipped")):
        wrong = f"rerun: exit {rerun.code}, {rerun.err[-1:] }"
    if not wrong and any((out / n).read_bytes() != b for n, b in written.items()):
        wrong = "the rerun changed an earlier output"
    if not wrong and any(p.read_bytes() != b for p, b in before.items()):
        wrong = "an input changed"
    return judge(label, o, 1, partial=partial, wrong=wrong)


def _stdout(d: Path, weights: Path, fault: Callable, label: str, code: int) -> Case:
    src = photo(d / "x.jpg")
    target = d / "out.jpg"
    with fault("out.jpg", 300):
        o = call(["-", "--weights", str(weights)], stdin=src.read_bytes(), stdout=target)
    wrong = _one_line(o, f"error: <stdin>: cannot write <stdout> ({target}): {REASON[code]}")
    return judge(label, o, 1, partial=target.stat().st_size != 0, wrong=wrong)


def _train_config(d: Path, clean: Path, **extra: Any) -> Path:
    import yaml

    cfg = {
        "model": "efderain-tiny", "model_overrides": TINY_MODEL,
        "sources": [{"kind": "synthetic", "path": str(clean), "preset": "mixed"}],
        "crop": 32, "batch_size": 2, "iterations": 4, "decay_start": 2, "threads": 1, "seed": 3, "log_every": 1,
        "checkpoint_every": 1, "validation": {"synthetic": 2, "every": 1}, "out_dir": str(d / "run"), **extra,
    }
    path = d / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _clean_photos(d: Path) -> Path:
    for i in range(6):
        photo(d / "clean" / f"{i:02d}.png", seed=i, size=(72, 56))
    return d / "clean"


def _weights_files_ok(out: Path) -> bool:
    """Every weights file in ``out`` loads (its hash checks) and is finite; checkpoint.pt too."""
    import torch

    import derain

    try:
        for name in ("last.safetensors", "best.safetensors"):
            if (out / name).exists():
                model = derain.load_model(out / name)
                if not all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point()):
                    return False
        if (out / "checkpoint.pt").exists():
            state = torch.load(out / "checkpoint.pt", weights_only=True)
            return all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    except Exception:  # noqa: BLE001 - a file that does not load is a partial one
        return False
    return True


def _training(target: str) -> Callable[..., Case]:
    def run(d: Path, weights: Path, fault: Callable, label: str, code: int) -> Case:
        import torch

        from derain.models.checkpoint import read_state_dict

        cfg = _train_config(d, _clean_photos(d))
        out = d / "run"
        with fault(target, 100, nth=1 if target == "train_log.csv" else 3):
            o = call(["train", str(cfg)])
        lines = errors_of(o)
        wrong = None
        if len(lines) != 1 or not lines[0].startswith(f"Error: cannot write {out / target}: {REASON[code]}; the last checkpoint, step "):
            wrong = f"error lines {lines!r}"
        partial = bool(temporaries(out)) or not _weights_files_ok(out)
        if not partial:
            step = int(torch.load(out / "checkpoint.pt", weights_only=True)["step"])
            partial = step != int(read_state_dict(out / "last.safetensors")[1]["step"])
            rows = (out / "train_log.csv").read_text().splitlines()
            partial = partial or any(len(r.split(",")) != 4 for r in rows)
        resumed = call(["train", str(cfg), "--resume"])
        if not wrong and (resumed.code != 0 or int(torch.load(out / "checkpoint.pt", weights_only=True)["step"]) != 4):
            wrong = f"--resume: exit {resumed.code}"
        return judge(label, o, 1, partial=partial, wrong=wrong)

    return run


def _export(d: Path, weights: Path, fault: Callable, label: str, code: int) -> Case:
    out = d / "m.onnx"
    with fault("m.onnx", 4096):
        o = call(["export", "--weights", str(weights), "-o", str(out), "--no-verify"])
    return judge(label, o, 1, partial=any(p.name != "tiny.safetensors" for p in d.iterdir()) and out.exists() or bool(temporaries(d)),
                 wrong=_one_line(o, f"Error: cannot write {out}: {REASON[code]}"))


def _bench(kind: str) -> Callable[..., Case]:
    def run(d: Path, weights: Path, fault: Callable, label: str, code: int) -> Case:
        out = d / f"speed.{kind}"
        argv = ["bench", "speed", "--model", "efderain-tiny", "--size", "32x24", "--batch", "1", "--precision", "fp32",
                "--repeats", "1", "--warmup", "0", "--threads", "1", f"--{kind}", str(out)]
        with fault(out.name, 50):
            o = call(argv)
        return judge(label, o, 1, partial=out.exists() or bool(temporaries(d)), wrong=_one_line(o, f"Error: cannot write {out}: {REASON[code]}"))

    return run


def _demo(d: Path, weights: Path, fault: Callable, label: str, code: int) -> Case:
    out = d / "demo.png"
    with fault("demo.png", 1000):
        o = call(["demo", "-o", str(out), "--weights", str(weights)])
    return judge(label, o, 1, partial=out.exists() or bool(temporaries(d)), wrong=_one_line(o, f"Error: cannot write {out}: {REASON[code]}"))


DISK_PATHS: dict[str, Callable[..., Case]] = {
    "photo": _photo,
    "folder": _folder,
    "stdout": _stdout,
    "checkpoint.pt": _training("checkpoint.pt"),
    "last.safetensors": _training("last.safetensors"),
    "best.safetensors": _training("best.safetensors"),
    "train_log.csv": _training("train_log.csv"),
    "onnx": _export,
    "bench json": _bench("json"),
    "bench csv": _bench("csv"),
    "demo": _demo,
}
DISK_LABELS = {
    "photo": "`derain x.jpg` (photo)",
    "folder": "`derain in/ -o out/` (1 of 4 files hit; rerun)",
    "stdout": "`derain - > out.jpg` (stdout)",
    "checkpoint.pt": "`derain train`: checkpoint.pt (then `--resume`)",
    "last.safetensors": "`derain train`: last.safetensors (weights)",
    "best.safetensors": "`derain train`: best.safetensors (weights)",
    "train_log.csv": "`derain train`: train_log.csv",
    "onnx": "`derain export` (ONNX)",
    "bench json": "`derain bench speed --json`",
    "bench csv": "`derain bench speed --csv`",
    "demo": "`derain demo` (PNG)",
}


def service_cases(work: Path) -> list[Case]:
    """The answer's send fails (ENOSPC, EIO, EPIPE, ECONNRESET): the app must not raise, log a traceback, send a
    500 after it, or keep the request's places."""
    import asyncio
    import logging

    import derain
    from derain.service.app import create_app
    from derain.service.middleware import LOGGER_NAME
    from derain.service.testing import encode_image, rainy_photo

    model = derain.load_model(tiny_weights(work))
    body = encode_image(rainy_photo(48, 32))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    cases = []
    for name in ("ENOSPC", "EIO", "EPIPE", "ECONNRESET"):
        code = getattr(errno, name)
        app = create_app(model, precision="fp32")  # a fresh app each: its lifespan ends with the case
        sent: list[dict] = []
        records.clear()

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict, code: int = code) -> None:
            if message["type"] == "http.response.body":
                raise OSError(code, os.strerror(code))
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/v1/derain", "raw_path": b"/v1/derain", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"image/png")], "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80), "app": app}
        crashed, note = False, ""

        async def one() -> int:
            async with app.router.lifespan_context(app):
                await app(scope, receive, send)
                return app.state.pool.admitted

        try:
            admitted = asyncio.run(one())
        except BaseException as err:  # noqa: BLE001
            crashed, admitted, note = True, -1, f"{type(err).__name__}: {err}"
        access = [json.loads(r.getMessage()) for r in records if r.getMessage().startswith('{"event": "request"')]
        traced = any(r.exc_info for r in records)
        wrong = admitted != 0 or len(access) != 1 or access[0].get("status") != 499 or [m["status"] for m in sent if m["type"] == "http.response.start"] != [200]
        cases.append(Case(name, crashed or traced, False, wrong and not crashed, note or ("" if not wrong else f"access {access}, admitted {admitted}")))
    logger.removeHandler(handler)
    return cases


def tmpfs_cases(work: Path) -> tuple[list[Case], str]:
    """10 photos (320×240) onto a 200 KB tmpfs: every file said written is whole; with space, a rerun finishes."""
    if os.geteuid() != 0:
        return [], "not run: mounting a tmpfs needs root"
    mount = work / "full"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if proc.returncode:
        return [], f"not run: mount -t tmpfs refused ({proc.stderr.strip()})"
    try:
        for i in range(10):
            photo(work / "in" / f"p{i}.jpg", seed=i, size=(320, 240))
        argv = ["run", str(work / "in"), "-o", str(mount), "--model", "fast"]  # a real model: outputs of a photo's size
        o = call(argv)
        ok = int(o.err[-1].split(" ok,")[0]) if o.err and " ok," in o.err[-1] else -1
        names = sorted(p.name for p in mount.iterdir())
        partial = len(names) != ok or not all(decodes(mount / n) for n in names)
        failed = errors_of(o)
        wrong = None if len(failed) == 10 - ok and all(f.endswith("No space left on device") for f in failed) else f"errors {failed}"
        subprocess.run(["mount", "-o", "remount,size=4m", str(mount)], check=True)
        again = call(argv)
        if not wrong and (again.code != 0 or not again.err[-1].startswith(f"{10 - ok} ok, 0 failed, {ok} skipped")):
            wrong = f"rerun: {again.err[-1:]}"
        return [judge(f"{ok} of 10 fit", o, 1, partial=partial, wrong=wrong)], ""
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# --- damaged weights --------------------------------------------------------------------------------------


def weights_cases(work: Path) -> list[Case]:
    from derain.bench.faults import WEIGHTS_DAMAGE

    good = tiny_weights(work).read_bytes()
    src = photo(work / "x.jpg")
    cases = []
    for i, (name, (damage, reason)) in enumerate(WEIGHTS_DAMAGE.items()):
        d = work / f"w{i}"
        d.mkdir()
        bad = d / "damaged.safetensors"
        bad.write_bytes(damage(good))
        o = call(["run", str(src), "--weights", str(bad), "-o", str(d / "out")])
        lines = [line for line in o.err if line.strip()]
        wrong = None
        if len(lines) != 1 or f"{bad}: " not in lines[0] or not re.search(reason, lines[0]):
            wrong = f"{lines[:2]}"
        out_files = list((d / "out").rglob("*")) if (d / "out").exists() else []
        cases.append(judge(name, o, 1, partial=bool(out_files), wrong=wrong or (f"wrote {out_files}" if out_files else None)))
    return cases


# --- diverging trainings ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _nan_images(from_step: int = 1) -> Any:
    from derain.training.dataset import TrainingSamples

    original = TrainingSamples.__getitem__

    def getitem(self: Any, index: int) -> Any:
        rainy, clean = original(self, index)
        if index // 2 + 1 >= from_step:
            rainy = rainy.clone()
            rainy[0, 3, 5] = float("nan")
        return rainy, clean

    TrainingSamples.__getitem__ = getitem  # type: ignore[method-assign]
    try:
        yield
    finally:
        TrainingSamples.__getitem__ = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _nan_loss() -> Any:
    from derain.training import trainer

    real = trainer.batch_loss
    trainer.batch_loss = lambda *a, **k: real(*a, **k) * float("nan")
    try:
        yield
    finally:
        trainer.batch_loss = real


def divergence_cases(work: Path) -> list[Case]:
    import torch

    import derain

    clean = _clean_photos(work)
    inf_init = work / "inf-init.safetensors"
    model = derain.create_model("efderain-tiny", **TINY_MODEL)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("inf")
    derain.save_model(model, inf_init)
    cases_spec: list[tuple[str, dict, Callable[[], Any], str]] = [
        ("lr 1e30", {"lr": 1e30}, contextlib.nullcontext, "Error: training diverged"),
        ("lr 1e6", {"lr": 1e6}, contextlib.nullcontext, "Error: training diverged"),
        ("NaN in every image", {}, _nan_images, "Error: training diverged"),
        ("NaN in the images from step 3", {}, lambda: _nan_images(3), "Error: training diverged"),
        ("an infinite weight in init_weights", {"init_weights": str(inf_init)}, contextlib.nullcontext, "Error: training diverged"),
        ("a loss that is NaN", {}, _nan_loss, "Error: training diverged"),
        ("lr=.inf in the config", {"lr": float("inf")}, contextlib.nullcontext, "Error: lr must be a finite number"),
        ("lr 1e39 (finite, past float32) in the config", {"lr": 1e39}, contextlib.nullcontext, "Error: lr must be at most"),
    ]
    cases = []
    for i, (name, extra, patch, expected) in enumerate(cases_spec):
        d = work / f"t{i}"
        d.mkdir()
        cfg = _train_config(d, clean, **{"iterations": 6, "decay_start": 3, "checkpoint_every": 2,
                                           "validation": {"synthetic": 2, "every": 2}, "max_bad_steps": 2, **extra})
        with patch():
            o = call(["train", str(cfg)])
        out = d / "run"
        lines = errors_of(o)
        finished = o.code == 0 and (out / "checkpoint.pt").exists()
        wrong = None if finished or (len(lines) == 1 and lines[0].startswith(expected)) else f"{lines[:2]}"
        case = judge(name, o, o.code if finished else 1, partial=bool(temporaries(out)) or not _weights_files_ok(out), wrong=wrong)
        case.note = case.note or ("finished, weights finite" if finished else lines[0][:110] if lines else "")
        cases.append(case)
    return cases


# --- broken videos ----------------------------------------------------------------------------------------


def video_cases(work: Path) -> tuple[list[Case], str]:
    """Each :class:`~derain.bench.video_faults.VideoFault`: ``fail`` ones must end with exit 1, one error line
    (holding ``expect_text``) and no output or temporary; ``ok`` ones must give a video that decodes."""
    try:
        from derain.bench.video_faults import video_fault_corpus  # another change brings it
    except ImportError:
        return [], "not run: derain.bench.video_faults (the broken-video corpus) is not in this tree yet; this row runs it once it is"
    import av

    faults = video_fault_corpus(work / "corpus")
    left_out = [f.name for f in faults if getattr(f, "needs_non_root", False) and os.geteuid() == 0]
    cases = []
    for i, fault in enumerate(f for f in faults if f.name not in left_out):
        src = Path(fault.path)
        out = work / f"v{i}" / f"out{src.suffix if src.suffix in ('.mp4', '.mkv', '.mov', '.webm', '.avi') else '.mp4'}"
        out.parent.mkdir()
        o = call(["video", str(src), "-o", str(out), "--model", "fast"])
        partial = bool(temporaries(out.parent))
        wrong = None
        if fault.expect == "ok":
            try:
                with av.open(str(out)) as container:
                    partial = partial or not any(True for _ in container.decode(video=0))
            except Exception:  # noqa: BLE001 - no output, or one that does not decode
                partial = True
        else:
            partial = partial or out.exists()
            lines = errors_of(o)
            if len(lines) != 1 or fault.expect_text.lower() not in lines[0].lower():
                wrong = f"error lines {lines[:2]}, expected one holding {fault.expect_text!r}"
        cases.append(judge(fault.name, o, 0 if fault.expect == "ok" else 1, partial=partial, wrong=wrong))
    note = f"left out as root: {', '.join(left_out)}" if left_out else ""
    return cases, note


# --- the rows ---------------------------------------------------------------------------------------------


def row_names() -> list[str]:
    return [*(f"disk:{k}" for k in DISK_PATHS), "disk:service", "disk:tmpfs", "weights", "divergence", "video"]


def run_row(name: str, work: Path) -> Row:
    if name.startswith("disk:") and name[5:] in DISK_PATHS:
        target = name[5:]
        return Row(f"ENOSPC / EIO: {DISK_LABELS[target]}", disk_cases(work, target))
    if name == "disk:service":
        return Row("ENOSPC / EIO / EPIPE / ECONNRESET: service answer (send fails)", service_cases(work))
    if name == "disk:tmpfs":
        cases, note = tmpfs_cases(work)
        return Row("real ENOSPC: `derain in/ -o out/` onto a 200 KB tmpfs (10 photos; rerun)", cases, note)
    if name == "weights":
        return Row("damaged weights file (`derain x.jpg --weights BAD`)", weights_cases(work))
    if name == "divergence":
        return Row("diverging training (`derain train`)", divergence_cases(work))
    if name == "video":
        cases, note = video_cases(work)
        return Row("broken video (`derain video`)", cases, note)
    raise ValueError(f"unknown row {name!r}")


def worker(name: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="derain-faults-") as tmp:
        row = run_row(name, Path(tmp))
    out.write_text(json.dumps(asdict(row)))


def table(rows: list[Row]) -> str:
    lines = ["| fault | cases | crashed | partial file left | wrong output | notes |", "|---|---:|---:|---:|---:|---|"]
    totals = [0, 0, 0, 0]
    for row in rows:
        counts = row.counts()
        totals = [a + b for a, b in zip(totals, counts)]
        notes = row.note or "; ".join(f"{c.name}: {c.note}" for c in row.cases if c.crashed or c.partial or c.wrong)
        if not row.cases and not row.note:
            notes = "no cases"
        lines.append(f"| {row.fault} | {counts[0]} | {counts[1]} | {counts[2]} | {counts[3]} | {notes} |")
    lines.append(f"| **all** | **{totals[0]}** | **{totals[1]}** | **{totals[2]}** | **{totals[3]}** | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help=f"Rows whose name starts with one of these ({', '.join(row_names())}).")
    parser.add_argument("--json", type=Path, help="Also write the rows here.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds per row before it counts as crashed.")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.out)
        return 0
    from derain.bench.timing import machine_description

    names = [n for n in row_names() if not args.only or any(n.startswith(p) for p in args.only)]
    rows: list[Row] = []
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "row.json"
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", name, "--out", str(result)], capture_output=True,
                                      text=True, timeout=args.timeout, check=False)
                failure = None if proc.returncode == 0 and result.exists() else f"row process exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
            except subprocess.TimeoutExpired:
                failure = f"row process ran past {args.timeout:.0f} s"
            if failure:
                row = Row(name, [Case("row process", crashed=True, note=failure)])
            else:
                data = json.loads(result.read_text())
                row = Row(data["fault"], [Case(**c) for c in data["cases"]], data["note"])
        rows.append(row)
        print(f"{name}: {row.counts()} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"Machine: {machine_description()}; {time.perf_counter() - start:.0f} s in all\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    totals = [sum(r.counts()[k] for r in rows) for k in range(1, 4)]
    return 0 if not any(totals) else 1


if __name__ == "__main__":
    sys.exit(main())
