"""Test harness: capability markers, no silent skips, no leftover mounts.

Markers name what a test needs (``needs_root``, ``needs_fuse``, ``needs_overlay``,
``needs_userns``, ``needs_tool("umoci", ...)``). A test whose need is missing is
skipped with the reason; with ``COWFS_REQUIRE_ALL=1`` (CI) every skip, from a
marker or from ``pytest.skip`` anywhere, is turned into a failure, so CI can
never pass by skipping.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import caps

REQUIRE_ALL = os.environ.get("COWFS_REQUIRE_ALL") == "1"

_crit = open(Path(__file__).parent / "crit.log", "a")  # noqa: SIM115
faulthandler.enable(_crit)


def pytest_configure(config: pytest.Config) -> None:
    # Hypothesis profiles: deterministic by default, HYPOTHESIS_PROFILE=deep for local runs.
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # pragma: no cover - hypothesis is a test dependency
        return
    settings.register_profile(
        "ci",
        derandomize=True,
        deadline=None,
        max_examples=30,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.register_profile(
        "deep",
        deadline=None,
        max_examples=1000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _unmet(item: pytest.Item) -> list[str]:
    reasons: list[str] = []
    if item.get_closest_marker("needs_root") and os.geteuid() != 0:
        reasons.append("needs root")
    if item.get_closest_marker("needs_fuse"):
        why = caps.fuse_unavailable()
        if why:
            reasons.append(why)
    if item.get_closest_marker("needs_overlay"):
        why = caps.overlay_unavailable()
        if why:
            reasons.append(why)
    if item.get_closest_marker("needs_userns"):
        why = caps.userns_unavailable()
        if why:
            reasons.append(why)
    for mark in item.iter_markers("needs_tool"):
        for tool in mark.args:
            if shutil.which(tool) is None:
                reasons.append(f"needs peer tool {tool!r} on PATH")
    return reasons


def pytest_runtest_setup(item: pytest.Item) -> None:
    reasons = _unmet(item)
    if reasons:
        msg = "; ".join(reasons)
        if REQUIRE_ALL:
            pytest.fail(f"COWFS_REQUIRE_ALL=1 and this test cannot run: {msg}", pytrace=False)
        pytest.skip(msg)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"COWFS_REQUIRE_ALL=1 turns this skip into a failure: {reason}"


def _mounts() -> set[str]:
    out: set[str] = set()
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            out.add(fields[4].decode("unicode_escape"))
    return out


@pytest.fixture(autouse=True)
def _no_leftover_mounts() -> Iterator[None]:
    """Fail a test that leaves a mount behind (and lazily unmount it)."""
    before = _mounts()
    yield
    gc.collect()
    left = sorted(_mounts() - before)
    if left:
        for mnt in reversed(left):
            subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
        pytest.fail(f"test left mounts behind: {left}", pytrace=False)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    """A temp dir on the same fs as the test's store/upper (alias of tmp_path)."""
    return tmp_path
