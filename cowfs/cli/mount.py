"""``cowfs mount``: mount an image from the store, or plain lower dirs, on a mount point.

Parses arguments and calls `cowfs.driver`; the mount stays after the command exits
(kernel mounts live in the mount namespace, the FUSE daemon detaches). Undo it with
``cowfs umount MOUNTPOINT``.
"""

from __future__ import annotations

import argparse
import os

from .. import driver, format as fmt
from ..errors import UsageError
from ._common import add_json_flag, print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser(
        "mount", help="mount an image or lower dirs (overlay)",
        usage="cowfs mount [--backend auto|kernel|fuse] [--upper DIR --work DIR | --read-only]"
              " [--volatile] (IMAGE | --lower DIR [--lower DIR ...]) MOUNTPOINT",
        description="Mount an overlay. Without --upper the mount is read-only. --lower may "
                    "repeat; the first one given is the top layer.")
    p.add_argument("--backend", choices=driver.BACKENDS, default=driver.AUTO,
                   help="auto: the kernel when it works here, else FUSE (default)")
    p.add_argument("--lower", action="append", default=[], metavar="DIR",
                   help="a lower layer dir (repeat; first is the top)")
    p.add_argument("--upper", metavar="DIR", help="the writable layer (needs --work)")
    p.add_argument("--work", metavar="DIR", help="the work dir, on the upper's filesystem")
    p.add_argument("--read-only", action="store_true", help="mount without an upper layer")
    p.add_argument("--volatile", action="store_true", help="skip syncs (kernel 'volatile')")
    p.add_argument("--no-userxattr", dest="userxattr", action="store_false", default=None,
                   help="never use the kernel's userxattr mode")
    p.add_argument("--userxattr", dest="userxattr", action="store_true",
                   help="use user.overlay.* xattrs (default inside a user namespace)")
    add_json_flag(p)
    p.add_argument("args", nargs="+", metavar="IMAGE|MOUNTPOINT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.read_only and (args.upper or args.work):
        raise UsageError("mount: --read-only conflicts with --upper/--work")
    if bool(args.upper) != bool(args.work):
        raise UsageError("mount: --upper and --work must be given together")
    if args.lower:
        if len(args.args) != 1:
            raise UsageError("mount: with --lower give only MOUNTPOINT, not an IMAGE")
        target = args.args[0]
    elif len(args.args) != 2:
        raise UsageError("mount: give IMAGE and MOUNTPOINT (or --lower DIR ... MOUNTPOINT)")
    else:
        target = args.args[1]
    root = store_root(args)
    if args.lower:
        m = driver.mount(args.lower, args.upper, args.work, target, args.backend,
                         run_dir=os.path.join(root, fmt.RUN_DIR), userxattr=args.userxattr,
                         volatile=args.volatile)
    else:
        from ..store import open_store

        m = driver.mount_image(open_store(root), args.args[0], upper=args.upper,
                               work=args.work, target=target, backend=args.backend,
                               volatile=args.volatile, userxattr=args.userxattr)
    if args.json:
        print_json({"MergedDir": m.mergeddir, "LowerDir": ":".join(m.lowerdirs),
                    "UpperDir": m.upperdir, "WorkDir": m.workdir, "Backend": m.backend})
    else:
        print(f"{m.mergeddir} ({m.backend})")
    return 0
