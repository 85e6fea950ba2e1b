"""Rootless unpack: inside a user namespace (root mapped to one uid) the extractor writes
the userxattr dialect, skips device nodes and foreign owners with warnings, and still
writes char 0/0 whiteouts (allowed in a user namespace since Linux 5.8)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.layers import LayerTar

from cowfs import format as fmt
from cowfs.store.unpack import detect_rootless, unpack_layer

CHILD = """
import json, sys
from cowfs.store.unpack import detect_rootless, unpack_layer
with open(sys.argv[1], "rb") as f:
    res = unpack_layer(f, sys.argv[2])
print(json.dumps({"rootless": detect_rootless(), "warnings": res.warnings}))
"""


@pytest.mark.needs_userns
def test_unpack_in_a_user_namespace(tmp: Path) -> None:
    layer = (LayerTar().dir("etc", uid=5, gid=5).file("etc/f", b"x", uid=1000)
             .chardev("dev/null", 1, 3).fifo("run/p").whiteout("gone")
             .file("opq/keep").opaque("opq")
             .file("t", xattrs={"trusted.x": "1", "user.ok": "1"}))
    (tmp / "layer.tar").write_bytes(bytes(layer))
    dest = tmp / "dest"
    dest.mkdir()
    # `unshare -U -r` maps our uid to root in a new user namespace: one uid only,
    # no CAP_MKNOD or trusted.* outside it, like a rootless user.
    out = subprocess.run(["unshare", "-U", "-r", sys.executable, "-c", CHILD,
                          str(tmp / "layer.tar"), str(dest)], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parents[2])
    res = json.loads(out.stdout)
    assert res["rootless"] is True
    text = "\n".join(res["warnings"])
    assert "device nodes skipped" in text and "ownership not preserved" in text
    assert "xattr trusted.* not set" in text
    assert not (dest / "dev/null").exists()
    assert stat.S_ISFIFO(os.lstat(dest / "run/p").st_mode)
    st = os.lstat(dest / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "opq", fmt.USER_OPAQUE) == fmt.OPAQUE_YES
    assert os.getxattr(dest / "t", "user.ok") == b"1"
    assert (dest / "etc/f").read_bytes() == b"x"


@pytest.mark.needs_root
def test_rootless_flag_selects_the_userxattr_dialect(tmp: Path) -> None:
    assert detect_rootless() is False
    layer = LayerTar().file("d/x").opaque("d")
    for rootless, name in ((True, fmt.USER_OPAQUE), (False, fmt.TRUSTED_OPAQUE)):
        dest = tmp / str(rootless)
        dest.mkdir()
        unpack_layer(io.BytesIO(bytes(layer)), str(dest), rootless=rootless)
        assert os.listxattr(dest / "d") == [os.fsdecode(name)]
