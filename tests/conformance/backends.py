"""Backends of the conformance suite: os-like operations on merged paths.

Every backend turns a ``Stack`` (lower dirs, upper, work, a mountpoint) into an ``FS``: an
object with os-like operations on merged paths (``fs.write(path, data)``,
``fs.unlink(path)``, ``fs.rename(a, b, flags)``, ``fs.listdir``, ``fs.lstat``, ...),
``remount()``, ``unmount()`` and ``fs.stack.upper``.

REGISTRATION POINT: add a backend to ``BACKENDS`` below with its name, a factory
``(stack) -> FS`` and the pytest marks it needs. Mounted backends subclass ``MountedFS``
and only implement ``_mount()``/``_umount()``; see ``KernelFS``. Expected additions:
"fuse" (cowfs-overlay, FUSE engineer) and "cowfs-kernel" (cowfs.kernel, kernel engineer).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cowfs._sys.linux import AT_FDCWD, MNT_DETACH, mount, renameat2, umount2
from cowfs.overlay import Caller, Overlay

UMASK = 0o022


@dataclass
class Stack:
    """The directories of one overlay: ``lowers[0]`` is the top lower."""

    lowers: list[Path]
    upper: Path | None
    work: Path | None
    mnt: Path


class FS:
    """os-like operations on merged paths ('a/b', no leading slash)."""

    name = "abstract"
    mounted = False

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    # lifecycle
    def remount(self) -> None:
        raise NotImplementedError

    def unmount(self) -> None:
        raise NotImplementedError

    # operations every backend implements
    def open_close(self, path: str, flags: int, mode: int = 0o644) -> None:
        raise NotImplementedError

    def write(self, path: str, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
              mode: int = 0o644, offset: int | None = None) -> int:
        raise NotImplementedError

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        raise NotImplementedError

    def append(self, path: str, data: bytes) -> int:
        return self.write(path, data, os.O_WRONLY | os.O_APPEND)

    def pwrite(self, path: str, offset: int, data: bytes) -> int:
        return self.write(path, data, os.O_WRONLY, offset=offset)


class MountedFS(FS):
    """A backend that mounts the stack at ``stack.mnt``; operations are plain os calls."""

    mounted = True

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self._mount()
        self.is_mounted = True

    def _mount(self) -> None:
        raise NotImplementedError

    def _umount(self) -> None:
        umount2(os.fsencode(self.stack.mnt))

    def remount(self) -> None:
        self._umount()
        self._mount()

    def unmount(self) -> None:
        if self.is_mounted:
            self.is_mounted = False
            try:
                self._umount()
            except OSError:
                umount2(os.fsencode(self.stack.mnt), MNT_DETACH)

    def p(self, path: str) -> str:
        return os.path.join(self.stack.mnt, path) if path else str(self.stack.mnt)

    def open_close(self, path: str, flags: int, mode: int = 0o644) -> None:
        os.close(os.open(self.p(path), flags, mode))

    def write(self, path: str, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
              mode: int = 0o644, offset: int | None = None) -> int:
        fd = os.open(self.p(path), flags, mode)
        try:
            return os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        with open(self.p(path), "rb") as f:
            f.seek(offset)
            return f.read(size)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(self.p(path), size)

    def unlink(self, path: str) -> None:
        os.unlink(self.p(path))

    def rmdir(self, path: str) -> None:
        os.rmdir(self.p(path))

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        os.mkdir(self.p(path), mode)

    def rename(self, a: str, b: str, flags: int = 0) -> None:
        renameat2(AT_FDCWD, os.fsencode(self.p(a)), AT_FDCWD, os.fsencode(self.p(b)), flags)

    def link(self, a: str, b: str) -> None:
        os.link(self.p(a), self.p(b), follow_symlinks=False)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, self.p(path))

    def mknod(self, path: str, mode: int, dev: int = 0) -> None:
        os.mknod(self.p(path), mode, dev)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self.p(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self.p(path), uid, gid, follow_symlinks=False)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        os.utime(self.p(path), ns=(atime_ns, mtime_ns), follow_symlinks=False)

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        os.setxattr(self.p(path), name, value, follow_symlinks=False)

    def getxattr(self, path: str, name: str) -> bytes:
        return os.getxattr(self.p(path), name, follow_symlinks=False)

    def listxattr(self, path: str) -> list[str]:
        return sorted(os.listxattr(self.p(path), follow_symlinks=False))

    def removexattr(self, path: str, name: str) -> None:
        os.removexattr(self.p(path), name, follow_symlinks=False)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.p(path)))

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(self.p(path))

    def readlink(self, path: str) -> str:
        return os.readlink(self.p(path))

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.p(""))

    def mmap_write(self, path: str, offset: int, data: bytes) -> None:
        fd = os.open(self.p(path), os.O_RDWR)
        try:
            _mmap_write(fd, offset, data)
        finally:
            os.close(fd)


def _mmap_write(fd: int, offset: int, data: bytes) -> None:
    size = os.fstat(fd).st_size
    with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
        m[offset:offset + len(data)] = data
        m.flush()


class KernelFS(MountedFS):
    """The reference: a raw ``mount -t overlay`` with the feature subset of SPEC §3."""

    name = "kernel"

    def _mount(self) -> None:
        opts = "lowerdir=" + ":".join(str(p) for p in self.stack.lowers)
        if self.stack.upper is not None:
            opts += f",upperdir={self.stack.upper},workdir={self.stack.work}"
            opts += ",redirect_dir=off,index=off,metacopy=off"
        mount(b"overlay", os.fsencode(self.stack.mnt), b"overlay", 0, opts.encode())


class CoreFS(FS):
    """The FUSE-free core driven through its inode API, as the FUSE adapter drives it."""

    name = "core"

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self._open()

    def _open(self) -> None:
        s = self.stack
        self.ov = Overlay([str(p) for p in s.lowers], None if s.upper is None else str(s.upper),
                          None if s.work is None else str(s.work))

    def remount(self) -> None:
        self.ov.close()
        self._open()

    def unmount(self) -> None:
        self.ov.close()

    def _ino(self, path: str) -> int:
        return self.ov.resolve(os.fsencode(path))

    def _lino(self, path: str) -> int:
        """Inode of PATH without following a final symlink (lstat semantics)."""
        return self._ino(self._follow(path, follow_last=False))

    def _follow(self, path: str, follow_last: bool = True) -> str:
        """The VFS's part of path walking, which the core leaves to its caller: follow
        symlinks in every component but the last (and the last too if asked)."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        links = 0
        i = 0
        while i < len(parts):
            comp = parts[i]
            last = i == len(parts) - 1
            if comp == "..":
                if done:
                    done.pop()
                i += 1
                continue
            try:
                ino = self._ino("/".join([*done, comp]))
            except FileNotFoundError:
                if last:
                    return "/".join([*done, comp])
                raise
            if stat.S_ISLNK(self.ov.getattr(ino).st_mode) and (follow_last or not last):
                links += 1
                if links > 40:
                    raise OSError(errno.ELOOP, "too many symlinks", path)
                target = os.fsdecode(self.ov.readlink(ino))
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts[i + 1:]
                i = 0
                continue
            done.append(comp)
            i += 1
        return "/".join(done)

    def _split(self, path: str) -> tuple[int, bytes]:
        head, _, base = path.rpartition("/")
        return self._ino(self._follow(head)), os.fsencode(base)

    def _exists(self, path: str) -> int | None:
        try:
            return self._ino(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _open_fd(self, path: str, flags: int, mode: int) -> int:
        """The VFS part of open(2): O_CREAT/O_EXCL against lookup, then open or create."""
        path = self._follow(path, follow_last=not (flags & os.O_CREAT and flags & os.O_EXCL))
        ino = self._exists(path)
        if ino is None:
            if not flags & os.O_CREAT:
                raise OSError(errno.ENOENT, "no such file", path)
            parent, name = self._split(path)
            fd, st = self.ov.create(parent, name, flags, mode, Caller(umask=UMASK))
            self.ov.forget(st.st_ino, 1)
            return fd
        if flags & os.O_CREAT and flags & os.O_EXCL:
            raise OSError(errno.EEXIST, "file exists", path)
        st = self.ov.getattr(ino)
        if stat.S_ISDIR(st.st_mode) and flags & os.O_ACCMODE != os.O_RDONLY:
            raise OSError(errno.EISDIR, "is a directory", path)
        return self.ov.open(ino, flags & ~(os.O_CREAT | os.O_EXCL))

    def open_close(self, path: str, flags: int, mode: int = 0o644) -> None:
        os.close(self._open_fd(path, flags, mode))

    def write(self, path: str, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
              mode: int = 0o644, offset: int | None = None) -> int:
        fd = self._open_fd(path, flags, mode)
        try:
            return os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def read(self, path: str, offset: int = 0, size: int = -1) -> bytes:
        fd = self._open_fd(path, os.O_RDONLY, 0)
        try:
            if size < 0:
                size = os.fstat(fd).st_size - offset
            return os.pread(fd, max(size, 0), offset)
        finally:
            os.close(fd)

    def truncate(self, path: str, size: int) -> None:
        self.ov.setattr(self._ino(self._follow(path)), size=size)

    def unlink(self, path: str) -> None:
        self.ov.unlink(*self._split(path))

    def rmdir(self, path: str) -> None:
        self.ov.rmdir(*self._split(path))

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        parent, name = self._split(path)
        st = self.ov.mkdir(parent, name, mode, Caller(umask=UMASK))
        self.ov.forget(st.st_ino, 1)

    def rename(self, a: str, b: str, flags: int = 0) -> None:
        pa, na = self._split(a)
        pb, nb = self._split(b)
        self.ov.rename(pa, na, pb, nb, flags)

    def link(self, a: str, b: str) -> None:
        src = self._lino(a)
        pb, nb = self._split(b)
        st = self.ov.link(src, pb, nb)
        self.ov.forget(st.st_ino, 1)

    def symlink(self, target: str, path: str) -> None:
        parent, name = self._split(path)
        st = self.ov.symlink(parent, name, os.fsencode(target), Caller(umask=UMASK))
        self.ov.forget(st.st_ino, 1)

    def mknod(self, path: str, mode: int, dev: int = 0) -> None:
        parent, name = self._split(path)
        st = self.ov.mknod(parent, name, mode, dev, Caller(umask=UMASK))
        self.ov.forget(st.st_ino, 1)

    def chmod(self, path: str, mode: int) -> None:
        self.ov.setattr(self._ino(self._follow(path)), mode=mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self.ov.setattr(self._lino(path), uid=None if uid < 0 else uid,
                        gid=None if gid < 0 else gid)

    def utime(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        self.ov.setattr(self._lino(path), atime_ns=atime_ns, mtime_ns=mtime_ns)

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        self.ov.setxattr(self._lino(path), os.fsencode(name), value)

    def getxattr(self, path: str, name: str) -> bytes:
        return self.ov.getxattr(self._lino(path), os.fsencode(name))

    def listxattr(self, path: str) -> list[str]:
        return sorted(os.fsdecode(n) for n in self.ov.listxattr(self._lino(path)))

    def removexattr(self, path: str, name: str) -> None:
        self.ov.removexattr(self._lino(path), os.fsencode(name))

    def listdir(self, path: str) -> list[str]:
        return sorted(os.fsdecode(n) for n, _ in self.ov.readdir(self._ino(self._follow(path))))

    def lstat(self, path: str) -> os.stat_result:
        return self.ov.getattr(self._lino(path))

    def readlink(self, path: str) -> str:
        return os.fsdecode(self.ov.readlink(self._lino(path)))

    def statfs(self) -> os.statvfs_result:
        return self.ov.statfs()

    def mmap_write(self, path: str, offset: int, data: bytes) -> None:
        fd = self._open_fd(path, os.O_RDWR, 0)
        try:
            _mmap_write(fd, offset, data)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Backend:
    name: str
    factory: Callable[[Stack], FS]
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())
    reads_dialects: bool = True
    """False: the backend only reads kernel-format lowers (it gets their translation)."""


BACKENDS: dict[str, Backend] = {
    "core": Backend("core", CoreFS),
    "kernel": Backend("kernel", KernelFS,
                      (pytest.mark.needs_root, pytest.mark.needs_overlay), reads_dialects=False),
}
"""name → Backend. Add "fuse" / "cowfs-kernel" here (see the module docstring)."""


from conformance.fuse_backend import FUSE_BACKEND  # noqa: E402 - needs MountedFS above

BACKENDS["fuse"] = FUSE_BACKEND

from conformance.cowfs_kernel_backend import COWFS_KERNEL_BACKEND  # noqa: E402 - same reason

BACKENDS["cowfs-kernel"] = COWFS_KERNEL_BACKEND
