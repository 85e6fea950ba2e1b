"""``cowfs inspect``: docker-shaped JSON for containers or images (GraphDriver dirs)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import NotFound
from ..run import container, images, inspect
from ._common import print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("inspect", help="show low-level information on containers or images")
    p.add_argument("--type", choices=["container", "image"], help="only look for this kind")
    p.add_argument("-f", "--format", help="print one dotted field, e.g. GraphDriver.Data.UpperDir")
    p.add_argument("refs", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=run)


def _one(root: str, ref: str, kind: str | None) -> dict[str, Any]:
    if kind != "image":
        try:
            return inspect.container_json(container.lookup(root, ref))
        except NotFound:
            if kind == "container":
                raise
    store = images.open_store(root)
    return inspect.image_json(store, store.get_image(ref))


def _field(data: Any, path: str) -> Any:
    for key in path.strip("{} .").split("."):
        data = data[key] if isinstance(data, dict) else None
    return data


def run(args: argparse.Namespace) -> int:
    root = store_root(args)
    out = [_one(root, ref, args.type) for ref in args.refs]
    if args.format:
        for rec in out:
            value = _field(rec, args.format)
            if isinstance(value, (dict, list)):
                print_json(value)
            else:
                print(value)
        return 0
    print_json(out)
    return 0
