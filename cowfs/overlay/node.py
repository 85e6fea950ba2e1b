"""The inode table of the overlay core: inode numbers, names (aliases) and lookup counts.

Owns: ``Inode`` (number, layer stack, lookup count, names) and ``InodeTable`` (ino → Inode,
dropping an inode once the kernel forgot it and no child references it). Holds no file
descriptors and does no I/O. Must not decide overlay semantics.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from cowfs.overlay.layer import Path

ROOT_INO: Final = 1
"""Inode number of the overlay root (== ``pyfuse3.ROOT_INODE``)."""

_RESOLVE_PINS: Final = 256
"""How many inodes handed out by ``resolve()`` (no lookup count) stay valid at once."""


@dataclass(eq=False)
class Inode:
    """One object of the merged view.

    ``where`` lists the layers (indices, top first; 0 is the upper if any) holding this
    object: one layer for a non-dir, the merge chain for a dir. ``real`` is the
    (st_dev, st_ino) of the top real object, used to tell a hardlink alias from an
    inode-number collision.
    """

    ino: int
    where: tuple[int, ...]
    real: tuple[int, int]
    is_dir: bool
    xwh: frozenset[int] = frozenset()
    """Layers in which this dir is marked ``overlay.opaque=x`` (holds xattr whiteouts)."""
    lookups: int = 0
    pins: int = 0
    aliases: list[tuple[Inode, bytes]] = field(default_factory=list)
    """(parent, name) names of this inode; the last one is used to reach it."""
    children: dict[bytes, Inode] = field(default_factory=dict)
    last_stat: os.stat_result | None = None


class InodeTable:
    """ino → Inode with kernel lookup counts (FUSE ``forget`` semantics)."""

    def __init__(self, root: Inode) -> None:
        self.root = root
        self.by_ino: dict[int, Inode] = {root.ino: root}
        self._pinned: deque[Inode] = deque()
        self._transient = 1 << 63

    def __len__(self) -> int:
        return len(self.by_ino)

    def get(self, ino: int) -> Inode:
        try:
            return self.by_ino[ino]
        except KeyError:
            raise OSError(errno.ESTALE, f"unknown inode {ino}") from None

    def path(self, inode: Inode) -> Path:
        """Merged path of ``inode`` through its current name (ENOENT once unlinked)."""
        parts: list[bytes] = []
        cur = inode
        while cur is not self.root:
            if not cur.aliases:
                raise OSError(errno.ENOENT, f"inode {inode.ino} has no name any more")
            cur, name = cur.aliases[-1]
            parts.append(name)
        parts.reverse()
        return tuple(parts)

    def child(self, parent: Inode, name: bytes) -> Inode | None:
        return parent.children.get(name)

    def transient_ino(self) -> int:
        """A fresh number for an object whose stable number is taken or unrepresentable."""
        self._transient += 1
        return self._transient

    def attach(self, parent: Inode, name: bytes, inode: Inode) -> None:
        """Record NAME in PARENT as a name of INODE (most recent name last)."""
        old = parent.children.get(name)
        if old is inode:
            inode.aliases.remove((parent, name))
            inode.aliases.append((parent, name))
            return
        if old is not None:
            self.detach(parent, name)
        parent.children[name] = inode
        inode.aliases.append((parent, name))
        self.by_ino.setdefault(inode.ino, inode)

    def detach(self, parent: Inode, name: bytes) -> Inode | None:
        """Forget that NAME in PARENT names something (after unlink/rename)."""
        inode = parent.children.pop(name, None)
        if inode is None:
            return None
        inode.aliases.remove((parent, name))
        self.maybe_drop(inode)
        self.maybe_drop(parent)
        return inode

    def move(self, parent: Inode, name: bytes, new_parent: Inode, new_name: bytes) -> None:
        """Rename bookkeeping: the inode at PARENT/NAME is now at NEW_PARENT/NEW_NAME."""
        inode = parent.children.pop(name, None)
        if inode is None:
            return
        inode.aliases.remove((parent, name))
        if new_parent.children.get(new_name) is not None:
            self.detach(new_parent, new_name)
        new_parent.children[new_name] = inode
        inode.aliases.append((new_parent, new_name))
        self.maybe_drop(parent)

    def pin(self, inode: Inode) -> None:
        """Keep INODE valid without a lookup count (``resolve``), bounded to a few hundred."""
        inode.pins += 1
        self._pinned.append(inode)
        while len(self._pinned) > _RESOLVE_PINS:
            old = self._pinned.popleft()
            old.pins -= 1
            self.maybe_drop(old)

    def forget(self, ino: int, nlookup: int) -> None:
        inode = self.by_ino.get(ino)
        if inode is None:
            return
        inode.lookups = max(0, inode.lookups - nlookup)
        self.maybe_drop(inode)

    def maybe_drop(self, inode: Inode) -> None:
        """Drop INODE (and then its unreferenced parents) if nothing needs it any more."""
        while (inode is not self.root and inode.lookups == 0
               and (inode.pins == 0 or not inode.aliases) and not inode.children):
            if self.by_ino.get(inode.ino) is inode:
                del self.by_ino[inode.ino]
            parents = [p for p, _ in inode.aliases]
            for p, n in inode.aliases:
                if p.children.get(n) is inode:
                    del p.children[n]
            inode.aliases.clear()
            if len(parents) != 1:
                for p in parents:
                    self.maybe_drop(p)
                return
            inode = parents[0]

    def clear(self) -> None:
        self.by_ino = {self.root.ino: self.root}
        self.root.children.clear()
        self._pinned.clear()
