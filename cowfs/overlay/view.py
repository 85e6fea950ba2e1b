"""The read side of the overlay core: layer stack, lookup, getattr, readdir, xattrs, statfs.

Owns: opening the layer stack, probing a name through the layers (merge, opaque, whiteouts
of every dialect), inode numbering and the inode table. Synchronous, not thread-safe; no
FUSE, no trio. Mutations live in ``ops.py`` (``OverlayCore``: copy-up, create) and
``modify.py`` (``Overlay``: remove, rename, attributes) on top of this class.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence, Set
from dataclasses import dataclass
from typing import TypeVar

from cowfs import format as fmt
from cowfs._sys.openat2 import open_beneath, rmtree_at
from cowfs.errors import MountError
from cowfs.overlay.layer import (
    Layer,
    Path,
    check_name,
    getxattr_at,
    listdir_fd,
    listxattr_at,
    lstat_at,
)
from cowfs.overlay.node import ROOT_INO, Inode, InodeTable
from cowfs.overlay.whiteout import DirMarks, dir_marks, has_wh_file, is_whiteout_entry

log = logging.getLogger(__name__)
T = TypeVar("T")

WORK_SUBDIR = b"work"
"""Temp objects live in WORKDIR/work, the name the kernel uses too (it wipes it at mount)."""

_LISTINGS_KEPT = 8
"""Dirs whose readdir probes are kept for lookup_entry (bounded memory)."""
_INO_BITS = 48
"""With layers on several filesystems, ino = real ino | (device index << 48) (like xino)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A name probed through the layer stack of its parent."""

    where: tuple[int, ...]
    st: os.stat_result
    key: tuple[int, int]
    """(st_dev, st_ino) that numbers the object: its recorded origin, else itself."""
    xwh: frozenset[int]


def _stat_with(st: os.stat_result, *, ino: int, dev: int, nlink: int | None = None
               ) -> os.stat_result:
    if _FULL_TUPLE:  # one tuple of every field: ~3x cheaper than the dict form
        return os.stat_result(
            (st.st_mode, ino, dev, st.st_nlink if nlink is None else nlink, st.st_uid,
             st.st_gid, st.st_size, st[7], st[8], st[9], st.st_atime, st.st_mtime,
             st.st_ctime, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_blksize,
             st.st_blocks, st.st_rdev))
    return os.stat_result(
        (st.st_mode, ino, dev, st.st_nlink if nlink is None else nlink, st.st_uid, st.st_gid,
         st.st_size, st.st_atime_ns // 10**9, st.st_mtime_ns // 10**9,
         st.st_ctime_ns // 10**9),
        {"st_atime": st.st_atime, "st_mtime": st.st_mtime, "st_ctime": st.st_ctime,
         "st_atime_ns": st.st_atime_ns, "st_mtime_ns": st.st_mtime_ns,
         "st_ctime_ns": st.st_ctime_ns, "st_blksize": st.st_blksize,
         "st_blocks": st.st_blocks, "st_rdev": st.st_rdev})


def _full_tuple_ok() -> bool:
    """True if os.stat_result takes all 19 Linux fields as one tuple in this order."""
    if (os.stat_result.n_fields, os.stat_result.n_sequence_fields) != (19, 10):
        return False
    vals = tuple(range(1, 20))
    r = os.stat_result(vals)
    names = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns",
             "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev")
    return all(getattr(r, n) == v for n, v in zip(names, vals[10:], strict=True))


_FULL_TUPLE = _full_tuple_ok()


def _parse_origin(raw: bytes | None) -> tuple[int, int] | None:
    if not raw:
        return None
    dev, sep, ino = raw.partition(b":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return None
    return int(dev), int(ino)


class OverlayView:
    """Layer stack and read-only operations; see ``Overlay`` for the full API."""

    def __init__(self, lowerdirs: Sequence[str], upperdir: str | None = None,
                 workdir: str | None = None, *, userxattr: bool = False,
                 fsync: bool = True) -> None:
        if not lowerdirs:
            raise MountError("open overlay: at least one lowerdir is needed")
        if (upperdir is None) != (workdir is None):
            raise MountError("open overlay: upperdir and workdir go together")
        self.userxattr = userxattr
        self.do_fsync = fsync
        self.invalidations: list[tuple[int, bytes | None]] = []
        """Kernel caches made stale by side effects, for the FUSE adapter to drain:
        ``(ino, None)``: the attributes of INO changed (copy-up of a dir or of a lower
        hardlink: nlink, size); ``(parent_ino, name)``: NAME no longer means that inode."""
        self.layers: list[Layer] = []
        self.work_fd = -1
        self._work_lock_fd = -1
        try:
            self._open_layers(list(lowerdirs), upperdir, workdir)
        except BaseException:
            self.close()
            raise
        self.upper: Layer | None = self.layers[0] if upperdir is not None else None
        devs: dict[int, int] = {}
        for layer in self.layers:
            devs.setdefault(layer.dev, len(devs))
        self._devidx = devs
        self.dev = self.layers[0].dev
        top = self.layers[0]
        rst = os.fstat(top.root_fd)
        root_key = self._number((rst.st_dev, rst.st_ino))
        self._root_n = root_key if root_key is not None else ROOT_INO
        xwh = frozenset(i for i, layer in enumerate(self.layers)
                        if dir_marks(layer.root_fd, None).xwhiteouts)
        root = Inode(ROOT_INO, tuple(range(len(self.layers))), (rst.st_dev, rst.st_ino),
                     True, xwh)
        self.table = InodeTable(root)
        self.generation = 0
        """Bumped by every mutation; cached readdir probes are valid within one value."""
        self._listings: dict[int, tuple[int, dict[bytes, Entry]]] = {}

    def _open_layers(self, lowers: list[str], upperdir: str | None,
                     workdir: str | None) -> None:
        if upperdir is not None and workdir is not None:
            try:
                self.layers.append(Layer.open(0, upperdir, upper=True))
                wfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise MountError(f"open overlay upper/work: {exc}") from exc
            self._work_lock_fd = wfd
            if os.fstat(wfd).st_dev != self.layers[0].dev:
                raise MountError(f"open overlay: workdir {workdir} is not on the same "
                                 f"filesystem as upperdir {upperdir}")
            try:
                fcntl.flock(wfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise MountError(f"open overlay: workdir {workdir} is in use") from exc
            self.work_fd = self._prepare_work(wfd)
        for path in lowers:
            try:
                self.layers.append(Layer.open(len(self.layers), path, upper=False))
            except OSError as exc:
                raise MountError(f"open overlay lowerdir {path}: {exc}") from exc

    def _prepare_work(self, wfd: int) -> int:
        """Create (or empty) WORKDIR/work, where every object is prepared before rename."""
        try:
            os.mkdir(WORK_SUBDIR, 0o700, dir_fd=wfd)
        except FileExistsError:
            pass
        fd = open_beneath(wfd, WORK_SUBDIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        for name in listdir_fd(fd):
            log.info("overlay: removing stale work entry %r", name)
            rmtree_at(fd, name)
        return fd

    def close(self) -> None:
        for layer in self.layers:
            layer.close()
        for fd in (self.work_fd, self._work_lock_fd):
            if fd >= 0:
                os.close(fd)
        self.work_fd = self._work_lock_fd = -1
        if hasattr(self, "table"):
            self.table.clear()

    # --- numbering ------------------------------------------------------------------
    def _number(self, key: tuple[int, int]) -> int | None:
        """Stable inode number of a (dev, ino) key, or None if it cannot be represented."""
        dev, ino = key
        idx = self._devidx.get(dev)
        if idx is None:
            return None
        if len(self._devidx) > 1:
            if ino >> _INO_BITS:
                return None
            ino |= idx << _INO_BITS
        return ino

    def _ino_of(self, key: tuple[int, int]) -> int | None:
        n = self._number(key)
        if n is None:
            return None
        # Root is always ROOT_INO: swap numbers with whatever object would have been 1.
        if n == self._root_n:
            return ROOT_INO
        if n == ROOT_INO:
            return self._root_n
        return n

    def _key_at(self, dfd: int, name: bytes | None, st: os.stat_result) -> tuple[int, int]:
        # Only the mode's namespace: the origin is written by the same mode that reads it.
        origin = _parse_origin(getxattr_at(dfd, name, fmt.origin_xattr(self.userxattr)))
        if origin is not None and origin[0] in self._devidx:
            return origin
        return st.st_dev, st.st_ino

    # --- probing --------------------------------------------------------------------
    def path_of(self, inode: Inode) -> Path:
        return self.table.path(inode)

    def probe(self, parent: Inode, name: bytes,
              listing: dict[int, set[bytes]] | None = None) -> Entry | None:
        """Find NAME in the merged dir PARENT: top-down, non-dirs hide, dirs merge.

        ``listing`` (layer → names, from readdir) lets layers without NAME be skipped
        without a syscall.
        """
        ppath = self.path_of(parent)
        found: list[int] = []
        top: os.stat_result | None = None
        key: tuple[int, int] | None = None
        upper_key: tuple[int, int] | None = None
        xwh: set[int] = set()
        for li in parent.where:
            layer = self.layers[li]
            names: Set[bytes] | None
            if listing is not None:
                names = listing.get(li)
            else:
                names = None if layer.upper else layer.names(ppath)
                if names is None and not layer.upper:
                    continue  # no such dir in this lower
            if names is not None and name not in names:
                if fmt.WH_PREFIX + name in names:
                    break
                continue
            dfd = layer.borrow_dir(ppath)
            if dfd is None:
                continue
            st = lstat_at(dfd, name)
            if st is None:
                if has_wh_file(dfd, name):
                    break
                continue
            if is_whiteout_entry(dfd, name, st, li in parent.xwh):
                break
            if not stat.S_ISDIR(st.st_mode):
                if found:
                    break  # a dir above hides a non-dir below
                return Entry((li,), st, self._key_at(dfd, name, st), frozenset())
            if top is None:
                top = st
            found.append(li)
            if layer.upper:
                upper_key = self._key_at(dfd, name, st)
            elif key is None:
                key = self._key_at(dfd, name, st)
            marks: DirMarks = dir_marks(dfd, name)
            if marks.xwhiteouts:
                xwh.add(li)
            # AUFS: NAME beside .wh.NAME in one layer = deleted then recreated here.
            if marks.opaque or has_wh_file(dfd, name):
                break
        if top is None:
            return None
        chosen = key or upper_key
        assert chosen is not None
        return Entry(tuple(found), top, chosen, frozenset(xwh))

    def lower_has(self, parent: Inode, name: bytes) -> bool:
        """True if a lower layer of PARENT shows NAME (so removing it needs a whiteout)."""
        ppath = self.path_of(parent)
        for li in parent.where:
            layer = self.layers[li]
            if layer.upper:
                continue
            dfd = layer.borrow_dir(ppath)
            if dfd is None:
                continue
            st = lstat_at(dfd, name)
            if st is None:
                if has_wh_file(dfd, name):
                    return False
                continue
            return not is_whiteout_entry(dfd, name, st, li in parent.xwh)
        return False

    def _inode_for(self, parent: Inode, name: bytes, ent: Entry) -> Inode:
        """The table's inode for a probed entry (existing alias, hardlink, or new)."""
        cur = self.table.child(parent, name)
        if cur is not None:
            return cur
        real = (ent.st.st_dev, ent.st.st_ino)
        ino = self._ino_of(ent.key)
        if ino is not None:
            other = self.table.by_ino.get(ino)
            if other is None:
                inode = Inode(ino, ent.where, real, stat.S_ISDIR(ent.st.st_mode), ent.xwh)
                self.table.attach(parent, name, inode)
                return inode
            if other.real == real and not other.is_dir and other.aliases:
                # A hardlink of a live inode (an inode with no name left may share a
                # recycled st_ino with this new object: that is a collision, not a link).
                self.table.attach(parent, name, other)
                return other
        inode = Inode(self.table.transient_ino(), ent.where, real,
                      stat.S_ISDIR(ent.st.st_mode), ent.xwh)
        self.table.attach(parent, name, inode)
        return inode

    def child_inode(self, parent: Inode, name: bytes) -> Inode:
        """Inode of PARENT/NAME, creating the table entry (no lookup count); ENOENT."""
        return self._child(parent, name)[0]

    def _child(self, parent: Inode, name: bytes) -> tuple[Inode, os.stat_result | None]:
        """``child_inode`` plus the stat the probe just made (None if none was made)."""
        check_name(name)
        if not parent.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory", name)
        cur = self.table.child(parent, name)
        if cur is not None:
            if len(cur.aliases) > 1:
                self.table.attach(parent, name, cur)  # reach it through this name now
            return cur, None
        if fmt.is_wh_name(name):
            raise OSError(errno.ENOENT, "reserved whiteout name", name)
        ent = self.probe(parent, name)
        if ent is None:
            raise OSError(errno.ENOENT, "no such entry", name)
        return self._inode_for(parent, name, ent), ent.st

    # --- stat -----------------------------------------------------------------------
    def raw_stat(self, inode: Inode) -> os.stat_result:
        """lstat of the top real object of INODE."""
        layer = self.layers[inode.where[0]]
        if inode is self.table.root:
            return os.fstat(layer.root_fd)
        path = self.path_of(inode)
        return layer.stat_in(path[:-1], path[-1])

    def stat_of(self, inode: Inode) -> os.stat_result:
        prev = inode.reported
        if (prev is not None and prev[1] is inode.where and inode.aliases
                and not self.layers[inode.where[0]].upper):
            # A lower object cannot change while mounted (the layers are immutable, and
            # the core opens lower files O_NOATIME like the kernel): its last report holds
            # for as long as it has a name (unlinked, it reports nlink 0 below).
            inode.last_stat = prev[2]
            return prev[2]
        try:
            st = self.raw_stat(inode)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not inode.aliases and inode.last_stat:
                return _stat_with(inode.last_stat, ino=inode.ino, dev=self.dev, nlink=0)
            raise
        return self._report(inode, st)

    def _report(self, inode: Inode, st: os.stat_result) -> os.stat_result:
        """The stat the overlay reports for INODE whose top object has stat ST.

        The same real stat (every field, ns times included) on the same layer stack gives
        the very same object back, so repeated lookups (hot walks) build nothing and a
        caller may cache what it derives from it by identity.
        """
        prev = inode.reported
        if (prev is not None and prev[0] == st and prev[1] is inode.where
                and prev[0].st_mtime_ns == st.st_mtime_ns
                and prev[0].st_ctime_ns == st.st_ctime_ns
                and prev[0].st_atime_ns == st.st_atime_ns
                and prev[0].st_blocks == st.st_blocks):
            res = prev[2]
        else:
            nlink = 1 if inode.is_dir and len(inode.where) > 1 else None  # kernel: merged
            res = _stat_with(st, ino=inode.ino, dev=self.dev, nlink=nlink)
            inode.reported = (st, inode.where, res)
        inode.last_stat = res
        return res

    # --- public read API ------------------------------------------------------------
    def lookup(self, parent: int, name: bytes) -> os.stat_result:
        """Look NAME up in dir PARENT; +1 lookup count on success (ENOENT, ENOTDIR)."""
        pinode = self.table.get(parent)
        inode, fresh = self._child(pinode, name)
        if not inode.aliases or inode.aliases[-1] != (pinode, name):
            self.table.attach(pinode, name, inode)  # most recent name is used to reach it
        if fresh is not None and (fresh.st_dev, fresh.st_ino) == inode.real:
            st = self._report(inode, fresh)  # the probe's stat is as fresh as any
        else:
            st = self.stat_of(inode)
        inode.lookups += 1
        return st

    def forget(self, ino: int, nlookup: int) -> None:
        """Drop NLOOKUP lookup counts of INO; never raises."""
        try:
            if ino != ROOT_INO:
                self.table.forget(ino, nlookup)
        except Exception:
            log.exception("overlay: forget(%d, %d) failed", ino, nlookup)

    def getattr(self, ino: int) -> os.stat_result:
        return self.stat_of(self.table.get(ino))

    def readlink(self, ino: int) -> bytes:
        inode = self.table.get(ino)
        if inode is self.table.root:
            raise OSError(errno.EINVAL, "not a symlink")
        path = self.path_of(inode)
        with self.layers[inode.where[0]].dir(path[:-1]) as dfd:
            return os.readlink(path[-1], dir_fd=dfd)

    def readdir(self, ino: int) -> list[tuple[bytes, os.stat_result]]:
        """Merged listing (no '.', '..', whiteouts, .wh.*); lookup counts unchanged."""
        out: list[tuple[bytes, os.stat_result]] = []
        for name, child, ent, cino in self._scan(ino):
            if child is not None:
                out.append((name, self.stat_of(child)))
            else:
                assert ent is not None
                nlink = 1 if stat.S_ISDIR(ent.st.st_mode) and len(ent.where) > 1 else None
                out.append((name, _stat_with(ent.st, ino=cino, dev=self.dev, nlink=nlink)))
        return out

    def list_entries(self, ino: int) -> list[tuple[bytes, int, int]]:
        """``readdir`` as (name, st_ino, st_mode): what a directory listing reply needs,
        without building a stat per entry (attributes come from ``lookup_entries``)."""
        out: list[tuple[bytes, int, int]] = []
        for name, child, ent, cino in self._scan(ino):
            if child is not None:
                out.append((name, child.ino, self.stat_of(child).st_mode))
            else:
                assert ent is not None
                out.append((name, cino, ent.st.st_mode))
        return out

    def _scan(self, ino: int) -> list[tuple[bytes, Inode | None, Entry | None, int]]:
        """Merged names of dir INO, each with its tracked inode or its fresh probe.

        (name, child, None, 0) for a child the table tracks, (name, None, probe, ino)
        otherwise. The probes are kept for ``lookup_entry`` until the next mutation.
        """
        inode = self.table.get(ino)
        if not inode.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        path = self.path_of(inode)
        names: list[bytes] = []
        seen: set[bytes] = set()
        listing: dict[int, set[bytes]] = {}
        for li in inode.where:
            dfd = self.layers[li].borrow_dir(path)
            if dfd is None:
                continue
            layer_names = listdir_fd(dfd)
            listing[li] = set(layer_names)
            for name in sorted(layer_names):
                if name not in seen and not fmt.is_wh_name(name):
                    seen.add(name)
                    names.append(name)
        out: list[tuple[bytes, Inode | None, Entry | None, int]] = []
        probed: dict[bytes, Entry] = {}
        for name in names:
            child = self.table.child(inode, name)
            if child is not None:
                out.append((name, child, None, 0))
                continue
            ent = self.probe(inode, name, listing)
            if ent is None:
                continue  # whited out
            cino = self._ino_of(ent.key)
            other = self.table.by_ino.get(cino) if cino is not None else None
            if cino is None or (other is not None and other.real != (ent.st.st_dev,
                                                                      ent.st.st_ino)):
                # Would collide or is unrepresentable: give it its table inode now.
                child = self._inode_for(inode, name, ent)
                self.table.pin(child)
                out.append((name, child, None, 0))
                continue
            out.append((name, None, ent, cino))
            probed[name] = ent
        # Keep the probes for lookup_entry (readdirplus), valid until the next mutation.
        self._listings[ino] = (self.generation, probed)
        while len(self._listings) > _LISTINGS_KEPT:
            del self._listings[next(iter(self._listings))]
        return out

    def lookup_entry(self, parent: int, name: bytes) -> os.stat_result:
        """``lookup`` for an entry returned by ``readdir`` (readdirplus): +1 lookup.

        Reuses the layer probe ``readdir`` made when the core changed nothing since (one
        stat instead of a walk through every layer), so st_ino is the one listed.
        """
        pinode = self.table.get(parent)
        child = pinode.children.get(name)
        if child is not None:
            # Already tracked (a repeated walk): no probe, no name check, one lstat
            # through the cached parent dir fd.
            if child.aliases[-1] != (pinode, name):
                self.table.attach(pinode, name, child)  # reach it through this name now
            st = self.stat_of(child)
            child.lookups += 1
            return st
        cached = self._listings.get(parent)
        ent = cached[1].get(name) if cached and cached[0] == self.generation else None
        if ent is None:
            return self.lookup(parent, name)
        inode = self._inode_for(pinode, name, ent)
        if not self.layers[inode.where[0]].upper and (ent.st.st_dev,
                                                      ent.st.st_ino) == inode.real:
            st = self._report(inode, ent.st)  # a lower object: the probe's stat is current
        else:
            st = self.stat_of(inode)  # fresh: data written through an fd changes size/times
        inode.lookups += 1
        return st

    def lookup_entries(self, parent: int, names: Iterable[bytes]
                       ) -> Iterator[tuple[bytes, os.stat_result | None]]:
        """``lookup_entry`` for the entries of one dir, in order: +1 lookup per stat yielded.

        For a readdirplus reply: the parent's path is resolved once, and children the core
        already tracks (a repeated walk) cost one lstat through the layer's cached dir fd.
        None for a name gone since the listing. Stop iterating at any time (no count is
        taken for names not yet yielded).
        """
        pinode = self.table.get(parent)
        ppath = self.path_of(pinode)
        children = pinode.children
        layers = self.layers
        for name in names:
            child = children.get(name)
            if child is not None and child.aliases and child.aliases[-1] == (pinode, name):
                prev = child.reported
                if prev is not None and prev[1] is child.where and not layers[
                        child.where[0]].upper:
                    child.lookups += 1  # a lower object: its report holds (see stat_of)
                    yield name, prev[2]
                    continue
                try:
                    st = layers[child.where[0]].stat_in(ppath, name)
                except FileNotFoundError:
                    pass
                else:
                    res = self._report(child, st)
                    child.lookups += 1
                    yield name, res
                    continue
            try:
                yield name, self.lookup_entry(parent, name)
            except FileNotFoundError:
                yield name, None

    def open_existing(self, inode: Inode, flags: int) -> int:
        """Open the top real object of INODE with FLAGS (no copy-up)."""
        layer = self.layers[inode.where[0]]
        path = self.path_of(inode)
        flags &= ~(os.O_CREAT | os.O_EXCL)
        if inode is self.table.root:
            return open_beneath(layer.root_fd, b"", flags | os.O_DIRECTORY)
        return layer.open_in(path[:-1], path[-1], flags)  # lower files: O_NOATIME

    def _user_xattr_ok(self, inode: Inode, name: bytes, err: int) -> None:
        """VFS rule: user.* xattrs exist only on regular files and dirs."""
        if name.startswith(b"user.") and not inode.is_dir:
            mode = self.raw_stat(inode).st_mode
            if not stat.S_ISREG(mode):
                raise OSError(err, "user.* attributes only on files and dirs", name)

    def getxattr(self, ino: int, name: bytes) -> bytes:
        inode = self.table.get(ino)
        attr = self._xattr_name(name)
        self._user_xattr_ok(inode, name, errno.ENODATA)
        val = self._top_xattr(inode, lambda dfd, n: getxattr_at(dfd, n, attr))
        if val is None:
            raise OSError(errno.ENODATA, "no such attribute", name)
        return val

    def listxattr(self, ino: int) -> list[bytes]:
        inode = self.table.get(ino)
        raw = self._top_xattr(inode, listxattr_at)
        out: list[bytes] = []
        for attr in raw:
            if attr.startswith(fmt.TRUSTED_OVERLAY_ESCAPED) and not self.userxattr:
                out.append(fmt.TRUSTED_OVERLAY + attr[len(fmt.TRUSTED_OVERLAY_ESCAPED):])
            elif not fmt.is_hidden_xattr(attr):
                out.append(attr)
        return out

    def _xattr_name(self, name: bytes) -> bytes:
        """Map a user-visible xattr name to its on-disk name (EOPNOTSUPP for internal)."""
        if name.startswith(fmt.TRUSTED_OVERLAY) and not self.userxattr:
            # 6.7 nesting: the user's trusted.overlay.X lives as trusted.overlay.overlay.X
            return fmt.TRUSTED_OVERLAY_ESCAPED + name[len(fmt.TRUSTED_OVERLAY):]
        if fmt.is_hidden_xattr(name):
            raise OSError(errno.EOPNOTSUPP, "overlay-internal attribute", name)
        return name

    def _top_xattr(self, inode: Inode, fn: Callable[[int, bytes | None], T]) -> T:
        """Apply FN(dir_fd, name) to the top real object of INODE (root: name None)."""
        layer = self.layers[inode.where[0]]
        if inode is self.table.root:
            return fn(layer.root_fd, None)
        path = self.path_of(inode)
        with layer.dir(path[:-1]) as dfd:
            return fn(dfd, path[-1])

    def statfs(self) -> os.statvfs_result:
        return os.fstatvfs(self.layers[0].root_fd)

    def resolve(self, path: bytes) -> int:
        """Inode number of a merged path from the root (no lookup count; ENOENT)."""
        inode = self.table.root
        for name in path.split(b"/"):
            if name in (b"", b"."):
                continue
            inode = self.child_inode(inode, name)
            self.table.pin(inode)
        return inode.ino
