"""The new Linux mount API (fsopen/fsconfig/fsmount/move_mount) as typed ctypes shims.

Owns: thin wrappers raising ``OSError(errno)`` like ``os.*``, plus reading the
filesystem context's error log. Must not contain policy: which keys to set and
what an errno means is the caller's business (``cowfs.kernel.mount``).
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

from .linux import AT_FDCWD, syscall_number

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# include/uapi/linux/mount.h
FSOPEN_CLOEXEC: Final = 0x00000001
FSMOUNT_CLOEXEC: Final = 0x00000001
FSCONFIG_SET_FLAG: Final = 0
FSCONFIG_SET_STRING: Final = 1
FSCONFIG_SET_BINARY: Final = 2
FSCONFIG_SET_PATH: Final = 3
FSCONFIG_SET_PATH_EMPTY: Final = 4
FSCONFIG_SET_FD: Final = 5
FSCONFIG_CMD_CREATE: Final = 6
FSCONFIG_CMD_RECONFIGURE: Final = 7
MOUNT_ATTR_RDONLY: Final = 0x00000001
MOUNT_ATTR_NOSUID: Final = 0x00000002
MOUNT_ATTR_NODEV: Final = 0x00000004
MOUNT_ATTR_NOEXEC: Final = 0x00000008
MOVE_MOUNT_F_EMPTY_PATH: Final = 0x00000004

FSCONFIG_STRING_MAX: Final = 256
"""fs/fsopen.c copies string values with ``strndup_user(value, 256)``: a longer
value (NUL included) fails with EINVAL, so long paths must go by fd instead."""


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def fsopen(fstype: str, flags: int = FSOPEN_CLOEXEC) -> int:
    """fsopen(2): open a filesystem context for ``fstype``; returns its fd."""
    ret = _syscall(syscall_number("fsopen"), ctypes.c_char_p(fstype.encode()),
                   ctypes.c_uint(flags))
    return _check(int(ret), "fsopen")


def fsconfig_string(fs_fd: int, key: str, value: bytes) -> None:
    """fsconfig(FSCONFIG_SET_STRING): set ``key`` to a string value."""
    ret = _syscall(syscall_number("fsconfig"), ctypes.c_int(fs_fd),
                   ctypes.c_uint(FSCONFIG_SET_STRING), ctypes.c_char_p(key.encode()),
                   ctypes.c_char_p(value), ctypes.c_int(0))
    _check(int(ret), f"fsconfig {key}", os.fsdecode(value))


def fsconfig_flag(fs_fd: int, key: str) -> None:
    """fsconfig(FSCONFIG_SET_FLAG): set a boolean option such as ``userxattr``."""
    ret = _syscall(syscall_number("fsconfig"), ctypes.c_int(fs_fd),
                   ctypes.c_uint(FSCONFIG_SET_FLAG), ctypes.c_char_p(key.encode()),
                   ctypes.c_void_p(None), ctypes.c_int(0))
    _check(int(ret), f"fsconfig {key}")


def fsconfig_fd(fs_fd: int, key: str, fd: int) -> None:
    """fsconfig(FSCONFIG_SET_FD): pass an (O_PATH) fd as the value of ``key``."""
    ret = _syscall(syscall_number("fsconfig"), ctypes.c_int(fs_fd),
                   ctypes.c_uint(FSCONFIG_SET_FD), ctypes.c_char_p(key.encode()),
                   ctypes.c_void_p(None), ctypes.c_int(fd))
    _check(int(ret), f"fsconfig {key} (by fd)")


def fsconfig_create(fs_fd: int) -> None:
    """fsconfig(FSCONFIG_CMD_CREATE): create the superblock from the context."""
    ret = _syscall(syscall_number("fsconfig"), ctypes.c_int(fs_fd),
                   ctypes.c_uint(FSCONFIG_CMD_CREATE), ctypes.c_void_p(None),
                   ctypes.c_void_p(None), ctypes.c_int(0))
    _check(int(ret), "fsconfig create")


def fsmount(fs_fd: int, flags: int = FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    """fsmount(2): turn a created context into a detached mount; returns its fd."""
    ret = _syscall(syscall_number("fsmount"), ctypes.c_int(fs_fd), ctypes.c_uint(flags),
                   ctypes.c_uint(attr_flags))
    return _check(int(ret), "fsmount")


def move_mount_to(mnt_fd: int, target: bytes) -> None:
    """move_mount(2): attach the detached mount ``mnt_fd`` at path ``target``."""
    ret = _syscall(syscall_number("move_mount"), ctypes.c_int(mnt_fd), ctypes.c_char_p(b""),
                   ctypes.c_int(AT_FDCWD), ctypes.c_char_p(target),
                   ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    _check(int(ret), "move_mount", os.fsdecode(target))


def fscontext_messages(fs_fd: int) -> list[str]:
    """Drain the context's message log (``e overlayfs: ...`` lines); never raises."""
    out: list[str] = []
    for _ in range(64):
        try:
            data = os.read(fs_fd, 4096)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.EBADF, errno.EOPNOTSUPP):
                out.append(f"(reading messages: {exc.strerror})")
            break
        if not data:
            break
        out.append(data.decode(errors="replace").rstrip("\n"))
    return out
