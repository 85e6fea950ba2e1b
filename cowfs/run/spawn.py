"""fork+exec of one process in new (or joined) namespaces, with a handshake.

Owns: the launch protocol (habit 9). The parent forks a helper that unshares (or
setns-joins) the namespaces and forks the process that becomes PID 1 (or the exec'd
process); that process reports its pid over one pipe and blocks on a second until the
parent has written id maps and placed it in cgroups (or let it enter them itself, which
is ~10 ms cheaper on cgroup v1: see ``Cgroup.enter``). Setup errors before exec (bad
workdir, missing executable, mount failures) come back over the close-on-exec pipe as
one line and are raised as ``RunError``; a successful exec closes the pipe (EOF).
Must not know about the store or container state (see ``container``/``supervisor``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import struct
import termios
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .._sys import ns
from ..errors import RunError
from . import rootfs

log = logging.getLogger(__name__)

CONTAINER_NAMESPACES = (ns.CLONE_NEWNS | ns.CLONE_NEWPID | ns.CLONE_NEWUTS
                        | ns.CLONE_NEWIPC | ns.CLONE_NEWNET)
"""What every container gets; CLONE_NEWUSER is added when not root."""
SETUP_FAILED = 126  # exit status of a child that failed before exec (like a shell's 126)
_TIOCGPTN = getattr(termios, "TIOCGPTN", 0x80045430)
_TIOCSPTLCK = getattr(termios, "TIOCSPTLCK", 0x40045431)


@dataclass(frozen=True, slots=True)
class Process:
    """What to execute: argv, environment, working dir, user, stdio fds."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str = "/"
    user: str = ""
    stdio: tuple[int, int, int] = (0, 1, 2)
    tty: bool = False
    """Allocate a pty *inside* the container's devpts (ignoring ``stdio``): the process gets
    a new session with its slave as controlling tty; the master comes back to the caller."""
    winsize: tuple[int, int] | None = None
    """(rows, cols) set on the pty before the process is exec'd."""


@dataclass(frozen=True, slots=True)
class Started:
    """A process that has exec'd: its host pid and, with ``tty``, the pty master."""

    pid: int
    master: int | None = None


@dataclass(frozen=True, slots=True)
class Isolation:
    """New namespaces and a root filesystem for a container's PID 1."""

    rootfs: rootfs.RootfsPlan
    hostname: str
    flags: int = CONTAINER_NAMESPACES
    userns: bool = field(default_factory=lambda: os.geteuid() != 0)


@dataclass(frozen=True, slots=True)
class Join:
    """Join the namespaces of a running container's PID 1 (``exec``)."""

    pid: int
    namespaces: tuple[str, ...] = ("user", "ipc", "uts", "net", "pid", "cgroup", "mnt")


# --- the wire: one line per message ----------------------------------------------------

def _send(fd: int, msg: str) -> None:
    os.write(fd, (msg.replace("\n", " ") + "\n").encode())


def _recv(fd: int) -> str | None:
    """Read one line (None at EOF)."""
    buf = bytearray()
    while True:
        b = os.read(fd, 1)
        if not b:
            return bytes(buf).decode(errors="replace") if buf else None
        if b == b"\n":
            return bytes(buf).decode(errors="replace")
        buf += b


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc) or type(exc).__name__


# --- parent side -------------------------------------------------------------------------

