"""The FUSE mount itself, without libfuse: open ``/dev/fuse`` and mount(2) it.

Owns: translating the libfuse mount options cowfs-overlay passes (`MountOptions.fuse_options`)
into mount(2) flags and the fuse kernel's option string, the mount, and the check whether
the connection is still ours at teardown. This is libfuse's own "``/dev/fd/N`` mountpoint"
model: the kernel mount exists (and queues requests) before the daemon has imported
pyfuse3 and trio, so the program can report the mount long before the ~100 ms those
imports take; ``pyfuse3.init(ops, "/dev/fd/N", ...)`` then serves the same connection.
Imports nothing heavy (no pyfuse3, no trio). Must not know overlay semantics or fork.

Returns None (the caller lets libfuse mount, as before) whenever this simple path does not
apply: not allowed to mount(2) (non-root: libfuse goes through the setuid fusermount3),
or an option only libfuse knows how to handle (``blkdev``, ``allow_root``).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
from typing import Final

from .._sys.linux import (
    MNT_DETACH,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_RELATIME,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    mount,
    umount2,
)
from .options import MountOptions

log = logging.getLogger(__name__)


# option -> (flags to set, flags to clear), as libfuse's mount.c table.
_FLAGS: Final[dict[str, tuple[int, int]]] = {
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY),
    "suid": (0, MS_NOSUID), "nosuid": (MS_NOSUID, 0),
    "dev": (0, MS_NODEV), "nodev": (MS_NODEV, 0),
    "exec": (0, MS_NOEXEC), "noexec": (MS_NOEXEC, 0),
    "async": (0, MS_SYNCHRONOUS), "sync": (MS_SYNCHRONOUS, 0),
    "atime": (0, MS_NOATIME), "noatime": (MS_NOATIME, 0),
    "diratime": (0, MS_NODIRATIME), "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0), "nolazytime": (0, MS_LAZYTIME),
    "dirsync": (MS_DIRSYNC, 0),
}
_KERNEL_FLAGS: Final = frozenset({"allow_other", "default_permissions"})
_LIBFUSE_ONLY: Final = frozenset({"blkdev", "allow_root", "blksize"})


def mount_args(fuse_options: frozenset[str], fd: int, uid: int,
               gid: int) -> tuple[bytes, bytes, int, bytes] | None:
    """(source, fstype, flags, data) for mount(2) of fd; None: leave it to libfuse."""
    flags = MS_NOSUID | MS_NODEV  # libfuse's defaults
    source, fstype = "cowfs-overlay", "fuse"
    data = [f"fd={fd}", f"rootmode={stat.S_IFDIR:o}", f"user_id={uid}", f"group_id={gid}"]
    for opt in sorted(fuse_options):
        key, eq, value = opt.partition("=")
        if key in _LIBFUSE_ONLY:
            return None
        if not eq and key in _FLAGS:
            on, off = _FLAGS[key]
            flags = (flags | on) & ~off
        elif not eq and key in _KERNEL_FLAGS:
            data.append(key)
        elif key == "fsname":
            source = value
        elif key == "subtype":
            fstype = f"fuse.{value}"
        elif key == "max_read":
            data.append(opt)
        else:
            return None
    return source.encode(), fstype.encode(), flags, ",".join(data).encode()


def kernel_mount(opts: MountOptions) -> int | None:
    """Mount a FUSE connection on the mountpoint; the /dev/fuse fd, or None (libfuse's turn).

    Raises:
        OSError: mount(2) failed for another reason than missing privilege.
    """
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        args = mount_args(opts.fuse_options, fd, os.geteuid(), os.getegid())
        if args is None:
            os.close(fd)
            return None
        source, fstype, flags, data = args
        try:
            mount(source, opts.mountpoint.encode(), fstype, flags, data)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                os.close(fd)
                return None  # unprivileged: fusermount3, through libfuse
            raise
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    # libfuse reads the fd in the daemon; it must survive into pyfuse3.init (no CLOEXEC
    # matters only across exec, which the daemon never does, so leave it).
    return fd


def unmount_if_ours(fd: int, mountpoint: str) -> None:
    """Unmount unless the connection is already gone (as libfuse's fuse_kern_unmount).

    After ``fusermount3 -u`` the connection is aborted and /dev/fuse reports POLLERR; then
    the mountpoint may already carry a new mount of someone else, which must stay.
    """
    p = select.poll()
    p.register(fd, 0)
    if any(ev & select.POLLERR for _, ev in p.poll(0)):
        return
    try:
        umount2(mountpoint.encode(), MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            log.warning("unmount %s: %s", mountpoint, exc)
