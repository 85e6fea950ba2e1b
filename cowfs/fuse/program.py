"""``cowfs-overlay``: the fuse-overlayfs-compatible mount program (SPEC §5).

Owns: the process shape. Without ``-f`` it forks; the child detaches fully (setsid,
a second fork, cwd ``/``, stdio on /dev/null) and reports over a pipe once the mount
answers, so the parent returns only when the mount is live, with the child's one-line
error and a non-zero status otherwise. Must not contain mount or overlay logic.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CowfsError, MountError, UsageError
from .options import MountOptions, parse_args

PROG = "cowfs-overlay"

USAGE = f"""\
usage: {PROG} [-f] [-d] -o lowerdir=A:B[,upperdir=U,workdir=W][,OPTS] MOUNTPOINT
       {PROG} SOURCE MOUNTPOINT -o OPTS      (mount.fuse3 form)
       {PROG} --version

cowfs options: lowerdir= (leftmost is the top, \\: escapes a colon), upperdir=, workdir=,
  timeout=SECONDS, writeback=0|1, fsync=0|1, volatile, uidmapping=, gidmapping=,
  squash_to_root, squash_to_uid=, squash_to_gid=, static_nlink, spin=MICROSECONDS
  (poll for the next request this long before sleeping; default 50, 0 = never),
  log=FILE, debug_log_level=LEVEL; FUSE options such as
  allow_other, default_permissions, suid, dev, ro are passed through. Unknown options
  are ignored with a warning.
"""


def _say(msg: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: {msg}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _detach_stdio() -> None:
    """Point stdin/stdout/stderr at /dev/null so no caller waits on our pipes."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def _serve(opts: MountOptions, report_fd: int | None) -> int:
    """Mount and serve in this process; ``report_fd`` gets b"ok" or the error line."""
    from .daemon import Daemon, register_faulthandler, setup_logging

    stream = setup_logging(opts, detached=report_fd is not None)
    log = logging.getLogger("cowfs.fuse.program")
    for w in opts.warnings:
        log.warning("%s", w)
    register_faulthandler(stream)
    os.umask(0)  # the kernel already applied the caller's umask to every mode we get
    daemon = Daemon(opts)
    told = False

    def ready() -> None:
        nonlocal told
        if report_fd is not None and not told:
            told = True
            _detach_stdio()
            os.write(report_fd, b"ok\n")
            os.close(report_fd)

    try:
        early = daemon.mount(ready)
    except CowfsError as exc:
        log.error("%s", exc)
        if report_fd is not None and not told:
            os.write(report_fd, f"error: {exc}\n".encode())
        elif report_fd is None:
            _say(str(exc))
        return exc.exit_code

    try:
        daemon.serve(None if early else ready)
    except Exception:
        log.exception("fuse main loop failed")
        return 1
    return 0


def _daemonize(opts: MountOptions) -> int:
    """Fork a detached daemon; return the exit status for the calling process."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # first child: new session, then fork again so we can never get a tty
        os.close(rfd)
        code = 1
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            code = _serve(opts, wfd)
        except BaseException as exc:  # report anything, then exit without cleanup of parent state
            try:
                os.write(wfd, f"error: daemon failed: {exc!r}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(wfd)
    chunks: list[bytes] = []
    while True:
        data = os.read(rfd, 4096)
        if not data:
            break
        chunks.append(data)
        if b"\n" in data:
            break
    os.close(rfd)
    os.waitpid(pid, 0)  # the intermediate child exits at once
    msg = b"".join(chunks).decode(errors="replace").strip()
    if msg == "ok":
        return 0
    if msg.startswith("error: "):
        _say(msg[len("error: ") :])
        return MountError.exit_code
    else:
        _say(f"mount {opts.mountpoint}: the daemon exited before the mount was ready")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cowfs-overlay`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "-V"):
        from importlib.metadata import version

        print(f"{PROG}: version {__version__}")
        print(f"pyfuse3 version {version('pyfuse3')}")
        return 0
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    try:
        opts = parse_args(args)
    except UsageError as exc:
        _say(str(exc))
        sys.stderr.write(USAGE)
        return exc.exit_code
    for w in opts.warnings:
        _say(f"warning: {w}")
    if opts.foreground:
        return _serve(opts, None)
    # Check before forking so the common mistakes print from the caller's process.
    from .daemon import check_dirs

    try:
        check_dirs(opts)
    except CowfsError as exc:
        _say(str(exc))
        return exc.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    return _daemonize(opts)


if __name__ == "__main__":
    sys.exit(main())
