"""``cowfs kill``: send a signal (default SIGKILL) to a container's PID 1."""

from __future__ import annotations

import argparse
import signal

from ..errors import UsageError
from ..run import container, lifecycle
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("kill", help="kill running containers")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=run)


def parse_signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"kill: unknown signal {text!r}") from None


def run(args: argparse.Namespace) -> int:
    root = store_root(args)
    sig = parse_signal(args.signal)
    for ref in args.containers:
        lifecycle.kill(container.lookup(root, ref), sig)
        print(ref)
    return 0
