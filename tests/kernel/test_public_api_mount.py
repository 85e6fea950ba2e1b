"""The driver's public names: `cowfs.mount`, `cowfs.Mount`, `cowfs.open_store` (lazy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cowfs
from cowfs import driver


def test_lazy_reexports_are_the_real_objects() -> None:
    assert cowfs.mount is driver.mount
    assert cowfs.Mount is driver.Mount
    from cowfs.store import open_store

    assert cowfs.open_store is open_store
    assert {"mount", "Mount", "open_store"} <= set(dir(cowfs))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cowfs.nope  # type: ignore[attr-defined]


def test_import_cowfs_stays_light() -> None:
    """`import cowfs` (e.g. by the FUSE daemon) loads neither the driver nor the store."""
    code = ("import sys, cowfs; print(sorted(m for m in sys.modules "
            "if m.startswith(('cowfs.driver', 'cowfs.store', 'cowfs.kernel'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
