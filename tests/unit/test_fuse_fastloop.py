"""The daemon's request-loop shim (cowfs.fuse.fastloop): where each wait for /dev/fuse ends.

A pipe stands in for /dev/fuse (readable = a request is queued); the waits run inside a
real trio loop, so the fallback path goes through trio's own epoll wait.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pyfuse3
import pytest
import trio
import trio.lowlevel

from cowfs.fuse import fastloop


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def _run(fn: object) -> None:
    trio.run(fn)  # type: ignore[arg-type]


def test_queued_request_is_caught_by_the_spin(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"x")
    wait = fastloop.FastWait(trio.lowlevel.wait_readable, spin_us=50)

    async def main() -> None:
        for _ in range(5):
            await wait(r)

    _run(main)
    assert (wait.spun, wait.polled, wait.trio_waits) == (5, 0, 0)


def test_request_after_the_spin_is_caught_by_poll(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fastloop.FastWait(trio.lowlevel.wait_readable, spin_us=0)
    threading.Timer(0.002, os.write, (w, b"x")).start()

    async def main() -> None:
        await wait(r)

    _run(main)
    assert (wait.spun, wait.polled, wait.trio_waits) == (0, 1, 0)


def test_idle_fd_falls_back_to_trio_which_runs_other_tasks(pipe: tuple[int, int]) -> None:
    r, w = pipe
    wait = fastloop.FastWait(trio.lowlevel.wait_readable, spin_us=10)
    ran: list[float] = []

    async def other() -> None:
        ran.append(time.monotonic())
        os.write(w, b"x")  # the "request" comes from a task only trio can run

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            await wait(r)

    t0 = time.monotonic()
    _run(main)
    assert ran, "trio never ran the other task"
    assert ran[0] - t0 >= fastloop.BLOCK_MS / 1000 * 0.9  # only after the blocking poll
    assert (wait.spun, wait.polled, wait.trio_waits) == (0, 0, 1)


def test_trio_gets_a_round_after_a_streak(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"x")
    wait = fastloop.FastWait(trio.lowlevel.wait_readable, spin_us=50)

    async def main() -> None:
        for _ in range(fastloop.STREAK + 1):
            await wait(r)

    _run(main)
    assert wait.trio_waits == 1 and wait.spun == fastloop.STREAK


def test_spinning_pauses_after_misses(pipe: tuple[int, int],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    r, w = pipe
    monkeypatch.setattr(fastloop, "BLOCK_MS", 0)
    wait = fastloop.FastWait(trio.lowlevel.wait_readable, spin_us=5)
    misses = fastloop.MISSES

    async def main() -> None:
        for _ in range(misses):  # nothing queued: each spin misses, trio's wait times out
            with trio.move_on_after(0):
                await wait(r)
        os.write(w, b"x")
        await wait(r)  # cooling down: caught by poll, not by a spin

    _run(main)
    assert wait.spun == 0 and wait.polled == 1


def test_install_swaps_only_what_pyfuse3_uses() -> None:
    wait = fastloop.install(pyfuse3, spin_us=7)
    try:
        assert wait is not None and wait.spin_ns == 7000
        shim = pyfuse3.__dict__["trio"]
        assert shim is not trio
        assert shim.lowlevel.wait_readable is wait
        assert shim.Lock is not trio.Lock
        # Everything else is trio's own object.
        assert shim.open_nursery is trio.open_nursery
        assert shim.ClosedResourceError is trio.ClosedResourceError
        assert shim.lowlevel.current_task is trio.lowlevel.current_task
        assert shim.lowlevel.notify_closing is trio.lowlevel.notify_closing
        assert fastloop.install(pyfuse3, spin_us=7) is None  # not trio any more: refused
    finally:
        fastloop.uninstall(pyfuse3)
    assert pyfuse3.__dict__["trio"] is trio


def test_quiet_lock_is_an_async_context_manager() -> None:
    async def main() -> None:
        async with fastloop._QuietLock():
            pass

    _run(main)
