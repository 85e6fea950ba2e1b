"""The write side of the overlay core: copy-up, create, remove, rename, link, setattr, xattrs.

Owns: every mutation of the upper layer. Each new or copied-up object is prepared in
WORKDIR/work and renamed into the upper (prepare-then-rename); removals of lower entries
leave kernel whiteouts (char 0/0); opaque dirs get ``overlay.opaque=y``. Synchronous and
not thread-safe; no FUSE, no trio. Without an upper every mutation raises EROFS.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cowfs import format as fmt
from cowfs._sys.linux import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2
from cowfs._sys.openat2 import fd_path, rmtree_at
from cowfs.overlay.copyup import copy_attrs, copy_data, copy_xattrs, set_times
from cowfs.overlay.layer import Layer, check_name, lstat_at, open_noatime, setxattr_at
from cowfs.overlay.node import Inode
from cowfs.overlay.view import OverlayView
from cowfs.overlay.whiteout import (
    is_whiteout_entry,
    set_opaque,
)

log = logging.getLogger(__name__)

_SPECIAL = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
_OPEN_DROP = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOFOLLOW | os.O_DIRECTORY


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the owner of new objects. ``umask`` is applied by the core (idempotent
    when the kernel already applied it, as FUSE does)."""

    uid: int = 0
    gid: int = 0
    umask: int = 0o022


