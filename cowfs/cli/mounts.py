"""``cowfs mounts``: list what cowfs has mounted, with backend and dirs."""

from __future__ import annotations

import argparse
import dataclasses
import os

from .. import driver, format as fmt
from ._common import add_json_flag, print_json, print_table, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("mounts", help="list mounts made by cowfs")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    records = driver.list_mounts(os.path.join(store_root(args), fmt.RUN_DIR))
    if args.json:
        print_json([dataclasses.asdict(r) for r in records])
        return 0
    rows = []
    for r in records:
        state = "mounted" if r.live else "other mount namespace"
        rows.append((r.mergeddir, r.backend, r.upperdir or "(read-only)",
                     f"{len(r.lowerdirs)} layer{'s' * (len(r.lowerdirs) != 1)}", state))
    print_table(["MERGED", "BACKEND", "UPPER", "LOWER", "STATE"], rows)
    return 0
