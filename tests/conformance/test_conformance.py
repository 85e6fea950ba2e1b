"""The differential suite: every scenario on every backend against the kernel reference.

Same op results (values and errnos), same visible tree, same upper dir as on-disk format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conformance.backends import Backend
from conformance.runner import Outcome, Scenario, diff, execute
from conformance.scenarios import SCENARIOS

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
def test_scenario(backend: Backend, sc: Scenario, tmp_path: Path,
                  reference: Callable[[Scenario], Outcome]) -> None:
    ref = reference(sc)
    got = execute(backend, tmp_path, sc, kernel_format=not backend.reads_dialects)
    bad = [f"op {i} {sc.ops[i]!r}: backend={g!r} reference={r!r}"
           for i, (g, r) in enumerate(zip(got.results, ref.results, strict=True)) if g != r]
    assert not bad, "\n".join(bad)
    assert not diff(got.tree, ref.tree), "merged tree differs:\n" + "\n".join(
        diff(got.tree, ref.tree))
    if sc.compare_upper:
        assert not diff(got.upper, ref.upper), "upper differs:\n" + "\n".join(
            diff(got.upper, ref.upper))
    if sc.expect is not None:
        sc.expect(got)
