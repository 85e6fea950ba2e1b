"""Overlay core, read side, on tmp dirs (no mount): merge, whiteout dialects, inode numbers,
lookup counts and bounded memory."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cowfs import format as fmt
from cowfs.errors import MountError
from cowfs.overlay import ROOT_INO, Caller, Overlay


def _mk(root: Path, spec: dict[str, object]) -> None:
    """Build a tree: str → file content, None → dir, ("link", t) → symlink,
    ("wh",) → char 0/0 whiteout, ("xattr", {name: value}) → dir with xattrs."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, what in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if what is None:
            p.mkdir(exist_ok=True)
        elif isinstance(what, str):
            p.write_text(what)
        elif isinstance(what, tuple) and what[0] == "link":
            os.symlink(what[1], p)
        elif isinstance(what, tuple) and what[0] == "wh":
            os.mknod(p, fmt.WHITEOUT_MODE, os.makedev(0, 0))
        elif isinstance(what, tuple) and what[0] == "xattr":
            p.mkdir(exist_ok=True)
            for k, v in what[1].items():
                os.setxattr(p, k, v)


def _names(ov: Overlay, path: bytes) -> list[bytes]:
    return sorted(n for n, _ in ov.readdir(ov.resolve(path)))


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    l1, l2, u, w = (tmp_path / n for n in ("l1", "l2", "u", "w"))
    _mk(l2, {"d/a": "a", "d/gone": "g", "d/sub/x": "x", "f": "low", "hidden": "h",
             "opq/old": "o", "aufs/del": "d", "aufs/keep": "k", "aufs_opq/old": "o"})
    _mk(l1, {"d/b": "b", "d/gone": ("wh",), "f": "top", ".wh.hidden": "",
             "sl": ("link", "f"), "opq": None, "aufs/.wh.del": "",
             "aufs_opq/.wh..wh..opq": "", "aufs_opq/new": "n"})
    os.setxattr(l1 / "opq", fmt.TRUSTED_OPAQUE, b"y")
    u.mkdir()
    w.mkdir()
    return l1, l2, u, w


def test_merge_and_dialects(stack: tuple[Path, Path, Path, Path]) -> None:
    l1, l2, u, w = stack
    ov = Overlay([str(l1), str(l2)], str(u), str(w))
    try:
        assert _names(ov, b"") == [b"aufs", b"aufs_opq", b"d", b"f", b"opq", b"sl"]
        assert _names(ov, b"d") == [b"a", b"b", b"sub"]
        assert _names(ov, b"opq") == []
        assert _names(ov, b"aufs") == [b"keep"]
        assert _names(ov, b"aufs_opq") == [b"new"]
        fd = ov.open(ov.resolve(b"f"), os.O_RDONLY)
        try:
            assert os.read(fd, 10) == b"top"
        finally:
            os.close(fd)
        assert ov.readlink(ov.resolve(b"sl")) == b"f"
        for missing in (b"hidden", b".wh.hidden", b"d/gone", b"opq/old", b"aufs/del"):
            with pytest.raises(OSError) as ei:
                ov.resolve(missing)
            assert ei.value.errno == errno.ENOENT, missing
        # merged dirs report nlink 1 like the kernel; pure dirs their real count
        assert ov.getattr(ov.resolve(b"d")).st_nlink == 1
        assert ov.getattr(ov.resolve(b"d/sub")).st_nlink == 2
    finally:
        ov.close()


def test_xattr_whiteouts_67(tmp_path: Path) -> None:
    l1, l2 = tmp_path / "l1", tmp_path / "l2"
    _mk(l2, {"d/a": "a", "d/b": "b"})
    _mk(l1, {"d": None, "d/a": ""})
    os.setxattr(l1 / "d", fmt.TRUSTED_OPAQUE, fmt.OPAQUE_XWHITEOUTS)
    os.setxattr(l1 / "d/a", fmt.TRUSTED_XWHITEOUT, b"")
    ov = Overlay([str(l1), str(l2)])
    try:
        assert _names(ov, b"d") == [b"b"]
    finally:
        ov.close()