def spawn(process: Process, *, isolate: Isolation | None = None, join: Join | None = None,
          before_start: Callable[[int], None] | None = None,
          enter: Callable[[], None] | None = None) -> Started:
    """Start ``process``; return its host pid (and pty master) once it has exec'd.

    Args:
        process: what to run.
        isolate: new namespaces + rootfs (a container's PID 1).
        join: namespaces to join (``exec``); exactly one of isolate/join is given.
        before_start: called with the host pid while the child waits (cgroup placement).
        enter: called *in the child* (single-threaded) once the parent let it go, before
            its rootfs setup and exec: ``Cgroup.enter`` places it in its cgroups without
            the cost of a move by another process. A failure is a setup error.

    Raises:
        RunError: the child could not be set up or its executable could not be run
            ("start container: chdir to workdir /nope: No such file or directory").
    """
    if (isolate is None) == (join is None):
        raise ValueError("spawn: exactly one of isolate or join")
    # The process is forked by a helper that exits; we adopt it as its subreaper.
    ns.set_child_subreaper()
    up_r, up_w = os.pipe()      # child -> parent: "maps", "pid N", "err MSG"
    down_r, down_w = os.pipe()  # parent -> child: "go"
    # pty master fd (SCM_RIGHTS) child -> parent, then "k" once the window size is set
    console, child_console = socket.socketpair() if process.tty else (None, None)
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the forked helper
        os.close(up_r)
        os.close(down_w)
        if console is not None:
            console.close()
        code = 1
        try:
            _helper(process, isolate, join, up_w, down_r, child_console, enter)
            code = 0
        except BaseException as exc:  # must never return into the caller
            try:
                _send(up_w, f"err {_describe(exc)}")
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(up_w)
    os.close(down_r)
    if child_console is not None:
        child_console.close()
    pid = -1
    master: int | None = None
    try:
        while True:
            msg = _recv(up_r)
            if msg is None:
                raise RunError("start process: setup helper died without a word")
            kind, _, rest = msg.partition(" ")
            if kind == "maps" and isolate is not None:
                _write_id_maps(helper)
                _send(down_w, "go")
            elif kind == "pid":
                pid = int(rest)
                break
            elif kind == "err":
                raise RunError(f"start process: {rest}")
        os.waitpid(helper, 0)
        helper = -1
        if before_start is not None:
            before_start(pid)
        _send(down_w, "go")
        os.close(down_w)
        down_w = -1
        if console is not None:
            master = _receive_master(console, process.winsize)
        msg = _recv(up_r)
        if msg is not None:
            kind, _, rest = msg.partition(" ")
            os.waitpid(pid, 0)
            pid = -1
            raise RunError(rest if kind == "err" else f"start process: unexpected {msg!r}")
        return Started(pid, master)
    except BaseException:
        if pid > 0:
            _kill_reap(pid)
        if master is not None:
            os.close(master)
        raise
    finally:
        if console is not None:
            console.close()
        if helper > 0:
            _kill_reap(helper)
        os.close(up_r)
        if down_w >= 0:
            os.close(down_w)


