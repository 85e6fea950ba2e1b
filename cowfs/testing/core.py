"""Adapter for the FUSE-free core ``cowfs.overlay.Overlay`` (no mount at all).

Owns: a thin stand-in for the kernel VFS in front of the core's inode API: path walk
(lookup per component, ``O_DIRECTORY|O_NOFOLLOW`` errors), the checks the VFS makes
before a filesystem is called (EEXIST, EISDIR, ENOTDIR, ELOOP, ENXIO, EPERM, rename
traps) and a tree snapshot via lookup/readdir/readlink/getxattr. Must not implement
overlay semantics: every decision after the VFS checks is the core's.

The core never forgets lookups here (like a kernel with an infinite cache).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from typing import Any

from . import syscalls
from .adapters import Adapter, Fs
from .model import Entry, OpError


def _kind(mode: int) -> str:
    return syscalls._kind(mode)


class CoreFs(Fs):
    """``cowfs.overlay.Overlay`` driven like the kernel's VFS would drive it."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self.ov = factory()

    # --- VFS stand-in --------------------------------------------------------------------
    def _lookup(self, parent: int, name: bytes) -> os.stat_result | None:
        try:
            return self.ov.lookup(parent, name)  # type: ignore[no-any-return]
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _node(self, parent: int, name: bytes) -> int:
        """The inode the VFS compares (not st_ino: names of a lower hardlink share one)."""
        lookup_node = getattr(self.ov, "lookup_node", None)
        if lookup_node is None:
            st = self._lookup(parent, name)
            return -1 if st is None else st.st_ino
        return int(lookup_node(parent, name)[0])

    def _walk(self, path: bytes) -> tuple[int, bytes]:
        from cowfs.overlay import ROOT_INO

        comps = [c for c in path.split(b"/") if c]
        if not comps:
            raise OSError(errno.EBUSY, "the root is not an operation target")
        ino = ROOT_INO
        for name in comps[:-1]:
            st = self._lookup(ino, name)
            if st is None:
                raise OSError(errno.ENOENT, "no such dir")
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, "not a dir (O_DIRECTORY|O_NOFOLLOW)")
            ino = st.st_ino
        return ino, comps[-1]

    def _existing(self, path: bytes) -> tuple[int, bytes, os.stat_result]:
        parent, name = self._walk(path)
        st = self._lookup(parent, name)
        if st is None:
            raise OSError(errno.ENOENT, "no such entry")
        return parent, name, st

    @staticmethod
    def _check_write_open(st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "open for write of a dir")
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, "O_NOFOLLOW on a symlink")
        if stat.S_ISFIFO(st.st_mode):
            raise OSError(errno.ENXIO, "fifo without reader (O_NONBLOCK)")

    def _open_write(self, path: bytes, flags: int = 0) -> tuple[int, int]:
        _, _, st = self._existing(path)
        self._check_write_open(st)
        return st.st_ino, self.ov.open(st.st_ino, os.O_WRONLY | flags)

    def _meta(self, path: bytes) -> os.stat_result:
        _, _, st = self._existing(path)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, "O_NOFOLLOW on a symlink")
        return st

    @staticmethod
    def _caller() -> Any:
        from cowfs.overlay import Caller

        return Caller(0, 0, syscalls.UMASK)

    # --- operations ----------------------------------------------------------------------
    def create(self, path: bytes, data: bytes) -> None:
        parent, name = self._walk(path)
        st = self._lookup(parent, name)
        if st is None:
            fd, _ = self.ov.create(parent, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                   stat.S_IFREG | 0o644, self._caller())
        else:
            self._check_write_open(st)
            fd = self.ov.open(st.st_ino, os.O_WRONLY | os.O_TRUNC)
        try:
            syscalls._write_all(fd, data)
        finally:
            os.close(fd)

    def write(self, path: bytes, offset: int, data: bytes) -> None:
        _, fd = self._open_write(path)
        try:
            syscalls._write_all(fd, data, offset)
        finally:
            os.close(fd)

    def append(self, path: bytes, data: bytes) -> None:
        _, fd = self._open_write(path, os.O_APPEND)
        try:
            syscalls._write_all(fd, data)
        finally:
            os.close(fd)

    def truncate(self, path: bytes, size: int) -> None:
        ino, fd = self._open_write(path)
        try:
            self.ov.setattr(ino, size=size, fd=fd)
        finally:
            os.close(fd)

    def unlink(self, path: bytes) -> None:
        parent, name, st = self._existing(path)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "unlink of a dir")
        self.ov.unlink(parent, name)

    def rmdir(self, path: bytes) -> None:
        parent, name, st = self._existing(path)
        if not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, "rmdir of a non-dir")
        self.ov.rmdir(parent, name)

    def mkdir(self, path: bytes, mode: int) -> None:
        parent, name = self._walk(path)
        if self._lookup(parent, name) is not None:
            raise OSError(errno.EEXIST, "exists")
        self.ov.mkdir(parent, name, mode & ~syscalls.UMASK, self._caller())

    def symlink(self, target: bytes, path: bytes) -> None:
        parent, name = self._walk(path)
        if self._lookup(parent, name) is not None:
            raise OSError(errno.EEXIST, "exists")
        self.ov.symlink(parent, name, target, self._caller())

    def rename(self, src: bytes, dst: bytes) -> None:
        sparent, sname = self._walk(src)
        dparent, dname = self._walk(dst)
        sst = self._lookup(sparent, sname)
        if sst is None:
            raise OSError(errno.ENOENT, "no source")
        s, d = b"/".join(c for c in src.split(b"/") if c), b"/".join(
            c for c in dst.split(b"/") if c)
        if s != d and (d + b"/").startswith(s + b"/"):
            raise OSError(errno.EINVAL, "move into itself")
        if s != d and (s + b"/").startswith(d + b"/"):
            raise OSError(errno.ENOTEMPTY, "target is an ancestor of the source")
        dst_st = self._lookup(dparent, dname)
        if dst_st is not None:
            if dst_st.st_ino == sst.st_ino and (self._node(sparent, sname)
                                                == self._node(dparent, dname)):
                return  # the same inode: rename(2) does nothing
            if stat.S_ISDIR(sst.st_mode) and not stat.S_ISDIR(dst_st.st_mode):
                raise OSError(errno.ENOTDIR, "dir over non-dir")
            if not stat.S_ISDIR(sst.st_mode) and stat.S_ISDIR(dst_st.st_mode):
                raise OSError(errno.EISDIR, "non-dir over dir")
        self.ov.rename(sparent, sname, dparent, dname)

    def link(self, src: bytes, dst: bytes) -> None:
        sparent, sname = self._walk(src)
        dparent, dname = self._walk(dst)
        sst = self._lookup(sparent, sname)
        if sst is None:
            raise OSError(errno.ENOENT, "no source")
        if self._lookup(dparent, dname) is not None:
            raise OSError(errno.EEXIST, "exists")
        if stat.S_ISDIR(sst.st_mode):
            raise OSError(errno.EPERM, "hardlink of a dir")
        self.ov.link(sst.st_ino, dparent, dname)

    def chmod(self, path: bytes, mode: int) -> None:
        st = self._meta(path)
        self.ov.setattr(st.st_ino, mode=mode)

    def _xattr_ok(self, path: bytes) -> os.stat_result:
        st = self._meta(path)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise OSError(errno.EPERM, "user.* xattrs only on files and dirs")
        return st

    def setxattr(self, path: bytes, name: bytes, value: bytes) -> None:
        self.ov.setxattr(self._xattr_ok(path).st_ino, name, value)

    def removexattr(self, path: bytes, name: bytes) -> None:
        self.ov.removexattr(self._xattr_ok(path).st_ino, name)

    # --- Fs --------------------------------------------------------------------------------
    def apply(self, op: str, args: Sequence[bytes | int]) -> bytes | None:
        fn = getattr(self, op, None)
        if fn is None or op not in syscalls.OPS:
            raise OpError(errno.ENOSYS)
        try:
            fn(*args)
        except OSError as exc:
            raise OpError(exc.errno or 0) from None
        return None

    def snapshot(self) -> dict[bytes, Entry | str]:
        from cowfs.overlay import ROOT_INO

        out: dict[bytes, Entry | str] = {}
        todo: list[tuple[bytes, int]] = [(b"", ROOT_INO)]
        out[b""] = self._entry(ROOT_INO, self.ov.getattr(ROOT_INO))
        while todo:
            rel, ino = todo.pop()
            listing = [name for name, _ in self.ov.readdir(ino)]
            if len(set(listing)) != len(listing):
                out[rel + b"/"] = f"readdir lists duplicates: {sorted(listing)!r}"
            for name in set(listing):
                child = rel + b"/" + name if rel else name
                try:
                    st = self.ov.lookup(ino, name)
                except OSError as exc:
                    out[child] = f"unreadable: {errno.errorcode.get(exc.errno or 0)}"
                    continue
                out[child] = self._entry(st.st_ino, st)
                if stat.S_ISDIR(st.st_mode):
                    todo.append((child, st.st_ino))
        return out

    def _entry(self, ino: int, st: os.stat_result) -> Entry:
        kind = _kind(st.st_mode)
        sha = target = None
        if kind == "file":
            sha = syscalls.sha256_fd(self.ov.open(ino, os.O_RDONLY))
        elif kind == "symlink":
            target = self.ov.readlink(ino)
        xattrs: list[tuple[bytes, bytes]] = []
        if kind in ("file", "dir"):
            for name in self.ov.listxattr(ino):
                if name.startswith(b"user."):
                    xattrs.append((name, self.ov.getxattr(ino, name)))
        return Entry(kind, st.st_mode, st.st_nlink, None if kind == "dir" else st.st_size,
                     sha, target, tuple(sorted(xattrs)))

    def close(self) -> None:
        self.ov.close()


class CoreAdapter(Adapter):
    """The FUSE-free core ``cowfs.overlay.Overlay`` behind a VFS stand-in (no mount).

    ``fd_copyup`` is skipped: what an fd opened before a copy-up reads is decided by
    the frontend that owns open files (FUSE), not by the core.
    """

    name = "cowfs-core"
    skip_ops = frozenset({"fd_copyup"})

    def unavailable(self) -> str | None:
        try:
            from cowfs.overlay import Overlay  # noqa: F401
        except ImportError as exc:
            return f"cowfs.overlay not importable: {exc}"
        return None

    def open(self, lowers: Sequence[str], upper: str, work: str, mnt: str) -> Fs:
        from cowfs.overlay import Overlay

        return CoreFs(lambda: Overlay(list(lowers), upper, work, userxattr=self.userxattr))
