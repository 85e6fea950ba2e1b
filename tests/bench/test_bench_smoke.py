"""Smoke run of the benchmark harness at a tiny scale: every workload runs and its check passes.

No timing assertions: only that each column that can run here produced a result for every
workload and that the harness's result checks hold (and can fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import fixture  # noqa: E402
from benchmarks.workloads import METRICS  # noqa: E402

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay, pytest.mark.needs_fuse,
              pytest.mark.needs_tool("fuse-overlayfs", "fio", "tar")]

COLUMNS = ("kernel", "fuse-overlayfs", "cowfs-kernel", "cowfs-fuse")


def test_harness_tiny_scale(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "benchmarks", "--scale", "0.01", "--rounds", "1",
           "--fio-runtime", "1", "--impl", ",".join(COLUMNS), "--no-sections", "-q",
           "--json", str(out), "--md", str(tmp_path / "r.md"), "--work", str(tmp_path / "w")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    doc = json.loads(out.read_text())
    stats = doc["summary"]["stats"]
    # Every column must run here (cowfs's own included): an unavailable column says why.
    for col in COLUMNS:
        assert doc["columns"][col]["available"], (col, doc["columns"][col]["reason"])
        assert doc["verify"][col]["ok"], doc["verify"][col]
    available = list(COLUMNS)
    for metric in METRICS:
        for col in available:
            cell = stats[metric][col]
            assert cell["checks_ok"], (metric, col, cell["problems"])
            assert cell["median"] > 0, (metric, col)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "r.md").read_text()
    assert "## Medians" in md and "geomean" in md
    assert set(doc["summary"]["ratios"]["fuse-overlayfs"]["kernel"]) == set(METRICS)
    # Nothing left mounted under the work dir, no scratch left behind.
    assert not [p for p in (tmp_path / "w").iterdir() if p.name.startswith(("tmpfs-", "scratch-"))]


def test_expected_tree_model() -> None:
    """The model honours whiteouts, opaque dirs and overrides (the oracle for every column)."""
    f, w, d = fixture.Entry("f", size=1, seed=1), fixture.Entry("w"), fixture.Entry("d", 0o755)
    lower = {"a": d, "a/x": f, "a/y": f, "b": d, "b/z": f, "c": f}
    middle = {"a": d, "a/x": w, "b": fixture.Entry("d", 0o755, opaque=True), "b/n": f}
    upper = {"c": fixture.Entry("f", size=2, seed=2), "a": d, "a/x": f}
    merged = fixture.merge([lower, middle, upper])
    assert sorted(merged) == ["a", "a/x", "a/y", "b", "b/n", "c"]
    assert merged["c"].size == 2
    assert fixture.merge([lower, middle])["a"] == d
    assert "a/x" not in fixture.merge([lower, middle])


def test_verify_tree_catches_a_wrong_view(tmp_path: Path) -> None:
    """The pre-timing check fails for a view that is not the merged one (the bottom layer)."""
    fx = fixture.build(tmp_path, 0.001)
    problems = fixture.verify_tree(fx.layer_dirs[0], fx.expected)
    assert problems
    assert fx.summary()["whiteouts"] > 0 and fx.summary()["opaque_dirs"] == 1


@pytest.mark.needs_tool("umoci", "runc")
def test_sections_run_in_the_same_command(tmp_path: Path) -> None:
    """The unpack and run-latency sections are found, called and reported (tiny scale)."""
    out = tmp_path / "s.json"
    cmd = [sys.executable, "-m", "benchmarks", "--scale", "0.01", "--rounds", "1", "-q",
           "--only", "unpack,run", "--json", str(out), "--md", str(tmp_path / "s.md"),
           "--work", str(tmp_path / "w")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc["sections"]) == {"unpack", "run"}
    for name, sec in doc["sections"].items():
        assert "unavailable" not in sec, (name, sec)
        assert sec["result"]["rows"], name
    assert all(row["same_tree_as_tar"] for row in doc["sections"]["unpack"]["result"]["rows"])
    md = (tmp_path / "s.md").read_text()
    assert "## Section: unpack" in md and "## Section: run" in md
