"""``cowfs build``: build an image from a Dockerfile into the store."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from ..build import Builder
from ..errors import UsageError
from ..store import open_store
from ._common import add_json_flag, print_json, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("context", help="build context directory")
    p.add_argument("-f", "--file", help="Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("-t", "--tag", action="append", default=[], help="name the image NAME:TAG")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                   help="set a build-time variable")
    p.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    p.add_argument("--backend", default="auto", choices=["auto", "kernel", "fuse"],
                   help="overlay backend for RUN steps and COPY --from")
    add_json_flag(p)
    p.set_defaults(func=run)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Keep stdout clean for --json: step lines and RUN output go to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run(args: argparse.Namespace) -> int:
    build_args = {}
    for item in args.build_arg:
        k, eq, v = item.partition("=")
        if not k:
            raise UsageError(f"--build-arg {item!r}: want KEY=VALUE")
        build_args[k] = v if eq else os.environ.get(k, "")
    dockerfile = args.file or os.path.join(args.context, "Dockerfile")
    store = open_store(store_root(args))
    builder = Builder(store, args.context, dockerfile, build_args=build_args,
                      no_cache=args.no_cache, backend=args.backend,
                      out=sys.stderr if args.json else sys.stdout)
    if args.json:
        with _stdout_to_stderr():
            result = builder.build(args.tag)
        print_json({"id": result.image.id, "tags": list(result.image.tags),
                    "diff_ids": list(result.image.diff_ids), "run_executed": result.ran,
                    "steps": [{"step": s.step, "instruction": s.instruction, "cached": s.cached,
                               "layer": s.layer, "stage": s.stage} for s in result.steps]})
    else:
        builder.build(args.tag)
    return 0
