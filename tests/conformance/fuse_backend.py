"""The "fuse" backend of the conformance suite: a real ``cowfs-overlay`` mount.

Mounted the way podman does it (daemon mode, returns once live), unmounted with
``fusermount3 -u``, and the daemon is waited for before the next mount of the same
upper/work. A WARNING or ERROR in the daemon log fails the scenario (STYLE habit 11).
Owned by the FUSE frontend; registered in ``backends.BACKENDS``.
"""

from __future__ import annotations

import subprocess

import pytest
from helpers.mounting import FUSERMOUNT, PROGRAM, _daemon_pid, mount_fstype, pid_alive, wait_for

from conformance.backends import Backend, MountedFS


class FuseFS(MountedFS):
    """cowfs-overlay on the stack; operations are plain os calls on the mount."""

    name = "fuse"

    def _mount(self) -> None:
        s = self.stack
        self.log = s.mnt.parent / f"{s.mnt.name}.cowfs-overlay.log"
        if self.log.exists():
            self.log.unlink()
        opts = "lowerdir=" + ":".join(str(p).replace(":", "\\:") for p in s.lowers)
        if s.upper is not None:
            opts += f",upperdir={s.upper},workdir={s.work}"
        opts += f",log={self.log}"
        r = subprocess.run([PROGRAM, "-o", opts, str(s.mnt)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode == 0, f"cowfs-overlay failed: {r.stderr}"
        pid = _daemon_pid(self.log)
        assert pid is not None, "cowfs-overlay did not log its 'mounted' line"
        self.pid = pid

    def _umount(self) -> None:
        mnt = str(self.stack.mnt)
        r = subprocess.run([FUSERMOUNT, "-u", mnt], capture_output=True, text=True, check=False)
        if r.returncode != 0 and mount_fstype(mnt) is not None:
            subprocess.run([FUSERMOUNT, "-u", "-z", mnt], capture_output=True, check=False)
        wait_for(lambda: not pid_alive(self.pid), 20, f"cowfs-overlay {self.pid} to exit")
        problems = [ln for ln in self.log.read_text(errors="replace").splitlines()
                    if " WARNING " in ln or " ERROR " in ln or " CRITICAL " in ln
                    or "Traceback" in ln]
        assert not problems, "cowfs-overlay logged problems:\n" + "\n".join(problems)
        assert r.returncode == 0, f"fusermount3 -u {mnt}: {r.stderr.strip()}"


FUSE_BACKEND = Backend("fuse", FuseFS, (pytest.mark.needs_fuse,))
