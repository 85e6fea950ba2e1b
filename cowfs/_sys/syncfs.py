"""syncfs(2): flush one filesystem (the store's) instead of fsyncing every file.

Owns: the ctypes shim only; callers decide when to call it.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)  # no find_library: it runs ldconfig -p


def syncfs(fd: int) -> None:
    """Commit the filesystem holding ``fd`` to disk; raise ``OSError`` on failure."""
    if _libc.syncfs(fd) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")
