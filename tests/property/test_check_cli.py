"""``cowfs check``: finds fuse-overlayfs's divergences, prints a reproducer that really
reproduces (kernel and program runs of the script differ), passes the kernel itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


def _cowfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cowfs.cli", *args], capture_output=True,
                          text=True, timeout=280, check=False)


def _script(path: Path, mode: str) -> str:
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", str(path), mode],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.needs_fuse
@pytest.mark.needs_tool("fuse-overlayfs", "getfattr", "setfattr")
def test_check_finds_fuse_overlayfs_divergence_with_working_reproducer(tmp_path: Path) -> None:
    out = tmp_path / "repro.sh"
    r = _cowfs("check", "--program", "/usr/bin/fuse-overlayfs", "--examples", "10",
               "--out", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "diverges from the kernel overlayfs model" in r.stdout
    assert "#!/bin/bash" in r.stdout and out.read_text() in r.stdout
    kernel, program = _script(out, "kernel"), _script(out, "program")
    tree = kernel.split("--- merged tree:")[1].split("--- upper dir")[0]
    assert tree not in program, "the reproducer does not reproduce"


@pytest.mark.needs_fuse
@pytest.mark.needs_tool("fuse-overlayfs")
def test_check_can_skip_known_divergences() -> None:
    r = _cowfs("check", "--program", "/usr/bin/fuse-overlayfs", "--examples", "3",
               "--steps", "3", "--ignore", "dir_nlink", "--without",
               "create,write,append,truncate,unlink,mkdir,rmdir,rename,link,symlink,chmod,"
               "setxattr,removexattr,fd_copyup,remount")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "matches the kernel overlayfs model" in r.stdout


@pytest.mark.needs_tool("false")
def test_check_program_that_cannot_mount_is_a_clean_error() -> None:
    r = _cowfs("check", "--program", "false", "--examples", "2")
    assert r.returncode == 6, r.stdout + r.stderr  # MountError
    assert "cowfs: mount" in r.stderr and "Traceback" not in r.stderr


def test_check_kernel_matches_model() -> None:
    r = _cowfs("check", "--kernel", "--examples", "5", "--steps", "15", "--seed", "7")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no divergence" in r.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--program", "/nonexistent/overlay"], "not found"),
    (["--kernel", "--examples", "0"], "at least 1"),
    (["--kernel", "--ignore", "size"], "--ignore takes"),
    ([], "required"),
])
def test_check_misuse_is_a_clean_error(args: list[str], needle: str) -> None:
    r = _cowfs("check", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
