"""``cowfs stop``: SIGTERM the container, SIGKILL after ``-t`` seconds."""

from __future__ import annotations

import argparse

from ..run import container, lifecycle
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("stop", help="stop running containers")
    p.add_argument("-t", "--time", type=float, default=10.0,
                   help="seconds to wait before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = store_root(args)
    for ref in args.containers:
        lifecycle.stop(container.lookup(root, ref), args.time)
        print(ref)
    return 0
