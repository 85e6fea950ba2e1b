"""The two ways the driver mounts: kernel overlayfs via `cowfs.kernel`, and the FUSE
mount program ``cowfs-overlay`` launched like a containers/storage mount_program.

Owns: which dialects the kernel can read, building the kernel request, running and
unmounting the mount program, and unmounting by backend (lazily as a last resort).
Must not choose a backend or keep records (see `cowfs.driver`, `._registry`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Final

from .. import _sys
from ..errors import BackendUnavailable, MountError
from ..format import WhiteoutDialect
from ..kernel import mount as kmount, probe
from ..kernel.options import escape_path, make_options
from ._registry import mountinfo

log = logging.getLogger(__name__)

KERNEL: Final = "kernel"
FUSE: Final = "fuse"
FUSE_PROGRAM: Final = "cowfs-overlay"
FUSE_START_TIMEOUT: Final = 60.0
"""Seconds the mount program may take to report the mount live (it returns once it is)."""
UNMOUNT_WAIT: Final = 10.0
"""Seconds to wait for a FUSE mount to disappear after ``fusermount3 -u``."""
EMPTY_DIR: Final = "empty"
"""An always-empty dir in the run dir, stacked under a single read-only layer."""


# --- kernel ------------------------------------------------------------------------------
def kernel_refusal(dialect: WhiteoutDialect | None, userxattr: bool) -> str | None:
    """Why kernel overlayfs cannot read layers of ``dialect`` in this mode (None: it can)."""
    if dialect is WhiteoutDialect.WH_FILES:
        return ("the store's whiteout dialect is 'wh-files' (.wh. files), which kernel "
                "overlayfs does not read; use the fuse backend")
    if dialect is WhiteoutDialect.CHARDEV and userxattr:
        return ("the store's whiteout dialect is 'chardev' (trusted.overlay xattrs), which "
                "kernel overlayfs in userxattr mode (user namespace) cannot read")
    return None


def mount_kernel(lowerdirs: list[str], upperdir: str | None, workdir: str | None,
                  mergeddir: str, run_dir: str, dialect: WhiteoutDialect | None,
                  userxattr: bool | None, volatile: bool,
                  extra: Sequence[str]) -> tuple[str, bool]:
    if userxattr is None:
        userxattr = dialect is WhiteoutDialect.CHARDEV_USERXATTR or probe.in_user_namespace()
    refusal = kernel_refusal(dialect, userxattr)
    if refusal is None and dialect is WhiteoutDialect.CHARDEV_USERXATTR and not userxattr:
        refusal = ("the store's whiteout dialect is 'chardev-userxattr' (user.overlay "
                   "xattrs), which needs the userxattr mount option")
    if refusal:
        raise BackendUnavailable(f"mount with the kernel backend: {refusal}")
    opts = make_options(lowerdirs, upperdir, workdir, userxattr=userxattr, volatile=volatile,
                        extra=extra)
    if opts.read_only and len(opts.lowerdirs) == 1:
        opts = kmount.with_empty_bottom(opts, empty_dir(run_dir))
    return kmount.mount_overlay(opts, mergeddir).value, userxattr


def empty_dir(run_dir: str) -> str:
    path = os.path.join(run_dir, EMPTY_DIR)
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise MountError(f"mount overlay: a read-only mount of one layer needs the empty dir "
                         f"{path}: {exc.strerror}") from None
    if os.listdir(path):
        raise MountError(f"mount overlay: {path} must stay empty but holds entries")
    return path


# --- the FUSE backend -------------------------------------------------------------------
def fuse_program() -> list[str]:
    """The command of the FUSE mount program: ``cowfs-overlay`` beside this Python, else
    ``python -m cowfs.fuse.program``.

    Raises:
        BackendUnavailable: neither is installed.
    """
    beside = os.path.join(os.path.dirname(sys.executable), FUSE_PROGRAM)
    if os.access(beside, os.X_OK):
        return [beside]
    import importlib.util

    try:
        spec = importlib.util.find_spec("cowfs.fuse.program")
    except ImportError:
        spec = None
    if spec is None:
        raise BackendUnavailable(
            f"mount with the fuse backend: {FUSE_PROGRAM} is not installed next to "
            f"{sys.executable} and cowfs.fuse.program is missing")
    return [sys.executable, "-m", "cowfs.fuse.program"]


def fuse_escape(path: str) -> str:
    """Escape a path for the ``-o`` option of the mount program (kernel escapes + quotes)."""
    return os.fsdecode(escape_path(os.fsencode(path))).replace('"', '\\"')


def fuse_option_string(lowerdirs: Sequence[str], upperdir: str | None, workdir: str | None,
                       *, volatile: bool = False, extra: Sequence[str] = ()) -> str:
    """Render ``lowerdir=A:B[,upperdir=U,workdir=W][,volatile][,extra]`` for cowfs-overlay."""
    parts = ["lowerdir=" + ":".join(fuse_escape(p) for p in lowerdirs)]
    if upperdir is not None and workdir is not None:
        parts += [f"upperdir={fuse_escape(upperdir)}", f"workdir={fuse_escape(workdir)}"]
    if volatile:
        parts.append("volatile")
    parts.extend(extra)
    return ",".join(parts)


def mount_fuse(lowerdirs: list[str], upperdir: str | None, workdir: str | None,
                mergeddir: str, volatile: bool, extra: Sequence[str]) -> None:
    cmd = [*fuse_program(), "-o",
           fuse_option_string(lowerdirs, upperdir, workdir, volatile=volatile, extra=extra),
           mergeddir]
    import subprocess  # lazy here and below: only FUSE needs it (kernel-mount start-up)
    import tempfile

    # stderr goes to a file, not a pipe: the daemon keeps running after the program
    # returns, and a pipe it inherited could keep a reader waiting forever.
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, timeout=FUSE_START_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise MountError(f"mount {mergeddir} with {FUSE_PROGRAM}: not live after "
                             f"{FUSE_START_TIMEOUT:.0f}s") from None
        err.seek(0)
        msg = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise MountError(f"mount {mergeddir} with {FUSE_PROGRAM}: "
                         f"{fuse_failure(msg) or f'exit status {proc.returncode}'}")
    if mountinfo().get(mergeddir) is None:
        raise MountError(f"mount {mergeddir} with {FUSE_PROGRAM}: it exited 0 but nothing "
                         "is mounted there")
    log.debug("mounted %s with %s", mergeddir, FUSE_PROGRAM)


def fuse_failure(stderr: str) -> str:
    """The informative part of a failed mount program's stderr, on one line: libfuse's and
    fusermount3's own messages (the real cause) plus the program's last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith(("fuse:", "fusermount"))]
    last = lines[-1:] if lines else []
    return "; ".join(dict.fromkeys(causes + last))


