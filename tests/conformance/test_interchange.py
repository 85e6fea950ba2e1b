"""Interchangeability: an upper written through a backend mounts with the kernel and shows
the same tree; an upper written by the kernel shows the same tree through the backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.backends import BACKENDS, Backend, Stack
from conformance.layout import snapshot_tree
from conformance.runner import Scenario, diff, execute, make_stack
from conformance.scenarios import BY_NAME

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

WRITERS = ["unlink_whiteouts", "rmdir_rules", "mkdir_opaque", "rename_files_across_layers",
           "rename_dir_over_empty_lower_dir", "copyup_xattrs", "hardlinks_lower",
           "special_files", "copyup_parents_deep", "rename_noreplace_exchange",
           "create_over_whiteout"]


def _tree_via(backend: Backend, stack: Stack, sc: Scenario) -> dict[str, Any]:
    fs = backend.factory(stack)
    try:
        return snapshot_tree(fs, nlink=sc.nlink)
    finally:
        fs.unmount()


def _reopen(base: Path, sc: Scenario) -> Stack:
    """The stack ``execute`` left in BASE (lowers, upper, work), with its mountpoint."""
    lowers = [base / f"l{i}" for i in range(len(sc.lowers))]
    return Stack(lowers, base / "upper", base / "work", base / "mnt")


@pytest.mark.parametrize("name", WRITERS)
def test_backend_upper_mounts_with_kernel(backend: Backend, name: str, tmp_path: Path) -> None:
    sc = BY_NAME[name]
    written = execute(backend, tmp_path, sc, kernel_format=not backend.reads_dialects)
    seen = _tree_via(BACKENDS["kernel"], _reopen(tmp_path, sc), sc)
    assert not diff(seen, written.tree), "\n".join(diff(seen, written.tree))


@pytest.mark.parametrize("name", WRITERS)
def test_kernel_upper_reads_through_backend(backend: Backend, name: str,
                                            tmp_path: Path) -> None:
    sc = BY_NAME[name]
    written = execute(BACKENDS["kernel"], tmp_path, sc, kernel_format=True)
    seen = _tree_via(backend, _reopen(tmp_path, sc), sc)
    assert not diff(seen, written.tree), "\n".join(diff(seen, written.tree))


def test_stack_helper_matches_execute(tmp_path: Path) -> None:
    """_reopen must name exactly what make_stack builds (guards the helper above)."""
    sc = BY_NAME["unlink_whiteouts"]
    built = make_stack(tmp_path, sc)
    again = _reopen(tmp_path, sc)
    assert (built.lowers, built.upper, built.work, built.mnt) == (
        again.lowers, again.upper, again.work, again.mnt)
