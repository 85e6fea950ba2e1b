"""COPY/ADD into a staging upper dir: files placed the way docker places them.

Owns: writing sources into an empty upper dir so that ``write_layer(upper, lowers)``
turns it into the step's layer. Parent dirs that exist below are recreated with their
lower attributes (a COPY must not change ``/usr``'s mode); new ones are 0755 root.
All writes are relative to the staging dir; nothing follows a symlink out of it.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import lzma
import os
import shutil
import stat
import urllib.parse
import urllib.request
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import IO, BinaryIO, cast

from .. import format as fmt
from ..errors import BuildError
from ..store.unpack import unpack_layer


def _is_opaque(path: str) -> bool:
    for name in (fmt.TRUSTED_OPAQUE, fmt.USER_OPAQUE):
        with contextlib.suppress(OSError):
            if os.getxattr(path, name, follow_symlinks=False) == fmt.OPAQUE_YES:
                return True
    return False


def lower_lstat(lowers: Sequence[str], rel: str) -> os.stat_result | None:
    """lstat of ``rel`` in the merged view of ``lowers`` (top first).

    Follows the overlay rules: a whiteout or a non-directory hides the path in every
    lower layer, and so does an opaque directory on the way down.
    """
    parts = [p for p in rel.split("/") if p]
    if not parts:
        return os.lstat(lowers[0]) if lowers else None
    for layer in lowers:
        cur = layer
        opaque = False
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                break
            if fmt.is_whiteout_stat(st.st_mode, st.st_rdev):
                return None
            if i == len(parts) - 1:
                return st
            if not stat.S_ISDIR(st.st_mode):
                return None
            opaque = opaque or _is_opaque(cur)
        if opaque:
            return None
    return None


def ensure_parents(upper: str, lowers: Sequence[str], rel_dir: str) -> None:
    """Create ``rel_dir`` and its parents in ``upper`` with lower attributes."""
    cur = ""
    for part in [p for p in rel_dir.split("/") if p]:
        cur = f"{cur}/{part}"
        path = upper + cur
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            below = lower_lstat(lowers, cur)
            if below is not None and not stat.S_ISDIR(below.st_mode):
                raise BuildError(f"cannot create {cur}: it is not a directory in the image") \
                    from None
            os.mkdir(path, 0o755)
            if below is not None:
                os.chown(path, below.st_uid, below.st_gid)
                os.chmod(path, stat.S_IMODE(below.st_mode))
                os.utime(path, ns=(below.st_atime_ns, below.st_mtime_ns))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BuildError(f"cannot create {cur}: a file is in the way")


def _copy_data(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes: copy_file_range (reflinks on capable fs), else read/write."""
    remaining = size
    try:
        while remaining > 0:
            n = os.copy_file_range(src, dst, remaining)
            if n == 0:
                return
            remaining -= n
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)


def _copy_entry(src: str, dst: str, st: os.stat_result, owner: tuple[int, int] | None) -> None:
    if os.path.lexists(dst) and not (stat.S_ISDIR(st.st_mode) and os.path.isdir(dst)
                                     and not os.path.islink(dst)):
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        else:
            os.unlink(dst)
    if stat.S_ISDIR(st.st_mode):
        if not os.path.isdir(dst):
            os.mkdir(dst, 0o700)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _copy_data(fd, out, st.st_size)
            finally:
                os.close(out)
        finally:
            os.close(fd)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst, 0o600)
    else:
        return  # sockets and devices from a context are not copied (docker skips them too)
    uid, gid = owner if owner is not None else (0, 0)
    os.lchown(dst, uid, gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: str, dst: str, owner: tuple[int, int] | None) -> None:
    """Copy ``src`` (file, symlink or dir) to ``dst`` (the exact target path)."""
    st = os.lstat(src)
    _copy_entry(src, dst, st, owner)
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(src)):
            copy_tree(os.path.join(src, name), os.path.join(dst, name), owner)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_contents(src_dir: str, dst_dir: str, owner: tuple[int, int] | None) -> None:
    """Copy the children of ``src_dir`` into the existing ``dst_dir``."""
    for name in sorted(os.listdir(src_dir)):
        copy_tree(os.path.join(src_dir, name), os.path.join(dst_dir, name), owner)


_TAR_MAGICS = (fmt.GZIP_MAGIC, fmt.ZSTD_MAGIC, fmt.BZIP2_MAGIC, fmt.XZ_MAGIC)


def is_archive(path: str) -> bool:
    """True if ``path`` is a tar archive (plain, gzip, bzip2, xz or zstd) by content."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if any(head.startswith(m) for m in _TAR_MAGICS):
        return True
    return len(head) == 512 and head[257:262] == b"ustar"


def _decompressing(path: str) -> IO[bytes]:
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(fmt.BZIP2_MAGIC):
        return bz2.open(path, "rb")
    if head.startswith(fmt.XZ_MAGIC):
        return lzma.open(path, "rb")
    return open(path, "rb")  # none/gzip/zstd: the extractor sniffs them itself


def extract_archive(path: str, staging: str) -> None:
    """Extract a local archive (ADD) with the layer extractor's protections.

    ``staging`` must be an empty dir; the caller copies the result into place.
    """
    with _decompressing(path) as src:
        unpack_layer(cast("BinaryIO", src), staging)


def download(url: str, dest: str, *, timeout: float = 60.0) -> None:
    """ADD URL: fetch ``url`` into file ``dest`` (mode 0600, mtime from Last-Modified)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise BuildError(f"ADD {url}: only http and https URLs are supported")
    tmp = dest + ".part"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
            modified = resp.headers.get("Last-Modified")
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise BuildError(f"ADD {url}: download failed: {exc}") from None
    os.chmod(tmp, 0o600)
    if modified:
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            ts = parsedate_to_datetime(modified).timestamp()
            os.utime(tmp, (ts, ts))
    os.replace(tmp, dest)


def url_basename(url: str) -> str:
    name = os.path.basename(urllib.parse.urlsplit(url).path.rstrip("/"))
    if not name:
        raise BuildError(f"ADD {url}: cannot infer a file name; give a destination file")
    return name
