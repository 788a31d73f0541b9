"""``derain run`` / ``derain PHOTO...`` through the real entry point (``python -m derain.cli.main``).

A tiny identity-initialised model file stands in for the bundled default model, so outputs look
like their inputs and orientation, alpha and bit depth can be checked on them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_io import bad_corpus, gradient, good_corpus, image_bytes

import derain
from derain.io.images import load_photo

SUMMARY = re.compile(r"^(\d+) ok, (\d+) failed, (\d+) skipped in [\d.]+ s \([\d.]+ images/s\)", re.M)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    derain.save_model(derain.create_model("efderain-tiny", identity_init=True), path)
    return path


def derain_cli(*args: object, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run(
        [sys.executable, "-m", "derain.cli.main", *map(str, args)],
        cwd=cwd, input=stdin, capture_output=True, timeout=120, env=env,
    )


def summary(proc: subprocess.CompletedProcess) -> tuple[int, int, int]:
    match = SUMMARY.search(proc.stderr.decode())
    assert match, proc.stderr.decode()
    return int(match[1]), int(match[2]), int(match[3])


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.decode().splitlines() if line.startswith("error:")]


def assert_clean(proc: subprocess.CompletedProcess) -> None:
    err = proc.stderr.decode()
    assert "Traceback" not in err and "Warning" not in err, err


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_batch_good_and_bad_corpus(tmp_path, weights):
    inp = tmp_path / "in"
    good = good_corpus(inp)
    bad = bad_corpus(inp / "bad")
    (inp / "sub").mkdir()
    Image.fromarray(gradient(30, 20)).save(inp / "sub" / "deep.png")
    (inp / "notes.txt").write_text("not an image extension: ignored")
    proc = derain_cli("run", "in", "-r", "-o", "out", "--weights", weights, "--threads", 1, cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 1
    assert summary(proc) == (len(good) + 1, len(bad), 0)
    errors = error_lines(proc)
    assert len(errors) == len(bad)
    for key, path in bad.items():  # one clear line naming each bad file
        rel = str(path.relative_to(tmp_path))
        assert sum(line.startswith(f"error: {rel}: ") for line in errors) == 1, (key, errors)
    reasons = "\n".join(errors)
    for text in ("corrupt or truncated", "empty file (0 bytes)", "not an image", "animated GIF", "too large"):
        assert text in reasons
    out = tmp_path / "out"
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([p.name for p in good.values()] + ["sub/deep.png"])  # tree mirrored, nothing else (no temp files)
    with Image.open(out / "rgba.png") as img:
        assert img.mode == "RGBA" and img.size == (24, 16) and np.asarray(img)[..., 3].min() == 77
    with Image.open(out / "grey.png") as img:
        assert img.mode == "L"
    with Image.open(out / "palette.png") as img:
        assert img.mode == "RGB"
    assert load_photo(out / "rgb16.png").mode == "RGB;16"
    assert load_photo(out / "grey16.png").mode == "I;16"
    with Image.open(out / "cmyk.jpg") as img:
        assert img.mode == "RGB" and img.format == "JPEG"
    with Image.open(out / "rotated.jpg") as img:  # rotated upright, orientation reset, EXIF kept
        assert img.size == (20, 40)
        assert img.getexif().get(0x0112) == 1 and img.getexif().get(0x010F) == "TestCam"
        pixels = np.asarray(img)
        assert pixels[2, 17, 0] > 200 and pixels[2, 17, 2] < 60  # red block now top-right
    with Image.open(out / "one.png") as img:
        assert img.size == (1, 1)
    with Image.open(out / "thin.png") as img:
        assert img.size == (1, 20000)


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_a_folder_run_without_recursive_says_which_sub_folders_it_left(tmp_path, weights):
    inp = tmp_path / "in"
    (inp / "album").mkdir(parents=True)
    (inp / ".cache").mkdir()
    Image.fromarray(gradient(30, 20)).save(inp / "top.png")
    Image.fromarray(gradient(30, 20)).save(inp / "album" / "deep.png")
    proc = derain_cli("run", "in", "-o", "in/out", "--weights", weights, "--threads", 1, cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 0 and summary(proc) == (1, 0, 0)
    assert "in: 1 sub-folder not searched (--recursive takes them)" in proc.stderr.decode()  # not .cache, not out
    proc = derain_cli("run", "in", "-r", "-o", "in/out", "--weights", weights, "--threads", 1, "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0 and summary(proc) == (2, 0, 0) and "not searched" not in proc.stderr.decode()


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_shorthand_options_skip_and_overwrite(tmp_path, weights):
    Image.fromarray(gradient(80, 60)).save(tmp_path / "photo.jpg", quality=95)
    args = ("photo.jpg", "-o", "out", "--suffix", "_dr", "--format", "png", "--side-by-side",
            "--tile", 32, "--tile-overlap", 8, "--weights", weights, "--threads", 1)
    proc = derain_cli(*args, cwd=tmp_path)  # no subcommand: `derain photo.jpg` = `derain run photo.jpg`
    assert_clean(proc)
    assert proc.returncode == 0 and summary(proc) == (1, 0, 0)
    out = tmp_path / "out" / "photo_dr.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (160, 60)
        both = np.asarray(img).astype(int)
    assert np.abs(both[:, :80] - both[:, 80:]).mean() < 3  # identity model: output | input look alike
    stamp = out.stat().st_mtime_ns
    proc = derain_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0 and summary(proc) == (0, 0, 1) and out.stat().st_mtime_ns == stamp
    assert "--overwrite" in proc.stderr.decode()
    proc = derain_cli(*args, "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0 and summary(proc) == (1, 0, 0)


def test_never_overwrites_inputs_and_detects_collisions(tmp_path, weights):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    original = image_bytes(Image.fromarray(gradient(16, 12)), "PNG")
    (tmp_path / "photo.png").write_bytes(original)
    Image.fromarray(gradient(16, 12)).save(tmp_path / "a" / "x.png")
    Image.fromarray(gradient(16, 12)).save(tmp_path / "b" / "x.png")
    proc = derain_cli("run", "photo.png", "a/x.png", "b/x.png", "-o", ".", "--weights", weights, cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 1 and summary(proc) == (1, 2, 0)
    errors = error_lines(proc)
    assert any(line.startswith("error: photo.png: refusing to overwrite an input") for line in errors), errors
    assert any(line.startswith("error: b/x.png: output") for line in errors), errors
    assert (tmp_path / "photo.png").read_bytes() == original
    assert (tmp_path / "x.png").is_file()


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_suffix_into_the_input_folder_does_not_rederain_earlier_outputs(tmp_path, weights):
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(gradient(16, 12)).save(pics / name)
    first = derain_cli("run", "pics", "-o", "pics", "--suffix", "_dr", "--weights", weights, "--threads", 1, cwd=tmp_path)
    assert_clean(first)
    assert first.returncode == 0 and summary(first) == (2, 0, 0)
    again = derain_cli("run", "pics", "-o", "pics", "--suffix", "_dr", "--weights", weights, "--threads", 1, cwd=tmp_path)
    assert_clean(again)
    assert again.returncode == 0 and summary(again) == (0, 0, 2)  # a_dr.png, b_dr.png are results, kept
    assert sorted(p.name for p in pics.iterdir()) == ["a.png", "a_dr.png", "b.png", "b_dr.png"]
    named = derain_cli("run", "pics/a_dr.png", "-o", "pics", "--suffix", "_dr", "--weights", weights, "--threads", 1, cwd=tmp_path)
    assert named.returncode == 0 and (pics / "a_dr_dr.png").is_file()  # named explicitly: it is an input


def test_a_folder_named_like_a_command_gets_a_note(tmp_path, weights):
    (tmp_path / "video").mkdir()
    Image.fromarray(gradient(16, 12)).save(tmp_path / "video" / "a.png")
    proc = derain_cli("video", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr.decode()
    assert "note: 'video' is the `derain video` command; to derain the folder 'video', use: derain run video" in proc.stderr.decode()
    run = derain_cli("run", "video", "-o", "out", "--weights", weights, "--threads", 1, cwd=tmp_path)
    assert run.returncode == 0 and (tmp_path / "out" / "a.png").is_file()


def test_a_tiny_tile_blames_the_tile(tmp_path, weights):
    Image.fromarray(gradient(16, 12)).save(tmp_path / "a.png")
    proc = derain_cli("run", "a.png", "--tile", 8, "--weights", weights, cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Invalid value for --tile:" in err and "more than twice the tile overlap (64)" in err
    proc = derain_cli("run", "a.png", "--tile", 64, "--tile-overlap", 40, "--weights", weights, cwd=tmp_path)
    assert proc.returncode == 2 and "Invalid value for --tile-overlap:" in proc.stderr.decode()


def test_links_and_folders_named_like_images_are_reported(tmp_path, weights):
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.fromarray(gradient(16, 12)).save(pics / "a.png")
    (pics / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (pics / "loop.png").symlink_to(pics / "loop.png")
    (pics / "album.png").mkdir()
    proc = derain_cli("run", "pics", "-o", "out", "--weights", weights, "--threads", 1, cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 1 and summary(proc) == (1, 3, 0)
    errors = "\n".join(error_lines(proc))
    assert "pics/gone.png: dangling symbolic link" in errors and "pics/loop.png: symbolic link loop" in errors
    assert "pics/album.png: a folder, not an image file (use --recursive" in errors
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


def test_stdin_to_stdout(tmp_path, weights):
    data = image_bytes(Image.fromarray(gradient(40, 30)), "JPEG", quality=95)
    proc = derain_cli("-", "--weights", weights, cwd=tmp_path, stdin=data)
    assert_clean(proc)
    assert proc.returncode == 0, proc.stderr.decode()
    out = tmp_path / "out.jpg"
    out.write_bytes(proc.stdout)
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (40, 30)
    assert list(tmp_path.iterdir()) == [out]  # nothing else written
    proc = derain_cli("run", "-", "--weights", weights, cwd=tmp_path, stdin=b"garbage")
    assert proc.returncode == 1 and proc.stdout == b"" and error_lines(proc) == [
        "error: <stdin>: not an image file (or a format Pillow cannot read)"
    ]


def test_glob_and_max_pixels(tmp_path, weights):
    (tmp_path / "g").mkdir()
    Image.fromarray(gradient(20, 20)).save(tmp_path / "g" / "small.png")
    Image.fromarray(gradient(30, 30)).save(tmp_path / "g" / "big.png")
    Image.fromarray(gradient(20, 20)).save(tmp_path / "g" / "skip.jpg")
    proc = derain_cli("run", "g/*.png", "missing.png", "--max-pixels", 500, "-o", "out", "--weights", weights, cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 1 and summary(proc) == (1, 2, 0)
    assert sorted(error_lines(proc)) == [
        "error: g/big.png: image too large: 30x30 = 900 pixels exceeds the limit of 500 "
        "(raise it with --max-pixels / max_pixels= if the file is trusted)",
        "error: missing.png: no such file or directory",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small.png"]


def test_a_folder_run_logged_to_a_file_has_plain_progress_lines(tmp_path, weights):
    """``derain run folder/ 2> log``: no tqdm redraws (``\\r``) in the log, a final progress line and the summary."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray(gradient(24, 16)).save(tmp_path / "in" / f"{i}.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.run([sys.executable, "-m", "derain.cli.main", "run", "in", "-o", "out", "--weights", str(weights)],
                              cwd=tmp_path, stderr=log, stdout=subprocess.DEVNULL, timeout=120, env=env)
    text = (tmp_path / "log").read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text and "Traceback" not in text
    assert re.search(r"^derain: 3/3 img, [\d.]+ img/s$", text, re.M), text
    assert SUMMARY.search(text) and SUMMARY.search(text)[1] == "3", text


