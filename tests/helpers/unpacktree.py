"""Snapshot a directory tree for comparisons in extractor tests (no privileges needed).

``snapshot(root)`` maps every relative path to a tuple of what an unpacked layer
must preserve: type, mode (incl. setuid/setgid/sticky), owner, size, content
digest, symlink target, device number, xattrs, mtime (ns) and the hardlink group
(the first path of the group, in sorted order). Directory sizes are ignored.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any


def xattrs(path: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            pass
    return out


def snapshot(root: str, *, mtimes: bool = True, skip_xattrs: tuple[str, ...] = ()
             ) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    links: dict[tuple[int, int], str] = {}
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            paths.append(os.path.join(dirpath, n))
    paths.sort()
    for p in [root, *paths]:
        st = os.lstat(p)
        rel = os.path.relpath(p, root)
        kind = stat.S_IFMT(st.st_mode)
        content: Any = None
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                content = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(p)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            content = (os.major(st.st_rdev), os.minor(st.st_rdev))
        group = None
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            group = links.setdefault((st.st_dev, st.st_ino), rel)
        xa = {k: v for k, v in xattrs(p).items() if not k.startswith(skip_xattrs)}
        out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                    None if stat.S_ISDIR(st.st_mode) else st.st_size, content,
                    tuple(sorted(xa.items())), st.st_mtime_ns if mtimes else None, group)
    return out


def diff(a: dict[str, tuple[Any, ...]], b: dict[str, tuple[Any, ...]]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k}: {a.get(k)} != {b.get(k)}")
    return out
