"""A cheaper request loop for pyfuse3's single worker: wait for /dev/fuse without trio.

Owns: the shim that pyfuse3's session loop sees as its ``trio`` module. Must not touch
requests or overlay semantics; it only changes how the loop waits for the next request.

Why (measured, docs/performance.md "Request loop"): with ``max_tasks=1`` and handlers
that never await, pyfuse3 still goes through two trio scheduler rounds per request (its
read lock's checkpoints, then parking in ``trio.lowlevel.wait_readable`` until epoll wakes
it), and on this VM most of a request's wall time is the wake-up itself: the daemon
sleeps, the client's request arrives, the host has to wake the daemon's vCPU. pyfuse3
looks ``trio`` up as a module global at run time (``trio.Lock()`` once,
``trio.lowlevel.wait_readable(fd)`` per request), so the daemon hands it a proxy of trio
that differs in exactly two names:

* ``Lock``: a lock without checkpoints (there is one worker, so it is never contended);
* ``lowlevel.wait_readable``: first polls the fd for up to ``spin`` µs (``poll(2)`` with
  no timeout, ``sched_yield`` in between so a client on the same CPU runs), then blocks in
  ``poll(2)`` for at most ``BLOCK_MS``; only if nothing arrived by then (the mount went
  idle), or after ``STREAK`` requests in a row, does it fall back to trio's own wait,
  which is where trio runs its other tasks (signals, the readiness check, terminate()).

Spinning is adaptive: after ``MISSES`` waits in a row that the spin did not catch (the
client is slower than the window, e.g. an interactive shell), it pauses for ``COOL``
waits, so an idle or slow-paced mount costs no CPU for it. Everything else pyfuse3 takes
from trio is trio's own object. `install` checks that pyfuse3 still reads ``trio`` as a
module global and leaves it untouched otherwise (returns False).
"""

from __future__ import annotations

import os
import select
import time
import types
from typing import Any

BLOCK_MS = 10
"""How long the fast wait blocks in poll(2) before handing the wait back to trio."""

STREAK = 256
"""Requests served back to back before trio gets a scheduling round anyway."""

MISSES = 32
COOL = 1024
"""After MISSES spins in a row that caught nothing, wait COOL times without spinning."""


class _QuietLock:
    """Stands in for ``trio.Lock`` in pyfuse3's loop: one worker, never contended."""

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class FastWait:
    """``wait_readable`` that polls the fd itself and only sometimes asks trio."""

    def __init__(self, trio_wait: Any, spin_us: int) -> None:
        self._trio_wait = trio_wait
        self.spin_ns = spin_us * 1000
        self._poll: Any = None
        self._fd = -1
        self._streak = 0
        self._misses = 0
        self._cool = 0
        # Counters for tests and the debug log: where each wait ended.
        self.spun = self.polled = self.trio_waits = 0

    async def __call__(self, fd: int) -> None:
        if fd != self._fd:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
            self._fd = fd
            self._streak = 0
        if self._streak < STREAK:
            self._streak += 1
            poll = self._poll.poll
            if self._cool:
                self._cool -= 1
            elif self.spin_ns:
                now = time.perf_counter_ns
                end = now() + self.spin_ns
                while True:
                    if poll(0):
                        self._misses = 0
                        self.spun += 1
                        return
                    if now() > end:
                        break
                    os.sched_yield()
                self._misses += 1
                if self._misses >= MISSES:
                    self._misses = 0
                    self._cool = COOL
            if poll(BLOCK_MS):
                self.polled += 1
                return
        self._streak = 0
        self.trio_waits += 1
        await self._trio_wait(fd)


class _Proxy(types.ModuleType):
    """A module object that forwards every attribute to ``base`` except its own."""

    def __init__(self, name: str, base: types.ModuleType, **own: Any) -> None:
        super().__init__(name)
        self.__dict__.update(own)
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def install(pyfuse3: types.ModuleType, spin_us: int) -> FastWait | None:
    """Make pyfuse3's loop wait through a `FastWait`; None if pyfuse3 looks different."""
    import trio
    import trio.lowlevel

    if pyfuse3.__dict__.get("trio") is not trio or not hasattr(trio.lowlevel, "wait_readable"):
        return None
    wait = FastWait(trio.lowlevel.wait_readable, spin_us)
    lowlevel = _Proxy("trio.lowlevel", trio.lowlevel, wait_readable=wait)
    pyfuse3.__dict__["trio"] = _Proxy("trio", trio, Lock=_QuietLock, lowlevel=lowlevel)
    return wait


def uninstall(pyfuse3: types.ModuleType) -> None:
    """Give pyfuse3 the real trio back (after its loop ended)."""
    import trio

    if isinstance(pyfuse3.__dict__.get("trio"), _Proxy):
        pyfuse3.__dict__["trio"] = trio
