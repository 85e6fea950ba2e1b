"""Removal, rename and attribute changes of the overlay core; defines the public ``Overlay``.

Owns: unlink/rmdir (kernel whiteouts over lower entries, cleaning whiteouts out of removed
upper dirs), rename (files anywhere, pure-upper dirs, EXDEV for dirs with lower parts,
RENAME_NOREPLACE/RENAME_EXCHANGE), setattr, setxattr/removexattr, fsync. Synchronous, not
thread-safe; no FUSE, no trio.
"""

from __future__ import annotations

import errno
import os
import stat

from cowfs import format as fmt
from cowfs._sys.linux import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2
from cowfs._sys.openat2 import fd_path, open_beneath, rmtree_at
from cowfs.overlay.copyup import set_times
from cowfs.overlay.layer import (
    check_name,
    listdir_fd,
    lstat_at,
    removexattr_at,
    setxattr_at,
)
from cowfs.overlay.node import Inode
from cowfs.overlay.ops import Caller, OverlayCore
from cowfs.overlay.whiteout import (
    dir_marks,
    is_whiteout_entry,
    make_whiteout,
    set_opaque,
    whiteout_rename,
)

__all__ = ["Caller", "Overlay"]


class Overlay(OverlayCore):
    """Kernel-overlayfs semantics on real directories; the inode API of CONTRACTS.md §1.

    Not thread-safe: call it from one thread. Errors are ``OSError(errno)``.
    """

    # --- per-name nodes -------------------------------------------------------------
    def lookup_node(self, parent: int, name: bytes) -> tuple[int, os.stat_result]:
        """``lookup`` (+1 count) that also returns the node id of NAME.

        The node id is ``st_ino`` for everything but a name of a LOWER hardlinked file
        (no upper copy, lower ``st_nlink > 1``): kernel overlayfs without index gives each
        such name its own inode with a shared ``st_ino``, so each gets its own node id
        here. Every inode-number call accepts it (and then reaches the file through that
        name); ``forget`` takes it too. It goes stale (``ESTALE``) once that name stops
        naming the file (rename, unlink, or another name's copy-up splitting the group).
        A frontend keyed on ``st_ino`` (pyfuse3) cannot use it: see docs/fuse.md.
        """
        st = self.lookup(parent, name)
        pinode = self.table.get(parent)
        inode = pinode.children[name]
        if inode.is_dir or self._has_upper(inode) or st.st_nlink < 2:
            return inode.ino, st
        return self.table.name_node(pinode, name, inode), st

    # --- emptiness ------------------------------------------------------------------
    def has_visible_children(self, inode: Inode) -> bool:
        """True if the merged dir INODE shows any entry."""
        path = self.path_of(inode)
        listing: dict[int, set[bytes]] = {}
        for li in inode.where:
            dfd = self.layers[li].try_dir(path)
            if dfd is None:
                continue
            try:
                listing[li] = set(listdir_fd(dfd))
            finally:
                os.close(dfd)
        seen: set[bytes] = set()
        for names in listing.values():
            for name in names:
                if name in seen or fmt.is_wh_name(name):
                    continue
                seen.add(name)
                if (self.table.child(inode, name) is not None
                        or self.probe(inode, name, listing)):
                    return True
        return False

    def _clear_upper_dir(self, udfd: int, name: bytes) -> None:
        """Remove the leftovers (whiteouts, .wh. files) inside an upper dir being replaced."""
        sub = open_beneath(udfd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for child in listdir_fd(sub):
                rmtree_at(sub, child)
        finally:
            os.close(sub)

    # --- removal --------------------------------------------------------------------
    def _note_shared_lower(self, inode: Inode | None) -> None:
        """A name of a shared lower hardlink goes away: the kernel will drop the inode's
        link count, but the lower file's count (what getattr reports) does not change."""
        if inode is not None and len(inode.aliases) > 1 and not self._has_upper(inode):
            self.invalidations.append((inode.ino, None))

    def _remove(self, parent: Inode, name: bytes, child: Inode) -> None:
        self.generation += 1
        self.ensure_upper_dir(parent)
        self._note_shared_lower(child)
        if child.is_dir and self.upper is not None:
            self.upper.forget_dirs()
        need_wh = self.lower_has(parent, name)
        try:
            child.last_stat = self.stat_of(child)
        except OSError:
            pass
        with self._udir(parent) as udfd:
            if self._has_upper(child):
                if need_wh or child.is_dir:
                    # Move the object to work (leaving a whiteout if a lower shows NAME)
                    # and delete it there, with whatever whiteouts a dir still holds.
                    tmp = self._tmpname()
                    if need_wh:
                        whiteout_rename(udfd, name, self.work_fd, tmp, tmp_dfd=self.work_fd,
                                        tmp_name=self._tmpname())
                    else:
                        renameat2(udfd, name, self.work_fd, tmp, RENAME_NOREPLACE)
                    rmtree_at(self.work_fd, tmp)
                else:
                    os.unlink(name, dir_fd=udfd)
            else:
                self._prepared(lambda tmp: make_whiteout(self.work_fd, tmp), udfd, name)
        self.table.detach(parent, name)

    def unlink(self, parent: int, name: bytes) -> None:
        """Remove a non-dir; a lower one is hidden by a whiteout (EISDIR for dirs)."""
        self._need_upper()
        pinode = self.table.get(parent)
        child = self.child_inode(pinode, name)
        if child.is_dir:
            raise OSError(errno.EISDIR, "is a directory", name)
        self._remove(pinode, name, child)

    def rmdir(self, parent: int, name: bytes) -> None:
        """Remove a dir that is empty in the merged view (ENOTDIR, ENOTEMPTY)."""
        self._need_upper()
        pinode = self.table.get(parent)
        child = self.child_inode(pinode, name)
        if not child.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory", name)
        if self.has_visible_children(child):
            raise OSError(errno.ENOTEMPTY, "directory not empty", name)
        self._remove(pinode, name, child)

    # --- rename ---------------------------------------------------------------------
    def _is_ancestor(self, a: Inode, b: Inode) -> bool:
        """True if dir A is B or one of B's ancestors."""
        cur = b
        while True:
            if cur is a:
                return True
            if cur is self.table.root or not cur.aliases:
                return False
            cur = cur.aliases[-1][0]

    def _can_move(self, inode: Inode) -> bool:
        """redirect_dir=off: only pure-upper dirs may move (else EXDEV, as the kernel)."""
        return not inode.is_dir or (inode.where == (0,) and self.upper is not None)

    def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
               flags: int = 0) -> None:
        """rename(2) with RENAME_NOREPLACE (1) / RENAME_EXCHANGE (2)."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or (
                flags & RENAME_NOREPLACE and flags & RENAME_EXCHANGE):
            raise OSError(errno.EINVAL, "bad rename flags")
        check_name(name)
        check_name(new_name)
        self._need_upper()
        p = self.table.get(parent)
        np = self.table.get(new_parent)
        if not p.is_dir or not np.is_dir:  # the VFS resolves both parents first
            raise OSError(errno.ENOTDIR, "not a directory")
        src = self.child_inode(p, name)
        try:
            dst: Inode | None = self.child_inode(np, new_name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            dst = None
        if fmt.is_wh_name(new_name):
            raise OSError(errno.EINVAL, "reserved whiteout name", new_name)
        exchange = bool(flags & RENAME_EXCHANGE)
        if dst is not None and flags & RENAME_NOREPLACE:
            raise OSError(errno.EEXIST, "file exists", new_name)
        if dst is None and exchange:
            raise OSError(errno.ENOENT, "no such entry", new_name)
        if dst is src and dst is not None and (p, name) != (np, new_name) \
                and not src.is_dir and not self._has_upper(src):
            # Two names of a lower hardlink are two inodes to the kernel (no index): split
            # them by copying SRC's name up, then go on as with any two files.
            self.table.attach(p, name, src)
            self.copy_up(src)
            dst = self.child_inode(np, new_name)
        if dst is src:
            return  # the same file (or a hardlink of it): POSIX says do nothing
        if src.is_dir and self._is_ancestor(src, np):
            raise OSError(errno.EINVAL, "cannot move a directory into itself", name)
        if dst is not None:
            if exchange and dst.is_dir and self._is_ancestor(dst, p):
                raise OSError(errno.EINVAL, "cannot move a directory into itself", new_name)
            if not exchange:
                if dst.is_dir and self._is_ancestor(dst, p):
                    raise OSError(errno.ENOTEMPTY, "directory not empty", new_name)
                if src.is_dir and not dst.is_dir:
                    raise OSError(errno.ENOTDIR, "not a directory", new_name)
                if not src.is_dir and dst.is_dir:
                    raise OSError(errno.EISDIR, "is a directory", new_name)
        if not self._can_move(src) or (exchange and dst is not None
                                       and not self._can_move(dst)):
            raise OSError(errno.EXDEV, "directory has lower layers (redirect_dir=off)")
        if (dst is not None and dst.is_dir and not exchange and not self._can_move(dst)
                and self.has_visible_children(dst)):
            raise OSError(errno.ENOTEMPTY, "directory not empty", new_name)
        self.ensure_upper_dir(p)
        self.ensure_upper_dir(np)
        self.table.attach(p, name, src)  # reach SRC through this name
        self.copy_up(src)
        if dst is not None:
            self.table.attach(np, new_name, dst)
            if exchange:
                self.copy_up(dst)
        src_wh = not exchange and self.lower_has(p, name)
        self.generation += 1
        if self.upper is not None and (src.is_dir or (dst is not None and dst.is_dir)):
            self.upper.forget_dirs()  # a dir moves: cached paths below it go stale
        with self._udir(p) as udfd, self._udir(np) as nudfd:
            # kernel: a dir moved into a merge dir is made opaque first (a lower dir of
            # that name may show up there), even if the rename then fails; EXCHANGE both ways.
            if src.is_dir and len(np.where) > 1 and not dir_marks(udfd, name).opaque:
                set_opaque(udfd, name, self.userxattr)
            if (exchange and dst is not None and dst.is_dir and len(p.where) > 1
                    and not dir_marks(nudfd, new_name).opaque):
                set_opaque(nudfd, new_name, self.userxattr)
            if exchange:
                renameat2(udfd, name, nudfd, new_name, RENAME_EXCHANGE)
            else:
                if dst is not None and dst.is_dir and self._has_upper(dst) and len(dst.where) > 1:
                    self._clear_upper_dir(nudfd, new_name)
                tst = lstat_at(nudfd, new_name)
                if tst is not None and is_whiteout_entry(nudfd, new_name, tst, True):
                    # Over a whiteout: swap, and the whiteout lands where SRC was, which
                    # is just what a lower SRC needs (else it is removed).
                    renameat2(udfd, name, nudfd, new_name, RENAME_EXCHANGE)
                    if not src_wh:
                        os.unlink(name, dir_fd=udfd)
                elif src_wh:
                    whiteout_rename(udfd, name, nudfd, new_name, tmp_dfd=self.work_fd,
                                    tmp_name=self._tmpname())
                else:
                    renameat2(udfd, name, nudfd, new_name)
        if exchange and dst is not None:
            p.children.pop(name, None)
            np.children.pop(new_name, None)
            src.aliases.remove((p, name))
            dst.aliases.remove((np, new_name))
            self.table.drop_name_node(p, name)
            self.table.drop_name_node(np, new_name)
            self.table.attach(np, new_name, src)
            self.table.attach(p, name, dst)
        else:
            if dst is not None:
                self._note_shared_lower(dst)
                try:
                    dst.last_stat = self.stat_of(dst)
                except OSError:
                    pass
            self.table.move(p, name, np, new_name)

    # --- attributes -----------------------------------------------------------------
    def setattr(self, ino: int, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, size: int | None = None,
                atime_ns: int | None = None, mtime_ns: int | None = None,
                fd: int | None = None) -> os.stat_result:
        """chmod/chown/truncate/utimes; copies up first (FD: an open fd for ftruncate)."""
        inode = self.table.get(ino)
        if all(v is None for v in (mode, uid, gid, size, atime_ns, mtime_ns)):
            return self.stat_of(inode)
        if size is not None:
            if inode.is_dir:
                raise OSError(errno.EISDIR, "is a directory")
            if not stat.S_ISREG(self.stat_of(inode).st_mode):
                raise OSError(errno.EINVAL, "truncate of a special file")  # as the VFS
        self._need_upper()
        self.generation += 1
        if inode.aliases or inode is self.table.root:
            self.copy_up(inode, data=size != 0)
        if size is not None:
            if fd is not None and not inode.aliases and inode is not self.table.root:
                os.ftruncate(fd, size)  # unlinked but open: only the fd reaches it
            else:
                with self._uparent(inode) as (dfd, name):
                    assert name is not None
                    tfd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                                  | os.O_NONBLOCK, dir_fd=dfd)
                    try:
                        os.ftruncate(tfd, size)
                    finally:
                        os.close(tfd)
        if not inode.aliases and inode is not self.table.root:
            if fd is None:
                raise OSError(errno.ENOENT, "file was removed")
            return self._fd_setattr(inode, fd, mode, uid, gid, atime_ns, mtime_ns)
        with self._uparent(inode) as (dfd, name):
            path = fd_path(dfd, name)
            if uid is not None or gid is not None:
                os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid,
                         follow_symlinks=name is None)
            if mode is not None:
                st = os.stat(path, follow_symlinks=name is None)
                if not stat.S_ISLNK(st.st_mode):
                    os.chmod(path, stat.S_IMODE(mode))
            if atime_ns is not None or mtime_ns is not None:
                st = os.stat(path, follow_symlinks=name is None)
                set_times(dfd, name, st.st_atime_ns if atime_ns is None else atime_ns,
                          st.st_mtime_ns if mtime_ns is None else mtime_ns)
        return self.stat_of(inode)

    def _fd_setattr(self, inode: Inode, fd: int, mode: int | None, uid: int | None,
                    gid: int | None, atime_ns: int | None,
                    mtime_ns: int | None) -> os.stat_result:
        """setattr of an unlinked but open file, through its fd."""
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        if mode is not None:
            os.fchmod(fd, stat.S_IMODE(mode))
        if atime_ns is not None or mtime_ns is not None:
            st = os.fstat(fd)
            os.utime(fd, ns=(st.st_atime_ns if atime_ns is None else atime_ns,
                             st.st_mtime_ns if mtime_ns is None else mtime_ns))
        st = os.fstat(fd)
        inode.last_stat = st
        return self.stat_of(inode)

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        """Set an xattr (copy-up first); overlay-internal names → EOPNOTSUPP."""
        inode = self.table.get(ino)
        attr = self._xattr_name(name)
        self._user_xattr_ok(inode, name, errno.EPERM)
        self._need_upper()
        self.generation += 1
        self.copy_up(inode)
        with self._uparent(inode) as (dfd, oname):
            setxattr_at(dfd, oname, attr, value, flags)

    def removexattr(self, ino: int, name: bytes) -> None:
        """Remove an xattr (copy-up first; ENODATA if absent)."""
        inode = self.table.get(ino)
        attr = self._xattr_name(name)
        self._user_xattr_ok(inode, name, errno.EPERM)
        self.getxattr(ino, name)  # ENODATA before any copy-up, as the kernel
        self._need_upper()
        self.copy_up(inode)
        with self._uparent(inode) as (dfd, oname):
            removexattr_at(dfd, oname, attr)

    def fsync(self, fd: int, datasync: bool) -> None:
        if datasync:
            os.fdatasync(fd)
        else:
            os.fsync(fd)

