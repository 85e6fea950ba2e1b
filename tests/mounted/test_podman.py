"""podman uses cowfs-overlay as its ``overlay.mount_program`` (the contract of SPEC §5)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import tarfile
from pathlib import Path

import pytest
from helpers.mounting import PROGRAM, pid_alive
from helpers.peers import peer

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_fuse,
              pytest.mark.needs_tool("podman", "runc", "unshare")]

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

SCRIPT = """
Q="podman --root $ROOT/root --runroot $RR/q --storage-driver overlay \\
  --storage-opt overlay.mount_program=$PROG --runtime runc --cgroup-manager cgroupfs \\
  --events-backend none"
$Q import "$ROOT/rootfs.tar" localhost/cowfs-busy:1 >/dev/null
$Q run --rm $PRUN localhost/cowfs-busy:1 sh -c \\
  'echo written > /new && cat /new && rm /bin/rmme && test ! -e /bin/rmme && \\
   echo more >> /etc/motd && cat /etc/motd && ls /bin | wc -l'
$Q rmi -a -f >/dev/null
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
    # helpers.peers: a private mount namespace whose /etc is overlaid with a permissive
    # policy.json (the host's /etc stays untouched and may be read-only).
    r = peer(f"ROOT={tmp_path}\nPROG={PROGRAM}\n{SCRIPT}", tmp_path)
    # The container saw its own write, the copied-up append and the deleted lower file.
    assert r.stdout.split() == ["written", "motd", "more", "8"], r.stdout
    # podman unmounted with fusermount3 -u and every daemon it started has exited.
    left = [p for p in _our_daemons(str(tmp_path)) if pid_alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"cowfs-overlay daemons outlived podman: {left}"
    shutil.rmtree(tmp_path / "root", ignore_errors=True)
