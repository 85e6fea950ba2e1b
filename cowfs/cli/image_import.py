"""``cowfs import PATH``: import images from an archive, a layout or a raw layer tar."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from ..store import ProgressEvent, open_store
from ..store.images import FORMATS
from ._common import add_json_flag, human_size, print_json, print_table, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser(
        "import", help="import images (docker-archive, OCI layout/archive, dir:, raw layer tar)")
    p.add_argument("path", help="archive, layout directory, or layer tar (none/gzip/zstd)")
    p.add_argument("--tag", "-t", help="name the imported image NAME[:TAG] (replaces its names)")
    p.add_argument("--platform", help="os/arch[/variant] to select from an index "
                   "(default linux/amd64)")
    p.add_argument("--format", dest="form", choices=FORMATS, default="auto",
                   help="input format (default: detected from content)")
    add_json_flag(p)
    p.set_defaults(func=run)


class Bar:
    """A one-line progress bar on a TTY: layer i/n, bytes done/total."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last = 0.0

    def __call__(self, ev: ProgressEvent) -> None:
        now = time.monotonic()
        final = ev.total is not None and ev.done >= ev.total
        if not final and ev.done and now - self.last < 0.1:
            return
        self.last = now
        total = human_size(ev.total) if ev.total is not None else "?"
        width = 30
        frac = min(1.0, ev.done / ev.total) if ev.total else 0.0
        bar = "#" * int(frac * width)
        self.out.write(f"\rlayer {ev.index + 1}/{ev.count} {ev.status:<9} "
                       f"[{bar:<{width}}] {human_size(ev.done)}/{total}\x1b[K")
        if final:
            self.out.write("\n")
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    store = open_store(store_root(args))
    tty = sys.stderr.isatty() and not args.json and not args.quiet
    images = store.import_path(args.path, tag=args.tag, platform=args.platform,
                               progress=Bar(sys.stderr) if tty else None, form=args.form)
    if args.json:
        print_json([{"id": i.id, "tags": list(i.tags), "diff_ids": list(i.diff_ids),
                     "layer_digests": list(i.layer_digests), "size": i.size}
                    for i in images])
    else:
        print_table(["IMAGE ID", "TAGS", "LAYERS", "SIZE"],
                    [(i.short_id, ",".join(i.tags) or "<none>", len(i.diff_ids),
                      human_size(i.size)) for i in images])
    return 0
