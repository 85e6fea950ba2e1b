"""``cowfs export IMAGE --format docker-archive|oci|oci-archive -o PATH``."""

from __future__ import annotations

import argparse

from ..store import open_store
from ..store.export import EXPORT_FORMATS, export_image
from ._common import add_json_flag, print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("export", help="write an image as docker-archive, OCI layout or archive")
    p.add_argument("image", help="name:tag, id or id prefix")
    p.add_argument("--format", dest="form", choices=EXPORT_FORMATS, default="docker-archive",
                   help="output format (oci = layout directory)")
    p.add_argument("-o", "--output", required=True, help="destination path")
    p.add_argument("--force", action="store_true", help="overwrite an existing destination")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    img = export_image(open_store(store_root(args)), args.image, args.form, args.output,
                       overwrite=args.force)
    if args.json:
        print_json({"id": img.id, "format": args.form, "path": args.output})
    return 0
