"""``cowfs push IMAGE REF``: upload a stored image to a registry, byte-identical."""

from __future__ import annotations

import argparse
import sys

from ..registry.push import push
from ..store import open_store
from ._common import add_json_flag, print_json, store_root
from ._progress import MultiBar
from .pull import add_transport_flags


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("push", help="push a stored image to a registry")
    p.add_argument("image", help="image in the store (name:tag or ID)")
    p.add_argument("ref", help="destination [REGISTRY/]NAME[:TAG]")
    p.add_argument("--mount-from", action="append", default=[], metavar="REPO",
                   help="repository on the same registry to cross-mount blobs from")
    add_transport_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(store_root(args))
    tty = sys.stderr.isatty() and not args.json and not args.quiet
    digest = push(store, args.image, args.ref, insecure=args.insecure, creds=args.creds,
                  jobs=args.jobs, mount_from=args.mount_from,
                  progress=MultiBar(sys.stderr) if tty else None)
    if args.json:
        print_json({"ref": args.ref, "digest": digest})
    else:
        print(f"pushed {args.image} to {args.ref}: {digest}")
    return 0
