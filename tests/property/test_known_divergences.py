"""Known divergences from kernel overlayfs, one minimal case each.

The kernel must match the model on every case (it is the oracle). cowfs's core and
FUSE backend are expected to differ where marked: strict xfails, so a fix turns them
into failures that ask for the marker (and the machine's ``disabled`` entry) to go.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cowfs.testing import Adapter, CoreAdapter, CowfsFuseAdapter, KernelAdapter, replay
from cowfs.testing.model import Dir, Inode

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

Case = tuple[list[Dir], list[tuple[str, tuple[bytes | int, ...]]]]


def _rename_lower_hardlinks() -> Case:
    h = Inode("file", 0o644, b"x", nlink=2)
    return [Dir(children={b"a": h, b"b": h})], [("rename", (b"a", b"b"))]


def _fd_read_after_copy_up() -> Case:
    return [Dir(children={b"f": Inode("file", 0o644, b"lower-data")})], [
        ("fd_copyup", (b"f", b"NEW"))]


CASES: dict[str, Callable[[], Case]] = {
    "rename_lower_hardlinks": _rename_lower_hardlinks,
    "fd_copyup": _fd_read_after_copy_up,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_matches_model(case: str) -> None:
    assert replay(KernelAdapter(), *CASES[case]()) == []


RENAME_WHY = ("FUSE: pyfuse3 uses st_ino as the node id, so the names of one lower "
              "hardlinked file are one kernel inode and the VFS makes rename(2) between "
              "them a no-op before the daemon is asked; the kernel (index=off) renames")


def _adapters() -> list[object]:
    return [
        # Fixed in the core (each name of a lower hardlink is its own node,
        # Overlay.lookup_node), kept as a regression check.
        pytest.param(CoreAdapter(), "rename_lower_hardlinks"),
        pytest.param(CowfsFuseAdapter(), "rename_lower_hardlinks",
                     marks=[pytest.mark.needs_fuse,
                            pytest.mark.xfail(strict=True, reason=RENAME_WHY)]),
        # Fixed divergence, kept as a regression check: the old fd follows the copy-up.
        pytest.param(CowfsFuseAdapter(), "fd_copyup", marks=pytest.mark.needs_fuse),
    ]


@pytest.mark.parametrize(("adapter", "case"), _adapters())
def test_cowfs_known_divergence(adapter: Adapter, case: str) -> None:
    assert replay(adapter, *CASES[case]()) == []