def test_model_errors_are_one_line(tmp_path, weights):
    Image.fromarray(gradient(16, 12)).save(tmp_path / "photo.png")
    proc = derain_cli("run", "photo.png", "--weights", tmp_path / "nothere.safetensors", cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "nothere.safetensors" in lines[0]
    assert not (tmp_path / "derained").exists()


def test_a_mistyped_model_fails_even_when_every_output_exists(tmp_path):
    """A rerun whose outputs all exist (each skipped) still checks the model options: a typo is not a success."""
    Image.fromarray(gradient(16, 12)).save(tmp_path / "photo.png")
    (tmp_path / "derained").mkdir()
    Image.fromarray(gradient(16, 12)).save(tmp_path / "derained" / "photo.png")
    before = (tmp_path / "derained" / "photo.png").read_bytes()
    proc = derain_cli("run", "photo.png", "--model", "nosuch", cwd=tmp_path)
    assert_clean(proc)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and lines == [lines[0]] and lines[0].startswith("Error: unknown model 'nosuch'"), lines
    assert (tmp_path / "derained" / "photo.png").read_bytes() == before


@pytest.mark.parametrize(("args", "message"), [
    (("--strength", "2"), "Error: Invalid value for '--strength': strength must be 'auto' or a number from 0 to 1, got '2'"),
    (("--threads", "0"), "Error: Invalid value for '--threads': 0 is not in the range x>=1."),
    (("--bogus",), "Error: No such option"),
    (("-o", "out.JPG"), "Error: Invalid value for '-o' / '--output': out.JPG looks like a file name: -o names the output folder"),
])
def test_option_errors_are_one_line(tmp_path, args, message):
    """A bad option is one line that names it and where the help is, exit code 2, nothing written."""
    Image.fromarray(gradient(16, 12)).save(tmp_path / "photo.png")
    proc = derain_cli("run", "photo.png", *args, cwd=tmp_path)
    assert_clean(proc)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith(message) and args[0] in lines[0] and lines[0].endswith("(try 'derain run --help')"), lines
    assert [p.name for p in tmp_path.iterdir()] == ["photo.png"]


def test_a_model_without_bundled_weights_says_to_pass_weights(tmp_path):
    Image.fromarray(gradient(16, 12)).save(tmp_path / "photo.png")
    proc = derain_cli("run", "photo.png", "--model", "prenet", cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: model 'prenet' has no bundled weights") and "--weights" in lines[0], lines


@pytest.mark.slow  # a subprocess or more per case: tens of seconds on 2 cores
def test_weights_that_are_not_weights_say_what_they_are(tmp_path):
    """``--weights`` given a photo, a text file, an empty file or a folder: one line saying what it is."""
    Image.fromarray(gradient(16, 12)).save(tmp_path / "photo.jpg")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "runs").mkdir()
    cases = {"photo.jpg": "a JPEG image", "notes.txt": "a text file", "empty.safetensors": "empty: 0 bytes", "runs": "a folder"}
    for weights, kind in cases.items():
        for extra in ((), ("--model", "prenet")):
            proc = derain_cli("run", "photo.jpg", "--weights", weights, *extra, cwd=tmp_path)
            assert_clean(proc)
            assert proc.returncode == 1
            lines = proc.stderr.decode().strip().splitlines()
            assert lines == [f"Error: {weights}: not a weights file ({kind})"], (weights, extra, lines)
    assert not (tmp_path / "derained").exists()


def test_other_commands_still_work(tmp_path):
    proc = derain_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0 and b"run" in proc.stdout and b"derain PHOTO..." in proc.stdout
    proc = derain_cli("models", cwd=tmp_path)
    assert proc.returncode == 0 and b"efderain-tiny" in proc.stdout
    proc = derain_cli("modles", cwd=tmp_path)
    assert proc.returncode == 2 and b"No such command 'modles'" in proc.stderr


def test_sigterm_while_writing_leaves_nothing(tmp_path, weights):
    """SIGTERM is Ctrl-C: the half-written output's temporary file is removed, no output appears."""
    import signal
    import time

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (2000, 2000, 3), dtype=np.uint8)).save(tmp_path / "big.png", compress_level=0)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "derain.cli.main", "run", "big.png", "-o", "out", "--weights", str(weights),
                             "--format", "png"], cwd=tmp_path, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob(".big.png.*.tmp")):
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.skip("the write finished before the signal could be sent")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list(out.glob(".*.tmp")) and not (out / "big.png").exists()
    assert b"Traceback" not in proc.stderr.read()


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path, weights):
    """kill -9 leaves ``.NAME.<hex>.tmp``: the next run writing NAME removes it (if untouched for a minute)."""
    Image.fromarray(gradient(40, 30)).save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / ".a.png.deadbeef.tmp"
    stale.write_bytes(b"half a png")
    os.utime(stale, (0, 0))
    fresh = tmp_path / "out" / ".a.png.0badf00d.tmp"  # another writer's, still being written: kept
    fresh.write_bytes(b"x")
    proc = derain_cli("run", "a.png", "-o", "out", "--weights", weights, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert not stale.exists() and fresh.exists() and (tmp_path / "out" / "a.png").is_file()


def test_file_names_cannot_forge_error_lines(tmp_path, weights):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x\nerror: forged.png: fake.png").write_bytes(b"not an image")
    proc = derain_cli("run", "in", "-o", "out", "--weights", weights, cwd=tmp_path)
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "x\\nerror: forged.png" in lines[0], proc.stderr.decode()


@pytest.mark.slow
def test_shards_cover_every_input_exactly_once(tmp_path, weights):
    """``--shard K/N`` over a folder: the N runs together derain every photo once, none twice."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    names = [f"{i:02d}.png" for i in range(9)] + [f"sub/{i}.png" for i in range(4)]
    for n in names:
        Image.fromarray(gradient(24, 16)).save(tmp_path / "in" / n)
    seen: list[str] = []
    for k in (1, 2, 3):
        proc = derain_cli("run", "in", "-r", "-o", f"out{k}", "--weights", weights, "--shard", f"{k}/3", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr.decode()
        seen += [str(p.relative_to(tmp_path / f"out{k}")) for p in (tmp_path / f"out{k}").rglob("*.png")]
    assert sorted(seen) == sorted(names)
    proc = derain_cli("run", "in", "--shard", "4/3", "--weights", weights, cwd=tmp_path)
    assert proc.returncode == 2 and b"K must be in 1..N" in proc.stderr


def test_an_empty_shard_succeeds(tmp_path, weights):
    """A job array's task whose shard holds none of the images has nothing to do: exit 0, one line saying so."""
    (tmp_path / "in").mkdir()
    Image.fromarray(gradient(24, 16)).save(tmp_path / "in" / "only.png")
    codes = {}
    for k in (1, 2):
        proc = derain_cli("run", "in", "-o", f"out{k}", "--weights", weights, "--shard", f"{k}/2", cwd=tmp_path)
        codes[k] = (proc.returncode, proc.stderr.decode())
    assert all(code == 0 for code, _ in codes.values()), codes
    empty = [err for code, err in codes.values() if "none of the 1 images found belong to this shard" in err]
    assert len(empty) == 1, codes


def test_a_closed_pipe_at_the_flush_of_stdout_is_one_line(monkeypatch, capsys):
    """What Python had buffered for stdout meets a closed pipe when it is flushed: a ``WriteError`` line, not an
    "internal error"."""
    import io

    from derain.cli.run import _stdin_to_stdout

    class Echo:  # a derainer that gives the photo back
        def derain_photo(self, photo, tile=None, overlap=0):
            return photo.pixels

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone
    stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "wb"), buffer_size=1 << 16))
    stdout.buffer.write(b"already buffered")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(image_bytes(Image.fromarray(gradient(20, 10)), "PNG"))))
    monkeypatch.setattr(sys, "stdout", stdout)
    args = dict(max_pixels=None, tile=None, tile_overlap=0, side_by_side=False, fmt=None, quality=95)
    try:
        assert _stdin_to_stdout(Echo(), args) == 1
    finally:
        monkeypatch.undo()
        stdout.close()  # its fd now points at the null device: the buffered bytes go there
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: <stdin>: cannot write <stdout>: Broken pipe", err
    assert err[1].startswith("0 ok, 1 failed, 0 skipped")


