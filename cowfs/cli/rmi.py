"""``cowfs rmi [-f] IMAGE...``: remove image names or images (then unused layers)."""

from __future__ import annotations

import argparse

from ..store import open_store
from ._common import add_json_flag, print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("rmi", help="remove images (refuses images containers use)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="name:tag, id or id prefix")
    p.add_argument("-f", "--force", action="store_true",
                   help="untag even if a container uses the image")
    p.add_argument("--no-prune", action="store_true", help="keep unused layers and blobs")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(store_root(args))
    done: list[str] = []
    for ref in args.images:
        done.extend(store.remove_image(ref, force=args.force, prune=not args.no_prune))
    if args.json:
        print_json(done)
    else:
        for line in done:
            print(line)
    return 0
