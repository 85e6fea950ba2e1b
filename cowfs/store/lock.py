"""flock(2)-based locks of the store: the store-wide lock, per-layer locks, staging locks.

Owns: acquiring and releasing advisory locks on files and directories. Must not
decide what a lock protects; store.py documents that. Locks are per open file
description, so they are released when the process dies (even by SIGKILL).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from types import TracebackType

log = logging.getLogger(__name__)


class FileLock:
    """An exclusive or shared flock on a path, usable as a context manager.

    The lock file is created if missing (``create=True``); a directory may be
    locked too (flock works on directory fds).
    """

    def __init__(self, path: str, *, shared: bool = False, create: bool = True) -> None:
        self.path = path
        self.shared = shared
        self.create = create
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        if os.path.isdir(self.path):
            return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if self.create else 0)
        return os.open(self.path, flags, 0o644)

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; return False if ``blocking`` is False and someone else holds it."""
        if self._fd is not None:
            return True
        fd = self._open()
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        if not blocking:
            op |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, op)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only fd drops the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def is_locked(path: str) -> bool:
    """True if some open file description holds a flock on ``path`` (probe with LOCK_NB)."""
    probe = FileLock(path, create=False)
    try:
        got = probe.acquire(blocking=False)
    except FileNotFoundError:
        return False
    if got:
        probe.release()
    return not got
