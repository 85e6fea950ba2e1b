"""Whiteout and opaque-dir encodings: read every dialect, write only the kernel's.

Owns: detection of char 0/0 whiteouts, ``.wh.NAME`` files, ``.wh..wh..opq`` sentinels,
``{trusted,user}.overlay.opaque`` (``y``, and ``x`` = dir holding 6.7 xattr whiteouts),
``user.fuseoverlayfs.opaque``, and writing char 0/0 whiteouts plus the opaque xattr of the
mount mode. Every name and xattr comes from ``cowfs.format``. Must not merge layers.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from cowfs import format as fmt
from cowfs._sys.linux import RENAME_WHITEOUT, renameat2
from cowfs.overlay.layer import getxattr_at, listxattr_at, lstat_at, setxattr_at

_OPAQUE_XATTRS = (fmt.TRUSTED_OPAQUE, fmt.USER_OPAQUE, fmt.FOF_OPAQUE)
_XWHITEOUT_XATTRS = (fmt.TRUSTED_XWHITEOUT, fmt.USER_XWHITEOUT)


@dataclass(frozen=True, slots=True)
class DirMarks:
    """What a layer dir says about the layers below it."""

    opaque: bool
    """Hides every same-named dir in lower layers."""
    xwhiteouts: bool
    """Holds kernel 6.7 xattr whiteouts (``overlay.opaque=x``): check zero-size files."""


def dir_marks(dfd: int, name: bytes | None) -> DirMarks:
    """Read the opaque markers of NAME in dir fd (or of the dir fd itself)."""
    opaque = xwh = False
    present = set(listxattr_at(dfd, name))  # one call: most dirs carry none of them
    for attr in _OPAQUE_XATTRS:
        if attr not in present:
            continue
        val = getxattr_at(dfd, name, attr)
        if val == fmt.OPAQUE_YES:
            opaque = True
        elif val == fmt.OPAQUE_XWHITEOUTS:
            xwh = True
    if not opaque:
        try:
            if name is None:
                sentinel = os.stat(fmt.WH_OPAQUE, dir_fd=dfd, follow_symlinks=False)
            else:
                sentinel = os.stat(b"%s/%s" % (name, fmt.WH_OPAQUE), dir_fd=dfd,
                                   follow_symlinks=False)
            opaque = stat.S_ISREG(sentinel.st_mode)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):
                raise
    return DirMarks(opaque, xwh)


def is_whiteout_entry(dfd: int, name: bytes, st: os.stat_result, xwhiteouts: bool) -> bool:
    """True if the existing entry NAME (stat ``st``) is a whiteout in any dialect it can be."""
    if fmt.is_whiteout_stat(st.st_mode, st.st_rdev):
        return True
    if xwhiteouts and stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return any(getxattr_at(dfd, name, a) is not None for a in _XWHITEOUT_XATTRS)
    return False


def has_wh_file(dfd: int, name: bytes) -> bool:
    """True if an AUFS/OCI ``.wh.NAME`` file in dir fd whites out NAME below."""
    return lstat_at(dfd, fmt.WH_PREFIX + name) is not None


def make_whiteout(dfd: int, name: bytes) -> None:
    """Create a kernel whiteout (char 0/0) NAME in dir fd."""
    os.mknod(name, fmt.WHITEOUT_MODE, os.makedev(0, fmt.WHITEOUT_DEV), dir_fd=dfd)


def whiteout_rename(src_dfd: int, src: bytes, dst_dfd: int, dst: bytes, flags: int = 0,
                    *, tmp_dfd: int, tmp_name: bytes) -> None:
    """Rename SRC to DST leaving a whiteout at SRC, atomically where the fs allows.

    Uses ``RENAME_WHITEOUT``; when the fs refuses it (EINVAL), renames first and then
    creates the whiteout through ``tmp_dfd/tmp_name`` (prepare-then-rename), which is
    not atomic but never leaves SRC visible twice.
    """
    try:
        renameat2(src_dfd, src, dst_dfd, dst, flags | RENAME_WHITEOUT)
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
    make_whiteout(tmp_dfd, tmp_name)
    try:
        renameat2(src_dfd, src, dst_dfd, dst, flags)
        renameat2(tmp_dfd, tmp_name, src_dfd, src)
    except BaseException:
        os.unlink(tmp_name, dir_fd=tmp_dfd)
        raise


def set_opaque(dfd: int, name: bytes | None, userxattr: bool) -> None:
    """Mark NAME in dir fd (or the dir itself) opaque in the kernel format of the mode."""
    setxattr_at(dfd, name, fmt.opaque_xattr(userxattr), fmt.OPAQUE_YES)
