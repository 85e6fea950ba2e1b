"""``cowfs ps``: list containers (``-a`` includes stopped ones; ``--json``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..run import container
from ._common import add_json_flag, print_json, print_table, store_root


def register(subs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subs.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show stopped containers too")
    p.add_argument("-q", "--quiet", action="store_true", help="only print ids")
    add_json_flag(p)
    p.set_defaults(func=run)


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
    if args.json:
        print_json(rows)
    elif args.quiet:
        for r in rows:
            print(r["Id"][:12])
    else:
        print_table(["CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"],
                    [(r["Id"][:12], r["Image"], r["Command"][:30], r["Status"], r["Name"])
                     for r in rows])
    return 0
