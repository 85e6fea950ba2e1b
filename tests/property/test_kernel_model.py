"""The model is the executable spec: kernel overlayfs (the oracle) must agree with it.

Runs ``OverlayMachine`` with the kernel adapter (real ``mount -t overlay``), so any
difference is a bug in the model. Also checks that a difference is caught: a kernel
mount with ``redirect_dir=on`` renames lower dirs instead of giving EXDEV.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from cowfs.testing import KernelAdapter, OverlayMachine, replay
from cowfs.testing.model import Dir, Inode

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"

KernelMachine = OverlayMachine.bind(KernelAdapter())
TestKernelMatchesModel = KernelMachine.TestCase
TestKernelMatchesModel.settings = settings(
    max_examples=100 if CI else 1000, stateful_step_count=40)


class _RedirectDirKernel(KernelAdapter):
    """Kernel overlay with redirect_dir=on: lower dirs rename (the model says EXDEV)."""

    name = "kernel-redirect-dir-on"
    OPTIONS = "index=off,redirect_dir=on,metacopy=off"


def test_a_divergent_implementation_is_caught() -> None:
    """redirect_dir=on renames a lower dir (the model says EXDEV): replay must see it.

    The machine's own end-to-end catch is exercised on fuse-overlayfs in
    test_check_cli.py (a random search here would depend on luck).
    """
    lower = Dir(children={b"d": Dir(children={b"f": Inode("file", 0o644, b"x")})})
    found = replay(_RedirectDirKernel(), [lower], [("rename", (b"d", b"e"))])
    assert found and "EXDEV" in found[0], found
    assert replay(KernelAdapter(), [lower], [("rename", (b"d", b"e"))]) == []
