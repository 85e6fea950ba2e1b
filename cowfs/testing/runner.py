"""Run ``OverlayMachine`` against an adapter outside pytest (what ``cowfs check`` does).

Owns: hypothesis settings for one check run (examples, seed, steps), catching the
shrunk failure, and packaging it with its reproducer script. Must not parse
command lines (``cowfs.cli.check`` does) or print.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, Verbosity, settings
from hypothesis.errors import Flaky
from hypothesis.stateful import run_state_machine_as_test

from ..errors import MountError
from .adapters import Adapter
from .layers import check_upper, write_layer
from .machine import Divergence, OverlayMachine, Record, diff_snapshots, result_of
from .model import Dir, Model
from .script import render


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check: ``ok`` or the shrunk failing run and its script."""

    adapter: str
    ok: bool
    examples: int
    steps: int
    message: str = ""
    script: str = ""
    record: Record | None = None


def run_check(adapter: Adapter, *, examples: int = 100, seed: int | None = None,
              steps: int = 40, without: Iterable[str] = (), ignore: Iterable[str] = (),
              crosscheck: bool = False,
              shrink: bool = True) -> CheckResult:
    """Run the machine ``examples`` times against ``adapter`` and return what it found.

    Args:
        seed: random seed; None = hypothesis's derandomized (fixed) sequence.
        without: operation names the machine should skip (known divergences).
        ignore: Entry fields not compared (``machine.IGNORABLE``).
        crosscheck: also mount each final upper with kernel overlayfs and compare.
        shrink: minimize a failing run (slower, much shorter reproducers).
    """
    counter = {"steps": 0, "examples": 0}
    machine = OverlayMachine.bind(adapter, disabled=frozenset(without),
                                  ignore=frozenset(ignore),
                                  kernel_crosscheck=crosscheck, counter=counter)
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    opts = settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        derandomize=seed is None, database=None, verbosity=Verbosity.quiet,
        phases=phases, print_blob=False, report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )
    state = random.getstate()
    if seed is not None:
        random.seed(seed)  # hypothesis draws its seed from the global random module
    try:
        run_state_machine_as_test(machine, settings=opts)
    except Divergence as exc:
        record = machine.last
        assert record is not None
        return CheckResult(adapter.name, False, counter["examples"], counter["steps"],
                           str(exc), render(record, adapter), record)
    except Exception as exc:  # an adapter crash is a finding too, with its reproducer
        record = machine.last
        if isinstance(exc, MountError) and (record is None or not record.steps):
            raise  # it cannot even mount: not a divergence, a usage problem

        msg = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, Flaky):
            msg = ("the implementation is nondeterministic: the same sequence diverged "
                   f"differently when replayed (the script shows the last run)\n{msg}")
        if record is not None:
            record.failure = record.failure or msg
        return CheckResult(adapter.name, False, counter["examples"], counter["steps"], msg,
                           render(record, adapter) if record else "", record)
    finally:
        random.setstate(state)
    return CheckResult(adapter.name, True, counter["examples"], counter["steps"])


def replay(adapter: Adapter, lowers: Sequence[Dir],
           steps: Sequence[tuple[str, tuple[bytes | int, ...]]]) -> list[str]:
    """Run a fixed sequence on ``adapter`` and on the model; return the divergences.

    For regression tests of one known case (no hypothesis involved): ``lowers`` are
    model trees (top first), ``steps`` are ``(operation, args)`` as in ``Record.steps``
    (``("remount", ())`` included).
    """
    found: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cowfs-replay-") as tmp:
        paths = []
        for i, tree in enumerate(lowers):
            path = os.path.join(tmp, f"l{i}")
            os.mkdir(path)
            write_layer(tree, path, userxattr=adapter.userxattr)
            paths.append(path)
        dirs = [os.path.join(tmp, d) for d in ("upper", "work", "merged")]
        for d in dirs:
            os.mkdir(d)
        model = Model(list(lowers))
        fs = adapter.open(paths, *dirs)
        try:
            for op, args in steps:
                if op == "remount":
                    fs.close()
                    fs = adapter.open(paths, *dirs)
                    continue
                want = result_of(getattr(model, op), *args)
                got = result_of(fs.apply, op, args)
                if want != got:
                    found.append(f"{op}{args!r}: model {want}, {adapter.name} {got}")
            found += diff_snapshots(model.snapshot(), fs.snapshot())
        finally:
            fs.close()
        found += check_upper(dirs[0], userxattr=adapter.userxattr)
    return found
