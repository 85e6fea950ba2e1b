"""``cowfs diff``: list a container's changes (A added, C changed, D deleted)."""

from __future__ import annotations

import argparse

from ..run import container, diff
from ._common import add_json_flag, print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("diff", help="show changes in a container's filesystem")
    add_json_flag(p)
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    c = container.lookup(store_root(args), args.container)
    changes = diff.changes(c.upper, c.lowerdirs)
    if args.json:
        print_json([{"Kind": ch.kind, "Path": ch.path} for ch in changes])
    else:
        for ch in changes:
            print(ch)
    return 0
