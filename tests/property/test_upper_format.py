"""``check_upper``: every shape of invalid kernel overlay upper is reported; valid is quiet.

Each hostile upper is built for real on disk (mknod, setxattr as root).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cowfs import format as fmt
from cowfs.testing import check_upper, write_layer
from cowfs.testing.model import WHITEOUT, Dir, Inode

pytestmark = pytest.mark.needs_root


def _valid(up: Path) -> None:
    tree = Dir(children={
        b"f": Inode("file", 0o644, b"x"),
        b"gone": WHITEOUT,
        b"d": Dir(opaque=True, children={b"g": Inode("file", 0o600, b"")}),
        b"m": Dir(children={b"w": WHITEOUT, b"s": Inode("symlink", 0o777, target=b"f")}),
    })
    write_layer(tree, str(up))


def test_valid_upper_has_no_problems(tmp_path: Path) -> None:
    _valid(tmp_path)
    assert check_upper(str(tmp_path)) == []


def _wh_file(up: Path) -> None:
    (up / (fmt.WH_PREFIX_STR + "f")).write_bytes(b"")


def _wh_opaque_sentinel(up: Path) -> None:
    (up / "d" / fmt.WH_OPAQUE_STR).write_bytes(b"")


def _whiteout_in_opaque(up: Path) -> None:
    os.mknod(up / "d" / "x", fmt.WHITEOUT_MODE, os.makedev(0, 0))


def _real_device(up: Path) -> None:
    os.mknod(up / "null", fmt.WHITEOUT_MODE | 0o666, os.makedev(1, 3))


def _fof_opaque(up: Path) -> None:
    os.setxattr(up / "m", fmt.FOF_OPAQUE, b"y")


def _user_opaque_in_trusted_mode(up: Path) -> None:
    os.setxattr(up / "m", fmt.USER_OPAQUE, b"y")


def _opaque_on_file(up: Path) -> None:
    os.setxattr(up / "f", fmt.TRUSTED_OPAQUE, b"y")


def _opaque_value_x(up: Path) -> None:
    os.setxattr(up / "m", fmt.TRUSTED_OPAQUE, b"x")


@pytest.mark.parametrize(("spoil", "needle"), [
    (_wh_file, "file in the upper dir"),
    (_wh_opaque_sentinel, "file in the upper dir"),
    (_whiteout_in_opaque, "whiteout inside an opaque dir"),
    (_real_device, "not a 0/0 whiteout"),
    (_fof_opaque, "ignores"),
    (_user_opaque_in_trusted_mode, "ignores"),
    (_opaque_on_file, "non-directory"),
    (_opaque_value_x, "the kernel writes 'y'"),
])
def test_invalid_upper_is_reported(tmp_path: Path, spoil: Callable[[Path], None],
                                   needle: str) -> None:
    _valid(tmp_path)
    spoil(tmp_path)
    problems = check_upper(str(tmp_path))
    assert len(problems) == 1, problems
    assert needle in problems[0]


def test_userxattr_mode_wants_user_namespace(tmp_path: Path) -> None:
    _valid(tmp_path)
    problems = check_upper(str(tmp_path), userxattr=True)
    assert any("ignores" in p for p in problems)  # trusted.overlay.opaque is not read
