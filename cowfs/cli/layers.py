"""``cowfs layers``: list unpacked layers and how many images use each."""

from __future__ import annotations

import argparse
from collections import Counter

from ..store import open_store
from ._common import add_json_flag, human_size, print_json, print_table, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("layers", help="list layers in the store")
    p.add_argument("--no-trunc", action="store_true", help="show full digests")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(store_root(args))
    uses: Counter[str] = Counter()
    for img in store.images():
        uses.update(set(img.diff_ids))
    layers = store.layers()
    if args.json:
        print_json([{"diff_id": x.diff_id, "digest": x.digest, "digests": list(x.digests),
                     "path": x.path, "size": x.size, "compressed_size": x.compressed_size,
                     "media_type": x.media_type, "created": x.created,
                     "images": uses[x.diff_id]} for x in layers])
        return 0

    def short(d: str | None) -> str:
        return "-" if d is None else d if args.no_trunc else d.removeprefix("sha256:")[:12]

    print_table(["DIFF ID", "DIGEST", "SIZE", "IMAGES", "MEDIA TYPE"],
                [(short(x.diff_id), short(x.digest), human_size(x.size), uses[x.diff_id],
                  x.media_type.rsplit(".", 1)[-1]) for x in layers])
    return 0
