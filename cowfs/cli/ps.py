"""``cowfs ps``: list containers (``-a`` includes stopped ones; ``--json``)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import UsageError
from ..run import container
from ._common import add_json_flag, print_json, print_table, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show stopped containers too")
    p.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    p.add_argument("--format", help="Go-template-like: 'table {{.Names}}\\t{{.Status}}' "
                   "(fields: ID Names Image Command Status State ExitCode Pid RestartPolicy)")
    add_json_flag(p)
    p.set_defaults(func=run)


_FIELDS = {"ID": "Id", "Names": "Name", "Image": "Image", "Command": "Command",
           "Status": "Status", "State": "State", "ExitCode": "ExitCode", "Pid": "Pid",
           "RestartPolicy": "RestartPolicy", "CreatedAt": "Created"}
_FIELD_RE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def _render(body: str, row: dict[str, Any]) -> str:
    return _FIELD_RE.sub(lambda m: str(row[_FIELDS[m.group(1)]]), body)


def print_format(fmt: str, rows: list[dict[str, Any]]) -> None:
    """Render rows with a ``{{.Field}}`` template; ``table `` adds a header line."""
    table = fmt.startswith("table ")
    body = (fmt[len("table "):] if table else fmt).replace("\\t", "\t").replace("\\n", "\n")
    for name in _FIELD_RE.findall(body):
        if name not in _FIELDS:
            raise UsageError(f"ps --format: unknown field .{name} (use {', '.join(_FIELDS)})")
    lines = []
    if table:
        lines.append(_FIELD_RE.sub(lambda m: m.group(1).upper(), body))
    for r in rows:
        lines.append(_render(body, r))
    if table:
        cells = [line.split("\t") for line in lines]
        widths = [max(len(c[i]) for c in cells if i < len(c)) for i in range(len(cells[0]))]
        lines = ["   ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()
                 for row in cells]
    for line in lines:
        print(line)


def status_text(state: dict[str, Any]) -> str:
    status = str(state.get("Status", "created"))
    if status == "running":
        return f"Up (pid {state.get('Pid')})"
    if status == "exited":
        return f"Exited ({state.get('ExitCode', 0)})"
    return status.capitalize()


def run(args: argparse.Namespace) -> int:
    rows = []
    for c in container.list_containers(store_root(args)):
        st = c.state()
        if not args.all and not st["Running"]:
            continue
        rows.append({"Id": c.id, "Name": c.name, "Image": c.config.get("Image", ""),
                     "Command": " ".join(c.config.get("Argv", [])),
                     "Created": c.config.get("Created", ""), "State": st.get("Status"),
                     "Status": status_text(st), "ExitCode": st.get("ExitCode", 0),
                     "Pid": st.get("Pid", 0),
                     "RestartPolicy": c.config.get("RestartPolicy", "no")})
    if args.format:
        print_format(args.format, rows)
    elif args.json:
        print_json(rows)
    elif args.quiet:
        for r in rows:
            print(r["Id"][:12])
    else:
        print_table(["CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"],
                    [(r["Id"][:12], r["Image"], r["Command"][:30], r["Status"], r["Name"])
                     for r in rows])
    return 0
