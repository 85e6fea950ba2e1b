"""Overlay core: names of one LOWER hardlinked file are separate nodes, checked against a
real kernel overlay mount (index=off): rename between them really renames, and an
inode-only request through one name's node copies up that name."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from cowfs._sys.linux import mount, umount2
from cowfs.overlay import ROOT_INO, Overlay

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

_MNT_DETACH = 2


def _layers(tmp: Path, tag: str) -> tuple[Path, Path, Path]:
    low, up, wk = tmp / f"{tag}-l", tmp / f"{tag}-u", tmp / f"{tag}-w"
    for d in (low, up, wk):
        d.mkdir()
    (low / "a").write_bytes(b"shared")
    os.link(low / "a", low / "b")
    (low / "c").write_bytes(b"other")
    return low, up, wk


class _Kernel:
    def __init__(self, tmp: Path) -> None:
        self.low, self.up, self.wk = _layers(tmp, "k")
        self.mnt = tmp / "k-mnt"
        self.mnt.mkdir()
        opts = (f"lowerdir={self.low},upperdir={self.up},workdir={self.wk},"
                "index=off,redirect_dir=off,metacopy=off")
        mount(b"overlay", os.fsencode(self.mnt), b"overlay", 0, opts.encode())

    def close(self) -> None:
        try:
            umount2(os.fsencode(self.mnt))
        except OSError:
            umount2(os.fsencode(self.mnt), _MNT_DETACH)


def _upper(up: Path) -> dict[str, tuple[str, int]]:
    """Upper dir as name -> (kind, nlink); kind 'wh' for a char 0/0 whiteout."""
    out: dict[str, tuple[str, int]] = {}
    for name in sorted(os.listdir(up)):
        st = os.lstat(up / name)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            out[name] = ("wh", st.st_nlink)
        else:
            out[name] = ("file" if stat.S_ISREG(st.st_mode) else "other", st.st_nlink)
    return out


def _merged_core(ov: Overlay) -> dict[bytes, tuple[bytes, int, int]]:
    out = {}
    for name, _ in ov.readdir(ROOT_INO):
        st = ov.lookup(ROOT_INO, name)
        fd = ov.open(st.st_ino, os.O_RDONLY)
        try:
            data = os.read(fd, 100)
        finally:
            os.close(fd)
        out[name] = (data, st.st_nlink, stat.S_IMODE(st.st_mode))
    return out


def _merged_kernel(mnt: Path) -> dict[bytes, tuple[bytes, int, int]]:
    out = {}
    for name in sorted(os.listdir(mnt)):
        st = os.lstat(mnt / name)
        out[os.fsencode(name)] = ((mnt / name).read_bytes(), st.st_nlink,
                                  stat.S_IMODE(st.st_mode))
    return out


def test_names_of_a_lower_hardlink_are_separate_nodes(tmp_path: Path) -> None:
    k = _Kernel(tmp_path)
    try:
        ka, kb = os.lstat(k.mnt / "a"), os.lstat(k.mnt / "b")
    finally:
        k.close()
    low, up, wk = _layers(tmp_path, "c")
    ov = Overlay([str(low)], str(up), str(wk))
    try:
        na, sa = ov.lookup_node(ROOT_INO, b"a")
        nb, sb = ov.lookup_node(ROOT_INO, b"b")
        assert na != nb  # two nodes...
        assert (sa.st_ino == sb.st_ino) == (ka.st_ino == kb.st_ino) is True  # ...one st_ino
        assert ov.lookup_node(ROOT_INO, b"a")[0] == na  # stable per name
        assert ov.getattr(na).st_ino == sa.st_ino
        nc, sc = ov.lookup_node(ROOT_INO, b"c")
        assert nc == sc.st_ino  # anything else: node id == st_ino
        ov.forget(na, 2)
        ov.forget(nb, 1)
        ov.forget(nc, 1)
    finally:
        ov.close()


def test_rename_between_lower_hardlinks_matches_kernel(tmp_path: Path) -> None:
    k = _Kernel(tmp_path)
    try:
        os.rename(k.mnt / "a", k.mnt / "b")
        kmerged = _merged_kernel(k.mnt)
    finally:
        k.close()
    kupper = _upper(k.up)
    low, up, wk = _layers(tmp_path, "c")
    ov = Overlay([str(low)], str(up), str(wk))
    try:
        na, _ = ov.lookup_node(ROOT_INO, b"a")
        nb, _ = ov.lookup_node(ROOT_INO, b"b")
        assert na != nb  # so a VFS does not take rename(a, b) for a no-op
        ov.rename(ROOT_INO, b"a", ROOT_INO, b"b")
        cmerged = _merged_core(ov)
        for gone in (na, nb):  # neither name names that node any more
            with pytest.raises(OSError) as ei:
                ov.getattr(gone)
            assert ei.value.errno == errno.ESTALE
            ov.forget(gone, 1)  # never raises
    finally:
        ov.close()
    assert kmerged == {b"b": (b"shared", 1, 0o644), b"c": (b"other", 1, 0o644)}
    assert cmerged == kmerged
    assert kupper == {"a": ("wh", 1), "b": ("file", 1)}
    assert _upper(up) == kupper


def test_inode_request_through_a_node_copies_up_that_name(tmp_path: Path) -> None:
    k = _Kernel(tmp_path)
    try:
        os.lstat(k.mnt / "a")
        os.chmod(k.mnt / "b", 0o600)
        kmerged = _merged_kernel(k.mnt)
    finally:
        k.close()
    kupper = _upper(k.up)
    low, up, wk = _layers(tmp_path, "c")
    ov = Overlay([str(low)], str(up), str(wk))
    try:
        nb, _ = ov.lookup_node(ROOT_INO, b"b")
        ov.lookup_node(ROOT_INO, b"a")  # looked up last: st_ino alone would mean "a"
        ov.setattr(nb, mode=0o600)
        assert stat.S_IMODE(ov.getattr(nb).st_mode) == 0o600  # b's node lives on, copied up
        cmerged = _merged_core(ov)
    finally:
        ov.close()
    assert kupper == {"b": ("file", 1)}
    assert _upper(up) == kupper
    assert cmerged == kmerged
    assert kmerged[b"a"] == (b"shared", 2, 0o644)  # still the lower file's count
