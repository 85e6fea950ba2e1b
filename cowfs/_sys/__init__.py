"""ctypes syscall shims: the only place cowfs talks to libc directly.

Owns: thin, typed wrappers that raise ``OSError(errno)`` like ``os.*`` does.
Must not contain policy; callers decide what an errno means.
"""

from __future__ import annotations

from .linux import (
    AT_FDCWD as AT_FDCWD,
    MNT_DETACH as MNT_DETACH,
    MNT_FORCE as MNT_FORCE,
    RENAME_EXCHANGE as RENAME_EXCHANGE,
    RENAME_NOREPLACE as RENAME_NOREPLACE,
    RENAME_WHITEOUT as RENAME_WHITEOUT,
    mount as mount,
    renameat2 as renameat2,
    syscall as syscall,
    umount2 as umount2,
)
