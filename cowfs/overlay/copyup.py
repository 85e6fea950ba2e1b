"""Copy-up building blocks: data (reflink, copy_file_range, holes kept), xattrs, metadata.

Owns: copying one object's bytes and attributes between two fd-relative locations. The
caller (``ops.Overlay``) chooses the temp name in the workdir and renames it into the
upper (prepare-then-rename). Must not decide when to copy up.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from cowfs import format as fmt
from cowfs._sys.openat2 import fd_path
from cowfs.overlay.layer import getxattr_at, listxattr_at, setxattr_at

FICLONE = 0x40049409
"""ioctl(dst, FICLONE, src): share all extents (btrfs, xfs with reflink)."""

_CHUNK = 1 << 20


def copy_data(src: int, dst: int, size: int) -> None:
    """Copy SIZE bytes of SRC into the empty DST, keeping holes; DST ends at SIZE."""
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return
    except OSError:
        pass  # not a reflink fs, or across filesystems: copy extent by extent
    off = 0
    while off < size:
        try:
            data = os.lseek(src, off, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # only a hole is left
            raise
        hole = min(os.lseek(src, data, os.SEEK_HOLE), size)
        _copy_range(src, dst, data, hole - data)
        off = hole
    os.ftruncate(dst, size)


def _copy_range(src: int, dst: int, off: int, count: int) -> None:
    end = off + count
    while off < end:
        want = min(end - off, 1 << 30)
        try:
            n = os.copy_file_range(src, dst, want, off, off)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            n = _pcopy(src, dst, off, min(want, _CHUNK))
        if n == 0:
            return  # source shrank under us
        off += n


def _pcopy(src: int, dst: int, off: int, count: int) -> int:
    buf = os.pread(src, count, off)
    done = 0
    while done < len(buf):
        done += os.pwrite(dst, buf[done:], off + done)
    return len(buf)


def copy_xattrs(src_dfd: int, src_name: bytes | None, dst_dfd: int,
                dst_name: bytes | None) -> None:
    """Copy user-visible xattrs (not overlay/cowfs-internal ones, but escaped ones)."""
    for attr in listxattr_at(src_dfd, src_name):
        if fmt.is_hidden_xattr(attr) and not attr.startswith(fmt.TRUSTED_OVERLAY_ESCAPED):
            continue
        val = getxattr_at(src_dfd, src_name, attr)
        if val is None:
            continue
        try:
            setxattr_at(dst_dfd, dst_name, attr, val)
        except OSError as exc:
            # user.* cannot live on symlinks/specials; security.* may be refused: as the
            # kernel, skip what the upper fs does not support rather than fail the copy-up.
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                raise


def copy_attrs(dst_dfd: int, dst_name: bytes, st: os.stat_result) -> None:
    """Owner, then mode (chown may clear set-id bits), then times of DST from ST."""
    path = fd_path(dst_dfd, dst_name)
    try:
        os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
    except PermissionError:
        if os.geteuid() == 0:
            raise  # rootless: objects stay owned by the mounter
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def set_times(dfd: int, name: bytes | None, atime_ns: int, mtime_ns: int) -> None:
    os.utime(fd_path(dfd, name), ns=(atime_ns, mtime_ns), follow_symlinks=name is None)
