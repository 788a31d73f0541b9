"""Peak memory on big photos (benchmarks/bench_big_image.py in a subprocess): the image is derained tile by
tile from its decoded pixels into the output, so memory grows by the input and output arrays only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_big_image.py"


def _peak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), "--model", "efderain-cpu", "--threads", "2", *args],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_service_40_megapixel_upload_stays_under_1_5_gb():
    proc = _peak("--service", "--size", "7680x5200", "--limit-mb", "1536")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "server peak RSS" in proc.stdout


@pytest.mark.slow
def test_cli_24_megapixel_photo_stays_under_1_gb():
    proc = _peak("--size", "6000x4000", "--limit-mb", "1024")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "peak RSS" in proc.stdout
