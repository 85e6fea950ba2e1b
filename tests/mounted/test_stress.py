"""Concurrency, crash and interchangeability tests of real cowfs-overlay mounts.

* parallel processes create, rename, hardlink, copy up and delete on one mount; the merged
  tree must equal the same work applied sequentially to a plain copy of the lower, the
  upper must be kernel format, and the kernel must show the same tree from that upper;
* SIGKILL of the daemon in the middle of writes: the same upper/work mounts again and
  everything fsynced before the kill is intact;
* the reverse direction: an upper written by kernel overlayfs, read by cowfs-overlay.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.mounting import make_dirs, mount_fstype, overlay_mount, pid_alive, snapshot, wait_for

from cowfs import format as fmt

pytestmark = pytest.mark.needs_fuse

WORKERS = 4
FILES = 300


def _make_lower(low: Path, workers: int) -> None:
    (low / "shared").mkdir()
    for n in range(50):
        (low / "shared" / f"x{n}").write_bytes(b"shared %d\n" % n * 20)
    for i in range(workers):
        (low / "shared" / f"s{i}").write_bytes(b"link me %d\n" % i)
        d = low / f"d{i}"
        d.mkdir()
        for n in range(100):
            (d / f"l{n}").write_bytes(b"lower %d %d\n" % (i, n) * (n + 1))
    os.link(low / "shared" / "x0", low / "shared" / "x0-hard")


def work(root: str, i: int, nfiles: int) -> None:
    """Worker ``i``'s deterministic share of the stress load (touches only its own names)."""
    w = os.path.join(root, f"w{i}")
    os.mkdir(w)
    for n in range(nfiles):
        p = f"{w}/f{n}"
        with open(p, "wb") as f:
            f.write(b"%d:%d\n" % (i, n) * (n % 7 + 1))
        if n % 3 == 0:
            os.rename(p, f"{w}/r{n}")
        elif n % 3 == 1:
            os.link(p, f"{w}/h{n}")
        if n % 10 == 9:
            m = n - 1
            os.unlink(f"{w}/{'rhf'[m % 3]}{m}")
    d = os.path.join(root, f"d{i}")
    for n, name in enumerate(sorted(os.listdir(d))):
        p = f"{d}/{name}"
        if n % 4 == 0:
            with open(p, "ab") as f:
                f.write(b"appended\n")
        elif n % 4 == 1:
            os.unlink(p)
        elif n % 4 == 2:
            os.chmod(p, 0o600)
        else:
            os.rename(p, f"{w}/moved-{name}")
    os.link(f"{root}/shared/s{i}", f"{w}/link-to-shared")
    for name in sorted(os.listdir(f"{root}/shared")):
        with open(f"{root}/shared/{name}", "rb") as f:
            assert f.read().startswith(b"link me" if name.startswith("s") else b"shared")


def _run_parallel(root: Path, workers: int, nfiles: int) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=work, args=(str(root), i, nfiles)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0] * workers


def _check_upper_is_kernel_format(upper: Path, work_dir: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            assert not fmt.is_wh_name(os.fsencode(name)), f"{dirpath}/{name}: .wh. file"
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISCHR(st.st_mode):
                assert fmt.is_whiteout_stat(st.st_mode, st.st_rdev)
    leftovers = [os.path.join(dp, f) for dp, _d, fs in os.walk(work_dir) for f in fs]
    assert not leftovers, f"temp files left in workdir: {leftovers[:5]}"


def _kernel_snapshot(tmp: Path, low: Path, up: Path, work_dir: Path) -> dict[str, object]:
    mnt = tmp / "kmnt"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={low},upperdir={up},workdir={work_dir}", str(mnt)], check=True)
    try:
        return dict(snapshot(mnt))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.needs_root
@pytest.mark.needs_overlay
def test_parallel_stress_then_kernel_agrees(tmp_path: Path) -> None:
    low, up, work_dir, mnt, model = make_dirs(tmp_path, "lower", "upper", "work", "merged",
                                              "model")
    _make_lower(low, WORKERS)
    shutil.copytree(low, model, dirs_exist_ok=True, symlinks=True)
    for i in range(WORKERS):
        work(str(model), i, FILES)
    expected = snapshot(model)
    with overlay_mount(mnt, [low], up, work_dir) as m:
        _run_parallel(mnt, WORKERS, FILES)
        merged = snapshot(mnt)
        for i in range(WORKERS):  # hardlinks made on the mount are one inode
            for n in range(1, FILES, 3):
                if (mnt / f"w{i}" / f"h{n}").exists() and (mnt / f"w{i}" / f"f{n}").exists():
                    a, b = os.lstat(mnt / f"w{i}" / f"h{n}"), os.lstat(mnt / f"w{i}" / f"f{n}")
                    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)
        m.unmount()
    assert merged == expected
    _check_upper_is_kernel_format(up, work_dir)
    assert (up / "d0" / "l1").is_char_device()  # a deleted lower file left a whiteout
    assert _kernel_snapshot(tmp_path, low, up, work_dir) == expected


