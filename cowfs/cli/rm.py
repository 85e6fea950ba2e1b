"""``cowfs rm``: remove containers and their writable layers (``-f`` kills running ones)."""

from __future__ import annotations

import argparse

from ..run import container, volumes
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("-v", "--volumes", action="store_true",
                   help="also remove anonymous volumes of the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = store_root(args)
    for ref in args.containers:
        c = container.lookup(root, ref)
        anon = [m["Source"] for m in c.config.get("Mounts", [])
                if m.get("Type") == "volume" and m.get("Anonymous")]
        container.remove(c, force=args.force)
        if args.volumes:
            for name in anon:
                volumes.remove(root, name)
        print(ref)
    return 0