def test_readonly_without_upper(stack: tuple[Path, Path, Path, Path]) -> None:
    l1, l2, _, _ = stack
    ov = Overlay([str(l1), str(l2)])
    try:
        d = ov.resolve(b"d")
        for call in (lambda: ov.open(ov.resolve(b"f"), os.O_WRONLY),
                     lambda: ov.unlink(d, b"a"),
                     lambda: ov.mkdir(d, b"new", 0o755, Caller()),
                     lambda: ov.setattr(d, mode=0o700),
                     lambda: ov.rename(d, b"a", d, b"c")):
            with pytest.raises(OSError) as ei:
                call()
            assert ei.value.errno == errno.EROFS
        assert ov.statfs().f_bsize > 0
    finally:
        ov.close()


def test_inode_numbers_and_lookup_counts(stack: tuple[Path, Path, Path, Path]) -> None:
    l1, l2, u, w = stack
    ov = Overlay([str(l1), str(l2)], str(u), str(w))
    try:
        assert ov.getattr(ROOT_INO).st_ino == ROOT_INO
        st = ov.lookup(ROOT_INO, b"d")
        d = st.st_ino
        a = ov.lookup(d, b"a")
        assert a.st_ino == os.lstat(l2 / "d/a").st_ino  # lower object's number, as kernel
        listed = dict(ov.readdir(d))
        assert listed[b"a"].st_ino == a.st_ino
        base = len(ov.table)
        for _ in range(50):  # repeated walks keep memory flat
            for name, _st in ov.readdir(d):
                ov.lookup_entry(d, name)
                ov.forget(_st.st_ino, 1)
        assert len(ov.table) == base
        ov.forget(a.st_ino, 1)
        ov.forget(d, 1)
        ov.forget(ROOT_INO, 1)  # never raises, root stays
        ov.forget(123456789, 3)
        assert ov.getattr(ROOT_INO).st_ino == ROOT_INO
    finally:
        ov.close()


def test_lookup_entries_is_lookup_entry_for_each_name(
        stack: tuple[Path, Path, Path, Path]) -> None:
    l1, l2, u, w = stack
    ov = Overlay([str(l1), str(l2)], str(u), str(w))
    try:
        d = ov.lookup(ROOT_INO, b"d").st_ino
        names = [n for n, _ in ov.readdir(d)]
        assert sorted(names) == [b"a", b"b", b"sub"]
        # list_entries is readdir without the stats: same names, numbers and types.
        assert ov.list_entries(d) == [(n, st.st_ino, st.st_mode) for n, st in ov.readdir(d)]
        assert ov.list_entries(ROOT_INO) == [(n, st.st_ino, st.st_mode)
                                             for n, st in ov.readdir(ROOT_INO)]
        for _round in range(2):  # first: probes; second: tracked children (hot path)
            got = list(ov.lookup_entries(d, [*names, b"vanished"]))
            assert [n for n, _ in got] == [*names, b"vanished"]
            assert got[-1][1] is None
            for name, st in got[:-1]:
                assert st is not None
                want = ov.lookup_entry(d, name)
                assert (st.st_ino, st.st_mode, st.st_size) == (want.st_ino, want.st_mode,
                                                               want.st_size)
                inode = ov.table.get(st.st_ino)
                assert inode.lookups == 2 * (_round + 1)  # one from each call
        # The same real stat twice: the very same reported object (callers cache by it).
        a = ov.table.get(ov.lookup_entry(d, b"a").st_ino)
        assert ov.stat_of(a) is ov.stat_of(a)
        # A lower object is immutable while mounted: no syscall, even if someone breaks
        # that contract underneath (as with the kernel, the change is not seen).
        (l2 / "d" / "a").write_text("changed")
        assert ov.stat_of(a).st_size == 1
        # An upper object is stat'ed every time: a write through an fd shows at once.
        ov.setattr(a.ino, mode=0o600)  # copies it up
        assert ov.stat_of(a) is ov.stat_of(a)
        (u / "d" / "a").write_text("longer now")
        assert ov.stat_of(a).st_size == len("longer now")
        # Stopping early takes no count for names not yet yielded.
        before = ov.table.get(a.ino).lookups
        it = ov.lookup_entries(d, [b"b", b"a"])
        next(it)
        it.close()
        assert ov.table.get(a.ino).lookups == before
    finally:
        ov.close()


