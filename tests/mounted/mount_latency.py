"""Mount latency of ``cowfs-overlay`` (a measuring script, not a test).

Times ``cowfs-overlay -o lowerdir=..,upperdir=..,workdir=.. MNT`` from exec until it
returns with the mount live (interpreter start included), and until a first listing
through the mount is answered, on a private tmpfs, N times; prints medians and min-max.
Each sample gets a fresh upper/work; after ``fusermount3 -u`` it waits (untimed) for the
daemon to exit.

    unshare -m --propagation private .venv/bin/python tests/mounted/mount_latency.py [-n 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAM = str(Path(sys.executable).with_name("cowfs-overlay"))


def _daemon_of(mnt: str) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if mnt.encode() in args and any(a.endswith(b"cowfs-overlay") for a in args):
            return int(pid)
    return None


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _is_mounted(mnt: str) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return any(line.split()[4] == mnt for line in f)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--program", default=PROGRAM)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="cowfs-mountlat-")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", base], check=True)
    times: list[float] = []
    served: list[float] = []
    try:
        low = Path(base, "lower")
        (low / "d").mkdir(parents=True)
        for i in range(100):
            (low / "d" / f"f{i}").write_bytes(b"x" * 100)
        mnt = str(Path(base, "mnt"))
        os.mkdir(mnt)
        for i in range(args.n):
            up, work = Path(base, f"u{i}"), Path(base, f"w{i}")
            up.mkdir()
            work.mkdir()
            cmd = [args.program, "-o", f"lowerdir={low},upperdir={up},workdir={work}", mnt]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            assert _is_mounted(mnt), "returned before the mount was live"
            assert os.listdir(Path(mnt, "d"))
            served.append(time.perf_counter() - t0)
            pid = _daemon_of(mnt)
            subprocess.run(["fusermount3", "-u", mnt], check=True)
            deadline = time.monotonic() + 20
            while pid is not None and not _gone(pid) and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        if _is_mounted(str(Path(base, "mnt"))):
            subprocess.run(["umount", "-l", str(Path(base, "mnt"))], check=False)
        subprocess.run(["umount", base], check=False)
        shutil.rmtree(base, ignore_errors=True)
    with open("/proc/loadavg", encoding="ascii") as f:
        load = f.read().split()[0]
    for what, samples in (("returned", times), ("first listing answered", served)):
        ms = sorted(t * 1000 for t in samples)
        print(f"{what} over {len(ms)} mounts: median {statistics.median(ms):.1f} ms, "
              f"min {ms[0]:.1f}, max {ms[-1]:.1f} (load {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
