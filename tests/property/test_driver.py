"""cowfs's kernel backend through the public API (``cowfs.mount(..., backend="kernel")``)
against the model: its option builder and mount path keep kernel semantics."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from cowfs.testing import DriverAdapter, OverlayMachine

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"

DriverKernelMachine = OverlayMachine.bind(DriverAdapter("kernel"))
TestDriverKernelMatchesModel = DriverKernelMachine.TestCase
TestDriverKernelMatchesModel.settings = settings(
    max_examples=25 if CI else 500, stateful_step_count=30)
