"""The executable specification: a pure-Python model of kernel overlayfs semantics.

Owns: layers as in-memory trees, the merged view computed from them, and every
mutating operation with the kernel's copy-up, whiteout, opaque-dir and errno rules
(``redirect_dir=off``, ``index=off``, ``metacopy=off``). Must not touch the disk:
it is validated against the real kernel by ``tests/property`` and is what every
implementation under test is compared with.

Rules encoded here (each checked against Linux 6.18 overlayfs):

* Lookup runs top-down (upper, then lowers[0], lowers[1], ...). A non-dir or a
  whiteout hides everything below it; dirs merge until an opaque dir.
* Metadata and xattrs of a (merged) dir come from its topmost part; a dir that
  merges more than one part reports ``st_nlink == 1``; otherwise nlink is the
  real ``2 + subdirs`` of the one layer dir that backs it.
* A non-dir reports the real nlink of the object that backs it, so a lower
  hardlink keeps reporting the lower link count. Copy-up (open for write,
  truncate, chmod, setxattr, link, rename) creates a *new* upper object: without
  the index feature it breaks lower hardlinks.
* Removing a name that has lower parts leaves a whiteout; ``mkdir`` over a
  whiteout, and renaming a dir over one with lower parts, make an opaque dir.
* Renaming a dir with lower parts gives ``EXDEV`` (userspace ``mv`` copies).
* Names of one lower hardlinked file are distinct overlay inodes (``rename`` of one
  over the other is a real rename); names of one upper file are one inode.
* A read-only fd opened on a lower file before another fd copies it up reads the
  *new* data afterwards: the kernel reopens the real file (only ``MAP_SHARED``
  mappings keep the old data, which this model does not test).
"""

from __future__ import annotations

import errno
import hashlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, Union

UMASK: Final = 0o022
"""The umask every implementation runs the operations under."""

Kind = Literal["file", "symlink", "fifo"]


@dataclass(eq=False)
class Inode:
    """A non-directory object of one layer; hardlinks in that layer share it."""

    kind: Kind
    mode: int = 0o644
    data: bytes = b""
    target: bytes = b""
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    nlink: int = 1

    def copy(self) -> Inode:
        """A fresh upper copy (copy-up): same data, mode and xattrs, its own link count."""
        return Inode(self.kind, self.mode, self.data, self.target, dict(self.xattrs), 1)


@dataclass(eq=False)
class Dir:
    """A directory of one layer."""

    mode: int = 0o755
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    children: dict[bytes, Node] = field(default_factory=dict)
    opaque: bool = False


class _Whiteout:
    """The whiteout marker (a char 0/0 device on disk)."""

    def __repr__(self) -> str:
        return "WHITEOUT"


WHITEOUT: Final = _Whiteout()
Node = Union[Inode, Dir, _Whiteout]  # noqa: UP007 - a runtime alias


@dataclass(frozen=True, slots=True)
class Entry:
    """What a merged-view user sees for one path (the unit of comparison)."""

    kind: str  # "dir" | "file" | "symlink" | "fifo"
    mode: int  # full st_mode
    nlink: int
    size: int | None  # None for dirs (fs-dependent)
    sha256: str | None  # content hash of regular files
    target: bytes | None  # symlink target
    xattrs: tuple[tuple[bytes, bytes], ...]  # user.* xattrs, sorted


Snapshot = dict[bytes, Entry]
"""Merged tree: path relative to the root (``b""`` is the root) → Entry."""

_TYPE_BITS: Final = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK,
                     "fifo": stat.S_IFIFO}


