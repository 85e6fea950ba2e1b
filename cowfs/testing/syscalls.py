"""The machine's operations as real syscalls on a merged dir, and a tree snapshot.

Owns: exactly which syscalls each operation makes (what the model in ``model.py``
answers for). Stdlib only and free of cowfs imports on purpose: ``script.py``
embeds this file's source in reproducer scripts, which must run on any machine
with ``python3``. Run as ``python3 syscalls.py MERGED OP ARGS...``; it prints one
line per operation (``ok``, ``ok <value>`` or the errno name).

Every path is resolved one component at a time relative to the merged root with
``O_DIRECTORY|O_NOFOLLOW`` and the final component is never followed, so an
implementation's bugs (or a hostile layer's symlinks) can never make an
operation act outside the mount.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import sys
from collections.abc import Callable, Iterator

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_META = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
UMASK = 0o022

Row = tuple[str, int, int, "int | None", "str | None", "bytes | None",
            "tuple[tuple[bytes, bytes], ...]"]


@contextlib.contextmanager
def parent_fd(root: bytes, path: bytes) -> Iterator[tuple[int, bytes]]:
    """Open the parent dir of ``path`` (relative to ``root``) without following symlinks."""
    comps = [c for c in path.split(b"/") if c]
    if not comps:
        raise OSError(errno.EBUSY, "the root is not an operation target")
    fd = os.open(root, _DIR)
    try:
        for name in comps[:-1]:
            nxt = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        yield fd, comps[-1]
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        if offset is not None:
            offset += n


def create(root: bytes, path: bytes, data: bytes) -> None:
    with parent_fd(root, path) as (pfd, name):
        fd = os.open(name, _WRITE | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=pfd)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def _open_write(root: bytes, path: bytes, flags: int = 0) -> int:
    with parent_fd(root, path) as (pfd, name):
        return os.open(name, _WRITE | flags, dir_fd=pfd)


def write(root: bytes, path: bytes, offset: int, data: bytes) -> None:
    fd = _open_write(root, path)
    try:
        _write_all(fd, data, offset)
    finally:
        os.close(fd)


def append(root: bytes, path: bytes, data: bytes) -> None:
    fd = _open_write(root, path, os.O_APPEND)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def truncate(root: bytes, path: bytes, size: int) -> None:
    fd = _open_write(root, path)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def unlink(root: bytes, path: bytes) -> None:
    with parent_fd(root, path) as (pfd, name):
        os.unlink(name, dir_fd=pfd)


def rmdir(root: bytes, path: bytes) -> None:
    with parent_fd(root, path) as (pfd, name):
        os.rmdir(name, dir_fd=pfd)


def mkdir(root: bytes, path: bytes, mode: int) -> None:
    with parent_fd(root, path) as (pfd, name):
        os.mkdir(name, mode, dir_fd=pfd)


def symlink(root: bytes, target: bytes, path: bytes) -> None:
    with parent_fd(root, path) as (pfd, name):
        os.symlink(target, name, dir_fd=pfd)


def rename(root: bytes, src: bytes, dst: bytes) -> None:
    with parent_fd(root, src) as (sfd, sname), parent_fd(root, dst) as (dfd, dname):
        os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)


def link(root: bytes, src: bytes, dst: bytes) -> None:
    with parent_fd(root, src) as (sfd, sname), parent_fd(root, dst) as (dfd, dname):
        os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)


def _open_meta(root: bytes, path: bytes) -> int:
    with parent_fd(root, path) as (pfd, name):
        return os.open(name, _META, dir_fd=pfd)


def chmod(root: bytes, path: bytes, mode: int) -> None:
    fd = _open_meta(root, path)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def setxattr(root: bytes, path: bytes, name: bytes, value: bytes) -> None:
    fd = _open_meta(root, path)
    try:
        os.setxattr(fd, name, value)
    finally:
        os.close(fd)


def removexattr(root: bytes, path: bytes, name: bytes) -> None:
    fd = _open_meta(root, path)
    try:
        os.removexattr(fd, name)
    finally:
        os.close(fd)


def fd_copyup(root: bytes, path: bytes, data: bytes) -> bytes:
    """Open read-only, write ``data`` at 0 via a second fd, return what the first reads."""
    fd = _open_meta(root, path)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EISDIR, "fd_copyup of a directory")
        write(root, path, 0, data)
        # Drop clean cached pages so the read reaches the implementation (a FUSE
        # daemon) instead of being served from the shared page cache.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


OPS: dict[str, Callable[..., bytes | None]] = {
    "create": create, "write": write, "append": append, "truncate": truncate,
    "unlink": unlink, "rmdir": rmdir, "mkdir": mkdir, "symlink": symlink,
    "rename": rename, "link": link, "chmod": chmod, "setxattr": setxattr,
    "removexattr": removexattr, "fd_copyup": fd_copyup,
}


# --- observation ---------------------------------------------------------------------
def _user_xattrs(full: bytes) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for name in os.listxattr(full, follow_symlinks=False):
        raw = os.fsencode(name)
        # Every user.* xattr counts: the kernel (trusted.* mode) hides none of them, so
        # an implementation's internal xattr showing through is a divergence.
        if raw.startswith(b"user."):
            out.append((raw, os.getxattr(full, name, follow_symlinks=False)))
    return tuple(sorted(out))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return f"other:{stat.S_IFMT(mode):o}"


def sha256_fd(fd: int) -> str:
    """Hex sha256 of what ``fd`` reads to its end; closes ``fd``."""
    h = hashlib.sha256()
    try:
        while chunk := os.read(fd, 1 << 16):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def entry(full: bytes) -> Row:
    """One path's row: (kind, st_mode, st_nlink, size, sha256, symlink target, user xattrs)."""
    st = os.lstat(full)
    kind = _kind(st.st_mode)
    size: int | None = None if kind == "dir" else st.st_size
    sha = target = None
    if kind == "file":
        sha = sha256_fd(os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC))
    elif kind == "symlink":
        target = os.readlink(full)
    return (kind, st.st_mode, st.st_nlink, size, sha, target, _user_xattrs(full))


