"""Build layer directories from a compact spec, and snapshot merged trees and upper dirs.

Spec: ``{path: value}`` where value is ``str|bytes`` (file), ``None`` (dir) or a tuple:
``("file", data, attrs)``, ``("dir", attrs)``, ``("link", target)``, ``("wh",)`` (char 0/0),
``("whfile",)`` (AUFS ``.wh.NAME``), ``("opqfile",)`` (dir with ``.wh..wh..opq``),
``("opaque", value, namespace)`` (dir with ``<ns>.overlay.opaque``), ``("fof_opaque",)``,
``("xwh",)`` (6.7 xattr whiteout; its parent gets ``opaque=x``), ``("fifo",)``,
``("chr", major, minor)``, ``("hardlink", target)``, ``("sparse", size, {offset: data})``.
``attrs``: ``mode``, ``uid``, ``gid``, ``xattrs``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from cowfs import format as fmt

Spec = dict[str, Any]
_BIG = 8 << 20


def build(root: Path, spec: Spec) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, val in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        kind = "file" if isinstance(val, str | bytes) else "dir" if val is None else val[0]
        attrs: dict[str, Any] = {}
        if kind == "file":
            data = val if isinstance(val, str | bytes) else val[1]
            attrs = {} if isinstance(val, str | bytes) else (val[2] if len(val) > 2 else {})
            p.write_bytes(data.encode() if isinstance(data, str) else data)
        elif kind == "dir":
            p.mkdir(exist_ok=True)
            attrs = val[1] if val is not None and len(val) > 1 else {}
        elif kind == "link":
            os.symlink(val[1], p)
        elif kind == "wh":
            os.mknod(p, fmt.WHITEOUT_MODE, os.makedev(0, 0))
        elif kind == "whfile":
            (p.parent / (fmt.WH_PREFIX_STR + p.name)).write_bytes(b"")
        elif kind == "opqfile":
            p.mkdir(exist_ok=True)
            (p / fmt.WH_OPAQUE_STR).write_bytes(b"")
        elif kind == "opaque":
            p.mkdir(exist_ok=True)
            ns = fmt.USER_OPAQUE if len(val) > 2 and val[2] == "user" else fmt.TRUSTED_OPAQUE
            os.setxattr(p, ns, val[1] if len(val) > 1 else b"y")
        elif kind == "fof_opaque":
            p.mkdir(exist_ok=True)
            os.setxattr(p, fmt.FOF_OPAQUE, b"y")
        elif kind == "xwh":
            p.write_bytes(b"")
            os.setxattr(p, fmt.TRUSTED_XWHITEOUT, b"")
            os.setxattr(p.parent, fmt.TRUSTED_OPAQUE, fmt.OPAQUE_XWHITEOUTS)
        elif kind == "fifo":
            os.mkfifo(p, 0o644)
        elif kind == "chr":
            os.mknod(p, stat.S_IFCHR | 0o644, os.makedev(val[1], val[2]))
        elif kind == "hardlink":
            os.link(root / val[1], p)
        elif kind == "sparse":
            with open(p, "wb") as f:
                f.truncate(val[1])
                for off, data in val[2].items():
                    f.seek(off)
                    f.write(data)
        else:
            raise ValueError(f"unknown spec kind {kind!r}")
        if "xattrs" in attrs:
            for k, v in attrs["xattrs"].items():
                os.setxattr(p, k, v, follow_symlinks=False)
        if "uid" in attrs or "gid" in attrs:
            os.chown(p, attrs.get("uid", 0), attrs.get("gid", 0), follow_symlinks=False)
        if "mode" in attrs:
            os.chmod(p, attrs["mode"])


def content_digest(read: Any, size: int) -> str:
    """sha256 of a file's content; for big (sparse) files of samples every 1 GiB."""
    h = hashlib.sha256()
    if size <= _BIG:
        h.update(read(0, size))
    else:
        offs = sorted({*range(0, size, 1 << 30), max(0, size - 65536)})
        for off in offs:
            h.update(read(off, 65536))
    return h.hexdigest()[:16]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "link"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"),
                       (stat.S_ISSOCK, "sock")):
        if test(mode):
            return name
    return "?"


def visible_xattr(name: str) -> bool:
    return not fmt.is_hidden_xattr(os.fsencode(name)) and not name.startswith("security.")


def snapshot_tree(fs: Any, *, nlink: bool = True) -> dict[str, Any]:
    """The merged tree as seen through a backend, plus its hardlink groups."""
    out: dict[str, Any] = {}
    inos: dict[int, list[str]] = {}

    def walk(d: str) -> None:
        for n in fs.listdir(d):
            p = f"{d}/{n}" if d else n
            st = fs.lstat(p)
            kind = _kind(st.st_mode)
            ent: dict[str, Any] = {"kind": kind, "mode": oct(stat.S_IMODE(st.st_mode)),
                                   "uid": st.st_uid, "gid": st.st_gid}
            if nlink:
                ent["nlink"] = st.st_nlink
            inos.setdefault(st.st_ino, []).append(p)
            if kind == "file":
                ent["size"] = st.st_size
                ent["data"] = content_digest(lambda o, s, p=p: fs.read(p, o, s), st.st_size)
            elif kind == "link":
                ent["target"] = fs.readlink(p)
            elif kind in ("chr", "blk"):
                ent["rdev"] = st.st_rdev
            if kind != "link":
                ent["xattrs"] = {x: fs.getxattr(p, x) for x in fs.listxattr(p)
                                 if visible_xattr(x)}
            out[p] = ent
            if kind == "dir":
                walk(p)

    walk("")
    out["<hardlink groups>"] = sorted(sorted(v) for v in inos.values() if len(v) > 1)
    return out


def snapshot_upper(root: Path | None) -> dict[str, Any]:
    """An upper dir as on-disk overlay format (whiteouts, opaque, content, attrs)."""
    out: dict[str, Any] = {}
    if root is None:
        return out

    def walk(d: Path, rel: str) -> None:
        for n in sorted(os.listdir(d)):
            p = d / n
            r = f"{rel}/{n}" if rel else n
            st = os.lstat(p)
            kind = _kind(st.st_mode)
            if fmt.is_whiteout_stat(st.st_mode, st.st_rdev):
                out[r] = {"kind": "whiteout"}
                continue
            ent: dict[str, Any] = {"kind": kind, "mode": oct(stat.S_IMODE(st.st_mode)),
                                   "uid": st.st_uid, "gid": st.st_gid}
            names = os.listxattr(p, follow_symlinks=False)
            ent["xattrs"] = {x: os.getxattr(p, x, follow_symlinks=False) for x in names
                             if visible_xattr(x)}
            if kind == "dir":
                opq = {os.getxattr(p, x) for x in names
                       if os.fsencode(x) in (fmt.TRUSTED_OPAQUE, fmt.USER_OPAQUE)}
                ent["opaque"] = sorted(opq)
                out[r] = ent
                walk(p, r)
                continue
            if kind == "file":
                ent["size"] = st.st_size
                with open(p, "rb") as f:
                    def rd(o: int, s: int, f: Any = f) -> bytes:
                        f.seek(o)
                        return bytes(f.read(s))
                    ent["data"] = content_digest(rd, st.st_size)
                ent["sparse"] = st.st_blocks * 512 < st.st_size // 2 if st.st_size > _BIG else None
            elif kind == "link":
                ent["target"] = os.readlink(p)
            out[r] = ent

    walk(root, "")
    return out
