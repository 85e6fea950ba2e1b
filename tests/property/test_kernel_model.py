"""The model is the executable spec: kernel overlayfs (the oracle) must agree with it.

Runs ``OverlayMachine`` with the kernel adapter (real ``mount -t overlay``), so any
difference is a bug in the model. Also checks the machine can fail: a kernel mount
with ``redirect_dir=on`` renames lower dirs instead of EXDEV and must be caught.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from cowfs.testing import KernelAdapter, OverlayMachine
from cowfs.testing.runner import run_check

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"

KernelMachine = OverlayMachine.bind(KernelAdapter())
TestKernelMatchesModel = KernelMachine.TestCase
TestKernelMatchesModel.settings = settings(
    max_examples=60 if CI else 1000, stateful_step_count=40)


class _RedirectDirKernel(KernelAdapter):
    """Kernel overlay with redirect_dir=on: lower dirs rename (the model says EXDEV)."""

    name = "kernel-redirect-dir-on"
    OPTIONS = "index=off,redirect_dir=on,metacopy=off"


def test_machine_catches_a_divergent_implementation() -> None:
    others = ["create", "write", "append", "truncate", "unlink", "mkdir", "rmdir", "link",
              "symlink", "chmod", "setxattr", "removexattr", "fd_copyup", "remount"]
    result = run_check(_RedirectDirKernel(), examples=300, shrink=False, without=others)
    assert not result.ok
    assert "rename" in result.message and "EXDEV" in result.message, result.message
    assert result.record is not None and result.record.steps[-1][0] == "rename"
