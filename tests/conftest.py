"""Test-wide isolation: every test gets its own PREWARM_HOME and fresh settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point PREWARM_HOME at a per-test folder and drop any PREWARM_* set outside the test."""
    for name in list(os.environ):
        if name.startswith("PREWARM_"):
            monkeypatch.delenv(name)
    home = tmp_path / "prewarm-home"
    monkeypatch.setenv("PREWARM_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def shared_datasets() -> Path:
    """The shared real traces, or a clean skip where this checkout has none."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not present at {SHARED_DATASETS}")
    return SHARED_DATASETS