def test_a_commands_own_error_is_one_line_with_control_characters_escaped(tmp_path):
    """A command's own refusal (here the demo's existing output, its name holding a newline) is one line, exit 1: the
    name cannot forge a second line."""
    name = "strip\nerror: forged.png"
    (tmp_path / name).write_bytes(b"kept")
    proc = derain_cli("demo", "-o", name, cwd=tmp_path)
    assert_clean(proc)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and lines == ["Error: strip\\nerror: forged.png exists (use --overwrite to replace it, or -o another name)"], lines
    assert (tmp_path / name).read_bytes() == b"kept"


def test_version_and_bare_command(tmp_path):
    """`derain --version` prints the version (exit 0); `derain` alone shows the help and no error (exit 0 on click
    8.1, 2 on click >= 8.2, which treats it as a usage error)."""
    proc = derain_cli("--version", cwd=tmp_path)
    assert_clean(proc)
    assert proc.returncode == 0 and derain.__version__ in proc.stdout.decode(), proc
    proc = derain_cli(cwd=tmp_path)
    assert_clean(proc)
    shown = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode in (0, 2) and "Usage: derain" in shown and "Commands:" in shown and "Error" not in shown, shown


def test_an_output_folder_may_look_like_a_file_name_when_it_says_so(tmp_path, weights):
    """`-o shots.jpg/` (a trailing slash) or an existing folder named so is taken as the folder it names."""
    Image.fromarray(gradient(16, 12)).save(tmp_path / "photo.png")
    (tmp_path / "old.jpg").mkdir()
    for out in ("shots.jpg/", "old.jpg"):
        proc = derain_cli("run", "photo.png", "-o", out, "--weights", weights, "--threads", 1, cwd=tmp_path)
        assert_clean(proc)
        assert proc.returncode == 0 and (tmp_path / out / "photo.png").is_file(), proc.stderr.decode()


