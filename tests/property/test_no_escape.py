"""Hostile layers cannot make the machine act outside the mount: symlinks in a layer
pointing out of it are never followed by any operation (syscalls.py walks with
O_DIRECTORY|O_NOFOLLOW and never follows the last component)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cowfs.testing import KernelAdapter, replay
from cowfs.testing.model import Dir, Inode

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


def test_symlinks_out_of_the_layer_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    target = os.fsencode(outside)
    lower = Dir(children={
        b"esc": Inode("symlink", 0o777, target=target),
        b"file": Inode("symlink", 0o777, target=target + b"/victim"),
    })
    steps: list[tuple[str, tuple[bytes | int, ...]]] = [
        ("create", (b"esc/new", b"x")), ("mkdir", (b"esc/dir", 0o755)),
        ("create", (b"file", b"overwritten")), ("write", (b"file", 0, b"W")),
        ("truncate", (b"file", 0)), ("chmod", (b"file", 0o777)),
        ("setxattr", (b"esc", b"user.a", b"1")), ("symlink", (b"x", b"esc/link")),
        ("rename", (b"esc", b"esc2")), ("unlink", (b"esc2",)),
    ]
    assert replay(KernelAdapter(), [lower], steps) == []
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_bytes() == b"keep"
    assert (outside / "victim").stat().st_mode & 0o777 != 0o777
