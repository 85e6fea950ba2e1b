"""Fixtures shared by the store tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowfs.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A fresh store in the test's temp dir."""
    return open_store(str(tmp_path / "store"))
