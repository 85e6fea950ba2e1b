"""cowfs FUSE (the ``cowfs-overlay`` mount program) against the model, and its upper
read back by kernel overlayfs after every run (interchangeability, SPEC §3)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from cowfs.testing import CowfsFuseAdapter, OverlayMachine

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_fuse, pytest.mark.needs_overlay]

CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"

FuseMachine = OverlayMachine.bind(
    CowfsFuseAdapter(), kernel_crosscheck=True,
    # Known divergences, each a strict xfail in test_known_divergences.py.
    disabled=frozenset({"rename_lower_hardlinks"}))
TestFuseMatchesModel = FuseMachine.TestCase
TestFuseMatchesModel.settings = settings(
    max_examples=20 if CI else 500, stateful_step_count=30)

