"""The attach wire between a container's supervisor and its clients, and the client side.

Owns: framing (client -> supervisor: ``i`` stdin bytes, ``c`` close stdin, ``w`` window
size, ``s`` signal; supervisor -> client: ``o`` stdout, ``e`` stderr, ``x`` exit code),
connecting to ``containers/<id>/attach.sock`` (through ``/proc/self/fd`` so long store
paths fit in ``sun_path``), and the terminal loop of ``run``/``attach``/``exec -it``: raw
mode, SIGWINCH -> window size, signals forwarded. Must not touch container state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import socket
import struct
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from typing import Final

HEADER: Final = struct.Struct(">cI")
SOCK_NAME: Final = "attach.sock"
FORWARDED_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                            signal.SIGUSR1, signal.SIGUSR2)


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Incremental frame parser over a byte stream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        self.buf += data
        while len(self.buf) >= HEADER.size:
            kind, n = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + n:
                return
            payload = bytes(self.buf[HEADER.size:HEADER.size + n])
            del self.buf[:HEADER.size + n]
            yield kind, payload


def sock_path(dir_fd: int) -> str:
    return f"/proc/self/fd/{dir_fd}/{SOCK_NAME}"


def connect(container_dir: str) -> socket.socket:
    """Connect to a running container's supervisor."""
    fd = os.open(container_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock_path(fd))
        except OSError:
            s.close()
            raise
        return s
    finally:
        os.close(fd)


def winsize(fd: int) -> bytes | None:
    """The window size of a terminal fd as a ``w`` payload (rows, cols), or None."""
    try:
        data = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols = struct.unpack("HHHH", data)[:2]
    return struct.pack(">HH", rows, cols)


def set_winsize(fd: int, payload: bytes) -> None:
    rows, cols = struct.unpack(">HH", payload[:4])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put a terminal in raw mode for the duration (no-op when ``fd`` is no tty)."""
    if not os.isatty(fd):
        yield
        return
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # keep type-ahead (TCSAFLUSH would drop it)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def client_loop(sock: socket.socket, *, stdin: bool, tty_mode: bool) -> int:
    """Relay our stdio to the container until it exits; return its exit code.

    stdin is forwarded when ``stdin``; in ``tty_mode`` the local terminal is raw and
    window size changes follow; otherwise SIGINT/SIGTERM/... are forwarded as signals.
    """
    sel = selectors.DefaultSelector()
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    pending: list[int] = []
    handlers: dict[int, Callable[[int, object], None] | int | None] = {}

    def on_signal(signum: int, _frame: object) -> None:
        pending.append(signum)
        with contextlib.suppress(OSError):
            os.write(wfd, b"s")

    sigs = (signal.SIGWINCH,) if tty_mode else FORWARDED_SIGNALS
    for sig in sigs:
        handlers[sig] = signal.signal(sig, on_signal)  # type: ignore[assignment]
    sock.setblocking(True)
    sel.register(sock, selectors.EVENT_READ, "sock")
    sel.register(rfd, selectors.EVENT_READ, "sig")
    stdin_fd = sys.stdin.fileno()
    if stdin:
        sel.register(stdin_fd, selectors.EVENT_READ, "stdin")
    if tty_mode:
        ws = winsize(stdin_fd) or winsize(sys.stdout.fileno())
        if ws:
            sock.sendall(frame(b"w", ws))
    reader = FrameReader()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    code = 255
    try:
        with raw_terminal(stdin_fd) if tty_mode and stdin else contextlib.nullcontext():
            while True:
                for key, _ in sel.select():
                    if key.data == "sock":
                        data = sock.recv(65536)
                        if not data:
                            return code
                        for kind, payload in reader.feed(data):
                            if kind == b"o":
                                out.write(payload)
                                out.flush()
                            elif kind == b"e":
                                err.write(payload)
                                err.flush()
                            elif kind == b"x":
                                return int(struct.unpack(">i", payload)[0])
                    elif key.data == "stdin":
                        data = os.read(stdin_fd, 65536)
                        if data:
                            sock.sendall(frame(b"i", data))
                        else:
                            sel.unregister(stdin_fd)
                            sock.sendall(frame(b"c"))
                    else:
                        with contextlib.suppress(BlockingIOError):
                            os.read(rfd, 64)
                        while pending:
                            signum = pending.pop(0)
                            if signum == signal.SIGWINCH:
                                ws = winsize(stdin_fd)
                                if ws:
                                    sock.sendall(frame(b"w", ws))
                            else:
                                sock.sendall(frame(b"s", struct.pack(">I", signum)))
    finally:
        for hsig, old in handlers.items():
            signal.signal(hsig, old)  # type: ignore[arg-type]
        sel.close()
        os.close(rfd)
        os.close(wfd)
