"""Shared pytest fixtures.

``shared_data``: the read-only data folder ``../shared/data`` next to the repository (only in the
dev/CI environment); tests that need it are skipped where it is absent.
``shared_dataset``: a factory, ``shared_dataset("Rain100L")`` → that sub-folder, or a skip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (relative to the repository root), or skip the test."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found (data is only in the dev/CI environment)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_dataset() -> Callable[[str], Path]:
    """Factory: ``shared_dataset(name)`` returns ``../shared/data/<name>``, or skips the test."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            pytest.skip(f"../shared/data/{name} not found (data is only in the dev/CI environment)")
        return path

    return get
