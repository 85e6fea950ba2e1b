"""Overlay core, write side, on tmp dirs (no mount): copy-up details, inode numbers across
copy-up/remount/devices, lookup counts under mutation, unlinked open files, hostile layers."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowfs import format as fmt
from cowfs.overlay import ROOT_INO, Caller, Overlay

ROOTISH = Caller(uid=0, gid=0, umask=0o022)


def _ov(tmp: Path, lowers: list[str] | None = None, **kw: bool) -> Overlay:
    for d in ("l", "u", "w"):
        (tmp / d).mkdir(exist_ok=True)
    return Overlay(lowers or [str(tmp / "l")], str(tmp / "u"), str(tmp / "w"), **kw)


@pytest.fixture
def ov(tmp_path: Path) -> Iterator[Overlay]:
    lower = tmp_path / "l"
    (lower / "d/sub").mkdir(parents=True)
    (lower / "d/f").write_bytes(b"lower data")
    os.chmod(lower / "d/f", 0o640)
    os.utime(lower / "d/f", ns=(1_000_000_000_000, 1_200_000_000_000))
    if os.geteuid() == 0:
        os.chown(lower / "d/f", 1234, 4321)
    os.setxattr(lower / "d/f", "user.keep", b"1")
    with open(lower / "sparse", "wb") as f:
        f.seek(3 << 30)
        f.write(b"tail")
    o = _ov(tmp_path)
    yield o
    o.close()
    assert os.listdir(tmp_path / "w/work") == []  # no temp left behind


def test_copy_up_preserves_everything(ov: Overlay, tmp_path: Path) -> None:
    f = ov.resolve(b"d/f")
    before = ov.getattr(f)
    rfd = ov.open(f, os.O_RDONLY)  # opened on the lower before copy-up
    wfd = ov.open(f, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(wfd, b"+")
        assert os.pread(rfd, 20, 0) == b"lower data"  # kernel quirk: old fd sees the lower
    finally:
        os.close(wfd)
        os.close(rfd)
    up = tmp_path / "u/d/f"
    st = os.lstat(up)
    assert up.read_bytes() == b"lower data+"
    assert stat.S_IMODE(st.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert os.getxattr(up, "user.keep") == b"1"
    low = os.lstat(tmp_path / "l/d/f")
    origin = os.getxattr(up, fmt.origin_xattr(False))
    assert origin == b"%d:%d" % (low.st_dev, low.st_ino)
    after = ov.getattr(f)
    assert after.st_ino == before.st_ino == low.st_ino
    # the copied-up parent kept its lower times; the internal origin xattr stays hidden
    assert os.lstat(tmp_path / "u/d").st_mtime_ns == os.lstat(tmp_path / "l/d").st_mtime_ns
    assert ov.listxattr(f) == [b"user.keep"]
    with pytest.raises(OSError) as ei:
        ov.getxattr(f, fmt.origin_xattr(False))
    assert ei.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as ei:
        ov.setxattr(f, fmt.TRUSTED_COWFS + b"x", b"1")
    assert ei.value.errno == errno.EOPNOTSUPP


def test_sparse_copy_up_keeps_holes(ov: Overlay, tmp_path: Path) -> None:
    s = ov.resolve(b"sparse")
    fd = ov.open(s, os.O_RDWR)
    try:
        os.pwrite(fd, b"H", 0)
        assert os.pread(fd, 4, 3 << 30) == b"tail"
    finally:
        os.close(fd)
    st = os.lstat(tmp_path / "u/sparse")
    assert st.st_size == (3 << 30) + 4
    assert st.st_blocks * 512 < 1 << 20


def test_truncate_to_zero_skips_data(ov: Overlay, tmp_path: Path) -> None:
    f = ov.resolve(b"d/f")
    ov.setattr(f, size=0)
    assert (tmp_path / "u/d/f").read_bytes() == b""
    ov.setattr(f, size=5, mode=0o600, mtime_ns=5_000_000_000)
    st = ov.getattr(f)
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (5, 0o600, 5_000_000_000)
    with pytest.raises(OSError) as ei:
        ov.setattr(ov.resolve(b"d"), size=0)
    assert ei.value.errno == errno.EISDIR


def test_lookup_counts_and_flat_memory(ov: Overlay) -> None:
    d = ov.lookup(ROOT_INO, b"d").st_ino
    base = len(ov.table)
    for i in range(300):
        name = b"n%d" % i
        fd, st = ov.create(d, name, os.O_WRONLY, 0o644, ROOTISH)
        os.close(fd)
        assert ov.table.get(st.st_ino).lookups == 1
        ov.link(st.st_ino, d, name + b".l")
        assert ov.table.get(st.st_ino).lookups == 2
        ov.unlink(d, name)
        ov.unlink(d, name + b".l")
        ov.forget(st.st_ino, 2)
        m = ov.mkdir(d, name, 0o755, ROOTISH)
        ov.rmdir(d, name)
        ov.forget(m.st_ino, 1)
    assert len(ov.table) == base
    # readdir never counts; lookup_entry (readdirplus) counts once per entry
    entries = ov.readdir(d)
    assert len(ov.table) == base
    for name, st in entries:
        assert ov.lookup_entry(d, name).st_ino == st.st_ino
    for _, st in entries:
        ov.forget(st.st_ino, 1)
    assert len(ov.table) == base


def test_unlinked_open_file(ov: Overlay) -> None:
    d = ov.lookup(ROOT_INO, b"d").st_ino
    fd, st = ov.create(d, b"tmpfile", os.O_RDWR, 0o600, ROOTISH)
    try:
        os.write(fd, b"abc")
        ov.unlink(d, b"tmpfile")
        gone = ov.getattr(st.st_ino)
        assert gone.st_nlink == 0 and gone.st_ino == st.st_ino
        after = ov.setattr(st.st_ino, size=1, fd=fd)
        assert after.st_size == 1
        with pytest.raises(OSError) as ei:
            ov.lookup(d, b"tmpfile")
        assert ei.value.errno == errno.ENOENT
    finally:
        os.close(fd)
    ov.forget(st.st_ino, 1)


def test_unlinked_open_lower_file_reports_nlink_0(ov: Overlay) -> None:
    """A lower object's report is reused while it has a name, not after its unlink."""
    d = ov.lookup(ROOT_INO, b"d").st_ino
    f = ov.lookup(d, b"f").st_ino
    assert ov.getattr(f).st_nlink == 1
    assert ov.getattr(f) is ov.getattr(f)  # no stat: a lower object cannot change
    fd = ov.open(f, os.O_RDONLY)
    try:
        ov.unlink(d, b"f")  # a whiteout hides it; the open fd still reads it
        gone = ov.getattr(f)
        assert gone.st_nlink == 0 and gone.st_ino == f and gone.st_size == len(b"lower data")
        assert os.pread(fd, 5, 0) == b"lower"
    finally:
        os.close(fd)
    ov.forget(f, 1)


