"""Helpers shared by the subcommand modules: output (tables and --json), store root."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .. import format as fmt


def store_root(args: argparse.Namespace) -> str:
    """The store root selected by the global --root option or the environment."""
    root = getattr(args, "root", None)
    return str(root) if root else fmt.default_root()


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add the standard ``--json`` flag (machine-readable output)."""
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, out: Any = None
) -> None:
    """Print a left-aligned table like ``docker images`` does."""
    out = out or sys.stdout
    cells = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    line = "   ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()
    out.write(line + "\n")
    for r in cells:
        out.write("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n")


def human_size(n: int) -> str:
    """Format a byte count like docker does (kB, MB, GB with 3 significant digits)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"


def as_mapping(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a mapping into a plain dict for JSON output."""
    return dict(obj)