WRITER = """
import os, sys
mnt, journal = sys.argv[1], sys.argv[2]
j = open(journal, "a")
n = 0
while True:
    name = f"{mnt}/d0/l{n % 100}"
    with open(name, "ab") as f:           # copy-up of a lower file, then fsync
        f.write(b"more %d\\n" % n)
        f.flush(); os.fsync(f.fileno())
    p = f"{mnt}/new/{n}"
    with open(p, "wb") as f:
        f.write(b"payload %d\\n" % n * 100)
        f.flush(); os.fsync(f.fileno())
    j.write(f"{n}\\n"); j.flush()
    n += 1
"""


def test_sigkill_mid_write_then_remount(tmp_path: Path) -> None:
    low, up, work_dir, mnt = make_dirs(tmp_path, "lower", "upper", "work", "merged")
    _make_lower(low, 1)
    journal = tmp_path / "journal"
    with overlay_mount(mnt, [low], up, work_dir) as m:
        (mnt / "new").mkdir()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt), str(journal)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: journal.exists() and len(journal.read_text().split()) >= 30, 60,
                     "the writer to fsync 30 rounds")
            os.kill(m.pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(m.pid), 10, "the daemon to die")
            assert writer.wait(30) != 0  # it saw ENOTCONN/ECONNABORTED, not success
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        r = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=True)
        assert mount_fstype(mnt) is None
    done = [int(x) for x in journal.read_text().split()]
    with overlay_mount(mnt, [low], up, work_dir) as m2:
        for n in done:
            assert (mnt / "new" / str(n)).read_bytes() == b"payload %d\n" % n * 100
        for k in range(100):
            rounds = [n for n in done if n % 100 == k]
            data = (mnt / "d0" / f"l{k}").read_bytes()
            assert data.startswith(b"lower 0 %d\n" % k * (k + 1))
            for n in rounds:
                assert b"more %d\n" % n in data
        (mnt / "after").write_text("still writable\n")
        m2.unmount()
    assert (up / "after").read_text() == "still writable\n"


@pytest.mark.needs_root
@pytest.mark.needs_overlay
def test_kernel_written_upper_reads_the_same(tmp_path: Path) -> None:
    low, up, work_dir, kmnt, mnt = make_dirs(tmp_path, "lower", "upper", "work", "kmnt", "m")
    _make_lower(low, 2)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={low},upperdir={up},workdir={work_dir}", str(kmnt)], check=True)
    try:
        for i in range(2):
            work(str(kmnt), i, 60)
        shutil.rmtree(kmnt / "shared")  # whiteouts for a whole lower dir
        (kmnt / "shared").mkdir()  # ... and an opaque dir over it
        (kmnt / "shared" / "fresh").write_text("fresh\n")
        os.symlink("../w0/r0", kmnt / "shared" / "sym")
        os.mknod(kmnt / "fifo", stat.S_IFIFO | 0o644)
        expected = snapshot(kmnt)
    finally:
        subprocess.run(["umount", str(kmnt)], check=True)
    t0 = time.monotonic()
    with overlay_mount(mnt, [low], up, work_dir):
        assert snapshot(mnt) == expected
    assert time.monotonic() - t0 < 60
