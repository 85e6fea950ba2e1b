"""``cowfs pull REF``: fetch an image from a registry (OCI distribution API)."""

from __future__ import annotations

import argparse
import sys

from ..registry.pull import pull
from ..store import open_store
from ._common import add_json_flag, print_json, store_root
from ._progress import MultiBar


def add_transport_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by pull and push."""
    p.add_argument("--insecure", action="store_true",
                   help="plain HTTP (allowed for loopback registries only)")
    p.add_argument("--creds", metavar="USER:PASSWORD",
                   help="credentials (default: $REGISTRY_AUTH_FILE, ~/.docker/config.json)")
    p.add_argument("--jobs", "-j", type=int, default=3, help="parallel blob transfers (3)")


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("pull", help="pull an image from a registry")
    p.add_argument("ref", help="[REGISTRY/]NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", default="linux/amd64",
                   help="os/arch[/variant] to select from an index (linux/amd64)")
    p.add_argument("--tag", "-t", help="store the image under this NAME:TAG (default: REF)")
    add_transport_flags(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(store_root(args))
    tty = sys.stderr.isatty() and not args.json and not args.quiet
    image = pull(store, args.ref, platform=args.platform, insecure=args.insecure,
                 creds=args.creds, jobs=args.jobs, tag=args.tag,
                 progress=MultiBar(sys.stderr) if tty else None)
    if args.json:
        print_json({"id": image.id, "tags": list(image.tags), "diff_ids": list(image.diff_ids),
                    "layer_digests": list(image.layer_digests),
                    "manifest_digest": image.manifest_digest})
    else:
        print(f"pulled {args.ref}: image {image.short_id} ({len(image.diff_ids)} layers)")
    return 0
