"""The columns of the benchmark: ways to mount one overlay of lower/upper/work on a target.

Owns mounting and unmounting each implementation (cowfs FUSE, cowfs kernel backend, raw
kernel overlay, kernel overlay with ``volatile``, fuse-overlayfs) and cleaning up after a
failure. It must not time or check workloads. An implementation that cannot run here says
why (`Impl.unavailable`), so the harness runs the others and reports the column as missing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cowfs._sys import linux

REPO = Path(__file__).resolve().parent.parent


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            if line.split()[4].decode("unicode_escape") == real:
                return True
    return False


def _daemon_pids(mnt: str) -> list[int]:
    """Pids whose argv holds `mnt`: the FUSE daemon we just started (found, never guessed)."""
    real, pids = os.path.realpath(mnt), []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if real.encode() in argv or mnt.encode() in argv:
            pids.append(int(d))
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ")[-1][:1] != b"Z"
    except OSError:
        return False


class Impl:
    """One column. `mount` returns when the merged view is live; `unmount` when it is gone."""

    name = ""
    is_fuse = False

    def unavailable(self) -> str | None:
        return None

    def version(self) -> str:
        return ""

    def mount(self, lowers: list[str], upper: str, work: str, mnt: str) -> None:
        raise NotImplementedError

    def unmount(self, mnt: str) -> None:
        raise NotImplementedError

    def after_mount(self, mnt: str) -> None:
        """Right after a mount (untimed): note what cleanup needs (the daemon's pid)."""

    def daemon_pids(self, mnt: str) -> list[int]:
        """The daemon serving `mnt` (FUSE columns), for CPU accounting."""
        return []

    def kill(self, mnt: str) -> None:
        """Watchdog: end a hung sample (SIGKILL our daemon, lazy unmount)."""
        self.cleanup(mnt)

    def settle(self, mnt: str) -> None:
        """After unmount (untimed): wait for any daemon to exit so samples do not overlap."""

    def cleanup(self, mnt: str) -> None:
        """Best effort after a failure: lazy unmount, then end our own daemon."""
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)


def _ovl_opts(lowers: list[str], upper: str, work: str) -> str:
    return f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"


class KernelRaw(Impl):
    """Kernel overlayfs by mount(2)/umount2(2) called in-process: the reference.

    In-process like ``cowfs.mount``, so the cowfs kernel column is compared with the bare
    syscall rather than with the exec of mount(8).
    """

    name = "kernel"
    extra = ""

    def unavailable(self) -> str | None:
        return None if shutil.which("mount") else "no mount(8)"

    def version(self) -> str:
        return os.uname().release

    def mount(self, lowers: list[str], upper: str, work: str, mnt: str) -> None:
        opts = _ovl_opts(lowers, upper, work) + self.extra
        linux.mount(b"overlay", os.fsencode(mnt), b"overlay", 0, os.fsencode(opts))

    def unmount(self, mnt: str) -> None:
        linux.umount2(os.fsencode(mnt), 0)


class KernelVolatile(KernelRaw):
    """Kernel overlay with ``volatile``: no syncs at all (the durability of fuse-overlayfs)."""

    name = "kernel-volatile"
    extra = ",volatile"


class FuseProgram(Impl):
    """A fuse-overlayfs compatible mount program: ``PROG -o lowerdir=..,upperdir=.. MNT``."""

    is_fuse = True
    prog = ""

    def __init__(self) -> None:
        self._pids: dict[str, list[int]] = {}

    def unavailable(self) -> str | None:
        if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
            return "no /dev/fuse or fusermount3"
        return None if os.access(self.prog, os.X_OK) else f"{self.prog} not found"

    def mount(self, lowers: list[str], upper: str, work: str, mnt: str) -> None:
        r = subprocess.run([self.prog, "-o", _ovl_opts(lowers, upper, work), mnt],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"{self.name} mount: exit {r.returncode}: {r.stderr.strip()[-400:]}")

    def after_mount(self, mnt: str) -> None:
        self._pids[mnt] = _daemon_pids(mnt)

    def daemon_pids(self, mnt: str) -> list[int]:
        return list(self._pids.get(mnt, []))

    def unmount(self, mnt: str) -> None:
        subprocess.run(["fusermount3", "-u", mnt], check=True, capture_output=True)

    def settle(self, mnt: str) -> None:
        deadline = time.monotonic() + 15
        for pid in self._pids.pop(mnt, []):
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.005)
            if _alive(pid):
                print(f"bench: {self.name} daemon {pid} still alive 15 s after unmount; killing it",
                      file=sys.stderr)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def cleanup(self, mnt: str) -> None:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False, capture_output=True)
        super().cleanup(mnt)
        for pid in self._pids.pop(mnt, []):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    def kill(self, mnt: str) -> None:
        for pid in self._pids.get(mnt, []) or _daemon_pids(mnt):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.cleanup(mnt)


class FuseOverlayfs(FuseProgram):
    name = "fuse-overlayfs"
    prog = "/usr/bin/fuse-overlayfs"

    def version(self) -> str:
        r = subprocess.run([self.prog, "--version"], capture_output=True, text=True, check=False)
        return (r.stdout + r.stderr).splitlines()[1].strip() if r.returncode == 0 else "?"


class CowfsFuse(FuseProgram):
    name = "cowfs-fuse"
    prog = str(Path(sys.executable).parent / "cowfs-overlay")

    def unavailable(self) -> str | None:
        why = super().unavailable()
        if why:
            return why
        try:
            importlib.import_module("cowfs.fuse.program")
        except Exception as exc:  # the mount program is not written yet, or broken
            return f"cowfs.fuse.program does not import: {exc}"
        return None

    def version(self) -> str:
        return _git_rev()


class CowfsKernel(Impl):
    """``cowfs.mount(..., backend="kernel")`` called in-process (the library's own path)."""

    name = "cowfs-kernel"

    def __init__(self) -> None:
        self._mounts: dict[str, Any] = {}

    def unavailable(self) -> str | None:
        try:
            import cowfs

            fn = getattr(cowfs, "mount", None) or importlib.import_module("cowfs.driver").mount
        except Exception as exc:
            return f"cowfs.mount is not available: {exc}"
        self._fn = fn
        return None

    def version(self) -> str:
        return _git_rev()

    def mount(self, lowers: list[str], upper: str, work: str, mnt: str) -> None:
        m = self._fn(lowers, upper=upper, work=work, target=mnt, backend="kernel")
        self._mounts[mnt] = m

    def unmount(self, mnt: str) -> None:
        self._mounts.pop(mnt).unmount()

    def cleanup(self, mnt: str) -> None:
        m = self._mounts.pop(mnt, None)
        if m is not None:
            with contextlib.suppress(Exception):
                m.unmount()
        super().cleanup(mnt)


def _git_rev() -> str:
    """The commit measured, with "+dirty" when cowfs/ has uncommitted changes (shared tree)."""
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True, check=False)
    d = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "cowfs"],
                       capture_output=True, text=True, check=False)
    return f"cowfs {r.stdout.strip() or '?'}{'+dirty' if d.stdout.strip() else ''}"


ALL: dict[str, type[Impl]] = {
    c.name: c for c in (CowfsFuse, CowfsKernel, KernelRaw, KernelVolatile, FuseOverlayfs)
}
"""Column order of the tables."""
