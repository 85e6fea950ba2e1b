"""Lifecycle of one cowfs-overlay mount: checks, mount, serve, clean exit.

Owns: opening the core, the mount (`kmount`, else ``pyfuse3.init``), the trio main loop with its
signal handling (SIGTERM/SIGINT/SIGHUP unmount and exit 0; SIGUSR1 dumps stacks via
faulthandler) and the teardown order (operations.destroy, then ``pyfuse3.close``).
Must not parse the command line (`options`) or fork (`program`).
"""

from __future__ import annotations

import faulthandler
import fcntl
import logging
import os
import signal
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from ..errors import MountError
from .kmount import kernel_mount, unmount_if_ours
from .options import MountOptions

if TYPE_CHECKING:
    from ..overlay import Overlay
    from .operations import Operations

# pyfuse3 and trio (~100 ms of imports, most of a mount's latency) are imported only
# after the kernel mount exists and the caller has been told (see `Daemon.mount`).

log = logging.getLogger(__name__)

_TERM_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

WORKDIR_WAIT = 5.0
"""Seconds a new mount waits for the previous daemon on the same workdir to let go."""


def check_dirs(opts: MountOptions) -> None:
    """Fail early with a clear one-line error for anything the mount cannot use.

    Raises:
        MountError: a missing /dev/fuse, a missing or non-directory path, or an
            upper and work dir on different filesystems.
    """
    if not os.path.exists("/dev/fuse"):
        raise MountError("mount cowfs-overlay: /dev/fuse does not exist (modprobe fuse?)")
    named = [("mountpoint", opts.mountpoint)]
    named += [("lowerdir", d) for d in opts.lowerdirs]
    if opts.upperdir is not None and opts.workdir is not None:
        named += [("upperdir", opts.upperdir), ("workdir", opts.workdir)]
    for what, path in named:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise MountError(f"mount cowfs-overlay: {what} {path}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise MountError(f"mount cowfs-overlay: {what} {path}: not a directory")
    if (opts.upperdir is not None and opts.workdir is not None
            and os.stat(opts.upperdir).st_dev != os.stat(opts.workdir).st_dev):
        raise MountError(
            f"mount cowfs-overlay: workdir {opts.workdir} is not on the same filesystem "
            f"as upperdir {opts.upperdir}"
        )


def setup_logging(opts: MountOptions, detached: bool) -> TextIO | None:
    """Route logs to ``-o log=FILE``, stderr (foreground) or syslog (daemon).

    Returns the stream faulthandler should dump to (None: stderr).
    """
    root = logging.getLogger()
    root.setLevel(opts.log_level)
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s: %(message)s"
    stream: TextIO | None = None
    handler: logging.Handler
    if opts.log_file:
        stream = open(opts.log_file, "a", buffering=1)  # noqa: SIM115 - lives as long as we do
        handler = logging.StreamHandler(stream)
    elif not detached:
        handler = logging.StreamHandler()
    else:
        from logging.handlers import SysLogHandler

        try:
            handler = SysLogHandler(address="/dev/log")
            fmt = "cowfs-overlay[%(process)d]: %(levelname)s %(name)s: %(message)s"
        except OSError:
            handler = logging.NullHandler()  # no syslog here and no log=: nowhere to log
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    pyfuse3_log = logging.getLogger("pyfuse3")
    for f in list(pyfuse3_log.filters):
        pyfuse3_log.removeFilter(f)
    pyfuse3_log.addFilter(_quiet_aborted_replies)
    return stream


def _quiet_aborted_replies(record: logging.LogRecord) -> bool:
    """pyfuse3 logs an ERROR when a reply finds its request gone (ENOENT: the kernel
    aborted it, e.g. unmounted while the daemon was busy or stopped). libfuse treats that
    as normal; so do we (DEBUG)."""
    if record.levelno >= logging.ERROR and "failed with No such file or directory" in (
            record.getMessage()):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def needs_userxattr() -> bool:
    """True unless we are root of the initial user namespace (trusted.* needs that).

    Rootless podman runs the mount program as uid 0 *inside* its user namespace, where
    ``trusted.overlay.*`` cannot be written: use ``user.overlay.*`` there, as the kernel's
    ``userxattr`` mode does.
    """
    if os.geteuid() != 0:
        return True
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            first = f.read().split()
    except OSError:
        return False
    return first[:3] != ["0", "0", "4294967295"]


def wait_workdir_free(workdir: str, timeout: float = WORKDIR_WAIT) -> None:
    """Wait (bounded) until no other daemon holds the workdir's lock.

    podman runs ``fusermount3 -u`` and may mount the same upper/work right away; the old
    daemon learns of the unmount asynchronously and releases the core's workdir lock a
    few milliseconds later. The core's own check then still refuses a workdir really in
    use by a live mount.
    """
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return  # let the core report it
                time.sleep(0.01)
    finally:
        os.close(fd)


class Daemon:
    """One mount: `mount` (may raise), then `serve` (blocks until unmounted)."""

    def __init__(self, opts: MountOptions) -> None:
        self.opts = opts
        self.overlay: Overlay | None = None
        self.ops: Operations | None = None
        self.fuse_fd: int | None = None
        self.pending_signal: int | None = None
        self.mounted = False

    def mount(self, ready: Callable[[], None] | None = None) -> bool:
        """Open the core and mount. Raises MountError with a one-line reason.

        When cowfs can mount(2) the FUSE connection itself (root, or root of a user
        namespace owning the mount namespace), ``ready`` is called as soon as the kernel
        mount exists: requests queue in the kernel until the loop serves them, as with
        libfuse's ``/dev/fd/N`` mountpoints. Returns True if ``ready`` was called.
        """
        opts = self.opts
        check_dirs(opts)
        if opts.workdir is not None:
            wait_workdir_free(opts.workdir)
        from ..overlay import Overlay

        try:
            self.overlay = Overlay(
                list(opts.lowerdirs), opts.upperdir, opts.workdir,
                userxattr=needs_userxattr(), fsync=opts.fsync,
            )
        except OSError as exc:
            raise MountError(f"mount cowfs-overlay: open layers: {exc}") from None
        try:
            self.fuse_fd = kernel_mount(opts)
        except OSError as exc:
            self.overlay.close()
            raise MountError(f"mount cowfs-overlay: mount {opts.mountpoint}: {exc.strerror}"
                             ) from None
        early = self.fuse_fd is not None
        if early:
            # Until the trio loop takes them over, remember termination signals instead of
            # dying with the mount still there (the imports below take ~100 ms).
            for signum in _TERM_SIGNALS:
                signal.signal(signum, self._early_signal)
            self.mounted = True
            log.info("mounted %s (lowers=%s upper=%s timeout=%s)", opts.mountpoint,
                     ":".join(opts.lowerdirs), opts.upperdir, opts.timeout)
            if ready is not None:
                ready()
        try:
            self._start_session()
        except BaseException:
            if self.fuse_fd is not None:
                unmount_if_ours(self.fuse_fd, opts.mountpoint)
                os.close(self.fuse_fd)
                self.fuse_fd = None
            self.overlay.close()
            raise
        if not early:
            log.info("mounted %s (lowers=%s upper=%s timeout=%s)", opts.mountpoint,
                     ":".join(opts.lowerdirs), opts.upperdir, opts.timeout)
        return early

    def _early_signal(self, signum: int, frame: object) -> None:
        self.pending_signal = signum

    def _start_session(self) -> None:
        import pyfuse3

        from .operations import Operations

        opts = self.opts
        assert self.overlay is not None
        self.ops = Operations(self.overlay, opts)
        where = opts.mountpoint if self.fuse_fd is None else f"/dev/fd/{self.fuse_fd}"
        try:
            pyfuse3.init(self.ops, where, set(opts.fuse_options))
        except RuntimeError as exc:
            raise MountError(
                f"mount cowfs-overlay: mount {opts.mountpoint}: {exc} (see the fuse message above)"
            ) from None
        self.mounted = True
        log.debug("fuse session on %s (writeback=%s)", where, self.ops.enable_writeback_cache)

    def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Run the FUSE loop until unmount or a termination signal, then tear down."""
        import pyfuse3
        import trio

        clean = False
        try:
            trio.run(self._main, ready)
            clean = True
        finally:
            if self.ops is not None:
                self.ops.destroy()
            if self.fuse_fd is not None:
                # Our own mount: libfuse does not unmount /dev/fd/N sessions.
                unmount_if_ours(self.fuse_fd, self.opts.mountpoint)
            try:
                # Unmounts only if still mounted by us: libfuse sees an aborted connection.
                pyfuse3.close(unmount=True)
            except Exception:
                log.exception("close the fuse session")
            if self.overlay is not None:
                try:
                    self.overlay.close()
                except Exception:
                    log.exception("close the overlay core")
            log.info("unmounted %s (%s)", self.opts.mountpoint, "clean" if clean else "error")

    async def _main(self, ready: Callable[[], None] | None) -> None:
        import pyfuse3
        import trio

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals)
            if ready is not None:
                nursery.start_soon(self._announce, ready)
            from . import fastloop

            wait = fastloop.install(pyfuse3, self.opts.spin_us)
            if wait is None:
                log.warning("pyfuse3 %s: not its known loop; serving through trio's waits",
                            getattr(pyfuse3, "__version__", "?"))
            try:
                # max_tasks=1: handlers never await, so more workers only add scheduling.
                await pyfuse3.main(min_tasks=1, max_tasks=1)
            finally:
                fastloop.uninstall(pyfuse3)
                if wait is not None:
                    log.debug("request waits: %d caught spinning, %d by poll, %d via trio",
                              wait.spun, wait.polled, wait.trio_waits)
            nursery.cancel_scope.cancel()

    async def _announce(self, ready: Callable[[], None]) -> None:
        import trio

        # The mount exists once init returned; a stat through it proves we also answer.
        await trio.to_thread.run_sync(os.stat, self.opts.mountpoint)
        ready()

    async def _signals(self) -> None:
        import pyfuse3
        import trio

        with trio.open_signal_receiver(*_TERM_SIGNALS) as sigs:
            if self.pending_signal is not None:  # arrived before the loop ran
                log.info("signal %d: unmounting %s", self.pending_signal, self.opts.mountpoint)
                pyfuse3.terminate()
                return
            async for signum in sigs:
                log.info("signal %d: unmounting %s", signum, self.opts.mountpoint)
                pyfuse3.terminate()
                return


def register_faulthandler(stream: TextIO | None) -> None:
    """``kill -USR1 <daemon>`` dumps every thread's stack to the log (or stderr)."""
    try:
        if stream is not None:
            faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)
        else:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("faulthandler on SIGUSR1 unavailable: %s", exc)
