"""``cowfs start``: start created/stopped containers (``--all``: the restart=always ones)."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..run import container, lifecycle
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("start", help="start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach stdout/stderr")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    p.add_argument("--all", action="store_true",
                   help="start every container with --restart always (boot hook)")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = store_root(args)
    if args.all:
        for name in lifecycle.start_all(root):
            print(name)
        return 0
    if not args.containers:
        raise UsageError("start: name at least one container (or --all)")
    if args.attach and len(args.containers) > 1:
        raise UsageError("start: --attach takes one container")
    for ref in args.containers:
        c = container.lookup(root, ref)
        if args.attach:
            return lifecycle.start(c, attached=True, interactive=args.interactive)
        lifecycle.start(c)
        print(ref)
    return 0