def unmount_fuse(target: str) -> None:
    import subprocess

    r = subprocess.run(["fusermount3", "-u", target], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0 and target in mountinfo():
        deadline = time.monotonic() + kmount.UNMOUNT_RETRY_SECONDS
        while r.returncode != 0 and time.monotonic() < deadline and target in mountinfo():
            time.sleep(0.05)
            r = subprocess.run(["fusermount3", "-u", target], capture_output=True, text=True,
                               check=False)
        if r.returncode != 0 and target in mountinfo():
            log.warning("unmount %s: fusermount3 -u failed (%s), detaching lazily", target,
                        r.stderr.strip())
            detach_last_resort(FUSE, target)
    wait_unmounted(target)


def wait_unmounted(target: str) -> None:
    deadline = time.monotonic() + UNMOUNT_WAIT
    while target in mountinfo():
        if time.monotonic() > deadline:
            raise MountError(f"unmount {target}: still mounted after {UNMOUNT_WAIT:.0f}s")
        time.sleep(0.02)


def unmount_backend(backend: str, target: str) -> None:
    if backend == FUSE:
        unmount_fuse(target)
    else:
        kmount.unmount(target)


def detach_last_resort(backend: str, target: str) -> None:
    if target not in mountinfo():
        return
    if backend == FUSE and os.geteuid() != 0:
        import subprocess

        subprocess.run(["fusermount3", "-u", "-z", target], capture_output=True, check=False)
        return
    with contextlib.suppress(OSError):
        _sys.umount2(os.fsencode(target), _sys.MNT_DETACH)
