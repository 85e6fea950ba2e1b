"""Fixtures of the conformance suite: ``backend`` (parametrized over ``BACKENDS``) and
``reference`` (the kernel's outcome of a scenario, computed once per session)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.backends import BACKENDS, Backend
from conformance.runner import Outcome, Scenario, execute


@pytest.fixture(params=[pytest.param(name, marks=b.marks) for name, b in BACKENDS.items()])
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[str(request.param)]


_REFERENCE: dict[str, Outcome] = {}


@pytest.fixture
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Scenario], Outcome]:
    """Outcome of a scenario on a raw kernel overlay mount (needs root + overlay)."""

    def get(sc: Scenario) -> Outcome:
        if sc.name not in _REFERENCE:
            base = tmp_path_factory.mktemp(f"ref-{sc.name}")
            _REFERENCE[sc.name] = execute(BACKENDS["kernel"], base, sc, kernel_format=True)
        return _REFERENCE[sc.name]

    return get
