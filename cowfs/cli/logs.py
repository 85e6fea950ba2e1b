"""``cowfs logs``: print a container's output (``-f`` follows while it runs)."""

from __future__ import annotations

import argparse

from ..run import container, lifecycle
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("logs", help="fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lifecycle.print_logs(container.lookup(store_root(args), args.container),
                         follow=args.follow)
    return 0
