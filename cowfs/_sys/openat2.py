"""openat2(2) with RESOLVE_* flags, plus the small fd-relative helpers the overlay core needs.

Owns: resolving a relative path beneath a directory fd without following any symlink
(``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``), with a component-by-component ``O_NOFOLLOW``
fallback on kernels without openat2. Must not interpret overlay semantics.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import Final

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08
RESOLVE_IN_ROOT: Final = 0x10

_NR_OPENAT2: Final = 437  # same number on x86_64 and aarch64 (unified table since 5.6)


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64))


_have_openat2: bool | None = None
_CHUNK = 3072
"""Paths longer than this are resolved in steps (PATH_MAX is 4096 with the NUL)."""


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))  # a full 64-bit register


def _raw_openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    how = _OpenHow(flags, mode, resolve)
    ret = int(_syscall(_NR_OPENAT2, dirfd, path, ctypes.byref(how), _HOW_SIZE))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return ret


def open_beneath(dirfd: int, path: bytes, flags: int, mode: int = 0) -> int:
    """Open ``path`` (relative, '/'-separated) beneath ``dirfd`` following no symlink.

    ``path`` may be ``b""`` to reopen ``dirfd`` itself. ``O_CLOEXEC`` is always added.
    Raises ``OSError`` (ELOOP/ENOTDIR/ENOENT... as openat) on failure.
    """
    global _have_openat2
    flags |= os.O_CLOEXEC
    if len(path) > _CHUNK:
        # Longer than PATH_MAX allows: resolve a prefix of whole components, go on from it.
        cut = path.rfind(b"/", 0, _CHUNK)
        if cut <= 0:
            raise OSError(errno.ENAMETOOLONG, "path component too long", path)
        mid = open_beneath(dirfd, path[:cut], os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            return open_beneath(mid, path[cut + 1:], flags, mode)
        finally:
            os.close(mid)
    target = path or b"."
    if _have_openat2 is not False:
        try:
            return _raw_openat2(dirfd, target, flags, mode,
                                RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM) or _have_openat2:
                raise
            _have_openat2 = False  # seccomp or old kernel: fall back to the walk below
        else:
            _have_openat2 = True
    return _walk_open(dirfd, path, flags, mode)


def _walk_open(dirfd: int, path: bytes, flags: int, mode: int) -> int:
    parts = [p for p in path.split(b"/") if p]
    if any(p == b".." for p in parts):
        raise OSError(errno.EXDEV, "path escapes its root", path)
    if not parts:
        return os.open(b".", flags | os.O_NOFOLLOW, mode, dir_fd=dirfd)
    cur = dirfd
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=cur)
            if cur != dirfd:
                os.close(cur)
            cur = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=cur)
    finally:
        if cur != dirfd:
            os.close(cur)


def fd_path(fd: int, name: bytes | None = None) -> bytes:
    """Return ``/proc/self/fd/FD[/NAME]``: the way to reach fd-relative objects with the
    path-only xattr calls. ``name`` must be a single validated component."""
    if name is None:
        return b"/proc/self/fd/%d" % fd
    return b"/proc/self/fd/%d/%s" % (fd, name)


def rmtree_at(dfd: int, name: bytes) -> None:
    """Remove NAME (one component, any type, recursively) in dir fd ``dfd``, never
    following a symlink; a missing NAME is not an error."""
    try:
        os.unlink(name, dir_fd=dfd)
        return
    except (IsADirectoryError, PermissionError):  # a dir (EPERM on some filesystems)
        pass
    except FileNotFoundError:
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=dfd)
    try:
        with os.scandir(fd) as it:
            for ent in it:
                child = os.fsencode(ent.name)
                if ent.is_dir(follow_symlinks=False):
                    rmtree_at(fd, child)
                else:
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)
