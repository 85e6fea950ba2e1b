"""Unpack one OCI layer blob into a directory in kernel overlay format, safely.

Owns: ``unpack_layer`` (docs/CONTRACTS.md §2): decompress → parse tar → apply
entries under ``dest`` with every path resolved component by component from
cached directory fds with ``O_NOFOLLOW`` (never a joined path, never a followed
symlink), OCI whiteouts converted to char 0/0 devices and opaque xattrs
(``cowfs.format``), digests computed on the way. Must not fsync, rename or
publish ``dest`` (the store does that) and must not use ``tarfile``.

Decisions (see also docs/ARCHITECTURE.md of the store):

* ``..`` that would leave the layer root and any entry replacing the root with a
  non-directory (the ``/.`` symlink of CVE-2021-29136) raise ``HostileInput``;
  a leading ``/`` is stripped (as GNU tar does), with a warning.
* A path whose parent is a symlink in this layer is refused (``HostileInput``):
  the extractor never writes through a link. A parent that is a file or device
  is ``CorruptLayer``. A whiteout below a non-directory is ignored.
* Applying an entry over an existing path of this layer: both dirs → the new
  attributes win; otherwise the old path (a dir with its subtree) is removed.
  Nothing is ever chmod-ed, chown-ed or written through a path that could be a
  symlink (CVE-2021-32760): attributes go to fds opened ``O_NOFOLLOW`` or to
  ``*at`` calls with ``AT_SYMLINK_NOFOLLOW``.
* A whiteout never hides this layer's own entries: ``dest`` starts empty, so a
  whiteout whose name already exists here is dropped — except that a dir of this
  layer that is also whited out becomes opaque (the lower one is deleted, this
  layer's one is kept). Whiteouts inside an opaque dir (or below one) are removed
  at the end, as the kernel would list them there.
* Image xattrs in the overlay namespaces are escaped (``trusted.overlay.X`` →
  ``trusted.overlay.overlay.X``, same for ``user.overlay.``); xattrs in cowfs's and
  fuse-overlayfs's private namespaces are dropped with a warning.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from cowfs import format as fmt
from cowfs._sys.openat2 import rmtree_at
from cowfs.errors import CorruptLayer, DigestMismatch, HostileInput, StoreError
from cowfs.store.compress import (
    BoundedReader,
    Direct,
    HashingReader,
    Prefetcher,
    open_decompressed,
)
from cowfs.store.tar import BLK, CHR, DIR, FIFO, LNK, REG, SYM, TarEntry, TarReader

log = logging.getLogger(__name__)

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CACHE_MAX: Final = 256
"""Directory fds kept open (LRU); trimmed between entries, never inside one."""
_MAX_DEPTH: Final = 256
DEFAULT_MAX_SIZE: Final = 64 << 30
"""Uncompressed bytes (and sum of sparse file sizes) refused when max_size is None."""
_USER_OVERLAY_ESCAPED: Final = fmt.USER_OVERLAY + b"overlay."
_DROPPED_XATTRS: Final = (fmt.FOF_PREFIX, fmt.TRUSTED_COWFS, fmt.USER_COWFS)


@dataclass(frozen=True)
class UnpackResult:
    """What ``unpack_layer`` learnt about a layer while writing it."""

    diff_id: str
    """``sha256:<hex>`` of the uncompressed tar."""
    digest: str
    """``sha256:<hex>`` of the stream as given (compressed)."""
    size: int
    """Uncompressed bytes."""
    compressed_size: int
    media_type: str
    """Detected compression as an OCI layer media type."""
    warnings: list[str] = field(default_factory=list)


def default_max_size() -> int:
    """The bomb guard used when ``max_size`` is None: $COWFS_MAX_LAYER_SIZE or 64 GiB."""
    env = os.environ.get("COWFS_MAX_LAYER_SIZE")
    return int(env) if env and env.isdigit() else DEFAULT_MAX_SIZE


def detect_rootless() -> bool:
    """True unless we are root in the initial user namespace (trusted.* settable)."""
    if os.geteuid() != 0:
        return True
    try:
        with open("/proc/self/uid_map", "rb") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:3] != [b"0", b"0", b"4294967295"]


def unpack_layer(src: BinaryIO, dest: str, *, rootless: bool | None = None,
                 max_size: int | None = None,
                 progress: Callable[[int], None] | None = None,
                 expected_digest: str | None = None,
                 expected_diff_id: str | None = None) -> UnpackResult:
    """Unpack the layer blob ``src`` (none/gzip/zstd by magic) into the empty dir ``dest``.

    Args:
        src: the blob as stored (read to its end: the digest covers all of it).
        dest: an existing, empty directory; written in kernel overlay format.
        rootless: write ``user.overlay.opaque`` and tolerate failing chown/mknod;
            default: detected (not root in the initial user namespace).
        max_size: refuse more than this many uncompressed bytes, or sparse files
            whose sizes add up to more (bomb guard); None → ``default_max_size()``.
        progress: called with the number of newly read compressed bytes.
        expected_digest: if given, the blob must hash to it (else DigestMismatch).
        expected_diff_id: if given, the uncompressed tar must hash to it.

    Raises:
        HostileInput: an entry tries to leave ``dest`` or the stream is a bomb.
        CorruptLayer: not a tar, truncated, or an invalid entry.
        DigestMismatch: a digest differs from the expected one (``dest`` is garbage).
        StoreError: a filesystem error while writing.
    """
    if rootless is None:
        rootless = detect_rootless()
    if max_size is None:
        max_size = default_max_size()
    raw = HashingReader(src)
    stream, media_type = open_decompressed(raw)  # type: ignore[arg-type]
    # An uncompressed blob is its own tar: one hash gives both digests.
    compressed = media_type != fmt.MT_OCI_LAYER
    bounded = BoundedReader(stream, max_size, hashing=compressed)
    ex = _Extractor(dest, rootless, max_size)
    # Decompression (and its second hash) overlaps with writing in a read-ahead thread;
    # a plain tar is read inline (measured: the thread does not pay for one hash).
    ahead: Prefetcher | Direct
    if compressed:
        ahead = Prefetcher(bounded, lambda: raw.count, progress)  # type: ignore[arg-type]
    else:
        ahead = Direct(bounded, lambda: raw.count, progress)  # type: ignore[arg-type]
    try:
        ex.run(TarReader(ahead))  # type: ignore[arg-type]
        ahead.drain()
    finally:
        ahead.close()
        ex.close()
    raw.drain()
    if progress is not None and raw.count > ahead.reported:
        progress(raw.count - ahead.reported)
    diff_id = bounded.hexdigest() if compressed else raw.hexdigest()
    result = UnpackResult(
        diff_id="sha256:" + diff_id, digest="sha256:" + raw.hexdigest(),
        size=bounded.count, compressed_size=raw.count, media_type=media_type,
        warnings=ex.warning_lines())
    if expected_digest is not None and expected_digest != result.digest:
        raise DigestMismatch(
            f"unpack layer: blob digest is {result.digest}, expected {expected_digest}")
    if expected_diff_id is not None and expected_diff_id != result.diff_id:
        raise DigestMismatch(
            f"unpack layer: diff_id is {result.diff_id}, expected {expected_diff_id}")
    for line in result.warnings:
        log.warning("unpack layer %s: %s", result.digest, line)
    return result


def _current_umask() -> int:
    """The process umask, read without changing it when /proc allows."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _split(name: bytes) -> list[bytes]:
    """Clean an entry name lexically into components; refuse escaping the root."""
    comps = name.split(b"/")
    if comps[0] == b".":
        del comps[0]
    if comps and not comps[-1]:
        del comps[-1]
    if (b"" not in comps and b"." not in comps and b".." not in comps
            and len(comps) <= _MAX_DEPTH and b"\0" not in name):
        return comps  # fast path: "./usr/bin/x", "usr/lib/"
    if b"\0" in name:
        raise CorruptLayer(f"unpack layer: entry name {name!r} contains NUL")
    out: list[bytes] = []
    for c in name.split(b"/"):
        if not c or c == b".":
            continue
        if c == b"..":
            if not out:
                raise HostileInput(f"unpack layer: {name!r} leaves the layer root")
            out.pop()
        else:
            out.append(c)
    if len(out) > _MAX_DEPTH:
        raise CorruptLayer(f"unpack layer: {name[:64]!r}... is nested too deeply")
    return out


