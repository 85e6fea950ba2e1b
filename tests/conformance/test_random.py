"""Seeded random op sequences, differential against the kernel: finds what the table missed.

Deterministic (fixed seeds); a failure names its seed and the op list to replay.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.backends import Backend
from conformance.runner import Op, Outcome, Scenario, diff, execute
from cowfs._sys.linux import RENAME_EXCHANGE, RENAME_NOREPLACE

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

LOWERS: list[dict[str, Any]] = [
    {"d/a": "top-a", "d/gone": ("wh",), "e/f": "f1", "o": ("opaque", b"y"), "o/n": "n",
     "h1": "h", "h2": ("hardlink", "h1")},
    {"d/a": "low-a", "d/b": "b", "d/gone": "g", "d/sub/x": "x", "e/g": "g", "o/old": "o",
     "a": "a", "l": ("link", "a"), "empty": None, "deep/er/est/f": "deep"},
]
NAMES = ["a", "b", "d", "d/a", "d/b", "d/sub", "d/sub/x", "d/new", "e", "e/f", "e/g", "o",
         "o/n", "o/old", "l", "h1", "h2", "empty", "empty/z", "deep/er", "deep/er/est/f",
         "n1", "n1/m"]
LOWERS_B: list[dict[str, Any]] = [
    {"d/a": ("wh",), "m": ("opaque", b"y"), "m/new": "n", "s/x": "x2", "t": ("link", "d"),
     "big/f1": ("file", "1", {"xattrs": {"user.k": b"v"}})},
    {"d/a": "mid-a", "d/c": "c", "m/hidden": "h", "s": None, "u/v/w": "w",
     "u/v/hl": ("hardlink", "u/v/w")},
    {"d/a": "a", "d/b": "b", "m/old": "o", "s/y": "y", "u/z": "z", "e": None,
     "dev": ("chr", 1, 3), "s/y2": ("link", "/d/b")},
]
NAMES_B = ["d", "d/a", "d/b", "d/c", "m", "m/new", "m/old", "s", "s/x", "s/y", "t", "t/b",
           "u", "u/v", "u/v/w", "u/v/hl", "u/z", "e", "e/q", "big", "big/f1", "n2"]
"""Odd seeds run on this 3-layer stack (opaque middle dir, symlink to a dir, hardlinks)."""
SPLIT_NUMBERS = {"h1", "h2", "u/v/w", "u/v/hl"}
"""Names of lower hardlinks: once one is copied up, the kernel gives the copy a new st_ino
and the others keep the old one; the core keeps it for the copy (the FUSE node id the
kernel holds) and renumbers the others. A documented difference: no inode checks there."""
SEEDS = list(range(int(os.environ.get("COWFS_RANDOM_SEEDS", "12"))))


def _ops(rng: random.Random, n: int = 30, names: list[str] = NAMES) -> list[Op]:
    ops: list[Op] = []
    for _ in range(n):
        p, q = rng.choice(names), rng.choice(names)
        kind = rng.randrange(19)
        if kind == 0:
            ops.append(("write", p, rng.randbytes(rng.randrange(1, 50))))
        elif kind == 1:
            ops.append(("append", p, b"+"))
        elif kind == 2:
            ops.append(("truncate", p, rng.randrange(0, 20)))
        elif kind == 3:
            ops.append(("unlink", p))
        elif kind == 4:
            ops.append(("rmdir", p))
        elif kind == 5:
            ops.append(("mkdir", p))
        elif kind == 6:
            flags = rng.choice([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE])
            ops.append(("rename", p, q, flags))
        elif kind == 7:
            ops.append(("link", p, q))
        elif kind == 8:
            ops.append(("symlink", q, p))
        elif kind == 9:
            ops.append(("chmod", p, rng.choice([0o600, 0o755, 0o4711])))
        elif kind == 10:
            ops.append(("setxattr", p, "user.r", rng.randbytes(3)))
        elif kind == 11:
            ops.append(("read", p))
        elif kind == 12:
            ops.append(("listdir", p))
        elif kind == 13:
            ops.append(("stat", p))
        elif kind == 14:
            ops.append(("open_close", p, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        elif kind == 15:
            ops.append(("removexattr", p, "user.r"))
        elif kind == 16:
            # a socket: a fifo would block an open, a device is nodev on a FUSE mount
            ops.append(("mknod", p, 0o140644))
        elif kind == 17 and p not in SPLIT_NUMBERS and q not in SPLIT_NUMBERS:
            key = rng.choice("xyz")
            ops.append(("remember_ino", p, key))
            ops.append(("same_ino", q if rng.random() < 0.3 else p, key))
        elif rng.random() < 0.3:
            ops.append(("remount",))
        else:
            ops.append(("listxattr", p))
    return ops


KNOWN_GAPS: dict[tuple[str, int], str] = {
    ("fuse", 8): "FUSE: renaming over one name of a lower hardlink (shared node id) makes "
                 "the kernel drop_nlink the other name's cached inode (nlink 1, kernel "
                 "says 2); see CONTRACTS.md §1 known gap",
}
"""Strict xfails: a known backend gap stays visible and fails the day it is fixed."""


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sequence(backend: Backend, seed: int, tmp_path: Path,
                         reference: Callable[[Scenario], Outcome],
                         request: pytest.FixtureRequest) -> None:
    gap = KNOWN_GAPS.get((backend.name, seed))
    if gap is not None:
        request.applymarker(pytest.mark.xfail(reason=gap, strict=True))
    lowers, names = (LOWERS, NAMES) if seed % 2 == 0 else (LOWERS_B, NAMES_B)
    sc = Scenario(f"random-{seed}", lowers, _ops(random.Random(seed), names=names))
    ref = reference(sc)
    got = execute(backend, tmp_path, sc, kernel_format=not backend.reads_dialects)
    bad = [f"op {i} {sc.ops[i]!r}: backend={g!r} reference={r!r}"
           for i, (g, r) in enumerate(zip(got.results, ref.results, strict=True)) if g != r]
    assert not bad, f"seed {seed}:\n" + "\n".join(bad)
    assert not diff(got.tree, ref.tree), f"seed {seed} tree:\n" + "\n".join(
        diff(got.tree, ref.tree))
    assert not diff(got.upper, ref.upper), f"seed {seed} upper:\n" + "\n".join(
        diff(got.upper, ref.upper))


def test_sequences_exercise_errors_and_successes() -> None:
    """The generator must produce both outcomes, or the differential test proves little."""
    ops = [op for seed in SEEDS for op in _ops(random.Random(seed))]
    assert {op[0] for op in ops} >= {"write", "rename", "rmdir", "link", "symlink"}
    assert len(ops) >= 30 * len(SEEDS)
