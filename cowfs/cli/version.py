"""``cowfs version``: print the version of cowfs and of what it runs on."""

from __future__ import annotations

import argparse
import platform
import sys

from .. import __version__
from ._common import add_json_flag, print_json


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("version", help="show version information")
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = {
        "cowfs": __version__,
        "python": sys.version.split()[0],
        "kernel": platform.release(),
    }
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
    return 0
