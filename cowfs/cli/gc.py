"""``cowfs gc``: delete layers and blobs that no image references."""

from __future__ import annotations

import argparse

from ..store import open_store
from ._common import add_json_flag, print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("gc", help="remove unreferenced layers and blobs")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    removed = open_store(store_root(args)).gc()
    if args.json:
        print_json({"removed": removed})
    else:
        for d in removed:
            print(f"Deleted: {d}")
        print(f"removed {len(removed)} layers/blobs")
    return 0
