"""The "cowfs-kernel" backend of the conformance suite: `cowfs.mount(..., backend="kernel")`.

The library's own kernel path (option building, escaping, the feature subset, the
registry) on the same scenarios as the raw kernel reference, the core and FUSE.
Owned by the kernel backend; registered in ``backends.BACKENDS``.
"""

from __future__ import annotations

import pytest

import cowfs
from conformance.backends import Backend, MountedFS


class CowfsKernelFS(MountedFS):
    """Kernel overlayfs mounted through cowfs's driver; operations are plain os calls."""

    name = "cowfs-kernel"

    def _mount(self) -> None:
        s = self.stack
        self.m = cowfs.mount([str(p) for p in s.lowers], s.upper, s.work, target=s.mnt,
                             backend="kernel", run_dir=str(s.mnt.parent / ".cowfs-run"))

    def _umount(self) -> None:
        self.m.unmount()


COWFS_KERNEL_BACKEND: Backend = Backend("cowfs-kernel", CowfsKernelFS,
                               (pytest.mark.needs_root, pytest.mark.needs_overlay),
                               reads_dialects=False)
