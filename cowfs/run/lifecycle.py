"""Container lifecycle operations behind the CLI: start, stop, kill, exec, logs.

Owns: the verbs that act on an existing container (``container`` owns its data,
``supervisor`` its process). ``exec`` joins the namespaces and cgroups of the running
PID 1 directly from the caller (no daemon in the path). Must not parse arguments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from ..errors import Conflict, RunError
from . import attach, cgroups, spawn, supervisor
from .container import Container, list_containers, wait_stopped

log = logging.getLogger(__name__)


def start(c: Container, *, attached: bool = False, interactive: bool = False) -> int:
    """Start a created/exited container; with ``attached``, relay its stdio and return
    its exit code (else 0 once it runs)."""
    if c.is_running():
        if attached:
            return attach_to(c, interactive=interactive)
        return 0
    if c.supervisor_alive():
        # A supervisor between restarts (or finishing up): let it go first.
        c.update_state(StopRequested=True)
        wait_stopped(c, 5.0)
    c.update_state(StopRequested=False)
    if not attached:
        supervisor.launch(c)
        return 0
    mine, theirs = socket.socketpair()
    ws = attach.winsize(0) if c.config.get("Tty") else None
    try:
        if supervisor.launch(c, client=theirs, winsize=ws, peer=mine) == 0:
            theirs.close()
            mine.close()
            return attach_to(c, interactive=interactive)  # a concurrent start won
    finally:
        theirs.close()
    with mine:
        return attach.client_loop(mine, stdin=interactive, tty_mode=bool(c.config.get("Tty")))


def attach_to(c: Container, *, interactive: bool = True) -> int:
    """Attach our stdio to a running container; return its exit code when it ends."""
    if not c.is_running():
        raise Conflict(f"attach to {c.name}: container is not running")
    try:
        sock = attach.connect(c.dir)
    except OSError as exc:
        raise RunError(f"attach to {c.name}: no supervisor answers ({exc.strerror})") from None
    with sock:
        return attach.client_loop(sock, stdin=interactive and bool(c.config.get("OpenStdin")),
                                  tty_mode=bool(c.config.get("Tty")))


def stop(c: Container, timeout: float = 10.0) -> None:
    """SIGTERM PID 1, then SIGKILL after ``timeout`` seconds; no restart follows."""
    c.update_state(StopRequested=True)
    kill(c, signal.SIGTERM, mark_stopped=False)
    if not wait_stopped(c, timeout):
        log.info("%s did not stop within %.0fs: SIGKILL", c.name, timeout)
        kill(c, signal.SIGKILL, mark_stopped=False)
        if not wait_stopped(c, 10.0):
            raise RunError(f"stop {c.name}: still running after SIGKILL")


def kill(c: Container, sig: int = signal.SIGKILL, *, mark_stopped: bool = True) -> None:
    """Send ``sig`` to the container's PID 1."""
    state = c.raw_state()
    if not c.pid_alive(state):
        if mark_stopped:
            raise Conflict(f"kill {c.name}: container is not running")
        return
    if mark_stopped and sig in (signal.SIGKILL, signal.SIGTERM):
        c.update_state(StopRequested=True)
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(state["Pid"]), sig)


def start_all(root: str) -> list[str]:
    """Start every stopped container whose restart policy is ``always`` (boot hook)."""
    started = []
    for c in list_containers(root):
        policy = str(c.config.get("RestartPolicy", "no")).partition(":")[0]
        st = c.state()
        if st["Running"]:
            continue
        if policy == "always" or (policy == "unless-stopped" and not st.get("StopRequested")):
            start(c)
            started.append(c.name)
    return started


