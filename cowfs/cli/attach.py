"""``cowfs attach``: connect our terminal to a running container's stdio."""

from __future__ import annotations

import argparse

from ..run import container, lifecycle
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("attach", help="attach to a running container")
    p.add_argument("--no-stdin", action="store_true", help="do not forward stdin")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    c = container.lookup(store_root(args), args.container)
    return lifecycle.attach_to(c, interactive=not args.no_stdin)
