"""The FUSE-free core (``cowfs.overlay.Overlay``) against the model, through a VFS stand-in.

No mount: fast, so it runs the most examples. ``fd_copyup`` is the frontend's business
and is skipped by the adapter (see cowfs/testing/core.py).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from cowfs.testing import OverlayMachine
from cowfs.testing.core import CoreAdapter

pytestmark = pytest.mark.needs_root  # trusted.overlay.* xattrs and 0/0 whiteouts

CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"

CoreMachine = OverlayMachine.bind(CoreAdapter())
TestCoreMatchesModel = CoreMachine.TestCase
TestCoreMatchesModel.settings = settings(
    max_examples=120 if CI else 2000, stateful_step_count=40)
