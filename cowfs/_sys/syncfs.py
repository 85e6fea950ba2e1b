"""syncfs(2): flush one filesystem (the store's) instead of fsyncing every file.

Owns: the ctypes shim only; callers decide when to call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def syncfs(fd: int) -> None:
    """Commit the filesystem holding ``fd`` to disk; raise ``OSError`` on failure."""
    if _libc.syncfs(fd) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")