def snapshot(root: bytes) -> dict[bytes, Row | str]:
    """Every path of the merged tree → its row, or an error string if it cannot be read.

    A name listed twice by readdir, or listed but not stat-able, is reported as an
    error string; ``b""`` is the root.
    """
    out: dict[bytes, Row | str] = {}
    todo = [b""]
    while todo:
        rel = todo.pop()
        full = os.path.join(root, rel) if rel else root
        try:
            row = entry(full)
        except OSError as exc:
            out[rel] = f"unreadable: {errno.errorcode.get(exc.errno or 0, exc)}"
            continue
        out[rel] = row
        if row[0] == "dir":
            names = os.listdir(full)
            if len(set(names)) != len(names):
                out[rel + b"/"] = f"readdir lists duplicates: {sorted(names)!r}"
            todo.extend(os.path.join(rel, n) if rel else n for n in set(names))
    return out


def run(root: bytes, op: str, args: list[bytes | int]) -> str:
    """Apply one operation; return its result line (``ok``, ``ok <bytes>``, or the errno)."""
    try:
        value = OPS[op](root, *args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok" if value is None else f"ok {value!r}"


def main(argv: list[str]) -> int:
    """``syscalls.py MERGED OP ARG...`` (ints as decimal, bytes as given) or ``MERGED tree``."""
    os.umask(UMASK)
    root, op, rest = os.fsencode(argv[0]), argv[1], argv[2:]
    if op == "tree":
        for path, row in sorted(snapshot(root).items()):
            print(repr(path)[2:-1] or "/", row if isinstance(row, str) else
                  " ".join(repr(v) if isinstance(v, bytes | tuple) else str(v) for v in
                           (row[0], oct(row[1]), *row[2:])))
        return 0
    args: list[bytes | int] = [int(a, 0) if _INT_OPS.get(op) == i else os.fsencode(a)
                               for i, a in enumerate(rest)]
    print(f"{op} {' '.join(repr(os.fsencode(a))[1:] for a in rest)}: {run(root, op, args)}")
    return 0


_INT_OPS: dict[str, int] = {"write": 1, "truncate": 1, "mkdir": 1, "chmod": 1}
"""Operations with an int argument (``123``, ``0o755``) and its position in ARGS."""

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
