"""What a container changed: ``docker diff``-style A/C/D lines from its upper dir.

Owns: walking an upper dir (kernel overlay format: char 0/0 whiteouts, opaque xattrs)
against the image's lower dirs. The upper dir alone says what changed; the lowers are
only consulted to tell "added" from "changed" and to expand opaque dirs. Read-only.
Must not mount anything or look inside ``work/``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .. import format as fmt


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path: kind ``A`` (added), ``C`` (changed) or ``D`` (deleted)."""

    kind: str
    path: str

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


def is_opaque(path: str) -> bool:
    """True if dir ``path`` carries an overlay opaque marker (either namespace, or .wh)."""
    for name in (fmt.TRUSTED_OPAQUE, fmt.USER_OPAQUE):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == fmt.OPAQUE_YES:
                return True
        except OSError:
            continue
    return os.path.lexists(os.path.join(path, fmt.WH_OPAQUE_STR))


def _is_whiteout(st: os.stat_result) -> bool:
    return fmt.is_whiteout_stat(st.st_mode, st.st_rdev)


def lower_stat(lowers: Sequence[str], rel: str) -> os.stat_result | None:
    """What the image (lowers, top first) shows at ``rel``; None if nothing."""
    parts = [p for p in rel.split("/") if p]
    for layer in lowers:
        cur = layer
        blocked = False
        for i, name in enumerate(parts):
            if os.path.lexists(os.path.join(cur, fmt.WH_PREFIX_STR + name)):
                return None
            cur = os.path.join(cur, name)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                # Not in this layer; an opaque parent here hides every lower layer.
                parent = os.path.dirname(cur)
                if os.path.isdir(parent) and is_opaque(parent):
                    return None
                blocked = True
                break
            if _is_whiteout(st):
                return None
            if i < len(parts) - 1:
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a non-dir here hides the rest of the path below
                continue
            return st
        if not blocked:
            return None
    return None


def _lower_names(lowers: Sequence[str], rel: str) -> set[str]:
    """Names visible in the image's dir ``rel``."""
    names: set[str] = set()
    hidden: set[str] = set()
    for layer in lowers:
        d = os.path.join(layer, rel.lstrip("/"))
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for n in entries:
            full = os.path.join(d, n)
            if n.startswith(fmt.WH_PREFIX_STR):
                hidden.add(n[len(fmt.WH_PREFIX_STR):])
                continue
            if n in hidden:
                continue
            st = os.lstat(full)
            if _is_whiteout(st):
                hidden.add(n)
            else:
                names.add(n)
        if is_opaque(d):
            break
    return names


def changes(upper: str, lowers: Sequence[str]) -> list[Change]:
    """Every change in ``upper`` relative to ``lowers``, sorted by path."""
    return sorted(_walk(upper, lowers, ""), key=lambda c: c.path)


def _walk(upper: str, lowers: Sequence[str], rel: str) -> Iterator[Change]:
    d = os.path.join(upper, rel.lstrip("/"))
    for name in sorted(os.listdir(d)):
        if name.startswith(fmt.WH_PREFIX_STR):
            continue
        path = f"{rel}/{name}"
        st = os.lstat(os.path.join(d, name))
        if _is_whiteout(st):
            if lower_stat(lowers, path) is not None:
                yield Change("D", path)
            continue
        below = lower_stat(lowers, path)
        if stat.S_ISDIR(st.st_mode):
            if below is None or not stat.S_ISDIR(below.st_mode):
                yield Change("A", path)
                yield from _all_added(upper, path)
                continue
            yield Change("C", path)
            if is_opaque(os.path.join(d, name)):
                present = set(os.listdir(os.path.join(d, name)))
                for gone in sorted(_lower_names(lowers, path) - present):
                    yield Change("D", f"{path}/{gone}")
            yield from _walk(upper, lowers, path)
        else:
            yield Change("A" if below is None else "C", path)


def _all_added(upper: str, rel: str) -> Iterator[Change]:
    d = os.path.join(upper, rel.lstrip("/"))
    for name in sorted(os.listdir(d)):
        path = f"{rel}/{name}"
        st = os.lstat(os.path.join(d, name))
        if _is_whiteout(st) or name.startswith(fmt.WH_PREFIX_STR):
            continue
        yield Change("A", path)
        if stat.S_ISDIR(st.st_mode):
            yield from _all_added(upper, path)
