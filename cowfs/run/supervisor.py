"""The per-container supervisor: a small daemon that owns one container's process.

Owns: double-fork + setsid (so a detached container outlives the CLI), mounting the
rootfs, cgroups, spawning PID 1, copying its output to the log and to attached clients,
feeding stdin / window size / signals from clients, recording exit codes in the store,
the restart policy (with backoff), and cleanup (unmount, cgroup, ``--rm``). Its death
leaves the container's data alone: state stays in the store and reads as "exited".
Must not parse command lines or print to a terminal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import CowfsError, RunError
from . import attach, cgroups, rootfs, spawn
from .container import Container, mount_rootfs, now, proc_start_time, remove, unmount_rootfs

log = logging.getLogger(__name__)

BACKOFF_START: Final = 0.1
BACKOFF_MAX: Final = 10.0
RESET_AFTER: Final = 10.0
"""A run longer than this resets the restart backoff (docker does the same)."""
SUPERVISOR_LOCK: Final = "supervisor.lock"
DRAIN_SECONDS: Final = 2.0
CLIENT_SEND_TIMEOUT: Final = 5.0
"""An attached client that does not read for this long is dropped (the container and
its log must never stall behind a stuck terminal)."""


def launch(c: Container, *, client: socket.socket | None = None,
           winsize: bytes | None = None, peer: socket.socket | None = None) -> int:
    """Start ``c`` under a new detached supervisor; return once PID 1 has exec'd.

    Args:
        c: a created or exited container.
        client: one end of a socketpair that is attached from the first byte (``run``
            without ``-d``), so no output is lost before a client could connect.
        winsize: the attached terminal's size (``w`` payload), set before PID 1 starts.
        peer: the caller's end of that socketpair, closed in the supervisor so the
            caller's death reads as EOF there.

    Returns:
        The supervisor's pid.

    Raises:
        RunError: the container could not be started (the child's setup error).
    """
    ready_r, ready_w = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - forked
        try:
            os.close(ready_r)
            if peer is not None:
                peer.close()
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _daemon_stdio(c)
            code = Supervisor(c, ready_fd=ready_w, client=client, winsize=winsize).run()
        except BaseException:  # never return into the CLI's code
            log.exception("supervisor of %s failed", c.name)
            code = 1
        os._exit(code)
    os.close(ready_w)
    os.waitpid(first, 0)
    with os.fdopen(ready_r, "rb") as f:
        line = f.readline().decode(errors="replace").strip()
    kind, _, rest = line.partition(" ")
    if kind == "ok":
        return int(rest)
    if kind == "busy":
        return 0  # another supervisor owns it (a concurrent start won the race)
    raise RunError(rest if kind == "err" else f"start container {c.name}: supervisor died")


def _daemon_stdio(c: Container) -> None:  # pragma: no cover - forked
    null = os.open(os.devnull, os.O_RDWR)
    logfd = os.open(os.path.join(c.dir, "supervisor.log"),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(logfd, 2)
    os.close(null)
    os.close(logfd)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler):
            h.setStream(os.fdopen(2, "w", closefd=False))  # type: ignore[arg-type]


@dataclass(eq=False)
class _Run:
    """One start of PID 1: its fds and cgroup."""

    pid: int
    pidfd: int
    cgroup: cgroups.Cgroup | None
    stdin_w: int | None
    outputs: dict[int, bytes] = field(default_factory=dict)  # fd -> stream kind
    master: int | None = None


class Supervisor:
    """Runs one container until it stops for good (policy says no restart, or stop)."""

    def __init__(self, c: Container, *, ready_fd: int | None = None,
                 client: socket.socket | None = None, winsize: bytes | None = None) -> None:
        self.c = c
        self.ready_fd = ready_fd
        self.clients: dict[socket.socket, attach.FrameReader] = {}
        if client is not None:
            client.settimeout(CLIENT_SEND_TIMEOUT)
            self.clients[client] = attach.FrameReader()
        self.sel = selectors.DefaultSelector()
        self.logf = open(c.log_path, "ab")  # noqa: SIM115 - closed in run()
        self.listener: socket.socket | None = None
        self.stopping = False
        self.error = ""
        self.winsize: bytes | None = winsize

    # --- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        policy, max_retries = _restart_policy(str(self.c.config.get("RestartPolicy", "no")))
        # One supervisor per container, for its whole life: a second `start` racing
        # this one finds the lock taken and backs off (the container is being started).
        self.lock_fd = os.open(os.path.join(self.c.dir, SUPERVISOR_LOCK),
                               os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._ready("busy")
            self.logf.close()
            for cl in self.clients:
                cl.close()
            return 0
        me = os.getpid()
        self.c.update_state(SupervisorPid=me, SupervisorStart=proc_start_time(me),
                            StopRequested=False, Error="")
        self._listen()
        for cl in self.clients:
            self.sel.register(cl, selectors.EVENT_READ, "client")
        backoff, restarts, code = BACKOFF_START, 0, 0
        try:
            while True:
                started = time.monotonic()
                try:
                    run = self._start()
                except CowfsError as exc:
                    self.c.update_state(Status="exited", ExitCode=spawn.SETUP_FAILED,
                                        Error=str(exc), FinishedAt=now(), Pid=0)
                    # reported after cleanup (_finish), so the caller never races it
                    self.error = str(exc)
                    code = spawn.SETUP_FAILED
                    break
                self._ready(f"ok {me}")
                code = self._relay(run)
                stop = bool(self.c.raw_state().get("StopRequested")) or self.stopping
                if not _should_restart(policy, max_retries, code, restarts, stop):
                    break
                if time.monotonic() - started > RESET_AFTER:
                    backoff = BACKOFF_START
                restarts += 1
                self.c.update_state(Status="restarting", RestartCount=restarts)
                log.info("restarting %s in %.1fs (exit %d)", self.c.name, backoff, code)
                if self._sleep(backoff):
                    self.c.update_state(Status="exited")
                    break
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self._finish(code)
        return 0

    def _on_term(self, _signum: int, _frame: object) -> None:
        self.stopping = True
        pid = int(self.c.raw_state().get("Pid") or 0)
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _sleep(self, seconds: float) -> bool:
        """Sleep (restart backoff), serving clients; True if a stop came in."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stopping or self.c.raw_state().get("StopRequested"):
                return True
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return False

    def _ready(self, msg: str) -> None:
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, msg.encode() + b"\n")
            os.close(self.ready_fd)
            self.ready_fd = None

    def _finish(self, code: int) -> None:
        unmount_rootfs(self.c)
        auto_remove = bool(self.c.config.get("AutoRemove"))
        if auto_remove:
            with contextlib.suppress(Exception):
                remove(self.c, force=True)
        for cl in list(self.clients):
            with contextlib.suppress(OSError):
                cl.sendall(attach.frame(b"x", struct.pack(">i", code)))
            cl.close()
        if self.listener is not None:
            self.listener.close()
        self.logf.close()
        self._ready(f"err {self.error or f'start container {self.c.name}: supervisor stopped'}")

    def _listen(self) -> None:
        dfd = os.open(self.c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            path = attach.sock_path(dfd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.listen(8)
        finally:
            os.close(dfd)
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, "listen")

    # --- one start ----------------------------------------------------------------

    def _start(self) -> _Run:
        c = self.c
        backend = mount_rootfs(c)
        mounts = c.config.get("Mounts", [])
        binds: tuple[rootfs.BindMount, ...] = ()
        if mounts:
            from . import volumes  # lazy: most containers have none (start-up cost)

            binds = tuple(
                rootfs.BindMount(volumes.host_source(c.root, m), str(m["Destination"]),
                                 not m.get("RW", True))
                for m in mounts)
        lim = c.config.get("Limits") or {}
        cg = cgroups.create(c.id, cgroups.Limits(memory=lim.get("Memory"), cpus=lim.get("Cpus"),
                                                 pids=lim.get("Pids")))
        child_fds: list[int] = []
        run_fds: dict[int, bytes] = {}
        stdin_w: int | None = None
        tty = bool(c.config.get("Tty"))
        try:
            if tty:
                stdio = (0, 1, 2)  # unused: the child opens a pty in its own devpts
            else:
                if c.config.get("OpenStdin"):
                    stdin_r, stdin_w = os.pipe()
                else:
                    stdin_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                out_r, out_w = os.pipe()
                err_r, err_w = os.pipe()
                child_fds += [stdin_r, out_w, err_w]
                run_fds[out_r] = b"o"
                run_fds[err_r] = b"e"
                stdio = (stdin_r, out_w, err_w)
            ws = struct.unpack(">HH", self.winsize[:4]) if self.winsize else None
            proc = spawn.Process(argv=list(c.config["Argv"]), env=_env(c.config["Env"]),
                                 cwd=str(c.config.get("WorkingDir") or "/"),
                                 user=str(c.config.get("User") or ""), stdio=stdio, tty=tty,
                                 winsize=(ws[0], ws[1]) if ws else None)
            iso = spawn.Isolation(rootfs=rootfs.RootfsPlan(c.merged, binds),
                                  hostname=str(c.config.get("Hostname") or c.id[:12]))
            started = spawn.spawn(proc, isolate=iso, enter=cg.enter if cg else None)
        except BaseException:
            for fd in [*run_fds, *([stdin_w] if stdin_w is not None else [])]:
                os.close(fd)
            if cg:
                cg.remove()
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        pid, master = started.pid, started.master
        if master is not None:
            run_fds[master] = b"o"
        c.update_state(Status="running", Pid=pid, PidStart=proc_start_time(pid),
                       StartedAt=now(), ExitCode=0, OOMKilled=False, Error="",
                       Cgroup=cg.paths if cg else {}, Backend=backend)
        run = _Run(pid=pid, pidfd=os.pidfd_open(pid), cgroup=cg, stdin_w=stdin_w,
                   outputs=run_fds, master=master)
        for fd in run_fds:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, "out")
        self.sel.register(run.pidfd, selectors.EVENT_READ, "exit")
        return run

    def _relay(self, run: _Run) -> int:
        """Pump output/input until PID 1 exits; record the exit; return its code."""
        code: int | None = None
        drain_until = 0.0
        while run.outputs or code is None:
            timeout = None if code is None else max(0.0, drain_until - time.monotonic())
            if code is not None and timeout == 0.0:
                break
            for key, _ in self.sel.select(timeout):
                if key.data == "out":
                    self._pump(run, key.fd)
                elif key.data == "exit":
                    self.sel.unregister(run.pidfd)
                    os.close(run.pidfd)
                    code = spawn.wait_exit_code(run.pid)
                    drain_until = time.monotonic() + DRAIN_SECONDS
                    if run.stdin_w is not None:
                        os.close(run.stdin_w)
                        run.stdin_w = None
                elif key.data == "listen":
                    assert self.listener is not None
                    cl, _ = self.listener.accept()
                    cl.settimeout(CLIENT_SEND_TIMEOUT)
                    self.clients[cl] = attach.FrameReader()
                    self.sel.register(cl, selectors.EVENT_READ, "client")
                else:
                    self._client(run, key.fileobj)  # type: ignore[arg-type]
        for fd in list(run.outputs):
            self.sel.unregister(fd)
            os.close(fd)
            del run.outputs[fd]
        if run.stdin_w is not None:
            os.close(run.stdin_w)
        assert code is not None
        oom = run.cgroup.oom_killed() if run.cgroup else False
        if run.cgroup:
            run.cgroup.remove()
        self.c.update_state(Status="exited", ExitCode=code, FinishedAt=now(), Pid=0,
                            OOMKilled=oom)
        log.info("container %s exited with %d", self.c.name, code)
        return code

    def _pump(self, run: _Run, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last slave closed
            data = b""
        if not data:
            self.sel.unregister(fd)
            os.close(fd)
            del run.outputs[fd]
            if fd == run.master:
                run.master = None
            return
        kind = run.outputs[fd]
        rec = {"t": time.time(), "s": "stdout" if kind == b"o" else "stderr",
               "b": data.decode("latin-1")}
        self.logf.write(json.dumps(rec).encode() + b"\n")
        self.logf.flush()
        for cl in list(self.clients):
            try:
                cl.sendall(attach.frame(kind, data))
            except OSError:
                self._drop(cl)

    def _client(self, run: _Run, cl: socket.socket) -> None:
        try:
            data = cl.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(cl)
            return
        for kind, payload in self.clients[cl].feed(data):
            if kind == b"i":
                fd = run.master if run.master is not None else run.stdin_w
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.write(fd, payload)
            elif kind == b"c" and run.stdin_w is not None:
                os.close(run.stdin_w)
                run.stdin_w = None
            elif kind == b"w":
                self.winsize = payload
                if run.master is not None:
                    with contextlib.suppress(OSError):
                        attach.set_winsize(run.master, payload)
            elif kind == b"s":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.pid, struct.unpack(">I", payload)[0])

    def _drop(self, cl: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(cl)
        self.clients.pop(cl, None)
        cl.close()


def _env(env: list[str]) -> dict[str, str]:
    out = {}
    for item in env:
        k, _, v = item.partition("=")
        out[k] = v
    out.setdefault("PATH", rootfs.DEFAULT_PATH)
    return out


def _restart_policy(text: str) -> tuple[str, int]:
    name, _, n = text.partition(":")
    return name, int(n) if n.isdigit() else 0


def _should_restart(policy: str, max_retries: int, code: int, restarts: int,
                    stopped: bool) -> bool:
    if stopped or policy == "no":
        return False
    if policy in ("always", "unless-stopped"):
        return True
    return code != 0 and (max_retries == 0 or restarts < max_retries)


def stopped_by_user(c: Container) -> dict[str, Any]:
    """Mark ``c`` as stopped on purpose (no restart) and return its state."""
    return c.update_state(StopRequested=True)
