"""The FUSE adapter's two tables: inode lookup counts and open file/dir handles.

Owns: the kernel-visible bookkeeping of the frontend. File handles come from their own
counter and are never inode numbers, so an fd opened on a lower file before its copy-up
stays valid; each handle remembers which real file its fd is (``real``) and the core's
mutation generation it last checked that at (``gen``), so the adapter can move it to the
upper copy (as kernel overlayfs does). Must not know overlay semantics; the core
(`cowfs.overlay`) owns those.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
from dataclasses import dataclass
from typing import final

log = logging.getLogger(__name__)

DirEntries = list[tuple[bytes, int, int]]
"""A merged listing as ``(name, st_ino, st_mode)``, ``.`` and ``..`` first."""


@final
@dataclass(eq=False, slots=True)
class OpenFile:
    """One open file as the kernel sees it (``fh``): a real fd owned by this table.

    ``flags`` are the flags the fd was opened with, ``real`` the (st_dev, st_ino) of the
    real file behind it and ``gen`` the core generation at which ``real`` was current.
    """

    fd: int
    ino: int
    flags: int = 0
    real: tuple[int, int] | None = None
    gen: int = -1


@final
@dataclass(eq=False, slots=True)
class OpenDir:
    """One open directory: the listing is snapshotted at the first readdir (offset 0)."""

    ino: int
    entries: DirEntries | None = None


@final
class HandleTable:
    """``fh -> OpenFile | OpenDir``; fds are closed on release and at `close_all`."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._files: dict[int, OpenFile] = {}
        self._dirs: dict[int, OpenDir] = {}

    def add_file(self, fd: int, ino: int, flags: int = 0,
                 real: tuple[int, int] | None = None, gen: int = -1) -> int:
        fh = next(self._counter)
        self._files[fh] = OpenFile(fd, ino, flags, real, gen)
        return fh

    def reopened(self, of: OpenFile, fd: int, real: tuple[int, int], gen: int) -> None:
        """Point ``of`` at a new fd for the same inode (the old one is closed)."""
        old, of.fd, of.real, of.gen = of.fd, fd, real, gen
        os.close(old)

    def file(self, fh: int) -> OpenFile:
        try:
            return self._files[fh]
        except KeyError:
            raise OSError(errno.EBADF, "no such file handle") from None

    def release_file(self, fh: int) -> None:
        of = self._files.pop(fh, None)
        if of is not None:
            os.close(of.fd)

    def add_dir(self, ino: int) -> int:
        fh = next(self._counter)
        self._dirs[fh] = OpenDir(ino)
        return fh

    def dir(self, fh: int) -> OpenDir:
        try:
            return self._dirs[fh]
        except KeyError:
            raise OSError(errno.EBADF, "no such directory handle") from None

    def release_dir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    def __len__(self) -> int:
        return len(self._files) + len(self._dirs)

    def close_all(self) -> None:
        """Close every fd still open (unmount without releases). Never raises."""
        for of in self._files.values():
            try:
                os.close(of.fd)
            except OSError as exc:
                log.warning("close fd %d of inode %d at unmount: %s", of.fd, of.ino, exc)
        self._files.clear()
        self._dirs.clear()


@final
class InodeTable:
    """Lookup counts the kernel holds, and the parent of each known directory.

    The core keeps its own counts (it owns the nodes); this table mirrors them so the
    adapter can answer ``..`` in readdir and check, in tests, that ``forget`` brings
    everything back to zero (bounded memory across walks).
    """

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._parents: dict[int, int] = {}

    def looked_up(self, ino: int, parent: int, is_dir: bool, n: int = 1) -> None:
        self._counts[ino] = self._counts.get(ino, 0) + n
        if is_dir:
            self._parents[ino] = parent

    def forget(self, ino: int, n: int) -> bool:
        """Drop ``n`` lookups; True when the kernel no longer knows ``ino``."""
        left = self._counts.get(ino, 0) - n
        if left > 0:
            self._counts[ino] = left
            return False
        if left < 0:
            log.warning("forget(%d, %d): more than the %d lookups known", ino, n, left + n)
        self._counts.pop(ino, None)
        self._parents.pop(ino, None)
        return True

    def parent(self, ino: int) -> int:
        """Parent of a directory last seen by lookup (the root for unknown ones)."""
        return self._parents.get(ino, 1)

    def moved(self, ino: int, new_parent: int) -> None:
        if ino in self._parents:
            self._parents[ino] = new_parent

    def counts(self) -> dict[int, int]:
        return dict(self._counts)

    def __len__(self) -> int:
        return len(self._counts)
