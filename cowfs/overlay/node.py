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
_NAME_NODES_SWEEP: Final = 4096
"""Name nodes (see ``InodeTable.name_node``) above this count trigger a sweep of dead ones."""


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
    reported: tuple[os.stat_result, tuple[int, ...], os.stat_result] | None = None
    """(real stat, where, reported stat) of the last report (see ``OverlayView._report``)."""


class InodeTable:
    """ino → Inode with kernel lookup counts (FUSE ``forget`` semantics)."""

    def __init__(self, root: Inode) -> None:
        self.root = root
        self.by_ino: dict[int, Inode] = {root.ino: root}
        self._pinned: deque[Inode] = deque()
        self._transient = 1 << 63
        self._name_nodes: dict[int, tuple[Inode, Inode, bytes]] = {}
        """node id -> (inode, parent, name): one node per name of a lower hardlink."""
        self._node_of: dict[tuple[Inode, bytes], int] = {}

    def __len__(self) -> int:
        return len(self.by_ino)

    def get(self, ino: int) -> Inode:
        try:
            return self.by_ino[ino]
        except KeyError:
            pass
        inode = self._by_name_node(ino)
        if inode is None:
            raise OSError(errno.ESTALE, f"unknown inode {ino}") from None
        return inode

    # --- name nodes ---------------------------------------------------------------------
    # Kernel overlayfs without index gives each name of a LOWER hardlinked file its own
    # inode (same st_ino). The table keeps one Inode for them (pyfuse3 ties the FUSE node
    # id to st_ino, so the FUSE adapter can only ever name the group), and hands out one
    # extra node id per name on request (``Overlay.lookup_node``): a request through that
    # id reaches the inode through that name, and two names compare as two nodes.
    def name_node(self, parent: Inode, name: bytes, inode: Inode) -> int:
        """The node id of NAME in PARENT (an alias of INODE), made on first use."""
        key = (parent, name)
        node = self._node_of.get(key)
        if node is not None and self._name_nodes[node][0] is inode:
            return node
        if node is not None:
            del self._name_nodes[node]
        if len(self._name_nodes) >= _NAME_NODES_SWEEP:
            self._sweep_name_nodes()
        node = self.transient_ino()
        self._name_nodes[node] = (inode, parent, name)
        self._node_of[key] = node
        return node

    def drop_name_node(self, parent: Inode, name: bytes) -> None:
        """NAME in PARENT stops naming its file (moved, removed, split off): its node dies."""
        if self._node_of:
            node = self._node_of.pop((parent, name), None)
            if node is not None:
                self._name_nodes.pop(node, None)

    def _alive(self, node: int) -> tuple[Inode, Inode, bytes] | None:
        ent = self._name_nodes.get(node)
        if ent is None:
            return None
        inode, parent, name = ent
        if (self._node_of.get((parent, name)) == node and parent.children.get(name) is inode
                and self.by_ino.get(inode.ino) is inode):
            return ent
        return None

    def _by_name_node(self, node: int) -> Inode | None:
        """The inode behind a name node, now reached through that name (None: stale)."""
        ent = self._alive(node)
        if ent is None:
            return None
        inode, parent, name = ent
        if inode.aliases[-1] != (parent, name):
            self.attach(parent, name, inode)
        return inode

    def _sweep_name_nodes(self) -> None:
        for node in [n for n in self._name_nodes if self._alive(n) is None]:
            _, parent, name = self._name_nodes.pop(node)
            if self._node_of.get((parent, name)) == node:
                del self._node_of[(parent, name)]

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
        self.drop_name_node(parent, name)
        inode.aliases.remove((parent, name))
        self.maybe_drop(inode)
        self.maybe_drop(parent)
        return inode

    def move(self, parent: Inode, name: bytes, new_parent: Inode, new_name: bytes) -> None:
        """Rename bookkeeping: the inode at PARENT/NAME is now at NEW_PARENT/NEW_NAME."""
        inode = parent.children.pop(name, None)
        if inode is None:
            return
        self.drop_name_node(parent, name)
        self.drop_name_node(new_parent, new_name)
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
            ent = self._name_nodes.get(ino)
            if ent is None or self.by_ino.get(ent[0].ino) is not ent[0]:
                return
            inode = ent[0]
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
        self._name_nodes.clear()
        self._node_of.clear()
