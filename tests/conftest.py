"""Shared test set-up: no hub downloads, and the path to ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures" / "label-studio-1.23.2"


@pytest.fixture
def shared_data() -> Path:
    """The real data sets in ../shared/data; the test is skipped where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only in the team's checkout)")
    return SHARED_DATA


@pytest.fixture
def ls_fixtures() -> Path:
    """Captured Label Studio 1.23.2 payloads; skipped where absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"Label Studio fixtures not found at {FIXTURES}")
    return FIXTURES
