"""``cowfs images``: list images like ``docker images``."""

from __future__ import annotations

import argparse

from ..store import open_store
from ._common import add_json_flag, human_size, print_json, print_table, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("images", help="list images in the store")
    p.add_argument("--no-trunc", action="store_true", help="show full image ids")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(store_root(args))
    images = store.images()
    if args.json:
        print_json([{"id": i.id, "tags": list(i.tags), "created": i.created,
                     "imported": i.imported, "size": i.size, "diff_ids": list(i.diff_ids),
                     "chain_ids": list(i.chain_ids), "layer_digests": list(i.layer_digests),
                     "manifest_digest": i.manifest_digest, "source": i.source,
                     "users": store.image_users(i.id)} for i in images])
        return 0
    rows = []
    for i in images:
        iid = i.id if args.no_trunc else i.short_id
        for name in i.tags or ("<none>:<none>",):
            repo, _, tag = name.rpartition(":")
            rows.append((repo, tag, iid, i.created or "-", human_size(i.size)))
    print_table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)
    return 0
