"""``cowfs commit``: save a container's writable layer as a new image (old layers + it)."""

from __future__ import annotations

import argparse

from ..run import commit, container
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("commit", help="create a new image from a container's changes")
    p.add_argument("-a", "--author", default="")
    p.add_argument("-m", "--message", default="")
    p.add_argument("--naive", action="store_true",
                   help="diff the mounted trees instead of reading the upper dir")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ref", metavar="NAME:TAG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    c = container.lookup(store_root(args), args.container)
    image = commit.commit(c, args.ref, author=args.author, message=args.message,
                          naive=True if args.naive else None)
    print(image.id)
    return 0
