"""pyfuse3 request handlers: a thin, synchronous adapter over `cowfs.overlay.Overlay`.

Owns: converting FUSE requests to core calls (same verb), ``os.stat_result`` to
``EntryAttributes``, errno to ``FUSEError`` (in exactly one place, `_handler`), the
inode/handle tables and the kernel cache policy (timeouts, keep_cache, writeback).
Must not implement overlay semantics (copy-up, whiteouts, merging): the core does.

Every handler body is synchronous: the core is single-threaded and the daemon runs
``pyfuse3.main(max_tasks=1)``, so no request ever waits on another and nothing hops
to a thread (measured: a thread hop per request costs 2.3x, see docs/performance.md).
No exception escapes a handler except ``FUSEError``: anything unexpected is logged
with its traceback and answered with EIO, so a bug never kills the mount.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, final

import pyfuse3

from ..errors import CowfsError
from ..overlay import Caller, Overlay
from .handles import DirEntries, HandleTable, InodeTable, OpenFile
from .options import IdMap, MountOptions

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_ACCMODE = os.O_ACCMODE
# Open flags a FUSE request may carry that we pass on to the real file. The kernel also
# sends internal bits (__FMODE_EXEC 0x20 for execve, ...) that openat2 rejects with
# EINVAL, and O_DIRECT, which the page cache above us already handles.
_PASS_FLAGS = (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_DSYNC | os.O_SYNC
               | os.O_NOATIME | os.O_TRUNC | os.O_EXCL | os.O_NOFOLLOW | os.O_LARGEFILE)


_LISTINGS_KEPT = 512
"""Directories whose merged names the adapter keeps for repeated listings."""

OVERFLOW_ID = 65534
"""Shown for an on-disk id outside ``uidmapping=``/``gidmapping=`` (the kernel's overflowuid)."""


def id_out(idmap: IdMap, disk_id: int) -> int:
    """The id shown through the mount for an on-disk id (``uidmapping=`` semantics)."""
    for disk, shown, count in idmap:
        if disk <= disk_id < disk + count:
            return shown + disk_id - disk
    return OVERFLOW_ID


def id_in(idmap: IdMap, shown_id: int) -> int:
    """The on-disk id for an id a request carries (the inverse of `id_out`)."""
    for disk, shown, count in idmap:
        if shown <= shown_id < shown + count:
            return disk + shown_id - shown
    return OVERFLOW_ID


def _handler(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Make a synchronous handler body an async pyfuse3 handler with errno mapping."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return fn(*args, **kwargs)
            finally:
                ops = args[0]
                assert isinstance(ops, Operations)
                if ops.stale:
                    ops.flush_invalidations()
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            code = exc.errno if exc.errno else errno.EIO
            if code == errno.EIO:
                log.error("%s%r: I/O error: %s", fn.__name__, args[1:], exc)
            raise pyfuse3.FUSEError(code) from None
        except CowfsError as exc:
            log.error("%s%r: %s", fn.__name__, args[1:], exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s%r: unexpected error (answered EIO)", fn.__name__, args[1:])
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


@final
class Operations(pyfuse3.Operations):
    """The pyfuse3 ``Operations`` of a cowfs-overlay mount."""

    # No lookups of "." / ".." (only NFS export needs them); they would skew lookup counts.
    supports_dot_lookup = False
    enable_acl = False

    def __init__(self, overlay: Overlay, opts: MountOptions) -> None:
        super().__init__()
        self.ov = overlay
        self.opts = opts
        self.inodes = InodeTable()
        self.handles = HandleTable()
        # The core's list of kernel caches its side effects made stale (drained after
        # every request); a core without it gets the plain behaviour.
        self.stale: list[tuple[int, bytes | None]] = getattr(overlay, "invalidations", [])
        # ino -> xattr names known to be absent. The kernel asks for security.capability
        # before every write(2) (file_remove_privs) and FUSE never caches the answer; every
        # xattr change goes through this mount, so a miss stays a miss until set/remove.
        self._no_xattr: dict[int, set[bytes]] = {}
        self.timeout = opts.timeout
        # ino -> (stat, reply built from it), dropped when the kernel forgets the inode.
        self._attr_cache: dict[int, tuple[os.stat_result, pyfuse3.EntryAttributes]] = {}
        # dir ino -> (core generation, names): repeated listings skip the core's merge.
        self._listings: dict[int, tuple[int, DirEntries]] = {}
        # Writeback lets the kernel batch small writes; only meaningful with an upper.
        self.enable_writeback_cache = opts.writeback and not opts.read_only

    # --- helpers -----------------------------------------------------------------
    def _attrs(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        # The core hands back the very same stat object while nothing changed (repeated
        # walks): reuse the reply built from it. pyfuse3 only reads these objects.
        cached = self._attr_cache.get(st.st_ino)
        if cached is not None and cached[0] is st:
            return cached[1]
        a = self._build_attrs(st)
        self._attr_cache[st.st_ino] = (st, a)
        return a

    def _build_attrs(self, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = st.st_ino
        a.generation = 0
        a.entry_timeout = self.timeout
        a.attr_timeout = self.timeout
        a.st_mode = st.st_mode
        a.st_nlink = st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        opts = self.opts
        if opts.uid_map:
            a.st_uid = id_out(opts.uid_map, st.st_uid)
        if opts.gid_map:
            a.st_gid = id_out(opts.gid_map, st.st_gid)
        if opts.squash_uid is not None:
            a.st_uid = opts.squash_uid
        if opts.squash_gid is not None:
            a.st_gid = opts.squash_gid
        if st.st_nlink > 1:
            if stat.S_ISDIR(st.st_mode):
                if opts.static_nlink:
                    a.st_nlink = 1
            else:
                # Hardlinks share one node id (pyfuse3 ties it to st_ino), but a copy-up
                # must copy the name the caller used. Revalidating their dentries on every
                # path walk makes that name the one the core saw last.
                a.entry_timeout = 0
        return a

    def _entry(self, parent: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
        """Attributes of a new kernel reference (the core already counted it)."""
        self.inodes.looked_up(st.st_ino, parent, stat.S_ISDIR(st.st_mode))
        return self._attrs(st)

    def _open_flags(self, flags: int) -> int:
        flags = (flags & _PASS_FLAGS) | os.O_CLOEXEC
        # With the writeback cache the kernel reads pages of files opened write-only and
        # does O_APPEND itself (it sends the final offsets), so the fd must be readable
        # and must not append on its own.
        if self.enable_writeback_cache:
            if flags & _ACCMODE == os.O_WRONLY:
                flags = (flags & ~_ACCMODE) | os.O_RDWR
            flags &= ~os.O_APPEND
        return flags

    def _real(self, ino: int) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the real file behind INO now (None: unknown inode)."""
        inode = self.ov.table.by_ino.get(ino)
        return inode.real if inode is not None else None

    def _follow_copy_up(self, of: OpenFile) -> None:
        """Move a handle opened on a lower file to the upper copy made since.

        Kernel overlayfs checks the real inode at every read and reopens the upper file,
        so an fd opened read-only before another fd copied the file up reads the new
        data. Called only when the core's generation moved since this handle last
        checked (one int compare on the hot path). A handle opened for writing is
        already on the upper file (the open copied it up), so only read-only ones move.
        """
        gen = self.ov.generation
        real = self._real(of.ino)
        if (real is None or real == of.real or of.real is None
                or of.flags & _ACCMODE != os.O_RDONLY):
            of.gen = gen
            return
        try:
            fd = self.ov.open(of.ino, of.flags & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL))
        except OSError as exc:  # no name left: keep reading the file we have
            log.debug("reopen inode %d after copy-up: %s", of.ino, exc)
            of.gen = gen
            return
        self.handles.reopened(of, fd, real, gen)

    def _caller(self, ctx: pyfuse3.RequestContext) -> Caller:
        # The kernel has already applied the umask to the mode (no FUSE_CAP_DONT_MASK).
        return Caller(uid=self._uid_in(ctx.uid), gid=self._gid_in(ctx.gid), umask=0)

    def _uid_in(self, uid: int) -> int:
        return id_in(self.opts.uid_map, uid) if self.opts.uid_map else uid

    def _gid_in(self, gid: int) -> int:
        return id_in(self.opts.gid_map, gid) if self.opts.gid_map else gid

    def flush_invalidations(self) -> None:
        """Tell the kernel about cache entries the core's side effects made stale.

        A copy-up changes what the kernel may have cached for 1e9 s: a directory that
        becomes merged reports nlink 1, a copied-up lower hardlink loses its other names
        (they now show the lower file as another inode). Attribute invalidation does not
        block; entry invalidation takes the parent's lock, which the client holding it for
        this very request would never release, so it goes through pyfuse3's notify thread.
        """
        pending = self.stale[:]
        self.stale.clear()
        for ino, name in pending:
            if name is None:
                try:
                    pyfuse3.invalidate_inode(ino, attr_only=True)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:  # ENOENT: the kernel does not know it
                        log.warning("invalidate attributes of %d: %s", ino, exc)
            else:
                pyfuse3.invalidate_entry_async(ino, name, ignore_enoent=True)

    # --- lifecycle ---------------------------------------------------------------
    def destroy(self) -> None:
        """Release everything after the main loop ended. Never raises."""
        try:
            self.handles.close_all()
            for ino, n in self.inodes.counts().items():
                self.ov.forget(ino, n)
                self.inodes.forget(ino, n)
        except Exception:
            log.exception("destroy: releasing tables failed")

    # --- names -------------------------------------------------------------------
    @_handler
    def lookup(self, parent_inode: int, name: bytes,
               ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        try:
            st = self.ov.lookup(parent_inode, name)
        except FileNotFoundError:
            # A cached negative entry: the kernel will not ask again until we create it.
            neg = pyfuse3.EntryAttributes()
            neg.st_ino = 0
            neg.entry_timeout = self.timeout
            return neg
        return self._entry(parent_inode, st)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            try:
                self.ov.forget(ino, n)
                if self.inodes.forget(ino, n):
                    self._no_xattr.pop(ino, None)
                    self._attr_cache.pop(ino, None)
            except Exception:
                log.exception("forget(%d, %d) failed", ino, n)

    @_handler
    def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self.ov.getattr(inode))

    @_handler
    def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                fields: pyfuse3.SetattrFields, fh: int | None,
                ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        fd = self.handles.file(fh).fd if fh is not None else None
        st = self.ov.setattr(
            inode,
            mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
            uid=self._uid_in(attr.st_uid) if fields.update_uid else None,
            gid=self._gid_in(attr.st_gid) if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            fd=fd,
        )
        return self._attrs(st)

    @_handler
    def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.ov.readlink(inode)

    @_handler
    def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
              ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        st = self.ov.mknod(parent_inode, name, mode, rdev, self._caller(ctx))
        return self._entry(parent_inode, st)

    @_handler
    def mkdir(self, parent_inode: int, name: bytes, mode: int,
              ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        st = self.ov.mkdir(parent_inode, name, mode, self._caller(ctx))
        return self._entry(parent_inode, st)

    @_handler
    def symlink(self, parent_inode: int, name: bytes, target: bytes,
                ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        st = self.ov.symlink(parent_inode, name, target, self._caller(ctx))
        return self._entry(parent_inode, st)

    @_handler
    def link(self, inode: int, new_parent_inode: int, new_name: bytes,
             ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        st = self.ov.link(inode, new_parent_inode, new_name)
        return self._entry(new_parent_inode, st)

    @_handler
    def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.ov.unlink(parent_inode, name)

    @_handler
    def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.ov.rmdir(parent_inode, name)

    @_handler
    def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
               name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self.ov.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    # --- files -------------------------------------------------------------------
    @_handler
    def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        flags = self._open_flags(flags)
        fd = self.ov.open(inode, flags)
        fh = self.handles.add_file(fd, inode, flags, self._real(inode), self.ov.generation)
        # Nothing changes a file behind the kernel's back (lowers are immutable and every
        # write comes through this mount), so its page cache survives reopening.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_handler
    def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
               ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        flags = self._open_flags(flags)
        fd, st = self.ov.create(parent_inode, name, flags, mode, self._caller(ctx))
        fh = self.handles.add_file(fd, st.st_ino, flags, self._real(st.st_ino),
                                   self.ov.generation)
        fi = pyfuse3.FileInfo(fh=fh, keep_cache=True)
        return fi, self._entry(parent_inode, st)

    @_handler
    def read(self, fh: int, off: int, size: int) -> bytes:
        of = self.handles.file(fh)
        if of.gen != self.ov.generation:  # something changed since: copied up?
            self._follow_copy_up(of)
        return os.pread(of.fd, size, off)

    @_handler
    def write(self, fh: int, off: int, buf: bytes) -> int:
        fd = self.handles.file(fh).fd
        done = os.pwrite(fd, buf, off)
        if done < len(buf):  # short write (e.g. a signal): FUSE needs all of it
            view = memoryview(buf)
            while done < len(buf):
                n = os.pwrite(fd, view[done:], off + done)
                if n == 0:
                    raise OSError(errno.ENOSPC, "short write")
                done += n
        return done

    # No flush handler: pyfuse3 answers ENOSYS and the kernel stops sending FLUSH (one
    # request less per close(2)). The kernel still writes dirty pages back before release,
    # POSIX locks are kept by the kernel (no lock handlers), and nothing here needs close().

    @_handler
    def release(self, fh: int) -> None:
        self.handles.release_file(fh)

    @_handler
    def fsync(self, fh: int, datasync: bool) -> None:
        of = self.handles.file(fh)
        if of.gen != self.ov.generation:
            self._follow_copy_up(of)
        self.ov.fsync(of.fd, datasync)

    # --- directories -------------------------------------------------------------
    @_handler
    def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.ov.table.by_ino.get(inode)  # the kind of an inode never changes
        if node is None:
            raise OSError(errno.ESTALE, "unknown inode")
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, "not a directory")
        return self.handles.add_dir(inode)

    def _listing(self, ino: int) -> DirEntries:
        """Names of dir INO, reused while the core changed nothing (``Overlay.generation``).

        Names change only through core mutations (the layers below are immutable), so a
        repeated walk skips the core's merge. Attributes are never taken from here: each
        entry's are fetched fresh by ``lookup_entry`` when it is returned.
        """
        gen = self.ov.generation
        cached = self._listings.get(ino)
        if cached is not None and cached[0] == gen:
            return cached[1]
        parent = self.inodes.parent(ino) if ino != pyfuse3.ROOT_INODE else ino
        out: DirEntries = [(b".", ino, stat.S_IFDIR), (b"..", parent, stat.S_IFDIR)]
        out += self.ov.list_entries(ino)
        self._listings[ino] = (gen, out)
        if len(self._listings) > _LISTINGS_KEPT:
            del self._listings[next(iter(self._listings))]
        return out

    @_handler
    def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        od = self.handles.dir(fh)
        if start_id == 0 or od.entries is None:
            od.entries = self._listing(od.ino)
        entries = od.entries
        for i in range(start_id, min(2, len(entries))):
            # "." and "..": the kernel takes only the inode number and type of these
            # (fuse_direntplus_link ignores their attributes) and counts no lookup.
            name, ino, mode = entries[i]
            dot = pyfuse3.EntryAttributes()
            dot.st_ino = ino
            dot.st_mode = mode
            if not pyfuse3.readdir_reply(token, name, dot, i + 1):
                return
        first = max(start_id, 2)
        # readdirplus counts as a lookup of each entry the kernel accepts: the core counts
        # each one it yields (with fresh attributes); give the count back if it did not fit.
        found = self.ov.lookup_entries(od.ino, (e[0] for e in itertools.islice(entries, first,
                                                                                 None)))
        for i, (name, st) in enumerate(found, first):
            if st is None:
                continue  # removed since this handle's snapshot was taken
            if not pyfuse3.readdir_reply(token, name, self._attrs(st), i + 1):
                self.ov.forget(st.st_ino, 1)
                return
            ino = entries[i][1]
            if st.st_ino != ino:
                log.error("readdir(%d): %r listed as inode %d, looked up as %d",
                          od.ino, name, ino, st.st_ino)
            self.inodes.looked_up(st.st_ino, od.ino, stat.S_ISDIR(st.st_mode))

    @_handler
    def releasedir(self, fh: int) -> None:
        self.handles.release_dir(fh)

    @_handler
    def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.handles.dir(fh)

    # --- xattrs and fs -----------------------------------------------------------
    @_handler
    def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        absent = self._no_xattr.get(inode)
        if absent is not None and name in absent:
            raise pyfuse3.FUSEError(errno.ENODATA)
        try:
            return self.ov.getxattr(inode, name)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                if absent is None:
                    absent = self._no_xattr[inode] = set()
                if len(absent) < 16:
                    absent.add(name)
            raise

    @_handler
    def setxattr(self, inode: int, name: bytes, value: bytes,
                 ctx: pyfuse3.RequestContext) -> None:
        self._no_xattr.pop(inode, None)
        # pyfuse3 does not pass XATTR_CREATE/XATTR_REPLACE (a documented caveat).
        self.ov.setxattr(inode, name, value)

    @_handler
    def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return self.ov.listxattr(inode)

    @_handler
    def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._no_xattr.pop(inode, None)
        self.ov.removexattr(inode, name)

    @_handler
    def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        sv = self.ov.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = sv.f_bsize
        out.f_frsize = sv.f_frsize
        out.f_blocks = sv.f_blocks
        out.f_bfree = sv.f_bfree
        out.f_bavail = sv.f_bavail
        out.f_files = sv.f_files
        out.f_ffree = sv.f_ffree
        out.f_favail = sv.f_favail
        out.f_namemax = sv.f_namemax
        return out
