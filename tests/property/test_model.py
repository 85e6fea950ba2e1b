"""The model's documented rules, one example each (no mounts; the machine checks them
against the kernel in test_kernel_model.py)."""

from __future__ import annotations

import errno

import pytest

from cowfs.testing.model import WHITEOUT, Dir, Inode, Model, OpError


def _stack() -> Model:
    shared = Inode("file", 0o644, b"lower", nlink=2)
    lower = Dir(children={
        b"d": Dir(children={b"x": Inode("file", 0o600, b"in d")}),
        b"h1": shared, b"h2": shared,
        b"fifo": Inode("fifo", 0o644),
        b"sl": Inode("symlink", 0o777, target=b"h1"),
    })
    top = Dir(children={b"d": Dir(children={b"x": WHITEOUT, b"y": Inode("file")})})
    return Model([top, lower])


def _errno(fn: object, *args: object) -> int:
    with pytest.raises(OpError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.errno


def test_lookup_merges_and_whiteouts_hide() -> None:
    m = _stack()
    snap = m.snapshot()
    assert b"d/x" not in snap and b"d/y" in snap
    assert snap[b"d"].nlink == 1  # merged dir
    assert snap[b"h1"].nlink == 2


def test_rename_of_lower_dir_is_exdev() -> None:
    m = _stack()
    assert _errno(m.rename, b"d", b"e") == errno.EXDEV
    m.mkdir(b"new", 0o755)
    m.rename(b"new", b"e")  # pure upper dirs move
    assert b"e" in m.snapshot()


def test_copy_up_breaks_lower_hardlinks() -> None:
    m = _stack()
    m.chmod(b"h1", 0o600)
    snap = m.snapshot()
    assert snap[b"h1"].nlink == 1
    assert snap[b"h2"].nlink == 2  # the lower inode still has two names
    m.write(b"h1", 0, b"UP")
    assert m.snapshot()[b"h2"].sha256 != m.snapshot()[b"h1"].sha256


def test_unlink_leaves_whiteout_and_mkdir_over_it_is_opaque() -> None:
    m = _stack()
    m.unlink(b"d/y")  # y lives in the top lower layer: the upper gets a whiteout
    d = m.upper.children[b"d"]
    assert isinstance(d, Dir) and d.children[b"y"] is WHITEOUT
    m.rmdir(b"d")
    assert m.upper.children[b"d"] is WHITEOUT
    m.mkdir(b"d", 0o700)
    new = m.upper.children[b"d"]
    assert isinstance(new, Dir) and new.opaque and m.snapshot()[b"d"].nlink == 2


def test_errnos_of_the_vfs_and_of_overlayfs() -> None:
    m = _stack()
    assert _errno(m.unlink, b"d") == errno.EISDIR
    assert _errno(m.rmdir, b"h1") == errno.ENOTDIR
    assert _errno(m.rmdir, b"d") == errno.ENOTEMPTY
    assert _errno(m.link, b"d", b"z") == errno.EPERM
    assert _errno(m.create, b"sl", b"") == errno.ELOOP
    assert _errno(m.write, b"fifo", 0, b"x") == errno.ENXIO
    assert _errno(m.setxattr, b"fifo", b"user.a", b"") == errno.EPERM
    assert _errno(m.removexattr, b"h1", b"user.a") == errno.ENODATA
    assert _errno(m.rename, b"d", b"d/y/z") == errno.ENOTDIR
    assert _errno(m.create, b"h1/x", b"") == errno.ENOTDIR


def test_fd_opened_before_copy_up_reads_new_data() -> None:
    m = _stack()
    assert m.fd_copyup(b"h1", b"NEW") == b"NEWer"


def test_lower_hardlinks_are_two_overlay_inodes_for_rename() -> None:
    m = _stack()
    m.rename(b"h1", b"h2")  # not a no-op, unlike rename(2) between links of one inode
    snap = m.snapshot()
    assert b"h1" not in snap and snap[b"h2"].nlink == 1
    m.link(b"h2", b"h3")
    m.rename(b"h2", b"h3")  # upper hardlinks are one inode: nothing happens
    assert {b"h2", b"h3"} <= set(m.snapshot())
