"""``cowfs exec``: run a command in a running container (setns into its namespaces)."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..run import container, lifecycle
from ._common import store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("exec", help="run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] to run as")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="command and arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.cmd:
        raise UsageError("exec: no command given")
    c = container.lookup(store_root(args), args.container)
    return lifecycle.exec_in(c, args.cmd, env=args.env, workdir=args.workdir, user=args.user,
                             tty=args.tty, interactive=args.interactive)