def test_rename_moves_descendants(ov: Overlay) -> None:
    a = ov.mkdir(ROOT_INO, b"a", 0o755, ROOTISH).st_ino
    b = ov.mkdir(a, b"b", 0o755, ROOTISH).st_ino
    s = ov.symlink(b, b"s", b"target", ROOTISH).st_ino
    ov.rename(ROOT_INO, b"a", ov.resolve(b"d"), b"a2")
    assert ov.readlink(s) == b"target"
    assert ov.resolve(b"d/a2/b/s") == s
    ov.rename(a, b"b", ROOT_INO, b"b3")
    assert ov.resolve(b"b3/s") == s
    for ino in (s, b, a):
        ov.forget(ino, 1)


def test_inode_numbers_survive_remount_and_upper_becoming_lower(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    (tmp_path / "l/f").write_text("x")
    (tmp_path / "l/dir").mkdir()
    ov = _ov(tmp_path)
    f0 = ov.resolve(b"f")
    d0 = ov.resolve(b"dir")
    ov.setattr(f0, mode=0o600)  # copy-up
    fd, st = ov.create(d0, b"new", os.O_WRONLY, 0o644, ROOTISH)
    os.close(fd)
    ov.close()
    (tmp_path / "u2").mkdir()
    (tmp_path / "w2").mkdir()
    # yesterday's upper is today's top lower
    ov2 = Overlay([str(tmp_path / "u"), str(tmp_path / "l")], str(tmp_path / "u2"),
                  str(tmp_path / "w2"))
    try:
        assert ov2.resolve(b"f") == f0
        assert ov2.resolve(b"dir") == d0
        assert ov2.resolve(b"dir/new") == st.st_ino
        inos = [s.st_ino for _, s in ov2.readdir(ROOT_INO)] + [ROOT_INO]
        assert len(inos) == len(set(inos))
    finally:
        ov2.close()


def test_layers_on_two_devices(tmp_path: Path) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.fail("needs /dev/shm on another filesystem than the tmp dir")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        Path(shm, "a").write_text("on tmpfs")
        (tmp_path / "l").mkdir()
        (tmp_path / "l/b").write_text("on disk")
        ov = _ov(tmp_path, [shm, str(tmp_path / "l")])
        try:
            a = ov.resolve(b"a")
            b = ov.resolve(b"b")
            assert a >> 48 != b >> 48 or a == ROOT_INO or b == ROOT_INO
            fd = ov.open(a, os.O_WRONLY | os.O_APPEND)  # copy-up across filesystems
            os.write(fd, b"!")
            os.close(fd)
            assert (tmp_path / "u/a").read_text() == "on tmpfs!"
            assert ov.getattr(a).st_ino == a
            ov.close()
            ov = _ov(tmp_path, [shm, str(tmp_path / "l")])
            assert ov.resolve(b"a") == a
        finally:
            ov.close()


def test_userxattr_mode_writes_user_namespace(tmp_path: Path) -> None:
    (tmp_path / "l/d").mkdir(parents=True)
    (tmp_path / "l/d/f").write_text("x")
    ov = _ov(tmp_path, userxattr=True)
    try:
        d = ov.resolve(b"d")
        ov.unlink(d, b"f")
        ov.rmdir(ROOT_INO, b"d")
        ov.forget(ov.mkdir(ROOT_INO, b"d", 0o755, ROOTISH).st_ino, 1)
    finally:
        ov.close()
    assert os.getxattr(tmp_path / "u/d", fmt.USER_OPAQUE) == b"y"
    with pytest.raises(OSError):
        os.getxattr(tmp_path / "u/d", fmt.TRUSTED_OPAQUE)


def test_stale_work_entries_are_cleaned(tmp_path: Path) -> None:
    (tmp_path / "w/work/#stale/deep").mkdir(parents=True)
    (tmp_path / "w/work/#stale/deep/x").write_text("x")
    ov = _ov(tmp_path)
    ov.close()
    assert os.listdir(tmp_path / "w/work") == []


def test_hostile_upper_symlink_swap(tmp_path: Path) -> None:
    """An upper dir replaced by a symlink behind our back is never followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    ov = _ov(tmp_path)
    try:
        x = ov.mkdir(ROOT_INO, b"x", 0o755, ROOTISH).st_ino
        os.rmdir(tmp_path / "u/x")
        os.symlink(outside, tmp_path / "u/x")
        with pytest.raises(OSError) as ei:
            ov.create(x, b"evil", os.O_WRONLY, 0o644, ROOTISH)
        assert ei.value.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)
        assert os.listdir(outside) == []
        with pytest.raises(OSError) as ei:
            ov.create(ROOT_INO, fmt.WH_PREFIX + b"x", os.O_WRONLY, 0o644, ROOTISH)
        assert ei.value.errno == errno.EINVAL
    finally:
        ov.close()


def test_lower_hardlinks_split_on_copy_up(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    (tmp_path / "l/a").write_text("x")
    os.link(tmp_path / "l/a", tmp_path / "l/b")
    ov = _ov(tmp_path)
    try:
        b = ov.lookup(ROOT_INO, b"b").st_ino
        a = ov.lookup(ROOT_INO, b"a").st_ino
        assert a == b  # one lower inode, like the kernel's st_ino
        fd = ov.open(a, os.O_WRONLY | os.O_TRUNC)  # copies up the name looked up last
        os.write(fd, b"new")
        os.close(fd)
        st_b = ov.lookup(ROOT_INO, b"b")
        assert st_b.st_size == 1  # the other name keeps the lower data...
        assert st_b.st_ino != a  # ...and is another inode now
        assert ov.getattr(a).st_size == 3
        assert not os.path.exists(tmp_path / "u/b")
        with pytest.raises(OSError):  # no origin for lower hardlinks (kernel without index)
            os.getxattr(tmp_path / "u/a", fmt.origin_xattr(False))
    finally:
        ov.close()


def test_invalidations_for_shared_lower_hardlinks(tmp_path: Path) -> None:
    """Names of one lower hardlink share an inode; when one name is copied up or goes
    away, the core lists what a kernel cache may now hold wrong (``invalidations``)."""
    (tmp_path / "l").mkdir()
    (tmp_path / "l/h1").write_text("x")
    os.link(tmp_path / "l/h1", tmp_path / "l/h2")
    (tmp_path / "l/h3").write_text("y")
    os.link(tmp_path / "l/h3", tmp_path / "l/h4")
    ov = _ov(tmp_path)
    try:
        a = ov.lookup(ROOT_INO, b"h1").st_ino
        assert ov.lookup(ROOT_INO, b"h2").st_ino == a
        assert ov.invalidations == []
        ov.setattr(a, mode=0o600)  # copies up h2, the name looked up last
        assert sorted(ov.invalidations, key=repr) == sorted(
            [(a, None), (ROOT_INO, b"h1")], key=repr)
        ov.invalidations.clear()  # the adapter drains the same list object
        b = ov.lookup(ROOT_INO, b"h3").st_ino
        assert ov.lookup(ROOT_INO, b"h4").st_ino == b
        ov.unlink(ROOT_INO, b"h4")  # the lower h3 still has 2 links
        assert ov.invalidations == [(b, None)]
        assert ov.getattr(b).st_nlink == 2
    finally:
        ov.close()


def test_lookup_entry_after_readdir_is_fresh(ov: Overlay) -> None:
    d = ov.lookup(ROOT_INO, b"d").st_ino
    listed = dict(ov.readdir(d))
    fd = ov.open(ov.resolve(b"d/f"), os.O_WRONLY | os.O_APPEND)  # copy-up: a mutation
    os.write(fd, b"more")
    os.close(fd)
    for name, st in listed.items():
        got = ov.lookup_entry(d, name)
        assert got.st_ino == st.st_ino
    assert ov.getattr(listed[b"f"].st_ino).st_size == len(b"lower datamore")
    listed = dict(ov.readdir(d))
    fd = ov.open(listed[b"f"].st_ino, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"!")  # data through an fd: no core mutation, still a fresh size
    os.close(fd)
    assert ov.lookup_entry(d, b"f").st_size == len(b"lower datamore!")
    ov.forget(listed[b"f"].st_ino, 2)
    ov.forget(listed[b"sub"].st_ino, 1)


def test_paths_longer_than_path_max(tmp_path: Path) -> None:
    """The kernel has no PATH_MAX limit inside an overlay; layer paths are walked in steps."""
    comps = [f"c{i:02d}" * 50 for i in range(30)]  # ~4.5 KiB of path
    (tmp_path / "l").mkdir()
    fd = os.open(tmp_path / "l", os.O_RDONLY | os.O_DIRECTORY)
    for c in comps:  # built fd by fd: a path string would hit PATH_MAX
        os.mkdir(c, dir_fd=fd)
        nxt = os.open(c, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    ov = None
    try:
        ov = _ov(tmp_path)
        ino = ROOT_INO
        for c in comps:
            ino = ov.lookup(ino, c.encode()).st_ino
        fd, st = ov.create(ino, b"leaf", os.O_WRONLY, 0o644, ROOTISH)
        os.write(fd, b"deep")
        os.close(fd)
        assert ov.resolve(b"/".join(c.encode() for c in comps) + b"/leaf") == st.st_ino
        assert [n for n, _ in ov.readdir(ino)] == [b"leaf"]
    finally:
        if ov is not None:
            ov.close()


def test_lookup_entry_of_tracked_child(ov: Overlay) -> None:
    """The fast path for a child the core already tracks: +1 count, fresh stat, and it
    follows mutations (no stale child after unlink)."""
    d = ov.lookup(ROOT_INO, b"d").st_ino
    f = ov.lookup(d, b"f")
    again = ov.lookup_entry(d, b"f")  # tracked: no probe
    assert again.st_ino == f.st_ino and again.st_size == f.st_size
    fd = ov.open(f.st_ino, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"12345")
    os.close(fd)
    assert ov.lookup_entry(d, b"f").st_size == f.st_size + 5
    ov.forget(f.st_ino, 2)
    assert f.st_ino in ov.table.by_ino  # one count left
    ov.forget(f.st_ino, 1)
    assert f.st_ino not in ov.table.by_ino
    ov.lookup_entry(d, b"f")
    ov.unlink(d, b"f")
    with pytest.raises(OSError) as ei:
        ov.lookup_entry(d, b"f")
    assert ei.value.errno == errno.ENOENT
