"""getxattrat/listxattrat against os.getxattr/os.listxattr on real files, both code paths."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowfs._sys import xattrat

ABSENT = frozenset({errno.ENODATA})


@pytest.fixture(params=["syscall", "proc-path"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "proc-path":
        monkeypatch.setattr(xattrat, "available", False)
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[int]:
    (tmp_path / "f").write_bytes(b"data")
    os.setxattr(tmp_path / "f", "user.small", b"v1")
    os.setxattr(tmp_path / "f", "user.big", b"x" * 3000)  # > the first buffer: ERANGE path
    (tmp_path / "plain").write_bytes(b"")
    os.symlink("f", tmp_path / "link")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def test_values_match_os_getxattr(mode: str, tree: int, tmp_path: Path) -> None:
    assert xattrat.getxattrat(tree, b"f", b"user.small") == b"v1"
    assert xattrat.getxattrat(tree, b"f", b"user.big") == os.getxattr(tmp_path / "f", "user.big")
    assert xattrat.getxattrat(tree, b"plain", b"user.small", ABSENT) is None
    with pytest.raises(OSError) as exc:
        xattrat.getxattrat(tree, b"plain", b"user.small")
    assert exc.value.errno == errno.ENODATA
    with pytest.raises(FileNotFoundError):
        xattrat.getxattrat(tree, b"nothing", b"user.small", ABSENT)


def test_symlinks_are_not_followed(mode: str, tree: int) -> None:
    # The link's target has user.small; the link itself cannot carry user.* at all.
    assert xattrat.getxattrat(tree, b"link", b"user.small", ABSENT) is None
    assert xattrat.listxattrat(tree, b"link") == []


def test_list_matches_os_listxattr(mode: str, tree: int, tmp_path: Path) -> None:
    got = sorted(xattrat.listxattrat(tree, b"f"))
    assert got == sorted(os.fsencode(a) for a in os.listxattr(tmp_path / "f"))
    assert {b"user.small", b"user.big"} <= set(got)
    assert xattrat.listxattrat(tree, b"plain") == [
        os.fsencode(a) for a in os.listxattr(tmp_path / "plain")]


def test_the_syscall_is_used_on_this_kernel(tree: int) -> None:
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    if release < (6, 13):
        pytest.skip(f"getxattrat(2) needs Linux 6.13, this is {os.uname().release}")
    xattrat.getxattrat(tree, b"f", b"user.small")
    assert xattrat.available is True, "getxattrat(2) exists since 6.13; the fast path is off"
