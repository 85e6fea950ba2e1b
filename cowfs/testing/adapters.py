"""Implementation adapters: how the machine mounts (or opens) an overlay under test.

Owns: mounting and always unmounting each implementation (kernel overlayfs, any
fuse-overlayfs-compatible mount program, cowfs's FUSE program, cowfs's kernel
backend, the FUSE-free core) and giving the machine an ``Fs`` to run operations
on. Must not know the model: comparisons live in ``machine.py``.
"""

from __future__ import annotations

import abc
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from ..errors import BackendUnavailable, MountError
from . import syscalls
from .model import Entry, OpError


class Fs(abc.ABC):
    """An opened overlay: run operations (raising ``OpError``) and snapshot the tree."""

    @abc.abstractmethod
    def apply(self, op: str, args: Sequence[bytes | int]) -> bytes | None: ...

    @abc.abstractmethod
    def snapshot(self) -> dict[bytes, Entry | str]: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Unmount (or close) and wait until the implementation is fully gone."""


class MountedFs(Fs):
    """A merged dir at ``mnt``, driven by real syscalls (``syscalls.py``)."""

    def __init__(self, mnt: str, on_close: Callable[[], None]) -> None:
        self.mnt = os.fsencode(mnt)
        self._on_close: Callable[[], None] | None = on_close

    def apply(self, op: str, args: Sequence[bytes | int]) -> bytes | None:
        old = os.umask(syscalls.UMASK)
        try:
            return syscalls.OPS[op](self.mnt, *args)
        except OSError as exc:
            raise OpError(exc.errno or 0) from None
        finally:
            os.umask(old)

    def snapshot(self) -> dict[bytes, Entry | str]:
        return {p: r if isinstance(r, str) else Entry(*r)
                for p, r in syscalls.snapshot(self.mnt).items()}

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


class Adapter(abc.ABC):
    """An overlay implementation the machine can test."""

    name: str = "adapter"
    userxattr: bool = False
    """True if the implementation writes ``user.overlay.*`` (rootless format)."""
    skip_ops: frozenset[str] = frozenset()
    """Operations this adapter cannot express (the machine skips them)."""

    @abc.abstractmethod
    def open(self, lowers: Sequence[str], upper: str, work: str, mnt: str) -> Fs:
        """Mount ``lowers`` (top first) + ``upper``/``work`` at ``mnt`` (an empty dir)."""

    def unavailable(self) -> str | None:
        """Why this implementation cannot run here (None when it can)."""
        return None

    def describe_mount(self, lowers: str, upper: str, work: str, mnt: str) -> str:
        """The shell command a reproducer script uses to mount (shell-quoted args given)."""
        return (f"mount -t overlay overlay -o lowerdir={lowers},upperdir={upper},"
                f"workdir={work},{KernelAdapter.OPTIONS} {mnt}")

    def describe_unmount(self, mnt: str) -> str:
        return f"umount {mnt}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _mounted(mnt: str) -> bool:
    want = os.path.realpath(mnt)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            field = line.split()[4].decode("unicode_escape")
            if field == want:
                return True
    return False


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not pred():
        if time.monotonic() > deadline:
            raise MountError(f"{what}: timed out after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class KernelAdapter(Adapter):
    """Kernel overlayfs via mount(2); needs root (or a userns with ``userxattr``)."""

    name = "kernel"
    OPTIONS = "index=off,redirect_dir=off,metacopy=off"
    """The feature subset every implementation honours (SPEC §3)."""

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "kernel overlay adapter needs root"
        return None

    def open(self, lowers: Sequence[str], upper: str, work: str, mnt: str) -> Fs:
        from .._sys import linux

        data = (f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},"
                f"{self.OPTIONS}")
        try:
            linux.mount(b"overlay", os.fsencode(mnt), b"overlay", 0, os.fsencode(data))
        except OSError as exc:
            raise MountError(f"mount kernel overlay at {mnt}: {exc.strerror}") from None

        def unmount() -> None:
            try:
                linux.umount2(os.fsencode(mnt))
            except OSError:
                linux.umount2(os.fsencode(mnt), linux.MNT_DETACH)
                raise
        return MountedFs(mnt, unmount)


class ProgramAdapter(Adapter):
    """Any fuse-overlayfs-compatible mount program: ``PROG -o lowerdir=..,upperdir=..,
    workdir=.. MNT``; unmounted with ``fusermount3 -u``, then waits for its daemon."""

    def __init__(self, program: str, *, options: str = "", name: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.program = program
        self.options = options
        self.name = name or os.path.basename(program)
        self.env = env

    def unavailable(self) -> str | None:
        if shutil.which(self.program) is None:
            return f"mount program {self.program!r} not found"
        if not os.path.exists("/dev/fuse"):
            return "needs /dev/fuse"
        if shutil.which("fusermount3") is None:
            return "needs fusermount3"
        return None

    def _argv(self, lowers: str, upper: str, work: str, mnt: str) -> list[str]:
        opts = f"lowerdir={lowers},upperdir={upper},workdir={work}"
        if self.options:
            opts += "," + self.options
        return [self.program, "-o", opts, mnt]

    def describe_mount(self, lowers: str, upper: str, work: str, mnt: str) -> str:
        return " ".join(self._argv(lowers, upper, work, mnt))

    def describe_unmount(self, mnt: str) -> str:
        return f"fusermount3 -u {mnt}; sleep 0.5"

    def open(self, lowers: Sequence[str], upper: str, work: str, mnt: str) -> Fs:
        argv = self._argv(":".join(lowers), upper, work, mnt)
        env = dict(os.environ, **self.env) if self.env else None
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                               stdin=subprocess.DEVNULL, env=env)
        except subprocess.TimeoutExpired:
            self._cleanup(mnt, _daemons(mnt))
            raise MountError(f"mount {self.program} at {mnt}: no answer in 60 s") from None
        if r.returncode != 0:
            self._cleanup(mnt, _daemons(mnt))
            raise MountError(f"mount {self.program} at {mnt}: exit {r.returncode}: "
                             f"{r.stderr.strip()}")
        try:
            _wait(lambda: _mounted(mnt), 30, f"wait for {self.program} to mount {mnt}")
        except MountError:
            self._cleanup(mnt, [])
            raise
        daemons = _daemons(mnt)
        return MountedFs(mnt, lambda: self._unmount(mnt, daemons))

    def _unmount(self, mnt: str, daemons: list[int]) -> None:
        r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True,
                           check=False, timeout=60)
        if r.returncode != 0:
            self._cleanup(mnt, daemons)
            raise MountError(f"unmount {mnt}: {r.stderr.strip()}")
        try:
            _wait(lambda: not any(_alive(p) for p in daemons), 30,
                  f"wait for the {self.name} daemon to exit after unmount")
        except MountError:
            self._cleanup(mnt, daemons)
            raise

    @staticmethod
    def _cleanup(mnt: str, daemons: list[int]) -> None:
        """Last resort: lazy unmount, then end the daemons we started (by pid)."""
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True, check=False)
        if _mounted(mnt):
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        for pid in daemons:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b")")[-1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def _daemons(mnt: str) -> list[int]:
    """Pids of the processes serving ``mnt``: those whose argv names the mountpoint."""
    want = os.fsencode(mnt)
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if want in argv:
            pids.append(int(entry))
    return pids


def cowfs_overlay_program() -> str:
    """The ``cowfs-overlay`` console script installed next to this interpreter."""
    return os.path.join(os.path.dirname(sys.executable), "cowfs-overlay")


class CowfsFuseAdapter(ProgramAdapter):
    """cowfs's FUSE backend through its mount program ``cowfs-overlay``."""

    def __init__(self, options: str = "") -> None:
        super().__init__(cowfs_overlay_program(), options=options, name="cowfs-fuse")

    def unavailable(self) -> str | None:
        why = super().unavailable()
        if why:
            return why
        try:
            import cowfs.fuse.program  # noqa: F401
        except ImportError as exc:
            return f"cowfs FUSE backend not importable: {exc}"
        return None