class OverlayCore(OverlayView):
    """Copy-up, open and create on top of the read side; ``Overlay`` adds the rest."""

    _tmp_counter = itertools.count()

    # --- helpers ---------------------------------------------------------------------
    def _need_upper(self) -> Layer:
        if self.upper is None:
            raise OSError(errno.EROFS, "overlay has no upper layer")
        return self.upper

    def _tmpname(self) -> bytes:
        return b"#cowfs.%d.%d" % (os.getpid(), next(self._tmp_counter))

    @contextmanager
    def _udir(self, inode: Inode) -> Iterator[int]:
        """O_PATH fd of dir INODE in the upper (which must exist there)."""
        upper = self._need_upper()
        with upper.dir(self.path_of(inode)) as fd:
            yield fd

    @contextmanager
    def _uparent(self, inode: Inode) -> Iterator[tuple[int, bytes | None]]:
        """(dir fd, name) of INODE's upper object; root gives (root fd, None)."""
        upper = self._need_upper()
        if inode is self.table.root:
            yield upper.root_fd, None
            return
        path = self.path_of(inode)
        with upper.dir(path[:-1]) as fd:
            yield fd, path[-1]

    def _has_upper(self, inode: Inode) -> bool:
        return self.upper is not None and inode.where[0] == 0

    def _commit(self, tmp: bytes, udfd: int, name: bytes) -> None:
        """Rename a prepared work object over NAME: replace a whiteout, else no-replace."""
        st = lstat_at(udfd, name)
        if st is not None and is_whiteout_entry(udfd, name, st, True):
            renameat2(self.work_fd, tmp, udfd, name, RENAME_EXCHANGE)
            rmtree_at(self.work_fd, tmp)  # the stale whiteout, now in work
        else:
            renameat2(self.work_fd, tmp, udfd, name, RENAME_NOREPLACE)

    def _prepared(self, build: Callable[[bytes], None], udfd: int, name: bytes,
                  finish: Callable[[bytes], None] | None = None) -> None:
        self.generation += 1
        tmp = self._tmpname()
        try:
            build(tmp)
            if finish is not None:
                finish(tmp)
            self._commit(tmp, udfd, name)
        except BaseException:
            rmtree_at(self.work_fd, tmp)
            raise

    def _origin_value(self, dfd: int, name: bytes, st: os.stat_result) -> bytes | None:
        """Origin to record on the copy of NAME: none for lower hardlinks (as the kernel
        without index: their copies get their own inode number)."""
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            return None
        dev, ino = self._key_at(dfd, name, st)
        return b"%d:%d" % (dev, ino)

    # --- copy-up ---------------------------------------------------------------------
    def ensure_upper_dir(self, inode: Inode) -> None:
        """Copy up dir INODE (parents first) so that it exists in the upper."""
        if self._has_upper(inode):
            return
        self._need_upper()
        if not inode.aliases:
            raise OSError(errno.ENOENT, "directory was removed")
        parent, _ = inode.aliases[-1]
        self.ensure_upper_dir(parent)
        self._copy_up_one(inode, data=True)

    def copy_up(self, inode: Inode, *, data: bool = True) -> None:
        """Copy up INODE (and its parents) into the upper; no-op if already there."""
        if inode.is_dir:
            self.ensure_upper_dir(inode)
            return
        if self._has_upper(inode):
            return
        self._need_upper()
        if not inode.aliases:
            raise OSError(errno.ENOENT, "file was removed")
        parent, _ = inode.aliases[-1]
        self.ensure_upper_dir(parent)
        self._copy_up_one(inode, data=data)

    def _copy_up_one(self, inode: Inode, *, data: bool) -> None:
        upper = self._need_upper()
        path = self.path_of(inode)
        name = path[-1]
        lower = self.layers[inode.where[0]]
        with lower.dir(path[:-1]) as ldfd, upper.dir(path[:-1]) as udfd:
            st = os.stat(name, dir_fd=ldfd, follow_symlinks=False)
            origin = self._origin_value(ldfd, name, st)
            wfd = self.work_fd

            def build(tmp: bytes) -> None:
                mode = st.st_mode
                if stat.S_ISREG(mode):
                    src = open_noatime(ldfd, name, os.O_RDONLY)
                    try:
                        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                      | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=wfd)
                        try:
                            if data:
                                copy_data(src, dst, st.st_size)
                            if self.do_fsync:
                                os.fsync(dst)
                        finally:
                            os.close(dst)
                    finally:
                        os.close(src)
                elif stat.S_ISLNK(mode):
                    os.symlink(os.readlink(name, dir_fd=ldfd), tmp, dir_fd=wfd)
                elif stat.S_ISDIR(mode):
                    os.mkdir(tmp, 0o700, dir_fd=wfd)
                else:
                    os.mknod(tmp, mode, st.st_rdev, dir_fd=wfd)
                copy_xattrs(ldfd, name, wfd, tmp)
                if origin is not None:
                    try:
                        setxattr_at(wfd, tmp, fmt.origin_xattr(self.userxattr), origin)
                    except OSError as exc:  # user.* is refused on symlinks and specials
                        if exc.errno not in (errno.EPERM, errno.ENOTSUP):
                            raise
                copy_attrs(wfd, tmp, st)

            pst = os.fstat(udfd)
            self._prepared(build, udfd, name)
            # As the kernel: copying a child up does not change its parent's times.
            set_times(udfd, None, pst.st_atime_ns, pst.st_mtime_ns)
            new = os.stat(name, dir_fd=udfd, follow_symlinks=False)
        inode.where = (0,) + (inode.where if inode.is_dir else ())
        inode.real = (new.st_dev, new.st_ino)
        if inode.is_dir or st.st_nlink > 1:
            self.invalidations.append((inode.ino, None))  # nlink/size seen so far changed
        if not inode.is_dir and len(inode.aliases) > 1:
            # Other names of a lower hardlink keep the lower file (no index, as the
            # kernel): they stop being this inode and get their own at the next lookup.
            keep = inode.aliases[-1]
            for p, n in inode.aliases[:-1]:
                if p.children.get(n) is inode:
                    del p.children[n]
                self.table.drop_name_node(p, n)
                self.invalidations.append((p.ino, n))
            inode.aliases[:] = [keep]
        log.debug("overlay: copied up %r", path)

    # --- open / create ---------------------------------------------------------------
    def open(self, ino: int, flags: int) -> int:
        """Open INO; write access or O_TRUNC copies up first. Returns an fd for the caller."""
        inode = self.table.get(ino)
        acc = flags & os.O_ACCMODE
        writing = acc != os.O_RDONLY or bool(flags & os.O_TRUNC)
        if inode.is_dir:
            if writing:
                raise OSError(errno.EISDIR, "is a directory")
            return self.open_existing(inode, flags)
        if writing:
            st = self.raw_stat(inode)
            if stat.S_IFMT(st.st_mode) not in _SPECIAL:  # the kernel never copies up those
                if self.upper is None:
                    raise OSError(errno.EROFS, "overlay has no upper layer")
                self.copy_up(inode, data=not flags & os.O_TRUNC)
        return self.open_existing(inode, flags & ~os.O_CREAT)

    def _new_mode(self, parent: Inode, mode: int, caller: Caller,
                  is_dir: bool) -> tuple[int, int]:
        """(mode, gid) of a new object: umask applied, setgid dirs inherited."""
        pst = self.raw_stat(parent)
        perm = stat.S_IMODE(mode) & ~caller.umask
        gid = caller.gid
        if pst.st_mode & stat.S_ISGID:
            gid = pst.st_gid
            if is_dir:
                perm |= stat.S_ISGID
        return perm, gid

    def _create_object(self, parent_ino: int, name: bytes, caller: Caller, perm: int,
                       make: Callable[[bytes], None], *, is_dir: bool = False,
                       is_link: bool = False) -> Inode:
        check_name(name)
        parent = self.table.get(parent_ino)
        if not parent.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        if fmt.is_wh_name(name):
            # .wh.* names would read back as AUFS whiteouts: refuse them (documented).
            raise OSError(errno.EINVAL, "reserved whiteout name", name)
        if self.table.child(parent, name) is not None or self.probe(parent, name):
            raise OSError(errno.EEXIST, "file exists", name)
        self._need_upper()
        self.ensure_upper_dir(parent)
        perm, gid = self._new_mode(parent, perm, caller, is_dir)
        with self._udir(parent) as udfd:
            ust = lstat_at(udfd, name)
            over_wh = ust is not None and is_whiteout_entry(udfd, name, ust, True)
            wfd = self.work_fd

            def finish(tmp: bytes) -> None:
                path = fd_path(wfd, tmp)
                try:
                    os.chown(path, caller.uid, gid, follow_symlinks=False)
                except PermissionError:
                    if os.geteuid() == 0:
                        raise
                if not is_link:
                    os.chmod(path, perm)
                if is_dir and over_wh:
                    # kernel: a dir made over a whiteout hides what the whiteout hid
                    set_opaque(wfd, tmp, self.userxattr)

            self._prepared(make, udfd, name, finish)
            st = os.stat(name, dir_fd=udfd, follow_symlinks=False)
        key = (st.st_dev, st.st_ino)
        ino = self._ino_of(key)
        if ino is None or ino in self.table.by_ino:
            ino = self.table.transient_ino()
        inode = Inode(ino, (0,), key, is_dir)
        self.table.attach(parent, name, inode)
        inode.lookups += 1
        return inode

    def create(self, parent: int, name: bytes, flags: int, mode: int,
               caller: Caller) -> tuple[int, os.stat_result]:
        """Create and open a regular file; +1 lookup. An existing file is opened (EEXIST
        with O_EXCL)."""
        pinode = self.table.get(parent)
        try:
            existing = self.child_inode(pinode, name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        else:
            if flags & os.O_EXCL:
                raise OSError(errno.EEXIST, "file exists", name)
            fd = self.open(existing.ino, flags)
            self.table.attach(pinode, name, existing)
            existing.lookups += 1
            return fd, self.stat_of(existing)
        fds: list[int] = []
        open_flags = (flags & ~_OPEN_DROP) | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW

        def make(tmp: bytes) -> None:
            fds.append(os.open(tmp, open_flags | os.O_CLOEXEC, 0o600, dir_fd=self.work_fd))

        try:
            inode = self._create_object(parent, name, caller, mode, make)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds[0], self.stat_of(inode)

    def mkdir(self, parent: int, name: bytes, mode: int, caller: Caller) -> os.stat_result:
        """Make a dir (+1 lookup); opaque over a whiteout or in a merge dir, as the kernel."""
        def make(tmp: bytes) -> None:
            os.mkdir(tmp, 0o700, dir_fd=self.work_fd)

        return self.stat_of(self._create_object(parent, name, caller, mode, make,
                                                is_dir=True))

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int,
              caller: Caller) -> os.stat_result:
        """Make a device node, fifo, socket or regular file (+1 lookup)."""
        fmt_bits = stat.S_IFMT(mode) or stat.S_IFREG
        if fmt_bits == stat.S_IFDIR:
            raise OSError(errno.EPERM, "mknod of a directory")

        def make(tmp: bytes) -> None:
            os.mknod(tmp, fmt_bits | 0o600, rdev, dir_fd=self.work_fd)

        return self.stat_of(self._create_object(parent, name, caller, mode, make))

    def symlink(self, parent: int, name: bytes, target: bytes,
                caller: Caller) -> os.stat_result:
        """Make a symlink (+1 lookup)."""
        def make(tmp: bytes) -> None:
            os.symlink(target, tmp, dir_fd=self.work_fd)

        return self.stat_of(self._create_object(parent, name, caller, 0o777, make,
                                                is_link=True))

    def link(self, ino: int, new_parent: int, new_name: bytes) -> os.stat_result:
        """Hardlink INO as NEW_PARENT/NEW_NAME (+1 lookup); copies the source up first."""
        check_name(new_name)
        inode = self.table.get(ino)
        np = self.table.get(new_parent)
        if not np.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        if self.table.child(np, new_name) is not None or self.probe(np, new_name):
            raise OSError(errno.EEXIST, "file exists", new_name)  # the VFS checks first
        if inode.is_dir:
            raise OSError(errno.EPERM, "hard link to a directory")
        if fmt.is_wh_name(new_name):
            raise OSError(errno.EINVAL, "reserved whiteout name", new_name)
        self._need_upper()
        self.copy_up(inode)
        self.ensure_upper_dir(np)
        with self._uparent(inode) as (sdfd, sname), self._udir(np) as udfd:
            assert sname is not None

            def make(tmp: bytes) -> None:
                os.link(sname, tmp, src_dir_fd=sdfd, dst_dir_fd=self.work_fd,
                        follow_symlinks=False)

            self._prepared(make, udfd, new_name)
        self.table.attach(np, new_name, inode)
        inode.lookups += 1
        return self.stat_of(inode)
