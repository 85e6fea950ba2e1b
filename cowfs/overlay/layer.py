"""One layer directory of an overlay stack, reached only through its root directory fd.

Owns: the per-layer root fd, fd-relative open/stat/xattr helpers and name validation.
Must not decide overlay semantics (whiteouts, merging): see ``whiteout.py``/``view.py``.
Every path handed to these helpers is a tuple of validated components below the root;
nothing here follows a symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from cowfs._sys.openat2 import fd_path, open_beneath
from cowfs._sys.xattrat import getxattrat, listxattrat

Path = tuple[bytes, ...]
"""A merged path as components below the overlay root (no '.', '..' or '/')."""

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
DIR_CACHE = 64
"""Resolved dir fds kept per layer (bounded; the core holds no fd per inode)."""
NAMES_CACHE = 256
"""Dir listings kept per lower layer for lookups."""


def check_name(name: bytes) -> None:
    """Refuse names that are not a single path component (EINVAL / ENAMETOOLONG)."""
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise OSError(errno.EINVAL, "invalid name", name)
    if len(name) > 255:
        raise OSError(errno.ENAMETOOLONG, "name too long", name)


@dataclass(eq=False)
class Layer:
    """A layer root: ``index`` 0 is the upper when there is one, then lowers top-first."""

    index: int
    path: str
    root_fd: int
    dev: int
    upper: bool

    @classmethod
    def open(cls, index: int, path: str, *, upper: bool) -> Layer:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return cls(index, path, fd, os.fstat(fd).st_dev, upper)

    def __post_init__(self) -> None:
        self._dirs: OrderedDict[Path, int] = OrderedDict()
        self._names: OrderedDict[Path, frozenset[bytes] | None] = OrderedDict()

    def names(self, path: Path) -> frozenset[bytes] | None:
        """Names in the dir at ``path`` of a LOWER layer (None: no such dir), cached.

        Lowers are immutable while mounted (changing them is undefined, as for the
        kernel), so a bounded LRU of their listings lets lookups skip layers without a
        name, and its ``.wh.`` form, with no syscall at all.
        """
        assert not self.upper, "the upper changes: never cache its listings"
        if path in self._names:
            self._names.move_to_end(path)
            return self._names[path]
        fd = self.try_dir(path)
        if fd is None:
            names: frozenset[bytes] | None = None
        else:
            try:
                names = frozenset(listdir_fd(fd))
            finally:
                os.close(fd)
        self._names[path] = names
        if len(self._names) > NAMES_CACHE:
            self._names.popitem(last=False)
        return names

    def close(self) -> None:
        self.forget_dirs()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def forget_dirs(self) -> None:
        """Drop the dir-fd cache (after anything that moves or removes a dir here)."""
        while self._dirs:
            os.close(self._dirs.popitem()[1])

    def open_dir(self, path: Path) -> int:
        """O_PATH fd of the dir at ``path`` in this layer (raises ENOENT/ENOTDIR/ELOOP).

        A small LRU of resolved dirs (not one per inode: at most ``DIR_CACHE`` fds per
        layer) turns the openat2 walk into a dup for the dirs in use.
        """
        fd = self._dirs.get(path)
        if fd is not None:
            self._dirs.move_to_end(path)
            return os.dup(fd)
        fd = open_beneath(self.root_fd, b"/".join(path), _DIR_FLAGS)
        self._dirs[path] = fd
        if len(self._dirs) > DIR_CACHE:
            os.close(self._dirs.popitem(last=False)[1])
        return os.dup(fd)

    def _cached_dir(self, path: Path) -> int:
        """The cached O_PATH fd of the dir at ``path`` (resolved and cached on a miss;
        raises like ``open_dir``). Borrowed: valid until the next dir-cache call."""
        fd = self._dirs.get(path)
        if fd is None:
            os.close(self.open_dir(path))  # resolves and caches it
            return self._dirs[path]
        self._dirs.move_to_end(path)
        return fd

    def stat_in(self, path: Path, name: bytes) -> os.stat_result:
        """lstat NAME in the dir at ``path`` through the cached dir fd (no dup)."""
        return os.stat(name, dir_fd=self._cached_dir(path), follow_symlinks=False)

    def open_in(self, path: Path, name: bytes, flags: int) -> int:
        """open(2) NAME (one component, never followed) in the dir at ``path``.

        Through the cached dir fd: one openat instead of resolving the whole path again.
        """
        fd = self._cached_dir(path)
        if not self.upper and not flags & os.O_PATH:
            return open_noatime(fd, name, flags)
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)

    @contextmanager
    def dir(self, path: Path) -> Iterator[int]:
        fd = self.open_dir(path)
        try:
            yield fd
        finally:
            os.close(fd)

    def borrow_dir(self, path: Path) -> int | None:
        """The cached O_PATH fd of the dir at ``path`` itself (no dup, do not close it).

        Valid only until this layer's next ``open_dir``/``borrow_dir``/``forget_dirs``
        (the LRU may close it): for a few syscalls on one dir. None like ``try_dir``.
        """
        if path not in self._dirs:
            fd = self.try_dir(path)  # resolves and caches it (None: not a dir here)
            if fd is None:
                return None
            os.close(fd)
        return self._cached_dir(path)

    def try_dir(self, path: Path) -> int | None:
        """Like ``open_dir`` but None when the dir is missing or not a dir."""
        try:
            return self.open_dir(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise


def open_noatime(dfd: int, name: bytes, flags: int) -> int:
    """open(2) NAME in dir fd for reading a lower object: O_NOATIME like the kernel's real
    files, so the shared layer's atimes never change (without it on EPERM: not the owner
    and no CAP_FOWNER)."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags | os.O_NOATIME, dir_fd=dfd)
    except PermissionError:
        return os.open(name, flags, dir_fd=dfd)