def test_images_left_in_an_output_folder_inside_the_input_are_named(tmp_path, caplog):
    """``--recursive`` never searches the output folder; where it holds images that are not this run's outputs (an
    album chosen as ``-o``), a warning says how many were left, and a rerun's own outputs say nothing."""
    from derain.cli.plan import plan_jobs

    inp = tmp_path / "photos"
    (inp / "album").mkdir(parents=True)
    for name in ("photos/a.png", "photos/b.png", "photos/album/c.png", "photos/album/.hidden.png"):
        Image.fromarray(gradient(8, 8)).save(tmp_path / name)
    with caplog.at_level("WARNING"):
        plan = plan_jobs((str(inp),), inp / "album", recursive=True, suffix="", fmt=None, overwrite=False)
    assert sorted(job.src.name for job in plan.jobs) == ["a.png", "b.png"]
    assert caplog.messages == [f"{inp}: 1 image in the output folder {inp / 'album'} not searched (the output folder holds outputs, not inputs)"]
    caplog.clear()
    (inp / "album" / "c.png").unlink()
    for name in ("a.png", "b.png"):  # an earlier run's outputs
        Image.fromarray(gradient(8, 8)).save(inp / "album" / name)
    with caplog.at_level("WARNING"):
        plan_jobs((str(inp),), inp / "album", recursive=True, suffix="", fmt=None, overwrite=True)
    assert caplog.messages == []
    with caplog.at_level("WARNING"):  # the input folder as the output folder: its sub-folders are left
        plan = plan_jobs((str(inp),), inp, recursive=True, suffix="_dr", fmt=None, overwrite=False)
    assert sorted(job.src.name for job in plan.jobs) == ["a.png", "b.png"]
    assert caplog.messages == [f"{inp}: 2 images in the sub-folders of the output folder not searched (the output folder holds outputs, not inputs)"]
