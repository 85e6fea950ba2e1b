"""``cowfs tag IMAGE NAME[:TAG]``: give an image another name (moves an existing name)."""

from __future__ import annotations

import argparse

from ..store import open_store
from ._common import add_json_flag, print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("tag", help="name an image")
    p.add_argument("image", help="name:tag, id or id prefix")
    p.add_argument("name", help="new NAME[:TAG]")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(store_root(args))
    iid = store.resolve(args.image)
    ref = store.tag(iid, args.name)
    if args.json:
        print_json({"id": iid, "tag": ref})
    return 0