class DriverAdapter(Adapter):
    """cowfs's Python API: ``cowfs.mount(lowers, upper, work, target, backend=...)``.

    ``backend="kernel"`` tests cowfs's kernel backend (its option builder and mount
    path), ``"fuse"`` the driver launching ``cowfs-overlay``. The probe cache lives
    next to the mountpoint, so nothing is written to the default store.
    """

    def __init__(self, backend: str = "kernel") -> None:
        self.backend = backend
        self.name = f"cowfs-driver-{backend}"

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "the driver adapter needs root"
        try:
            from .. import driver  # noqa: F401
        except ImportError as exc:
            return f"cowfs.driver not importable: {exc}"
        return None

    def open(self, lowers: Sequence[str], upper: str, work: str, mnt: str) -> Fs:
        from ..driver import mount

        run_dir = os.path.join(os.path.dirname(mnt), "run")
        os.makedirs(run_dir, exist_ok=True)
        m = mount(list(lowers), upper, work, mnt, backend=self.backend, run_dir=run_dir,
                  register=False)
        return MountedFs(mnt, m.unmount)


def unavailable_error(adapter: Adapter) -> BackendUnavailable | None:
    why = adapter.unavailable()
    return BackendUnavailable(f"test {adapter.name}: {why}") if why else None