def exec_in(c: Container, argv: Sequence[str], *, env: Sequence[str] = (),
            workdir: str | None = None, user: str | None = None, tty: bool = False,
            interactive: bool = False) -> int:
    """Run ``argv`` inside the running container (setns); return its exit code."""
    state = c.raw_state()
    if not c.pid_alive(state):
        raise Conflict(f"exec in {c.name}: container is not running")
    pid1 = int(state["Pid"])
    envmap = supervisor._env(list(c.config.get("Env", [])) + list(env))
    cg = cgroups.of_pid(pid1)
    cwd = workdir or str(c.config.get("WorkingDir") or "/")
    who = user if user is not None else str(c.config.get("User") or "")
    if not tty:
        stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        proc = spawn.Process(argv=list(argv), env=envmap, cwd=cwd, user=who,
                             stdio=(stdin, 1, 2))
        # Forwarding is set up before the spawn: the process can write (and be
        # signalled) as soon as it exec'd, before spawn() has returned its pid here.
        with _forwarding() as forward_to:
            try:
                pid = spawn.spawn(proc, join=spawn.Join(pid1),
                                  before_start=cg.add if cg else None).pid
            finally:
                if stdin != 0:
                    os.close(stdin)
            forward_to(pid)
            return spawn.wait_exit_code(pid)
    ws = attach.winsize(0)
    proc = spawn.Process(argv=list(argv), env=envmap, cwd=cwd, user=who, tty=True,
                         winsize=struct.unpack(">HH", ws) if ws else None)
    started = spawn.spawn(proc, join=spawn.Join(pid1), before_start=cg.add if cg else None)
    assert started.master is not None
    try:
        _pty_relay(started.master, started.pid, interactive)
    finally:
        os.close(started.master)
    return spawn.wait_exit_code(started.pid)


@contextlib.contextmanager
def _forwarding() -> Iterator[Callable[[int], None]]:
    """Forward SIGINT/SIGTERM/SIGHUP to the pid given to the yielded function; signals
    that come before it is known are sent to it as soon as it is."""
    target: list[int] = []
    pending: list[int] = []

    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target[0], signum)

    def fwd(signum: int, _frame: object) -> None:
        if target:
            send(signum)
        else:
            pending.append(signum)

    def set_target(pid: int) -> None:
        target.append(pid)
        while pending:
            send(pending.pop(0))

    old = {s: signal.signal(s, fwd) for s in attach.FORWARDED_SIGNALS}
    try:
        yield set_target
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _pty_relay(master: int, pid: int, interactive: bool) -> None:
    """Copy between our terminal and a pty master until the process exits."""
    pidfd = os.pidfd_open(pid)
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ, "m")
    sel.register(pidfd, selectors.EVENT_READ, "p")
    if interactive:
        sel.register(0, selectors.EVENT_READ, "i")

    def on_winch(_s: int, _f: object) -> None:
        ws = attach.winsize(0)
        if ws:
            with contextlib.suppress(OSError):
                attach.set_winsize(master, ws)
    old = signal.signal(signal.SIGWINCH, on_winch)
    done = False
    try:
        with attach.raw_terminal(0) if interactive else contextlib.nullcontext():
            while True:
                events = sel.select(0.2 if done else None)
                if not events and done:
                    return
                for key, _ in events:
                    if key.data == "m":
                        try:
                            data = os.read(master, 65536)
                        except OSError:
                            data = b""
                        if not data:
                            return
                        os.write(1, data)
                    elif key.data == "i":
                        data = os.read(0, 65536)
                        if data:
                            os.write(master, data)
                        else:
                            sel.unregister(0)
                    else:
                        sel.unregister(pidfd)
                        done = True
    finally:
        signal.signal(signal.SIGWINCH, old)
        sel.close()
        os.close(pidfd)


def iter_logs(c: Container, *, follow: bool = False) -> Iterator[tuple[str, bytes]]:
    """Yield (stream, bytes) records of the container's log; with ``follow``, keep
    reading while the container runs."""
    try:
        f: BinaryIO = open(c.log_path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        buf = b""
        while True:
            chunk = f.readline()
            if chunk:
                buf += chunk
                if not buf.endswith(b"\n"):
                    continue
                rec: dict[str, Any] = json.loads(buf)
                buf = b""
                yield str(rec["s"]), str(rec["b"]).encode("latin-1")
                continue
            if not follow or not (c.is_running() or c.supervisor_alive()):
                return
            time.sleep(0.05)


def print_logs(c: Container, *, follow: bool = False) -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for stream, data in iter_logs(c, follow=follow):
        dst = out if stream == "stdout" else err
        dst.write(data)
        dst.flush()


__all__ = ["attach_to", "exec_in", "iter_logs", "kill", "print_logs", "start",
           "start_all", "stop"]
