"""cowfs FUSE (the ``cowfs-overlay`` mount program) against the model, and its upper
read back by kernel overlayfs after every run (interchangeability, SPEC §3)."""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import settings

from cowfs.testing import CowfsFuseAdapter, OverlayMachine

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_fuse, pytest.mark.needs_overlay]

CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"

FuseMachine = OverlayMachine.bind(
    CowfsFuseAdapter(), kernel_crosscheck=True,
    # Known divergence, tracked by test_fd_opened_before_copy_up_reads_new_data below.
    disabled=frozenset({"fd_copyup"}))
TestFuseMatchesModel = FuseMachine.TestCase
TestFuseMatchesModel.settings = settings(
    max_examples=15 if CI else 500, stateful_step_count=30)


@pytest.mark.xfail(strict=True, reason="cowfs FUSE keeps reading the lower file through an "
                   "fd opened before another fd copied it up; the kernel reopens the upper")
def test_fd_opened_before_copy_up_reads_new_data() -> None:
    with tempfile.TemporaryDirectory() as d:
        for sub in ("l0", "upper", "work", "merged"):
            os.mkdir(os.path.join(d, sub))
        with open(os.path.join(d, "l0", "f"), "wb") as f:
            f.write(b"lower-data")
        fs = CowfsFuseAdapter().open([os.path.join(d, "l0")], os.path.join(d, "upper"),
                                     os.path.join(d, "work"), os.path.join(d, "merged"))
        try:
            assert fs.apply("fd_copyup", (b"f", b"NEW")) == b"NEWer-data"
        finally:
            fs.close()
