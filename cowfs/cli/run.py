"""``cowfs run``: create a container from an image and start it (attached or ``-d``)."""

from __future__ import annotations

import argparse
import logging
import os

from ..errors import NotFound, UsageError
from ..run import cgroups, container, images, lifecycle
from ._common import store_root

log = logging.getLogger(__name__)


def add_create_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``create``."""
    p.add_argument("--name", help="container name (default: generated)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]",
                   help="named volume (NAME:/path) or bind mount (/host:/path)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] to run as")
    p.add_argument("--entrypoint", help="override the image's entrypoint")
    p.add_argument("--hostname", help="container hostname")
    p.add_argument("--memory", "-m", help="memory limit (e.g. 256m)")
    p.add_argument("--cpus", type=float, help="CPU limit (e.g. 0.5)")
    p.add_argument("--pids-limit", type=int, help="max number of processes")
    p.add_argument("--restart", default="no", help="no|always|on-failure[:N]|unless-stopped")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("--backend", default="auto", choices=["auto", "kernel", "fuse"],
                   help="overlay backend for the rootfs")
    p.add_argument("image", help="image name, id, or an absolute rootfs directory")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="command and arguments")


def create_from_args(args: argparse.Namespace) -> container.Container:
    """Resolve the image and create the container described by ``args``."""
    root = store_root(args)
    info = images.resolve(root, args.image)
    argv, env, workdir, user = images.process_args(
        info, args.cmd, entrypoint=args.entrypoint, env=args.env, workdir=args.workdir,
        user=args.user)
    try:
        memory = cgroups.parse_memory(args.memory) if args.memory else None
    except ValueError as exc:
        raise UsageError(f"--memory: {exc}") from None
    if args.cpus is not None and args.cpus <= 0:
        raise UsageError("--cpus: must be positive")
    if args.pids_limit is not None and args.pids_limit <= 0:
        raise UsageError("--pids-limit: must be positive")
    if args.rm and args.restart != "no":
        raise UsageError("--rm and --restart cannot be combined")
    limits = cgroups.Limits(memory=memory, cpus=args.cpus, pids=args.pids_limit)
    problem = cgroups.limits_problem(limits)
    if problem:
        log.warning("resource limits cannot be enforced: %s; the container runs without them",
                    problem)
    specs = []
    if args.volume:
        from ..run import volumes  # lazy: start-up cost of every run without -v

        specs = [volumes.parse_spec(v) for v in args.volume]
    for spec in specs:
        if spec.kind == "bind" and not os.path.exists(spec.source):
            raise NotFound(f"bind mount {spec.source}: no such file or directory on the host")
    mounts = [spec.to_json() for spec in specs]
    return container.create(
        root, image=args.image, image_id=info.id, lowerdirs=info.lowerdirs, argv=argv,
        env=env, workdir=workdir, user=user, name=args.name, hostname=args.hostname,
        tty=args.tty, interactive=args.interactive, mounts=mounts,
        limits={"Memory": memory, "Cpus": args.cpus, "Pids": args.pids_limit},
        restart=args.restart, auto_remove=args.rm, backend=args.backend)


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("run", help="run a command in a new container")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    add_create_options(p)
    p.set_defaults(func=run, fast_exit=True)  # see cli._fast_exit


def run(args: argparse.Namespace) -> int:
    c = create_from_args(args)
    try:
        if args.detach:
            lifecycle.start(c)
            print(c.id)
            return 0
        return lifecycle.start(c, attached=True, interactive=args.interactive)
    except BaseException:
        if args.rm:
            container.remove(c, force=True)
        raise
