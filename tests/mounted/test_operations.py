"""What the FUSE adapter itself must get right on a real mount (the core has its own suite).

File handles outlive copy-up, inode numbers stay put, kernel-internal open flags are not
passed on, the writeback cache keeps O_APPEND right, the xattr miss cache is invalidated,
and the daemon holds no fd per inode however much of the tree the kernel has seen.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import subprocess
from pathlib import Path

import pytest
from helpers.mounting import make_dirs, overlay_mount

pytestmark = pytest.mark.needs_fuse


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    low, up, work, mnt = make_dirs(tmp_path, "lower", "upper", "work", "merged")
    (low / "file").write_bytes(b"lower data\n")
    (low / "tool").write_text("#!/bin/sh\necho tool ran\n")
    (low / "tool").chmod(0o755)
    (low / "tree").mkdir()
    for i in range(150):
        (low / "tree" / f"d{i}").mkdir()
        for j in range(20):
            (low / "tree" / f"d{i}" / f"f{j}").write_bytes(b"%d/%d" % (i, j))
    return low, up, work, mnt


def test_fd_opened_before_copy_up_stays_valid(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work):
        before = os.lstat(mnt / "file")
        with open(mnt / "file", "rb") as ro:
            assert ro.read(5) == b"lower"
            with open(mnt / "file", "r+b") as rw:  # copy-up happens here
                rw.write(b"UPPER")
            assert ro.read() == b" data\n"  # the old handle still reads
        after = os.lstat(mnt / "file")
        assert after.st_ino == before.st_ino  # stable across copy-up
        assert (mnt / "file").read_bytes() == b"UPPER data\n"
    assert (up / "file").read_bytes() == b"UPPER data\n"
    assert (low / "file").read_bytes() == b"lower data\n"


def _read_through_old_fd(mnt: Path) -> bytes:
    """An fd opened read-only before another fd copies the file up, read after the page
    cache is dropped (so the read reaches the filesystem, not shared cached pages)."""
    ro = os.open(mnt / "file", os.O_RDONLY)
    try:
        assert os.pread(ro, 5, 0) == b"lower"  # pages of the lower file now cached
        wr = os.open(mnt / "file", os.O_WRONLY | os.O_TRUNC)  # copy-up (no data)
        try:
            os.write(wr, b"NEW DATA\n")
        finally:
            os.close(wr)
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return os.pread(ro, 100, 0)
    finally:
        os.close(ro)


@pytest.mark.needs_root
@pytest.mark.needs_overlay
def test_reads_leave_lower_atimes_alone_like_kernel(stack: tuple[Path, ...]) -> None:
    """The kernel opens real files and dirs O_NOATIME: reading or listing through the
    overlay must not write to the shared lower layer (relatime would update an atime
    older than the mtime)."""
    low, up, work, mnt = stack
    old = 1_000_000_000 * 10**9
    os.utime(low / "file", ns=(old, os.lstat(low / "file").st_mtime_ns))
    os.utime(low / "tree", ns=(old, os.lstat(low / "tree").st_mtime_ns))
    with overlay_mount(mnt, [low], up, work):
        assert len(os.listdir(mnt / "tree")) == 150
        assert os.lstat(low / "tree").st_atime_ns == old  # listing a lower dir
        seen = os.lstat(mnt / "file").st_atime_ns
        assert (mnt / "file").read_bytes() == b"lower data\n"
        subprocess.run(["cat", str(mnt / "file")], check=True, capture_output=True)
        assert os.lstat(low / "file").st_atime_ns == old
        assert seen == old
        with open(mnt / "file", "ab") as f:  # copy-up reads the lower file too
            f.write(b"more\n")
        assert os.lstat(low / "file").st_atime_ns == old
    assert os.lstat(low / "file").st_atime_ns == old


def test_old_fd_reads_copied_up_data_like_kernel(tmp_path: Path) -> None:
    # Kernel overlayfs reopens the upper file for an fd opened before the copy-up; the
    # FUSE handle must follow it too (it used to keep reading the lower file).
    seen = {}
    for kind in ("kernel", "cowfs"):
        low, up, work, mnt = make_dirs(tmp_path / kind, "lower", "upper", "work", "merged")
        (low / "file").write_bytes(b"lower data\n")
        if kind == "kernel":
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={low},upperdir={up},workdir={work}", str(mnt)],
                           check=True)
            try:
                seen[kind] = _read_through_old_fd(mnt)
            finally:
                subprocess.run(["umount", str(mnt)], check=True)
        else:
            with overlay_mount(mnt, [low], up, work):
                seen[kind] = _read_through_old_fd(mnt)
        assert (up / "file").read_bytes() == b"NEW DATA\n"
        assert (low / "file").read_bytes() == b"lower data\n"
    assert seen == {"kernel": b"NEW DATA\n", "cowfs": b"NEW DATA\n"}


def test_old_fd_follows_copy_up_without_page_cache_drop(stack: tuple[Path, ...]) -> None:
    # Several read-only O_DIRECT fds (their reads always reach the daemon), a copy-up
    # through another fd: each old fd must read the upper copy.
    low, up, work, mnt = stack
    (low / "big").write_bytes(b"L" * (1 << 20))
    with overlay_mount(mnt, [low], up, work):
        fds = [os.open(mnt / "big", os.O_RDONLY | os.O_DIRECT) for _ in range(3)]
        try:
            with open(mnt / "big", "r+b") as rw:
                rw.seek(1 << 19)
                rw.write(b"U" * 4096)
                rw.flush()
                os.fsync(rw.fileno())
            for fd in fds:
                buf = mmap.mmap(-1, 4096)
                assert os.preadv(fd, [buf], 1 << 19) == 4096
                assert bytes(buf) == b"U" * 4096
        finally:
            for fd in fds:
                os.close(fd)
        assert (mnt / "big").read_bytes()[(1 << 19) - 1:(1 << 19) + 4097] == (
            b"L" + b"U" * 4096 + b"L")


def test_exec_from_the_mount(stack: tuple[Path, ...]) -> None:
    # execve opens with the kernel-internal __FMODE_EXEC bit, which openat2 rejects.
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work):
        r = subprocess.run([str(mnt / "tool")], capture_output=True, text=True, check=True)
        assert r.stdout == "tool ran\n"


def test_append_with_writeback_cache(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work):
        for chunk in (b"one\n", b"two\n"):
            fd = os.open(mnt / "file", os.O_WRONLY | os.O_APPEND)
            try:
                os.pwrite(fd, b"", 0)
                os.write(fd, chunk)
            finally:
                os.close(fd)
        fd = os.open(mnt / "new", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o200)
        os.write(fd, b"a")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"b")
        os.close(fd)
        assert (mnt / "file").read_bytes() == b"lower data\none\ntwo\n"
        assert (mnt / "new").read_bytes() == b"ab"
        assert stat.S_IMODE(os.lstat(mnt / "new").st_mode) == 0o200
    assert (up / "new").read_bytes() == b"ab"


def test_mmap_shared_write_is_visible(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work):
        fd = os.open(mnt / "file", os.O_RDWR)
        try:
            with mmap.mmap(fd, 0, mmap.MAP_SHARED) as m:
                m[0:5] = b"MMAP!"
                m.flush()
        finally:
            os.close(fd)
        assert (mnt / "file").read_bytes() == b"MMAP! data\n"
    assert (up / "file").read_bytes() == b"MMAP! data\n"


def test_xattr_miss_cache_is_invalidated(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work):
        p = mnt / "file"
        for _ in range(2):
            with pytest.raises(OSError) as exc:
                os.getxattr(p, "user.k")
            assert exc.value.errno == errno.ENODATA
        os.setxattr(p, "user.k", b"v")
        assert os.getxattr(p, "user.k") == b"v"
        os.removexattr(p, "user.k")
        with pytest.raises(OSError) as exc:
            os.getxattr(p, "user.k")
        assert exc.value.errno == errno.ENODATA
        os.setxattr(p, "user.k", b"w")
        assert os.getxattr(p, "user.k") == b"w"
        assert "user.k" in os.listxattr(p)


@pytest.mark.needs_root  # drop_caches
def test_no_fd_per_inode_and_forget_after_walks(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    def rss_kib() -> int:
        status = Path(f"/proc/{m.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0])

    with overlay_mount(mnt, [low], up, work) as m:
        rss = []
        for _ in range(4):
            n = sum(len(files) for _d, _s, files in os.walk(mnt))
            assert n == 2 + 150 * 20
            Path("/proc/sys/vm/drop_caches").write_text("2\n")  # the kernel forgets
            rss.append(rss_kib())
        # Memory stays flat across repeated walks once the kernel forgets (no leak per
        # walk): the last walks add less than 2 MiB over the second one.
        assert rss[-1] - rss[1] < 2048, f"daemon RSS per walk (KiB): {rss}"
        fds = os.listdir(f"/proc/{m.pid}/fd")
        # The core may cache a bounded number of dir fds per layer; never one per inode.
        assert len(fds) < 150, f"daemon holds {len(fds)} fds after walking 3150 inodes"
        # Names the kernel forgot are looked up again correctly.
        assert (mnt / "tree" / "d7" / "f9").read_bytes() == b"7/9"


def test_hardlink_nlink_and_statfs(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work):
        os.link(mnt / "file", mnt / "alias")
        a, b = os.lstat(mnt / "file"), os.lstat(mnt / "alias")
        assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
        os.unlink(mnt / "alias")
        assert os.lstat(mnt / "file").st_nlink == 1
        sv = os.statvfs(mnt)
        assert sv.f_blocks > 0 and sv.f_bsize > 0


def test_dot_entries_in_listing(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work):
        r = subprocess.run(["ls", "-a", str(mnt / "tree" / "d3")], capture_output=True,
                           text=True, check=True)
        names = r.stdout.split()
        assert names[:2] == [".", ".."] and len(names) == 22


def test_squash_and_static_nlink_options(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    with overlay_mount(mnt, [low], up, work,
                       options=["squash_to_uid=1234", "squash_to_gid=4321", "static_nlink"]):
        for p in (mnt / "file", mnt / "tree", mnt / "tree" / "d1" / "f1"):
            st = os.lstat(p)
            assert (st.st_uid, st.st_gid) == (1234, 4321)
        assert os.lstat(mnt / "tree").st_nlink == 1
        (mnt / "mine").write_text("x")
        assert os.lstat(mnt / "mine").st_uid == 1234
    assert os.lstat(up / "mine").st_uid == os.getuid()  # on disk: the real owner


def test_uid_gid_mapping(stack: tuple[Path, ...]) -> None:
    low, up, work, mnt = stack
    os.chown(low / "tool", 5, 6)
    os.chown(low / "file", 50, 50)  # outside the mapping: shown as the overflow id
    with overlay_mount(mnt, [low], up, work,
                       options=["uidmapping=0:1000:10", "gidmapping=0:2000:10"]):
        st = os.lstat(mnt / "tool")
        assert (st.st_uid, st.st_gid) == (1005, 2006)
        st = os.lstat(mnt / "file")
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        os.chown(mnt / "tool", 1007, 2008)  # ids in requests are mapped back for the disk
        assert (os.lstat(mnt / "tool").st_uid, os.lstat(mnt / "tool").st_gid) == (1007, 2008)
    st = os.lstat(up / "tool")
    assert (st.st_uid, st.st_gid) == (7, 8)