def test_hostile_names(stack: tuple[Path, Path, Path, Path]) -> None:
    l1, l2, u, w = stack
    ov = Overlay([str(l1), str(l2)], str(u), str(w))
    try:
        for bad in (b"..", b".", b"a/b", b"", b"x\0y"):
            with pytest.raises(OSError) as ei:
                ov.lookup(ROOT_INO, bad)
            assert ei.value.errno == errno.EINVAL
        with pytest.raises(OSError) as ei:
            ov.lookup(ROOT_INO, b"n" * 300)
        assert ei.value.errno == errno.ENAMETOOLONG
        # a symlink in the path is never followed by the layer walk
        with pytest.raises(OSError) as ei:
            ov.lookup(ov.resolve(b"sl"), b"x")
        assert ei.value.errno == errno.ENOTDIR
    finally:
        ov.close()


def test_bad_setup(tmp_path: Path) -> None:
    with pytest.raises(MountError):
        Overlay([])
    with pytest.raises(MountError):
        Overlay([str(tmp_path / "missing")])
    (tmp_path / "l").mkdir()
    (tmp_path / "u").mkdir()
    with pytest.raises(MountError):
        Overlay([str(tmp_path / "l")], str(tmp_path / "u"), None)
    if Path("/dev/shm").is_dir():
        shm = Path("/dev/shm")
        import tempfile

        with tempfile.TemporaryDirectory(dir=shm) as w, pytest.raises(MountError):
            Overlay([str(tmp_path / "l")], str(tmp_path / "u"), w)
    (tmp_path / "w").mkdir()
    ov = Overlay([str(tmp_path / "l")], str(tmp_path / "u"), str(tmp_path / "w"))
    try:
        with pytest.raises(MountError):  # workdir locked by the first instance
            Overlay([str(tmp_path / "l")], str(tmp_path / "u"), str(tmp_path / "w"))
    finally:
        ov.close()


def test_no_fd_per_inode_and_flat_memory(tmp_path: Path) -> None:
    """A walk that keeps every inode looked up holds no fd per inode; forgetting it all
    returns the table to its start size, walk after walk."""
    low = tmp_path / "l"
    for i in range(40):
        for j in range(25):
            p = low / f"d{i}" / f"s{j % 5}" / f"f{j}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("x")
    (tmp_path / "u").mkdir()
    (tmp_path / "w").mkdir()
    ov = Overlay([str(low)], str(tmp_path / "u"), str(tmp_path / "w"))
    try:
        base_fds = len(os.listdir("/proc/self/fd"))
        base = len(ov.table)
        def walk(ino: int, looked: list[int]) -> None:
            for name, st in ov.readdir(ino):
                got = ov.lookup_entry(ino, name)
                looked.append(got.st_ino)
                if stat.S_ISDIR(st.st_mode):
                    walk(got.st_ino, looked)

        for _ in range(3):
            looked: list[int] = []
            walk(ROOT_INO, looked)
            assert len(looked) == 40 + 40 * 5 + 40 * 25
            assert len(ov.table) == base + len(looked)
            # bounded: the per-layer dir-fd cache, never one per inode
            assert len(os.listdir("/proc/self/fd")) - base_fds <= 2 * 64
            for ino in reversed(looked):
                ov.forget(ino, 1)
            assert len(ov.table) == base
    finally:
        ov.close()
