"""``cowfs umount``: unmount what ``cowfs mount`` (or the API) mounted."""

from __future__ import annotations

import argparse
import os

from .. import driver, format as fmt
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("umount", aliases=["unmount"], help="unmount a cowfs mount")
    p.add_argument("mountpoints", nargs="+", metavar="MOUNTPOINT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = os.path.join(store_root(args), fmt.RUN_DIR)
    for target in args.mountpoints:
        driver.unmount_path(target, run_dir)
    return 0
