"""Run one scenario on one backend: build the layers, apply the ops, snapshot the result.

An op is ``(name, *args)``: any ``FS`` method, or one of the runner's own:
``("stat", p)`` (kind/mode/size/nlink/uid/gid), ``("mtime", p)``, ``("exists", p)``,
``("remember_ino", p, key)`` / ``("same_ino", p, key)`` (inode numbers compared within a
backend only), ``("remount",)``. Each op yields ``("ok", value)`` or ``("err", "ENOENT")``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.backends import FS, Backend, Stack
from conformance.layout import Spec, build, snapshot_tree, snapshot_upper

Op = tuple[Any, ...]


@dataclass
class Outcome:
    results: list[tuple[str, Any]]
    tree: dict[str, Any]
    upper: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """One row of the table: layers (top lower first), ops, and optional expectations."""

    name: str
    lowers: list[Spec]
    ops: list[Op]
    upper: Spec | None = field(default_factory=dict)
    """Initial upper content; None = no upper (read-only mount)."""
    kernel_lowers: list[Spec] | None = None
    """The same lowers in kernel format, for dialects the kernel cannot read."""
    expect: Callable[[Outcome], None] | None = None
    nlink: bool = True
    compare_upper: bool = True


def make_stack(base: Path, sc: Scenario, *, kernel_format: bool = False) -> Stack:
    lowers_spec = sc.kernel_lowers if kernel_format and sc.kernel_lowers else sc.lowers
    lowers = []
    for i, spec in enumerate(lowers_spec):
        d = base / f"l{i}"
        build(d, spec)
        lowers.append(d)
    upper = work = None
    if sc.upper is not None:
        upper, work = base / "upper", base / "work"
        build(upper, sc.upper)
        work.mkdir()
    mnt = base / "mnt"
    mnt.mkdir()
    return Stack(lowers, upper, work, mnt)


def _norm(value: Any) -> Any:
    if isinstance(value, os.stat_result):
        return stat_dict(value)
    if isinstance(value, os.statvfs_result):
        return "statvfs"
    return value


def stat_dict(st: os.stat_result) -> dict[str, Any]:
    return {"fmt": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
            "size": st.st_size if not stat.S_ISDIR(st.st_mode) else None,
            "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid}


def apply(fs: FS, ops: list[Op]) -> list[tuple[str, Any]]:
    results: list[tuple[str, Any]] = []
    inos: dict[str, int] = {}
    for op in ops:
        name, args = op[0], op[1:]
        try:
            if name == "remount":
                fs.remount()
                res: Any = None
            elif name == "stat":
                res = fs.lstat(args[0])  # type: ignore[attr-defined]
            elif name == "mtime":
                res = fs.lstat(args[0]).st_mtime_ns  # type: ignore[attr-defined]
            elif name == "exists":
                try:
                    fs.lstat(args[0])  # type: ignore[attr-defined]
                    res = True
                except FileNotFoundError:
                    res = False
            elif name == "remember_ino":
                inos[args[1]] = fs.lstat(args[0]).st_ino  # type: ignore[attr-defined]
                res = None
            elif name == "same_ino":
                res = fs.lstat(args[0]).st_ino == inos.get(args[1])  # type: ignore[attr-defined]
            else:
                res = getattr(fs, name)(*args)
            results.append(("ok", _norm(res)))
        except OSError as exc:
            results.append(("err", errno.errorcode.get(exc.errno or 0, str(exc.errno))))
    return results


def execute(backend: Backend, base: Path, sc: Scenario, *,
            kernel_format: bool = False) -> Outcome:
    stack = make_stack(base, sc, kernel_format=kernel_format)
    old = os.umask(0o022)
    try:
        fs = backend.factory(stack)
        try:
            results = apply(fs, sc.ops)
            tree = snapshot_tree(fs, nlink=sc.nlink)
        finally:
            fs.unmount()
    finally:
        os.umask(old)
    return Outcome(results, tree, snapshot_upper(stack.upper))


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Readable differences between two snapshots (backend vs reference)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k}: backend={a.get(k)!r} reference={b.get(k)!r}")
    return out
