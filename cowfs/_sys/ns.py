"""Namespace and mount syscalls for the run module: unshare, setns, pivot_root, sethostname.

Owns: typed ctypes wrappers and the CLONE_*/MS_* constants. Must not contain policy
(which namespaces a container gets is decided in ``cowfs.run``). Raises ``OSError``.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from typing import Final

from . import linux

# clone(2) / unshare(2) flags (linux/sched.h)
CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000

# mount(2) flags live in linux.py (shared with the FUSE mount); re-exported for callers
MS_RDONLY: Final = linux.MS_RDONLY
MS_NOSUID: Final = linux.MS_NOSUID
MS_NODEV: Final = linux.MS_NODEV
MS_NOEXEC: Final = linux.MS_NOEXEC
MS_REMOUNT: Final = linux.MS_REMOUNT
MS_BIND: Final = linux.MS_BIND
MS_MOVE: Final = linux.MS_MOVE
MS_REC: Final = linux.MS_REC
MS_PRIVATE: Final = linux.MS_PRIVATE
MS_SLAVE: Final = linux.MS_SLAVE
MS_STRICTATIME: Final = linux.MS_STRICTATIME
MNT_DETACH: Final = linux.MNT_DETACH

# prctl(2)
PR_SET_PDEATHSIG: Final = 1
PR_SET_CHILD_SUBREAPER: Final = 36

NS_FILES: Final = {"user": CLONE_NEWUSER, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS,
                   "net": CLONE_NEWNET, "pid": CLONE_NEWPID, "cgroup": CLONE_NEWCGROUP,
                   "mnt": CLONE_NEWNS}
"""Names under /proc/PID/ns/ and their CLONE_* flag, in the order setns should join them."""

_libc = ctypes.CDLL(None, use_errno=True)
_IFF_UP: Final = 0x1
_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914


def unshare(flags: int) -> None:
    """unshare(2)."""
    linux.syscall("unshare", ctypes.c_int(flags))


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace open at ``fd``."""
    linux.syscall("setns", ctypes.c_int(fd), ctypes.c_int(nstype))


def pivot_root(new_root: bytes, put_old: bytes) -> None:
    """pivot_root(2)."""
    linux.syscall("pivot_root", ctypes.c_char_p(new_root), ctypes.c_char_p(put_old))


def sethostname(name: str) -> None:
    """sethostname(2) in the current UTS namespace."""
    socket.sethostname(name)


def prctl(option: int, arg: int) -> None:
    """prctl(2) with one integer argument."""
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                            ctypes.c_ulong]
    if _libc.prctl(option, arg, 0, 0, 0) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def set_child_subreaper() -> None:
    """Become the reaper of orphaned descendants (PR_SET_CHILD_SUBREAPER)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(sig: int) -> None:
    """Receive ``sig`` when the parent thread dies (PR_SET_PDEATHSIG)."""
    prctl(PR_SET_PDEATHSIG, sig)


def loopback_up() -> None:
    """Bring up ``lo`` in the current network namespace (SIOCSIFFLAGS, no ip(8) needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        res = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req)
        flags = struct.unpack("16sH14x", res)[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2) with str arguments (encoded with the filesystem encoding)."""
    linux.mount(os.fsencode(source) if source is not None else None, os.fsencode(target),
                os.fsencode(fstype) if fstype is not None else None, flags,
                os.fsencode(data) if data is not None else None)


def umount(target: str, flags: int = 0) -> None:
    """umount2(2) with a str path."""
    linux.umount2(os.fsencode(target), flags)
