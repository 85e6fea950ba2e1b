"""podman uses cowfs-overlay as its ``overlay.mount_program`` (the contract of SPEC §5)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from helpers.mounting import PROGRAM, pid_alive

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_fuse,
              pytest.mark.needs_tool("podman", "runc", "unshare")]

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

SCRIPT = """\
set -eu
P="podman --root $ROOT/root --runroot $RUNROOT --storage-driver overlay \
  --storage-opt overlay.mount_program=$PROG --runtime runc --cgroup-manager cgroupfs \
  --events-backend none"
$P import "$ROOT/rootfs.tar" localhost/cowfs-busy:1 >/dev/null
$P run --rm --net none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  localhost/cowfs-busy:1 sh -c \
  'echo written > /new && cat /new && rm /bin/rmme && test ! -e /bin/rmme && \
   echo more >> /etc/motd && cat /etc/motd && ls /bin | wc -l'
$P rmi -a -f >/dev/null
"""


def _rootfs_tar(dest: Path) -> None:
    """A busybox rootfs (the binary and a few applet links) as a plain tar."""
    with tarfile.open(dest, "w") as tar:
        for d in ("bin", "etc", "tmp", "proc", "dev", "sys"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        tar.add(os.path.realpath(BUSYBOX), "bin/busybox")
        for applet in ("sh", "ls", "rm", "cat", "echo", "test", "wc"):
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(ti)
        for name, data in (("bin/rmme", b"lower file\n"), ("etc/motd", b"motd\n")):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))


def _our_daemons(marker: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "cowfs-overlay" in cmd and marker in cmd:
                pids.append(int(d))
    return pids


def test_podman_runs_a_container_on_cowfs_overlay(tmp_path: Path) -> None:
    _rootfs_tar(tmp_path / "rootfs.tar")
    # A private policy (containers/image reads $HOME/.config first): no host /etc needed.
    policy = tmp_path / ".config" / "containers" / "policy.json"
    policy.parent.mkdir(parents=True)
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    runroot = tempfile.mkdtemp(prefix="cowfs-rr-")  # podman wants it under 50 characters
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ROOT": str(tmp_path), "PROG": PROGRAM,
           "HOME": str(tmp_path), "RUNROOT": runroot}
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT],
                           env=env, capture_output=True, text=True, timeout=240, check=False)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    assert r.returncode == 0, f"podman failed:\n{r.stdout}\n{r.stderr}"
    # The container saw its own write, the copied-up append and the deleted lower file.
    assert r.stdout.split() == ["written", "motd", "more", "8"], r.stdout
    # podman unmounted with fusermount3 -u and every daemon it started has exited.
    left = [p for p in _our_daemons(str(tmp_path)) if pid_alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"cowfs-overlay daemons outlived podman: {left}"
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
