"""`cowfs mount`, `cowfs umount`, `cowfs mounts` as a user runs them (subprocesses)."""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.layers import LayerTar

from cowfs.store import open_store

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


def cowfs_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cowfs.cli", "--root", str(root), *args],
                          capture_output=True, text=True, check=False, timeout=120)


def _mounted() -> set[str]:
    with open("/proc/self/mountinfo", "rb") as f:
        return {line.split()[4].decode("unicode_escape") for line in f}


@pytest.fixture
def lowers(tmp_path: Path) -> list[Path]:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    for d in (top, bottom):
        d.mkdir()
    (top / "a").write_text("top")
    (bottom / "a").write_text("bottom")
    (bottom / "b").write_text("b")
    return [top, bottom]


def test_mount_lowers_list_and_umount(tmp_path: Path, lowers: list[Path]) -> None:
    root, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    r = cowfs_cli(root, "mount", "--backend", "kernel", "--lower", str(lowers[0]),
                  "--lower", str(lowers[1]), "--upper", str(tmp_path / "u"),
                  "--work", str(tmp_path / "w"), str(mnt))
    assert r.returncode == 0, r.stderr
    try:
        assert r.stdout.strip() == f"{mnt} (kernel)"
        assert str(mnt) in _mounted()  # it outlives the command
        assert (mnt / "a").read_text() == "top"
        (mnt / "new").write_text("n")
        listed = cowfs_cli(root, "mounts", "--json")
        assert listed.returncode == 0, listed.stderr
        (rec,) = json.loads(listed.stdout)
        assert rec["mergeddir"] == str(mnt) and rec["backend"] == "kernel"
        assert rec["lowerdirs"] == [str(p) for p in lowers]
        assert rec["upperdir"] == str(tmp_path / "u") and rec["live"] is True
        table = cowfs_cli(root, "mounts").stdout
        assert table.splitlines()[0].split() == ["MERGED", "BACKEND", "UPPER", "LOWER", "STATE"]
        assert f"{mnt}   kernel" in table and "2 layers" in table
    finally:
        u = cowfs_cli(root, "umount", str(mnt))
    assert u.returncode == 0, u.stderr
    assert str(mnt) not in _mounted()
    assert (tmp_path / "u" / "new").read_text() == "n"
    assert json.loads(cowfs_cli(root, "mounts", "--json").stdout) == []


def test_mount_image_from_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = open_store(str(root))
    base = LayerTar().dir("etc").file("etc/os-release", b"ID=base\n").dir("d").file("d/x", b"x")
    top = LayerTar().file("etc/motd", b"hello\n").whiteout("d/x")
    tars = [bytes(base), bytes(top)]
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [base.diff_id(), top.diff_id()]}}
    store.import_layers([functools.partial(io.BytesIO, t) for t in tars], config,
                        tags=["demo:1"])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = cowfs_cli(root, "mount", "--json", "--upper", str(tmp_path / "u"), "--work",
                  str(tmp_path / "w"), "demo:1", str(mnt))
    assert r.returncode == 0, r.stderr
    try:
        info = json.loads(r.stdout)
        assert info["Backend"] == "kernel" and info["MergedDir"] == str(mnt)
        assert info["LowerDir"] == ":".join(store.layer_dirs("demo:1"))
        assert (mnt / "etc" / "os-release").read_text() == "ID=base\n"
        assert (mnt / "etc" / "motd").read_text() == "hello\n"
        assert os.listdir(mnt / "d") == []  # the top layer's whiteout hides d/x
    finally:
        assert cowfs_cli(root, "umount", str(mnt)).returncode == 0
    # a root store (trusted.overlay xattrs) cannot be read by userxattr kernel overlay
    r = cowfs_cli(root, "mount", "--backend", "kernel", "--userxattr", "demo:1", str(mnt))
    assert r.returncode == 6 and "userxattr mode" in r.stderr, r.stderr
    # read-only by default
    r = cowfs_cli(root, "mount", "--backend", "kernel", "demo:1", str(mnt))
    assert r.returncode == 0, r.stderr
    try:
        assert not os.access(mnt / "etc", os.W_OK)
    finally:
        assert cowfs_cli(root, "umount", str(mnt)).returncode == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["mount", "--upper", "/tmp", "IMG", "/mnt"], 2, "--upper and --work must be given"),
        (["mount", "--read-only", "--upper", "/a", "--work", "/b", "IMG", "/mnt"], 2,
         "--read-only conflicts"),
        (["mount", "--lower", "/", "IMG", "/mnt"], 2, "with --lower give only MOUNTPOINT"),
        (["mount", "IMG"], 2, "give IMAGE and MOUNTPOINT"),
        (["mount", "--backend", "zfs", "IMG", "/mnt"], 2, "invalid choice"),
        (["mount", "no-such:image", "/tmp"], 3, "not in the store"),
        (["mount", "--lower", "/nonexistent-dir", "/tmp"], 3, "is not an existing directory"),
        (["umount", "/proc/self/fdinfo"], 3, "nothing is mounted there"),
        (["umount", "/proc"], 2, "not an overlay mount (fs type proc)"),
    ],
)
def test_misuse(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    r = cowfs_cli(tmp_path / "store", *args)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one clean line, no traceback


@pytest.mark.needs_fuse
def test_mount_fuse_backend_outlives_the_command(tmp_path: Path, lowers: list[Path]) -> None:
    root, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    r = cowfs_cli(root, "mount", "--backend", "fuse", "--lower", str(lowers[0]), "--lower",
                  str(lowers[1]), "--upper", str(tmp_path / "u"), "--work",
                  str(tmp_path / "w"), str(mnt))
    assert r.returncode == 0, r.stderr
    try:
        assert r.stdout.strip() == f"{mnt} (fuse)"
        assert (mnt / "a").read_text() == "top"
        (rec,) = json.loads(cowfs_cli(root, "mounts", "--json").stdout)
        assert rec["backend"] == "fuse" and rec["mergeddir"] == str(mnt)
    finally:
        u = cowfs_cli(root, "umount", str(mnt))
    assert u.returncode == 0, u.stderr
    assert str(mnt) not in _mounted()