def _is_whiteout_st(st: os.stat_result) -> bool:
    return fmt.is_whiteout_stat(st.st_mode, st.st_rdev)


class _Extractor:
    """State of one extraction: the dir-fd cache and what to fix up at the end."""

    def __init__(self, dest: str, rootless: bool, max_size: int) -> None:
        self.root = os.open(dest, _DIR_FLAGS)
        try:
            if os.listdir(self.root):
                raise StoreError(f"unpack layer: destination {dest} is not empty")
            st = os.fstat(self.root)
        except BaseException:
            os.close(self.root)
            raise
        self.rootless = rootless
        self.opaque_name = fmt.opaque_xattr(rootless)
        self.euid, self.egid = os.geteuid(), os.getegid()
        self.always_chown = bool(st.st_mode & stat.S_ISGID)
        self.umask = _current_umask()
        self.cache: dict[bytes, int] = {b"": self.root}
        self.deferred: dict[bytes, TarEntry] = {}
        self.whiteouts: set[bytes] = set()
        self.opaque: set[bytes] = set()
        self.implied: set[bytes] = set()
        """Dirs created only because an entry below them needed a parent."""
        self.logical = 0
        self.max_size = max_size
        self.warn_counts: dict[str, int] = {}
        self.warn_example: dict[str, bytes] = {}
        self.current = b""

    # -- bookkeeping --------------------------------------------------------------
    def close(self) -> None:
        for fd in self.cache.values():
            os.close(fd)
        self.cache = {}

    def warn(self, what: str, name: bytes) -> None:
        n = self.warn_counts.get(what, 0)
        self.warn_counts[what] = n + 1
        if not n:
            self.warn_example[what] = name
            log.debug("unpack layer: %s: %r", what, name)

    def warning_lines(self) -> list[str]:
        out = []
        for what, n in self.warn_counts.items():
            ex = os.fsdecode(self.warn_example[what])
            out.append(f"{what}: {n} entr{'y' if n == 1 else 'ies'} (e.g. {ex!r})")
        return out

    def _trim_cache(self) -> None:
        if len(self.cache) > _CACHE_MAX:
            drop = list(self.cache)[: len(self.cache) - _CACHE_MAX // 2]
            for key in drop:
                if key:
                    os.close(self.cache.pop(key))

    def _forget_tree(self, key: bytes) -> None:
        """Drop cached fds and deferred attrs of ``key`` and everything below it."""
        pre = key + b"/"
        for k in [k for k in self.cache if k == key or k.startswith(pre)]:
            os.close(self.cache.pop(k))
        for k in [k for k in self.deferred if k == key or k.startswith(pre)]:
            del self.deferred[k]
        for keys in (self.whiteouts, self.opaque, self.implied):
            keys.difference_update([k for k in keys if k == key or k.startswith(pre)])

    # -- path resolution --------------------------------------------------------------
    def dirfd(self, comps: list[bytes], n: int, *, create: bool = True,
              lenient: bool = False) -> int | None:
        """Return an fd of the directory ``comps[:n]``, walking without following links.

        Missing dirs are created when ``create``. A component that is not a
        directory: ``lenient`` (whiteouts) → None; a whiteout of this layer →
        replaced by an opaque dir; a symlink → HostileInput; else CorruptLayer.
        """
        cache = self.cache
        key = b"/".join(comps[:n])
        fd = cache.pop(key, None)
        if fd is not None:
            cache[key] = fd  # LRU: move to the end
            return fd
        i = n - 1
        while i and b"/".join(comps[:i]) not in cache:
            i -= 1
        fd = cache[b"/".join(comps[:i])]
        for j in range(i, n):
            nfd = self._child_dir(fd, comps[j], b"/".join(comps[:j + 1]), create, lenient)
            if nfd is None:
                return None
            fd = cache[b"/".join(comps[:j + 1])] = nfd
        return fd

    def _child_dir(self, pfd: int, name: bytes, key: bytes, create: bool,
                   lenient: bool) -> int | None:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(name, 0o755, dir_fd=pfd)
            self.implied.add(key)
            return os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if lenient:
            return None
        if create and key in self.whiteouts and _is_whiteout_st(st):
            # "a/.wh.b" then "a/b/c": b is this layer's dir replacing a lower b.
            os.unlink(name, dir_fd=pfd)
            self.whiteouts.discard(key)
            os.mkdir(name, 0o755, dir_fd=pfd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
            self.set_opaque(fd, key)
            return fd
        if stat.S_ISLNK(st.st_mode):
            raise HostileInput(
                f"unpack layer: {self.current!r} goes through the symlink {key!r}")
        raise CorruptLayer(
            f"unpack layer: {self.current!r} goes through the non-directory {key!r}")

    def replace(self, pfd: int, name: bytes, key: bytes) -> bool:
        """Remove this layer's existing ``name``; True if it was one of our whiteouts."""
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            self._forget_tree(key)
            rmtree_at(pfd, name)
            return False
        os.unlink(name, dir_fd=pfd)
        if key in self.whiteouts:
            self.whiteouts.discard(key)
            return _is_whiteout_st(st)
        return False

    def set_opaque(self, fd: int, key: bytes) -> None:
        os.setxattr(fd, self.opaque_name, fmt.OPAQUE_YES)
        self.opaque.add(key)

    # -- the loop ---------------------------------------------------------------------
    def run(self, tar: TarReader) -> None:
        try:
            while True:
                e = tar.next()
                if e is None:
                    break
                self.current = e.name
                self._trim_cache()
                self.apply(tar, e)
            self.finish()
        except ValueError as exc:  # an embedded NUL in a link target or xattr name
            raise CorruptLayer(f"unpack layer: {self.current!r}: {exc}") from None
        except OSError as exc:
            if exc.errno in (errno.ENAMETOOLONG, errno.EFBIG):
                raise CorruptLayer(f"unpack layer: {self.current!r}: {exc.strerror}") from None
            raise StoreError(f"unpack layer: {self.current!r}: {exc}") from exc

    def apply(self, tar: TarReader, e: TarEntry) -> None:
        if e.name.startswith(b"/"):
            self.warn("leading '/' removed from entry names", e.name)
        comps = _split(e.name)
        if not comps:
            if e.kind != DIR:
                raise HostileInput(
                    f"unpack layer: entry {e.name!r} would replace the layer root")
            self.deferred[b""] = e
            return
        base = comps[-1]
        if len(comps) > 1:
            pkey = b"/".join(comps[:-1])
            if pkey.startswith(fmt.WH_PREFIX) or b"/" + fmt.WH_PREFIX in pkey:
                self.warn("skipped entries inside a .wh. directory", e.name)
                return
            key = pkey + b"/" + base
            pfd = self.cache.get(pkey)
        else:
            key = base
            pfd = self.root
        if base.startswith(fmt.WH_PREFIX):
            self.whiteout(comps, e)
            return
        if pfd is None:
            pfd = self.dirfd(comps, len(comps) - 1)
            assert pfd is not None
        kind = e.kind
        if kind == REG:
            self.regular(tar, e, pfd, base, key)
        elif kind == DIR:
            self.directory(e, pfd, base, key)
        elif kind == SYM:
            self.symlink(e, pfd, base, key)
        elif kind == LNK:
            self.hardlink(e, pfd, base, key)
        elif kind in (CHR, BLK, FIFO):
            self.special(e, pfd, base, key)

    # -- entry kinds ------------------------------------------------------------------
    def regular(self, tar: TarReader, e: TarEntry, pfd: int, base: bytes, key: bytes) -> None:
        try:
            fd = os.open(base, _FILE_FLAGS, e.mode & 0o777, dir_fd=pfd)
        except FileExistsError:
            self.replace(pfd, base, key)
            fd = os.open(base, _FILE_FLAGS, e.mode & 0o777, dir_fd=pfd)
        try:
            if e.sparse is not None:
                self.logical += e.realsize
                if self.logical > self.max_size:
                    raise HostileInput(f"unpack layer: sparse files larger than {self.max_size} "
                                       "bytes in all (sparse bomb?)")
                tar.write_sparse(fd, e)
            elif e.size:
                tar.copy_to_fd(fd)
            self.attrs_fd(fd, e, True)
        finally:
            os.close(fd)

    def directory(self, e: TarEntry, pfd: int, base: bytes, key: bytes) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                was_whiteout = self.replace(pfd, base, key)
                os.mkdir(base, 0o700, dir_fd=pfd)
                if was_whiteout:
                    fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
                    try:
                        self.set_opaque(fd, key)
                    finally:
                        os.close(fd)
        self.deferred[key] = e
        self.implied.discard(key)

    def symlink(self, e: TarEntry, pfd: int, base: bytes, key: bytes) -> None:
        if not e.linkname:
            raise CorruptLayer(f"unpack layer: symlink {e.name!r} has an empty target")
        try:
            os.symlink(e.linkname, base, dir_fd=pfd)
        except FileExistsError:
            self.replace(pfd, base, key)
            os.symlink(e.linkname, base, dir_fd=pfd)
        self.attrs_at(pfd, base, e)

    def hardlink(self, e: TarEntry, pfd: int, base: bytes, key: bytes) -> None:
        tcomps = _split(e.linkname)
        tkey = b"/".join(tcomps)
        if not tcomps:
            raise HostileInput(f"unpack layer: hardlink {e.name!r} to the layer root")
        if tkey == key:
            return
        if tkey.startswith(key + b"/"):
            raise CorruptLayer(
                f"unpack layer: hardlink {e.name!r} -> {e.linkname!r}: target below the link")
        tpfd = self.dirfd(tcomps, len(tcomps) - 1, create=False)
        if tpfd is None:
            raise CorruptLayer(
                f"unpack layer: hardlink {e.name!r} -> {e.linkname!r}: target not in layer")
        for attempt in (0, 1):
            try:
                os.link(tcomps[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd,
                        follow_symlinks=False)
                return
            except FileExistsError:
                if attempt:
                    raise
                a = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                b = os.stat(tcomps[-1], dir_fd=tpfd, follow_symlinks=False)
                if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                    return
                self.replace(pfd, base, key)
            except (FileNotFoundError, PermissionError) as exc:
                raise CorruptLayer(
                    f"unpack layer: hardlink {e.name!r} -> {e.linkname!r}: "
                    f"target not in layer or not linkable ({exc.strerror})") from None

    def special(self, e: TarEntry, pfd: int, base: bytes, key: bytes) -> None:
        ifmt = {CHR: stat.S_IFCHR, BLK: stat.S_IFBLK, FIFO: stat.S_IFIFO}[e.kind]
        dev = os.makedev(e.devmajor, e.devminor) if e.kind != FIFO else 0
        mode = ifmt | (e.mode & 0o777)
        try:
            try:
                os.mknod(base, mode, dev, dir_fd=pfd)
            except FileExistsError:
                self.replace(pfd, base, key)
                os.mknod(base, mode, dev, dir_fd=pfd)
        except PermissionError:
            if e.kind == FIFO:
                raise
            self.warn("device nodes skipped (mknod not permitted)", e.name)
            return
        self.attrs_at(pfd, base, e)

    def whiteout(self, comps: list[bytes], e: TarEntry) -> None:
        base = comps[-1]
        if base == fmt.WH_PREFIX:
            raise CorruptLayer(f"unpack layer: bare whiteout {e.name!r}")
        n = len(comps) - 1
        if base == fmt.WH_OPAQUE:
            fd = self.dirfd(comps, n, lenient=True)
            if fd is None:
                self.warn("whiteouts below a non-directory ignored", e.name)
                return
            self.set_opaque(fd, b"/".join(comps[:n]))
            return
        if base.startswith(fmt.WH_META_PREFIX):
            self.warn("AUFS metadata entries skipped", e.name)
            return
        target = base[len(fmt.WH_PREFIX):]
        if target in (b".", b".."):
            raise HostileInput(f"unpack layer: whiteout {e.name!r} names {target!r}")
        pfd = self.dirfd(comps, n, lenient=True)
        if pfd is None:
            self.warn("whiteouts below a non-directory ignored", e.name)
            return
        key = b"/".join([*comps[:n], target])
        try:
            os.mknod(target, fmt.WHITEOUT_MODE, fmt.WHITEOUT_DEV, dir_fd=pfd)
        except FileExistsError:
            # This layer has its own `target`: the whiteout only hides the lower one.
            st = os.stat(target, dir_fd=pfd, follow_symlinks=False)
            if key in self.implied and _only_whiteouts(pfd, target):
                # "a/.wh.b" then ".wh.a": `a` was made only to hold whiteouts, so
                # nothing of this layer lives there and the layer deletes `a`.
                self._forget_tree(key)
                rmtree_at(pfd, target)
                os.mknod(target, fmt.WHITEOUT_MODE, fmt.WHITEOUT_DEV, dir_fd=pfd)
                self.whiteouts.add(key)
                self.chown_at(pfd, target, e)
            elif stat.S_ISDIR(st.st_mode):
                fd = os.open(target, _DIR_FLAGS, dir_fd=pfd)
                try:
                    self.set_opaque(fd, key)
                finally:
                    os.close(fd)
            return
        except PermissionError as exc:
            raise StoreError(
                f"unpack layer: cannot create whiteout {key!r} (mknod c 0 0: "
                f"{exc.strerror}); rootless unpack needs a user namespace") from None
        self.whiteouts.add(key)
        self.chown_at(pfd, target, e)

    # -- attributes ------------------------------------------------------------------
    def attrs_fd(self, fd: int, e: TarEntry, created_with_mode: bool) -> None:
        """Owner, mode, xattrs and times of an fd we opened (never via a path).

        ``created_with_mode``: the file was created with ``e.mode & 0o777``, so a
        chmod is needed only for bits the umask removed or special bits (which a
        chown clears anyway).
        """
        mode = e.mode
        if e.uid != self.euid or e.gid != self.egid or self.always_chown:
            try:
                os.fchown(fd, e.uid, e.gid)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EINVAL):
                    raise
                self.warn("ownership not preserved", self.current)
        if not created_with_mode or mode & 0o7000 or mode & self.umask:
            os.fchmod(fd, mode)
        if e.xattrs:
            self.xattrs(e, lambda n, v: os.setxattr(fd, n, v))
        m = e.mtime_ns
        os.utime(fd, ns=(m if e.atime_ns is None else e.atime_ns, m))

    def chown_at(self, pfd: int, name: bytes, e: TarEntry) -> None:
        if e.uid != self.euid or e.gid != self.egid or self.always_chown:
            try:
                os.chown(name, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EINVAL):
                    raise
                self.warn("ownership not preserved", self.current)

    def attrs_at(self, pfd: int, name: bytes, e: TarEntry) -> None:
        """Owner, mode, xattrs and times of a symlink/device/fifo just made at pfd/name."""
        self.chown_at(pfd, name, e)
        if e.kind != SYM and (e.mode & 0o7000 or e.mode & self.umask):
            # chmod(2) follows links: go through an O_PATH fd of the node itself.
            pathfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                os.chmod(f"/proc/self/fd/{pathfd}", e.mode & 0o7777)
            finally:
                os.close(pathfd)
        if e.xattrs:
            path = b"/proc/self/fd/%d/%s" % (pfd, name)
            self.xattrs(e, lambda n, v: os.setxattr(path, n, v, follow_symlinks=False))
        m = e.mtime_ns
        os.utime(name, ns=(m if e.atime_ns is None else e.atime_ns, m), dir_fd=pfd,
                 follow_symlinks=False)

    def xattrs(self, e: TarEntry, setx: Callable[[bytes, bytes], None]) -> None:
        assert e.xattrs is not None
        for name, value in e.xattrs.items():
            if not value:
                continue  # PAX: an empty value unsets; there is nothing to unset here
            if name.startswith(fmt.TRUSTED_OVERLAY):
                name = fmt.TRUSTED_OVERLAY_ESCAPED + name[len(fmt.TRUSTED_OVERLAY):]
            elif name.startswith(fmt.USER_OVERLAY):
                name = _USER_OVERLAY_ESCAPED + name[len(fmt.USER_OVERLAY):]
            elif name.startswith(_DROPPED_XATTRS):
                self.warn("private overlay xattrs dropped", e.name)
                continue
            try:
                setx(name, value)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EINVAL,
                                     errno.EACCES):
                    raise
                self.warn(f"xattr {os.fsdecode(name.split(b'.')[0])}.* not set "
                          f"({os.strerror(exc.errno)})", e.name)

    # -- the end ---------------------------------------------------------------------
    def finish(self) -> None:
        """Drop whiteouts made pointless by an opaque dir; then dir attrs, dirs last."""
        self.current = b""
        if self.opaque:
            for key in sorted(self.whiteouts):
                comps = key.split(b"/")
                if not any(b"/".join(comps[:i]) in self.opaque for i in range(len(comps))):
                    continue
                self._trim_cache()
                pfd = self.dirfd(comps, len(comps) - 1, create=False, lenient=True)
                if pfd is None:
                    continue
                st = os.stat(comps[-1], dir_fd=pfd, follow_symlinks=False)
                if _is_whiteout_st(st):
                    os.unlink(comps[-1], dir_fd=pfd)
        # Deepest first: a dir made read-only (or 0000, rootless) must not stop us
        # from opening its children afterwards; the root goes last.
        for key in sorted(self.deferred, key=lambda k: k.count(b"/") if k else -1,
                          reverse=True):
            e = self.deferred[key]
            self.current = key
            self._trim_cache()
            comps = key.split(b"/") if key else []
            fd = self.dirfd(comps, len(comps), create=False, lenient=True)
            if fd is not None:
                self.attrs_fd(fd, e, False)


def _only_whiteouts(pfd: int, name: bytes) -> bool:
    """True if the dir ``name`` holds nothing but dirs and char 0/0 whiteouts."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    try:
        with os.scandir(fd) as it:
            for ent in it:
                child = os.fsencode(ent.name)
                if ent.is_dir(follow_symlinks=False):
                    if not _only_whiteouts(fd, child):
                        return False
                elif not _is_whiteout_st(ent.stat(follow_symlinks=False)):
                    return False
    finally:
        os.close(fd)
    return True