def _receive_master(console: socket.socket, winsize: tuple[int, int] | None) -> int | None:
    """Take the pty master the child opened in its devpts; set the size; let it go on."""
    try:
        _, fds, _, _ = socket.recv_fds(console, 1, 1)
    except OSError:
        return None
    if not fds:
        return None  # the child failed before opening the pty: its error follows
    master = fds[0]
    os.set_inheritable(master, False)
    if winsize is not None:
        set_winsize(master, *winsize)
    with contextlib.suppress(OSError):
        console.sendall(b"k")
    return master


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a terminal fd."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _open_pty() -> tuple[int, int]:  # pragma: no cover - forked child
    """Open a pty in the devpts instance mounted at /dev/pts of this mount namespace."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
    n = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{n}", os.O_RDWR | os.O_NOCTTY)
    return master, slave


def _kill_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _write_id_maps(pid: int) -> None:
    """Map our uid/gid to root inside a new user namespace (single-id map, no helpers)."""
    uid, gid = os.geteuid(), os.getegid()
    with open(f"/proc/{pid}/setgroups", "w") as f:
        f.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"0 {uid} 1\n")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"0 {gid} 1\n")


def wait_exit_code(pid: int) -> int:
    """waitpid(pid) and map its status like a shell: n, or 128+signal."""
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


# --- child side (never returns) ---------------------------------------------------------

def _helper(process: Process, isolate: Isolation | None, join: Join | None,
            up_w: int, down_r: int, console: socket.socket | None,
            enter: Callable[[], None] | None) -> None:  # pragma: no cover - forked child
    if isolate is not None:
        flags = isolate.flags | (ns.CLONE_NEWUSER if isolate.userns else 0)
        ns.unshare(flags)
        if isolate.userns:
            _send(up_w, "maps")
            if _recv(down_r) != "go":
                raise RunError("parent went away before writing id maps")
    else:
        assert join is not None
        fds = []
        for name in join.namespaces:
            path = f"/proc/{join.pid}/ns/{name}"
            try:
                if os.readlink(path) == os.readlink(f"/proc/self/ns/{name}"):
                    continue  # already there (setns to the own userns is EINVAL)
                fds.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                continue
        for name, fd in fds:
            try:
                ns.setns(fd, ns.NS_FILES[name])
            except OSError as exc:
                raise RunError(f"join {name} namespace of pid {join.pid}: {exc.strerror}") from None
            os.close(fd)
    pid = os.fork()
    if pid == 0:
        code = SETUP_FAILED
        try:
            _init(process, isolate, up_w, down_r, console, enter)
        except BaseException as exc:  # report, never return
            try:
                if not isinstance(exc, (OSError, RunError)):
                    log.debug("child setup: %s", traceback.format_exc())
                _send(up_w, f"err {_describe(exc)}")
            except OSError:
                pass
        finally:
            os._exit(code)
    _send(up_w, f"pid {pid}")


def _init(process: Process, isolate: Isolation | None, up_w: int, down_r: int,
          console: socket.socket | None,
          enter: Callable[[], None] | None) -> None:  # pragma: no cover - forked child
    if _recv(down_r) != "go":
        raise RunError("parent went away before the start signal")
    os.close(down_r)
    if enter is not None:
        try:
            enter()
        except OSError as exc:
            raise RunError(f"join cgroup: {_describe(exc)}") from None
    if isolate is not None:
        try:
            rootfs.setup(isolate.rootfs)
        except OSError as exc:
            raise RunError(f"set up rootfs: {_describe(exc)}") from None
        ns.sethostname(isolate.hostname)
        try:
            ns.loopback_up()
        except OSError as exc:
            log.debug("loopback up: %s", exc)
    stdin, stdout, stderr = process.stdio
    os.setsid()
    if process.tty:
        assert console is not None
        master, slave = _open_pty()
        socket.send_fds(console, [b"m"], [master])
        os.close(master)
        if console.recv(1) != b"k":
            raise RunError("parent went away before taking the pty")
        console.close()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        stdin = stdout = stderr = slave
    for target, fd in enumerate((stdin, stdout, stderr)):
        if fd != target:
            os.dup2(fd, target)
        else:
            os.set_inheritable(fd, True)
    uid, gid, groups = rootfs.resolve_user(process.user)
    try:
        os.chdir(process.cwd)
    except OSError as exc:
        raise RunError(f"chdir to workdir {process.cwd}: {exc.strerror}") from None
    if not _in_userns():
        os.setgroups(groups)
    if gid != os.getegid():
        os.setgid(gid)
    if uid != os.geteuid():
        os.setuid(uid)
    env = dict(process.env)
    exe = _find_executable(process.argv[0], env.get("PATH", rootfs.DEFAULT_PATH))
    _reset_signals()
    try:
        os.execve(exe, list(process.argv), env)
    except OSError as exc:
        raise RunError(f"exec {process.argv[0]}: {exc.strerror}") from None


def _reset_signals() -> None:  # pragma: no cover - forked child
    """Default dispositions and an empty mask: ignored signals survive exec, and a shell
    cannot trap a signal that was ignored when it started (the supervisor ignores SIGINT)."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _find_executable(name: str, path: str) -> str:  # pragma: no cover - forked child
    if not name:
        raise RunError("exec: empty command")
    if "/" in name:
        if not os.path.exists(name):
            raise RunError(f"exec {name}: no such file or directory")
        return name
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise RunError(f"exec {name}: executable file not found in $PATH")


def _in_userns() -> bool:  # pragma: no cover - forked child
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False
