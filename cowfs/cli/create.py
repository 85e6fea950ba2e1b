"""``cowfs create``: create a container (writable layer + config) without starting it."""

from __future__ import annotations

import argparse

from .run import add_create_options, create_from_args


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("create", help="create a new container")
    add_create_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    c = create_from_args(args)
    print(c.id)
    return 0
