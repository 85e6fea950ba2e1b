"""The daemon serves requests through the fast loop (cowfs.fuse.fastloop), not trio's waits."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from helpers.mounting import make_dirs, overlay_mount

pytestmark = pytest.mark.needs_fuse

_WAITS = re.compile(r"request waits: (\d+) caught spinning, (\d+) by poll, (\d+) via trio")


def _waits(log: Path) -> tuple[int, int, int]:
    m = _WAITS.search(log.read_text(errors="replace"))
    assert m is not None, "the daemon did not report its request waits"
    spun, polled, via_trio = (int(g) for g in m.groups())
    return spun, polled, via_trio


def _busy(mnt: Path, n: int) -> None:
    for i in range(n):  # every stat of a new name is a LOOKUP the daemon answers
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / f"missing-{i}")
        os.stat(mnt / "d" / f"f{i}")


@pytest.mark.parametrize("spin", [None, 0])
def test_requests_are_served_by_the_fast_loop(tmp_path: Path, spin: int | None) -> None:
    low, up, work, mnt = make_dirs(tmp_path, "lower", "upper", "work", "merged")
    (low / "d").mkdir()
    for i in range(300):
        (low / "d" / f"f{i}").write_bytes(b"x")
    options = ["debug_log_level=debug"] + ([] if spin is None else [f"spin={spin}"])
    with overlay_mount(mnt, [low], up, work, options=options) as m:
        _busy(mnt, 300)
        m.unmount()
    spun, polled, via_trio = _waits(m.log)
    assert spun + polled + via_trio >= 600
    if spin == 0:
        assert spun == 0, "spin=0 must never spin"
        assert polled > via_trio
    else:
        assert spun > 0, "back-to-back requests were never caught by the spin"
        assert spun + polled > via_trio


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def test_an_idle_mount_burns_no_cpu(tmp_path: Path) -> None:
    """After a burst of requests the daemon goes back to sleep: the spin never runs idle."""
    low, up, work, mnt = make_dirs(tmp_path, "lower", "upper", "work", "merged")
    (low / "d").mkdir()
    for i in range(300):
        (low / "d" / f"f{i}").write_bytes(b"x")
    with overlay_mount(mnt, [low], up, work) as m:
        _busy(mnt, 300)
        time.sleep(0.1)
        before = _cpu_ticks(m.pid)
        time.sleep(1.0)
        idle = _cpu_ticks(m.pid) - before
    tick = os.sysconf("SC_CLK_TCK")
    assert idle <= 1, f"idle daemon used {idle * 1000 // tick} ms of CPU in 1 s"
