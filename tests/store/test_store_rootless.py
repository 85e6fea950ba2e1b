"""A store opened without real root (a user namespace) writes the userxattr dialect,
and its layers stack with kernel overlayfs mounted with ``userxattr``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.layers import LayerTar
from store_helpers import Img, base_layer, docker_archive

pytestmark = [pytest.mark.needs_userns, pytest.mark.needs_tool("unshare")]

SCRIPT = r"""
import json, os, subprocess, sys
from cowfs.store import open_store
root, archive, merged = sys.argv[1:4]
store = open_store(root)
[img] = store.import_path(archive)
lowers = store.layer_dirs(img)
top = lowers[0]
subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                "userxattr,lowerdir=" + ":".join(lowers), merged], check=True)
try:
    out = {"dialect": store.dialect.value, "xattrs": os.listxattr(os.path.join(top, "etc")),
           "etc": sorted(os.listdir(os.path.join(merged, "etc"))),
           "bin": sorted(os.listdir(os.path.join(merged, "bin"))), "fsck": store.fsck()}
finally:
    subprocess.run(["umount", merged], check=True)
print(json.dumps(out))
"""


def test_userns_store_uses_userxattr_dialect(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    img = Img([(base_layer(), "gzip"),
               (LayerTar().file("etc/motd", b"hi\n").whiteout("bin/tool").opaque("etc"),
                "zstd")], tags=["rootless"])
    archive = docker_archive(tmp_path / "a.tar", [img])
    merged = tmp_path / "merged"
    merged.mkdir()
    r = subprocess.run(["unshare", "-Urm", "--propagation", "private", sys.executable, "-c",
                        SCRIPT, str(tmp_path / "store"), str(archive), str(merged)],
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dialect"] == "chardev-userxattr"
    assert out["xattrs"] == ["user.overlay.opaque"]
    assert out["etc"] == ["motd"]          # opaque: the base layer's etc/ is hidden
    assert out["bin"] == ["sh"]            # whiteout: bin/tool is gone
    assert out["fsck"] == []
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert meta["whiteout_dialect"] == "chardev-userxattr"
