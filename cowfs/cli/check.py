"""``cowfs check``: property-test an overlay mount program against the kernel's semantics.

Owns: the command line of the check (program, examples, seed) and its report: a
minimal failing operation sequence as a reproducible shell script. Must not
implement testing logic (``cowfs.testing`` does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from ..errors import UsageError


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser(
        "check", help="property-test an overlay implementation against kernel semantics",
        description="Run random operation sequences on random layer stacks against an "
        "overlay implementation and the model of kernel overlayfs; print a minimal "
        "failing sequence as a reproducible shell script (exit 1) or confirm a match.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--program", metavar="PATH",
                      help="a fuse-overlayfs-compatible mount program (PROG -o lowerdir=.. MNT)")
    what.add_argument("--kernel", action="store_true",
                      help="check kernel overlayfs itself (validates the model)")
    p.add_argument("--options", default="", metavar="OPTS",
                   help="extra -o options for the program (comma-separated)")
    p.add_argument("--examples", type=int, default=100, metavar="N",
                   help="random layer stacks to try (default 100)")
    p.add_argument("--steps", type=int, default=40, metavar="N",
                   help="operations per stack at most (default 40)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed (default: a fixed, derandomized sequence)")
    p.add_argument("--without", default="", metavar="OP,...",
                   help="operations to leave out, e.g. a known divergence: fd_copyup,remount")
    p.add_argument("--ignore", default="", metavar="FIELD,...",
                   help="tree fields not to compare: dir_nlink, nlink, xattrs, mode")
    p.add_argument("--crosscheck", action="store_true",
                   help="also mount each final upper dir with kernel overlayfs and compare")
    p.add_argument("--no-shrink", action="store_true", help="report the first failure as found")
    p.add_argument("--out", metavar="FILE", help="also write the reproducer script to FILE")
    p.set_defaults(func=run)


def _reexec_private_ns() -> None:
    """Re-run this command in a private mount namespace (mounts never leak to the host)."""
    if os.environ.get("_COWFS_CHECK_NS") == "1" or os.geteuid() != 0:
        return
    try:
        if os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt"):
            return  # already in a namespace of our own (e.g. under unshare -m)
    except OSError:
        pass  # cannot tell: one more private namespace costs nothing
    unshare = shutil.which("unshare")
    if unshare is None:
        return
    env = dict(os.environ, _COWFS_CHECK_NS="1")
    argv = [unshare, "-m", "--propagation", "private", sys.executable, "-m", "cowfs.cli",
            *sys.argv[1:]]
    os.execve(unshare, argv, env)


def run(args: argparse.Namespace) -> int:
    from ..testing.adapters import KernelAdapter, ProgramAdapter
    from ..testing.runner import run_check

    if args.examples < 1 or args.steps < 1:
        raise UsageError("check: --examples and --steps must be at least 1")
    if args.program:
        program = shutil.which(args.program) or args.program
        if not os.path.exists(program):
            raise UsageError(f"check: mount program not found: {args.program}")
        adapter: KernelAdapter | ProgramAdapter = ProgramAdapter(program, options=args.options)
    else:
        adapter = KernelAdapter()
    why = adapter.unavailable()
    if why:
        raise UsageError(f"check {adapter.name}: {why}")
    _reexec_private_ns()
    without = [w for w in args.without.split(",") if w]
    ignore = [w for w in args.ignore.split(",") if w]
    from ..testing.machine import IGNORABLE

    if not set(ignore) <= IGNORABLE:
        raise UsageError(f"check: --ignore takes {', '.join(sorted(IGNORABLE))}")
    result = run_check(adapter, examples=args.examples, seed=args.seed, steps=args.steps,
                       without=without, ignore=ignore, crosscheck=args.crosscheck,
                       shrink=not args.no_shrink)
    if result.ok:
        print(f"cowfs check: {adapter.name} matches the kernel overlayfs model: "
              f"{result.examples} runs, {result.steps} operations, no divergence")
        return 0
    print(f"cowfs check: {adapter.name} diverges from the kernel overlayfs model.\n")
    print(result.message)
    print("\nMinimal reproducer (run it with 'kernel' and with 'program' and diff):\n")
    print(result.script)
    if args.out:
        with open(args.out, "w") as f:
            f.write(result.script)
        os.chmod(args.out, 0o755)
        print(f"cowfs check: reproducer written to {args.out}", file=sys.stderr)
    return 1
