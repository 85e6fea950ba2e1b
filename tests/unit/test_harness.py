"""The harness cannot lie: under COWFS_REQUIRE_ALL=1 a missing need is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent


@pytest.mark.needs_tool("umoci")
def test_umoci_probe() -> None:
    assert shutil.which("umoci") is not None


def _run_probe(require_all: bool) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH="/nonexistent-bin")
    env["COWFS_REQUIRE_ALL"] = "1" if require_all else "0"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-q",
         f"{TESTS}/unit/test_harness.py::test_umoci_probe"],
        capture_output=True, text=True, env=env, check=False, cwd=TESTS.parent,
    )


def test_missing_tool_skips_with_reason() -> None:
    r = _run_probe(require_all=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped" in r.stdout
    assert "needs peer tool 'umoci'" in r.stdout


def test_missing_tool_fails_under_require_all() -> None:
    r = _run_probe(require_all=True)
    assert r.returncode != 0, r.stdout
    assert "umoci" in r.stdout and "COWFS_REQUIRE_ALL=1" in r.stdout


def test_plain_skip_fails_under_require_all(tmp_path: Path) -> None:
    env = dict(os.environ, COWFS_REQUIRE_ALL="1", _COWFS_META="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", f"{TESTS}/unit/test_harness.py::test_skipper"],
        capture_output=True, text=True, env=env, check=False, cwd=TESTS.parent,
    )
    assert r.returncode != 0, r.stdout
    assert "turns this skip into a failure" in r.stdout


def test_skipper() -> None:
    if os.environ.get("_COWFS_META") == "1":
        pytest.skip("deliberate skip, run by test_plain_skip_fails_under_require_all")
