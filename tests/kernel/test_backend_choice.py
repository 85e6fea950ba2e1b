"""Backend choice by privilege: root → kernel; non-root without a user namespace → fuse
(with the reason); inside ``unshare -Ur`` → kernel with userxattr. Real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cowfs
from cowfs import driver

REPO = Path(cowfs.__file__).resolve().parent.parent
NOBODY = 65534

SNIPPET = textwrap.dedent("""
    import json, os, sys
    from cowfs import driver
    from cowfs.format import WhiteoutDialect
    from cowfs.kernel import probe
    base = sys.argv[1]
    run = os.path.join(base, "run")
    backend, reason = driver.choose_backend(run)
    out = {"backend": backend, "reason": reason, "userns": probe.in_user_namespace(),
           "euid": os.geteuid(), "cache": sorted(os.listdir(run))}
    out["chardev"] = driver.choose_backend(run, dialect=WhiteoutDialect.CHARDEV)
    if sys.argv[2] == "mount":
        lowers = [os.path.join(base, "top"), os.path.join(base, "bottom")]
        with driver.mount(lowers, os.path.join(base, "u"), os.path.join(base, "w"),
                          run_dir=run) as m:
            merged = m.mergeddir
            out["mounted"] = [m.backend, m.record.userxattr, sorted(os.listdir(merged))]
            os.unlink(os.path.join(merged, "d", "x"))
            os.rmdir(os.path.join(merged, "d"))
            os.mkdir(os.path.join(merged, "d"))
        out["opaque"] = os.getxattr(os.path.join(base, "u", "d"), "user.overlay.opaque").decode()
        out["left"] = merged in driver.mountinfo()
    print(json.dumps(out))
""")


def _python() -> str:
    """An interpreter an unprivileged user can execute (the venv's may live under /root)."""
    system = "/usr/bin/python3"
    if os.path.exists(system):
        r = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True, check=False)
        if r.stdout.strip() == str(sys.version_info[:2]):
            return system
    return sys.executable


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A tree owned by nobody under /tmp (pytest's tmp_path is private to root), with a
    copy of the cowfs package in ``src/``."""
    base = Path(tempfile.mkdtemp(prefix="cowfs-choice-", dir="/tmp"))
    try:
        for d in ("top", "bottom", "bottom/d"):
            (base / d).mkdir()
        (base / "top" / "t").write_text("t")
        (base / "bottom" / "d" / "x").write_text("x")
        # The snippets import this cowfs from a copy: the checkout may sit under a
        # directory nobody cannot enter (e.g. /root).
        shutil.copytree(REPO / "cowfs", base / "src" / "cowfs",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(base):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, NOBODY, NOBODY)
        yield base
    finally:
        shutil.rmtree(base)


def _run(prefix: list[str], base: Path, mode: str) -> dict[str, Any]:
    cmd = [*prefix, "env", f"PYTHONPATH={base / 'src'}", "PYTHONDONTWRITEBYTECODE=1",
           _python(), "-c", SNIPPET, str(base), mode]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    result: dict[str, Any] = json.loads(r.stdout)
    return result


SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.mark.needs_root
@pytest.mark.needs_overlay
def test_root_chooses_kernel(tmp_path: Path) -> None:
    backend, reason = driver.choose_backend(str(tmp_path / "run"))
    assert backend == "kernel", reason
    assert "userxattr" not in reason


@pytest.mark.needs_root
@pytest.mark.needs_tool("setpriv")
def test_non_root_without_userns_chooses_fuse(shared_dir: Path) -> None:
    out = _run(SETPRIV, shared_dir, "choose")
    assert out["euid"] == NOBODY and not out["userns"]
    assert out["backend"] == "fuse"
    assert out["reason"].startswith("kernel overlayfs is unavailable: mount -t overlay")
    assert "Operation not permitted" in out["reason"]
    assert "overlay-false" in out["cache"]
    reason_file = (shared_dir / "run" / "overlay-false").read_text()
    assert "Operation not permitted" in reason_file and f"euid={NOBODY}" in reason_file


@pytest.mark.needs_root
@pytest.mark.needs_userns
@pytest.mark.needs_tool("setpriv", "unshare")
def test_inside_unshare_chooses_kernel_with_userxattr(shared_dir: Path) -> None:
    out = _run([*SETPRIV, "unshare", "-Urm"], shared_dir, "mount")
    assert out["userns"] and out["euid"] == 0
    assert out["backend"] == "kernel", out["reason"]
    assert "with userxattr (user namespace)" in out["reason"]
    assert out["mounted"] == ["kernel", True, ["d", "t"]]
    assert out["opaque"] == "y"
    assert out["left"] is False
    # a store written with trusted.* xattrs cannot be read by userxattr kernel overlay
    backend, reason = out["chardev"]
    assert backend == "fuse" and "userxattr mode" in reason


ROOTLESS_IMAGE = textwrap.dedent("""
    import functools, io, json, os, sys
    from helpers.layers import LayerTar
    import cowfs
    from cowfs import driver
    base = sys.argv[1]
    store = cowfs.open_store(os.path.join(base, "store"))
    low = LayerTar().dir("d").file("d/x", b"x").file("keep", b"k")
    top = LayerTar().opaque("d").file("d/y", b"y").whiteout("keep")
    cfg = {"architecture": "amd64", "os": "linux",
           "rootfs": {"type": "layers", "diff_ids": [low.diff_id(), top.diff_id()]}}
    store.import_layers([functools.partial(io.BytesIO, bytes(t)) for t in (low, top)], cfg,
                        tags=["rootless:1"])
    with driver.mount_image(store, "rootless:1", upper=os.path.join(base, "u"),
                            work=os.path.join(base, "w")) as m:
        out = {"dialect": store.dialect.value, "backend": m.backend,
               "userxattr": m.record.userxattr, "root": sorted(os.listdir(m.mergeddir)),
               "d": sorted(os.listdir(os.path.join(m.mergeddir, "d")))}
    print(json.dumps(out))
""")


@pytest.mark.needs_root
@pytest.mark.needs_userns
@pytest.mark.needs_tool("setpriv", "unshare")
def test_rootless_store_image_mounts_with_kernel_userxattr(shared_dir: Path) -> None:
    """The whole rootless path: a store opened in ``unshare -Ur`` records the userxattr
    dialect, its layers carry ``user.overlay.opaque``, and auto mounts them with the
    kernel in userxattr mode (opaque dirs and whiteouts honoured)."""
    shutil.copytree(REPO / "tests" / "helpers", shared_dir / "src" / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for root, dirs, files in os.walk(shared_dir / "src" / "helpers"):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, NOBODY, NOBODY)
    # stdlib only: uncompressed layers need no third-party decompressor
    cmd = [*SETPRIV, "env", f"PYTHONPATH={shared_dir / 'src'}", "PYTHONDONTWRITEBYTECODE=1",
           "unshare",
           "-Urm", _python(), "-c", ROOTLESS_IMAGE, str(shared_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"dialect": "chardev-userxattr", "backend": "kernel", "userxattr": True,
                   "root": ["d"], "d": ["y"]}
