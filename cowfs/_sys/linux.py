"""Linux syscalls that the stdlib ``os`` module does not expose.

Each wrapper raises ``OSError`` with the errno on failure, like ``os.*``.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

# The interpreter's own libc (as ns.py/mountapi.py do): find_library("c") would run
# ``ldconfig -p`` in a subprocess at import time, on every cowfs start.
_libc = ctypes.CDLL(None, use_errno=True)

AT_FDCWD: Final = -100
RENAME_NOREPLACE: Final = 1 << 0
RENAME_EXCHANGE: Final = 1 << 1
RENAME_WHITEOUT: Final = 1 << 2
MNT_FORCE: Final = 1
MNT_DETACH: Final = 2

# mount(2) flags (linux/mount.h)
MS_RDONLY: Final = 1
MS_NOSUID: Final = 2
MS_NODEV: Final = 4
MS_NOEXEC: Final = 8
MS_SYNCHRONOUS: Final = 16
MS_REMOUNT: Final = 32
MS_DIRSYNC: Final = 128
MS_NOATIME: Final = 1024
MS_NODIRATIME: Final = 2048
MS_BIND: Final = 4096
MS_MOVE: Final = 8192
MS_REC: Final = 16384
MS_PRIVATE: Final = 1 << 18
MS_SLAVE: Final = 1 << 19
MS_RELATIME: Final = 1 << 21
MS_STRICTATIME: Final = 1 << 24
MS_LAZYTIME: Final = 1 << 25

_SYSCALLS: Final = {
    "x86_64": {"renameat2": 316, "open_tree": 428, "move_mount": 429, "fsopen": 430,
               "fsconfig": 431, "fsmount": 432, "pivot_root": 155, "setns": 308, "unshare": 272},
    "aarch64": {"renameat2": 276, "open_tree": 428, "move_mount": 429, "fsopen": 430,
                "fsconfig": 431, "fsmount": 432, "pivot_root": 41, "setns": 268, "unshare": 97},
}


def syscall_number(name: str) -> int:
    """Return the syscall number of ``name`` on this machine's architecture."""
    try:
        return _SYSCALLS[os.uname().machine][name]
    except KeyError:
        raise OSError(38, f"syscall {name} unsupported on {os.uname().machine}") from None


def _check(ret: int, what: str, *paths: object) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        if paths:
            raise OSError(err, f"{what}: {os.strerror(err)}", *paths[:1])
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def syscall(name: str, *args: object) -> int:
    """Call a raw syscall by name; raise ``OSError`` on failure."""
    fn = _libc.syscall
    fn.restype = ctypes.c_long
    return _check(int(fn(syscall_number(name), *args)), name)


def renameat2(
    olddirfd: int, oldname: bytes, newdirfd: int, newname: bytes, flags: int = 0
) -> None:
    """renameat2(2): rename with RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT."""
    fn = _libc.syscall
    fn.restype = ctypes.c_long
    ret = fn(
        syscall_number("renameat2"),
        ctypes.c_int(olddirfd),
        ctypes.c_char_p(oldname),
        ctypes.c_int(newdirfd),
        ctypes.c_char_p(newname),
        ctypes.c_uint(flags),
    )
    _check(int(ret), "renameat2", oldname)


def mount(
    source: bytes | None, target: bytes, fstype: bytes | None, flags: int = 0,
    data: bytes | None = None,
) -> None:
    """mount(2)."""
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                            ctypes.c_ulong, ctypes.c_char_p]
    _check(_libc.mount(source, target, fstype, flags, data), "mount", target)


def umount2(target: bytes, flags: int = 0) -> None:
    """umount2(2)."""
    _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    _check(_libc.umount2(target, flags), "umount2", target)
