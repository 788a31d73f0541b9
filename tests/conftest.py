"""Shared pytest fixtures, and the ``slow`` marker's policy.

Tests marked ``slow`` (tens of seconds or more on 2 cores, or whole-dataset runs) are left out of a plain
``python -m pytest`` (with ``CI=1`` too), so it stays at about 5 minutes on 2 cores; ``-m slow`` runs only them,
``--slow`` runs everything, and any other ``-m`` selects by its own expression (``-m precision``: the precision
tests, slow ones included). CI (``.ci/run``) runs the plain command and then ``-m slow``.

``shared_data``: the read-only data folder ``../shared/data`` next to the repository (only in the
dev/CI environment); tests that need it are skipped where it is absent.
``shared_dataset``: a factory, ``shared_dataset("Rain100L")`` → that sub-folder, or a skip.
``fused_isa``: runs a test once per instruction-set clone of the fused C kernel this CPU runs
(``avx512``, ``avx2``, ``default``), so every clone is tested, not only the one this CPU picks.
``clean_folder``: a small clean-photo corpus for the training tests (one per test module;
``tests/helpers_training.py`` holds the configs they share).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers_training import make_clean_folder

from derain.ops import fused_filter

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (-m slow: only them)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow") or config.getoption("-m"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small clean-photo corpus: smooth random images (no shared data needed)."""
    return make_clean_folder(tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (relative to the repository root), or skip the test."""
    if not SHARED_DATA.is_dir():
        _missing("../shared/data")
    return SHARED_DATA


def _missing(what: str) -> None:
    """Skip for users without the data; in CI (which always has it) a missing folder is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} not found, but CI must run the data-backed tests")
    pytest.skip(f"{what} not found (data is only in the dev/CI environment)")


@pytest.fixture(scope="session")
def shared_dataset() -> Callable[[str], Path]:
    """Factory: ``shared_dataset(name)`` returns ``../shared/data/<name>``, or skips the test."""

    return shared_path


def shared_path(name: str) -> Path:
    """``../shared/data/<name>``, or skip (fail in CI) when it is absent. Importable: ``from conftest import shared_path``."""
    path = SHARED_DATA / name
    if not path.exists():
        _missing(f"../shared/data/{name}")
    return path


@pytest.fixture(params=fused_filter.fused_filter_isas() or ("not built",))
def fused_isa(request: pytest.FixtureRequest) -> Iterator[str]:
    """The fused kernel runs the clone named by the parameter during the test (the one in use before, after it)."""
    if not fused_filter.fused_filter_available():
        yield request.param
        return
    before = fused_filter.fused_filter_isa()
    fused_filter.set_fused_filter_isa(request.param)
    try:
        yield request.param
    finally:
        fused_filter.set_fused_filter_isa(before)
