"""Seed tests run on both rootfs backends (kernel overlay and the cowfs FUSE daemon)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.containers import Env, make_env


@pytest.fixture(params=[pytest.param("kernel", marks=[pytest.mark.needs_root,
                                                      pytest.mark.needs_overlay]),
                        pytest.param("fuse", marks=[pytest.mark.needs_root,
                                                    pytest.mark.needs_fuse])])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path, request.param)