class _Merged:
    """A resolved merged-view object: its parts top-down with their layer index (0 = upper)."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[tuple[int, Inode | Dir]]) -> None:
        self.parts = parts

    @property
    def top(self) -> Inode | Dir:
        return self.parts[0][1]

    @property
    def is_dir(self) -> bool:
        return isinstance(self.top, Dir)

    @property
    def has_lower(self) -> bool:
        return any(i > 0 for i, _ in self.parts)


def split(path: bytes) -> list[bytes]:
    """Components of a relative path (``b""`` is the root)."""
    return [c for c in path.split(b"/") if c]


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


class OpError(Exception):
    """An operation fails with ``errno`` (the model's answer)."""

    def __init__(self, err: int) -> None:
        super().__init__(errno.errorcode.get(err, str(err)))
        self.errno = err


class Model:
    """An overlay mount: read-only lower trees (``lowers[0]`` is the top) and an upper tree.

    Every mutating method returns ``None`` on success or raises :class:`OpError`;
    they apply the kernel's semantics to ``self.upper``, never to the lowers.
    """

    def __init__(self, lowers: list[Dir], upper: Dir | None = None) -> None:
        self.lowers = lowers
        self.upper = upper if upper is not None else Dir()

    # --- lookup -----------------------------------------------------------------------
    @property
    def layers(self) -> list[Dir]:
        return [self.upper, *self.lowers]

    def root(self) -> _Merged:
        parts: list[tuple[int, Inode | Dir]] = []
        for i, d in enumerate(self.layers):
            parts.append((i, d))
            if d.opaque and i > 0:
                break
        return _Merged(parts)

    @staticmethod
    def _child(parent: _Merged, name: bytes, *, lower_only: bool = False) -> _Merged | None:
        parts: list[tuple[int, Inode | Dir]] = []
        for i, d in parent.parts:
            if lower_only and i == 0:
                continue
            assert isinstance(d, Dir)
            node = d.children.get(name)
            if node is None:
                continue
            if isinstance(node, _Whiteout):
                break
            if isinstance(node, Dir):
                if parts and not isinstance(parts[0][1], Dir):
                    break
                parts.append((i, node))
                if node.opaque:
                    break
            else:
                if not parts:
                    parts.append((i, node))
                break
        return _Merged(parts) if parts else None

    def lookup(self, path: bytes) -> _Merged | None:
        """Resolve a merged path without following symlinks (None if absent)."""
        cur: _Merged | None = self.root()
        for name in split(path):
            if cur is None or not cur.is_dir:
                return None
            cur = self._child(cur, name)
        return cur

    def _parent(self, path: bytes) -> tuple[_Merged, bytes, bytes]:
        """Walk to the parent dir like the executor does (O_DIRECTORY|O_NOFOLLOW per part)."""
        comps = split(path)
        if not comps:
            raise OpError(errno.EBUSY)
        cur = self.root()
        for name in comps[:-1]:
            nxt = self._child(cur, name)
            if nxt is None:
                raise OpError(errno.ENOENT)
            if not nxt.is_dir:
                raise OpError(errno.ENOTDIR)
            cur = nxt
        return cur, b"/".join(comps[:-1]), comps[-1]

    def listdir(self, d: _Merged) -> list[bytes]:
        names: set[bytes] = set()
        for _, part in d.parts:
            assert isinstance(part, Dir)
            names.update(part.children)
        return sorted(n for n in names if self._child(d, n) is not None)

    # --- copy-up --------------------------------------------------------------------
    def _upper_dir(self, path: bytes) -> Dir:
        """Copy up the merged dir at ``path`` and its parents; return its upper part."""
        cur = self.root()
        updir = self.upper
        for name in split(path):
            nxt = self._child(cur, name)
            assert nxt is not None and nxt.is_dir
            existing = updir.children.get(name)
            if not isinstance(existing, Dir):
                top = nxt.top
                assert isinstance(top, Dir)
                existing = Dir(top.mode, dict(top.xattrs))
                updir.children[name] = existing
            updir, cur = existing, nxt
        return updir

    def _copy_up(self, parent: bytes, name: bytes, m: _Merged) -> Inode | Dir:
        """Return the upper object for merged ``m`` at ``parent/name``, copying it up."""
        if m.parts[0][0] == 0:
            return m.top
        if m.is_dir:
            return self._upper_dir(join(parent, name))
        updir = self._upper_dir(parent)
        top = m.top
        assert isinstance(top, Inode)
        new = top.copy()
        updir.children[name] = new
        return new

    def _lower_positive(self, parent: _Merged, name: bytes) -> bool:
        return self._child(parent, name, lower_only=True) is not None

    def _remove_upper(self, updir: Dir, name: bytes) -> None:
        node = updir.children.pop(name, None)
        if isinstance(node, Inode):
            node.nlink -= 1

    def _place(self, parent: _Merged, ppath: bytes, name: bytes, node: Inode | Dir) -> None:
        """Put a new upper object at ``ppath/name`` (a whiteout there is replaced)."""
        updir = self._upper_dir(ppath)
        if isinstance(node, Dir) and (self._lower_positive(parent, name)
                                      or isinstance(updir.children.get(name), _Whiteout)):
            node.opaque = True  # mkdir over a whiteout: hide what the lowers still hold
        updir.children[name] = node

    # --- operations ------------------------------------------------------------------
    def _open_write(self, path: bytes) -> Inode:
        """open(O_WRONLY|O_NOFOLLOW|O_NONBLOCK) of an existing object, copying it up."""
        parent, ppath, name = self._parent(path)
        m = self._child(parent, name)
        if m is None:
            raise OpError(errno.ENOENT)
        self._check_writable(m)
        up = self._copy_up(ppath, name, m)
        assert isinstance(up, Inode)
        return up

    @staticmethod
    def _check_writable(m: _Merged) -> None:
        top = m.top
        if isinstance(top, Dir):
            raise OpError(errno.EISDIR)
        if top.kind == "symlink":
            raise OpError(errno.ELOOP)
        if top.kind == "fifo":
            raise OpError(errno.ENXIO)  # O_NONBLOCK write-open of a fifo without reader

    def create(self, path: bytes, data: bytes) -> None:
        """open(O_WRONLY|O_CREAT|O_TRUNC|O_NOFOLLOW|O_NONBLOCK, 0o644) + write."""
        parent, ppath, name = self._parent(path)
        m = self._child(parent, name)
        if m is None:
            self._place(parent, ppath, name, Inode("file", 0o644 & ~UMASK, data))
            return
        self._check_writable(m)
        up = self._copy_up(ppath, name, m)
        assert isinstance(up, Inode)
        up.data = data

    def write(self, path: bytes, offset: int, data: bytes) -> None:
        """pwrite(data, offset) on an O_WRONLY fd."""
        up = self._open_write(path)
        if not data:
            return  # a zero-length pwrite does not extend the file
        buf = bytearray(up.data)
        if offset > len(buf):
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset:offset + len(data)] = data
        up.data = bytes(buf)

    def append(self, path: bytes, data: bytes) -> None:
        up = self._open_write(path)
        up.data += data

    def truncate(self, path: bytes, size: int) -> None:
        up = self._open_write(path)
        up.data = up.data[:size].ljust(size, b"\0")

    def unlink(self, path: bytes) -> None:
        parent, ppath, name = self._parent(path)
        m = self._child(parent, name)
        if m is None:
            raise OpError(errno.ENOENT)
        if m.is_dir:
            raise OpError(errno.EISDIR)
        self._remove(parent, ppath, name)

    def _remove(self, parent: _Merged, ppath: bytes, name: bytes) -> None:
        lower = self._lower_positive(parent, name)
        updir = self._upper_dir(ppath)
        self._remove_upper(updir, name)
        if lower:
            updir.children[name] = WHITEOUT

    def rmdir(self, path: bytes) -> None:
        parent, ppath, name = self._parent(path)
        m = self._child(parent, name)
        if m is None:
            raise OpError(errno.ENOENT)
        if not m.is_dir:
            raise OpError(errno.ENOTDIR)
        if self.listdir(m):
            raise OpError(errno.ENOTEMPTY)
        self._remove(parent, ppath, name)

    def mkdir(self, path: bytes, mode: int) -> None:
        parent, ppath, name = self._parent(path)
        if self._child(parent, name) is not None:
            raise OpError(errno.EEXIST)
        self._place(parent, ppath, name, Dir(mode & ~UMASK & 0o7777))

    def symlink(self, target: bytes, path: bytes) -> None:
        parent, ppath, name = self._parent(path)
        if self._child(parent, name) is not None:
            raise OpError(errno.EEXIST)
        self._place(parent, ppath, name, Inode("symlink", 0o777, target=target))

    def link(self, src: bytes, dst: bytes) -> None:
        """linkat(src, dst, 0): hardlink without following a symlink src."""
        sparent, sppath, sname = self._parent(src)
        dparent, dppath, dname = self._parent(dst)
        sm = self._child(sparent, sname)
        if sm is None:
            raise OpError(errno.ENOENT)
        if self._child(dparent, dname) is not None:
            raise OpError(errno.EEXIST)
        if sm.is_dir:
            raise OpError(errno.EPERM)
        up = self._copy_up(sppath, sname, sm)
        assert isinstance(up, Inode)
        up.nlink += 1
        dparent = self._parent(dst)[0]  # re-resolve: the copy-up may have changed parts
        self._place(dparent, dppath, dname, up)

    def rename(self, src: bytes, dst: bytes) -> None:
        """rename(2) with the VFS's checks first, then overlayfs's (EXDEV, ENOTEMPTY)."""
        sparent, sppath, sname = self._parent(src)
        dparent, dppath, dname = self._parent(dst)
        sm = self._child(sparent, sname)
        if sm is None:
            raise OpError(errno.ENOENT)
        spath, dpath = join(sppath, sname), join(dppath, dname)
        if (dpath + b"/").startswith(spath + b"/") and dpath != spath:
            raise OpError(errno.EINVAL)  # moving a dir into itself
        if (spath + b"/").startswith(dpath + b"/") and dpath != spath:
            raise OpError(errno.ENOTEMPTY)  # target is an ancestor of the source
        dm = self._child(dparent, dname)
        if dm is not None and dm.top is sm.top and (dm.parts[0][0] == 0 or spath == dpath):
            # The same overlay inode: rename(2) does nothing. Lower hardlinks are not one
            # overlay inode (without index their link breaks on copy-up), upper ones are.
            return
        if dm is not None:
            if sm.is_dir and not dm.is_dir:
                raise OpError(errno.ENOTDIR)
            if not sm.is_dir and dm.is_dir:
                raise OpError(errno.EISDIR)
        if sm.is_dir and sm.has_lower:
            raise OpError(errno.EXDEV)  # redirect_dir=off
        if dm is not None and dm.is_dir and self.listdir(dm):
            raise OpError(errno.ENOTEMPTY)
        up = self._copy_up(sppath, sname, sm)
        # Detach the source, leaving a whiteout if a lower part shows through.
        sparent = self._parent(src)[0]
        self._remove(sparent, sppath, sname)
        if isinstance(up, Inode):
            up.nlink += 1  # _remove dropped the source name's link; it moves instead
        dparent = self._parent(dst)[0]
        dup = self._upper_dir(dppath)
        self._remove_upper(dup, dname)
        if isinstance(up, Dir):
            up.opaque = up.opaque or self._lower_positive(dparent, dname)
        dup.children[dname] = up

    def chmod(self, path: bytes, mode: int) -> None:
        """open(O_RDONLY|O_NOFOLLOW|O_NONBLOCK) + fchmod."""
        m = self._open_meta(path)
        _, ppath, name = self._parent(path)
        up = self._copy_up(ppath, name, m)
        up.mode = mode & 0o7777

    def _open_meta(self, path: bytes) -> _Merged:
        parent, _, name = self._parent(path)
        m = self._child(parent, name)
        if m is None:
            raise OpError(errno.ENOENT)
        top = m.top
        if isinstance(top, Inode) and top.kind == "symlink":
            raise OpError(errno.ELOOP)
        return m

    def _xattr_target(self, path: bytes) -> _Merged:
        m = self._open_meta(path)
        top = m.top
        if isinstance(top, Inode) and top.kind != "file":
            raise OpError(errno.EPERM)  # user.* xattrs only on regular files and dirs
        return m

    def setxattr(self, path: bytes, name: bytes, value: bytes) -> None:
        m = self._xattr_target(path)
        _, ppath, base = self._parent(path)
        self._copy_up(ppath, base, m).xattrs[name] = value

    def removexattr(self, path: bytes, name: bytes) -> None:
        m = self._xattr_target(path)
        if name not in m.top.xattrs:
            raise OpError(errno.ENODATA)  # checked on the lower: no copy-up
        _, ppath, base = self._parent(path)
        del self._copy_up(ppath, base, m).xattrs[name]

    def fd_copyup(self, path: bytes, data: bytes) -> bytes:
        """Open read-only, then write ``data`` at 0 via a second fd; what the first fd reads."""
        m = self._open_meta(path)
        if m.is_dir:
            raise OpError(errno.EISDIR)
        self.write(path, 0, data)
        after = self.lookup(path)
        assert after is not None and isinstance(after.top, Inode)
        return after.top.data

    # --- observation -----------------------------------------------------------------
    def entry(self, m: _Merged) -> Entry:
        top = m.top
        if isinstance(top, Dir):
            if len(m.parts) > 1:
                nlink = 1  # merged dirs: the kernel does not count subdirs
            else:
                nlink = 2 + sum(isinstance(c, Dir) for c in top.children.values())
            return Entry("dir", stat.S_IFDIR | top.mode, nlink, None, None, None,
                         tuple(sorted(top.xattrs.items())))
        size = len(top.target) if top.kind == "symlink" else len(top.data)
        sha = hashlib.sha256(top.data).hexdigest() if top.kind == "file" else None
        return Entry(top.kind, _TYPE_BITS[top.kind] | top.mode, top.nlink,
                     size if top.kind != "fifo" else 0, sha,
                     top.target if top.kind == "symlink" else None,
                     tuple(sorted(top.xattrs.items())))

    def walk(self) -> Iterator[tuple[bytes, _Merged]]:
        stack: list[tuple[bytes, _Merged]] = [(b"", self.root())]
        while stack:
            path, m = stack.pop()
            yield path, m
            if m.is_dir:
                for name in self.listdir(m):
                    child = self._child(m, name)
                    assert child is not None
                    stack.append((join(path, name), child))

    def snapshot(self) -> Snapshot:
        """The merged tree as a user of the mount sees it."""
        return {path: self.entry(m) for path, m in self.walk()}

    def paths(self) -> list[bytes]:
        """Every merged path except the root, sorted (for drawing operation targets)."""
        return sorted(p for p, _ in self.walk() if p)
