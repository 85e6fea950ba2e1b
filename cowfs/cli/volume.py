"""``cowfs volume create|ls|inspect|rm``: named volumes kept outside containers."""

from __future__ import annotations

import argparse

from ..run import volumes
from ._common import add_json_flag, print_json, print_table, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("volume", help="manage volumes")
    vs = p.add_subparsers(dest="volume_cmd", metavar="COMMAND", required=True)
    c = vs.add_parser("create", help="create a volume")
    c.add_argument("name", nargs="?")
    c.set_defaults(func=create)
    ls = vs.add_parser("ls", help="list volumes")
    ls.add_argument("-q", "--quiet", action="store_true", help="only names")
    add_json_flag(ls)
    ls.set_defaults(func=list_)
    i = vs.add_parser("inspect", help="show a volume as JSON")
    i.add_argument("names", nargs="+", metavar="VOLUME")
    i.set_defaults(func=inspect)
    r = vs.add_parser("rm", help="remove volumes (refused while a container uses one)")
    r.add_argument("-f", "--force", action="store_true")
    r.add_argument("names", nargs="+", metavar="VOLUME")
    r.set_defaults(func=remove)


def create(args: argparse.Namespace) -> int:
    print(volumes.create(store_root(args), args.name)["Name"])
    return 0


def list_(args: argparse.Namespace) -> int:
    vols = volumes.list_volumes(store_root(args))
    if args.json:
        print_json(vols)
    elif args.quiet:
        for v in vols:
            print(v["Name"])
    else:
        print_table(["DRIVER", "VOLUME NAME"], [(v["Driver"], v["Name"]) for v in vols])
    return 0


def inspect(args: argparse.Namespace) -> int:
    print_json([volumes.inspect(store_root(args), n) for n in args.names])
    return 0


def remove(args: argparse.Namespace) -> int:
    for n in args.names:
        volumes.remove(store_root(args), n, force=args.force)
        print(n)
    return 0