def lstat_at(dfd: int, name: bytes) -> os.stat_result | None:
    """lstat NAME in dir fd; None if missing (or the name is too long to exist)."""
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise


_XATTR_ABSENT = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.ENOENT})
"""What reading an xattr answers when the object has none to give (not an error)."""


def getxattr_at(dfd: int, name: bytes | None, attr: bytes) -> bytes | None:
    """Read xattr ``attr`` of NAME in dir fd (or of the dir itself); None if absent."""
    try:
        if name is None:
            return os.getxattr(fd_path(dfd), attr)
        return getxattrat(dfd, name, attr, _XATTR_ABSENT)
    except OSError as exc:
        if exc.errno in _XATTR_ABSENT:
            return None
        raise


def listxattr_at(dfd: int, name: bytes | None) -> list[bytes]:
    try:
        if name is not None:
            return listxattrat(dfd, name)
        names = os.listxattr(fd_path(dfd))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return []
        raise
    return [os.fsencode(n) for n in names]


def setxattr_at(dfd: int, name: bytes | None, attr: bytes, value: bytes, flags: int = 0) -> None:
    os.setxattr(fd_path(dfd, name), attr, value, flags, follow_symlinks=name is None)


def removexattr_at(dfd: int, name: bytes | None, attr: bytes) -> None:
    os.removexattr(fd_path(dfd, name), attr, follow_symlinks=name is None)


def listdir_fd(dfd: int, path: Path = ()) -> list[bytes]:
    """Names in the dir at ``path`` below ``dfd`` (dfd may be O_PATH)."""
    if path:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        try:  # O_NOATIME as the kernel opens real dirs (listing must not write atimes)
            fd = open_beneath(dfd, b"/".join(path), flags | os.O_NOATIME)
        except PermissionError:
            fd = open_beneath(dfd, b"/".join(path), flags)
    else:  # the dir fd itself: nothing to resolve
        fd = open_noatime(dfd, b".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [os.fsencode(n) for n in os.listdir(fd)]
    finally:
        os.close(fd)


def is_dir(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode)


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)
