"""Hypothesis strategies for overlay layer stacks, names and operation arguments.

Owns: what random layers look like (files with content, dirs, symlinks incl.
dangling and looping ones, hardlinks, fifos, user xattrs, whiteouts, opaque dirs)
and the adversarial name pool. Layers are ``model.Dir`` trees; ``layers.py``
writes them to disk. Must not touch the disk itself.

Names come from a small per-stack pool so that layers and operations collide on
the same paths (that is where overlay bugs live).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from .model import WHITEOUT, Dir, Inode, Node

NAME_POOL: tuple[bytes, ...] = (
    b"a", b"b", b"c",
    b"with space", b"-dash", b"new\nline", "ünï".encode(), "日本".encode(),
    b".wh", b"..wh..opq", b"x.wh.y", b"wh.z", b".hidden", b"\xff\xfe", b"$x*",
)
"""Adversarial but legal names; ``.wh.``-lookalikes that are *not* whiteouts on purpose
(names starting with ``.wh.`` are reserved and never visible in a merged view)."""

FILE_MODES = (0o644, 0o600, 0o755, 0o444, 0o4755, 0o000)
DIR_MODES = (0o755, 0o700, 0o555, 0o1777)
XATTR_NAMES = (b"user.a", b"user.b", b"user.with space")
SYMLINK_TARGETS = (b"a", b"../a", b"nonexistent", b"/nonexistent/cowfs-target", b".",
                   b"a/b")
"""Targets besides the pool names (a name pointing at itself makes a loop)."""


def contents(max_size: int = 48) -> st.SearchStrategy[bytes]:
    """File data: short, sometimes binary, sometimes with NULs."""
    return st.binary(max_size=max_size)


def xattrs() -> st.SearchStrategy[dict[bytes, bytes]]:
    return st.dictionaries(st.sampled_from(XATTR_NAMES), st.binary(max_size=8), max_size=2)


@dataclass(frozen=True)
class Stack:
    """A layer stack to mount: ``lowers[0]`` is the top lower; ``names`` is the name pool."""

    lowers: list[Dir]
    names: list[bytes]

    def __repr__(self) -> str:  # shown by hypothesis on failure
        from .layers import walk_layer

        return "Stack(" + "; ".join(
            f"L{i}: " + ", ".join(f"{p!r}={_short(n)}" for p, n in walk_layer(d))
            for i, d in enumerate(self.lowers)) + f", names={self.names!r})"


def _short(node: Node) -> str:
    if node is WHITEOUT:
        return "wh"
    if isinstance(node, Dir):
        return "dir" + ("(opq)" if node.opaque else "")
    assert isinstance(node, Inode)
    return node.kind


@st.composite
def layer(draw: st.DrawFn, names: list[bytes], max_depth: int = 2,
          max_children: int = 4, exclude: frozenset[str] = frozenset()) -> Dir:
    """One layer tree over ``names``: files, dirs, symlinks, hardlinks, fifos, whiteouts.

    ``exclude`` leaves kinds out: ``symlink``, ``fifo``, ``hardlink``, ``whiteout``, ``dir``.
    """
    files: list[Inode] = []

    def fill(d: Dir, depth: int) -> None:
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=max_children))
        for name in chosen:
            kinds = [k for k in ("file", "dir", "symlink", "fifo", "hardlink", "whiteout")
                     if k not in exclude]
            if depth >= max_depth and "dir" in kinds:
                kinds.remove("dir")
            if not files and "hardlink" in kinds:
                kinds.remove("hardlink")
            if d.opaque and "whiteout" in kinds:
                kinds.remove("whiteout")  # the kernel cannot stat those: invalid layer
            kind = draw(st.sampled_from(kinds))
            node: Node
            if kind == "whiteout":
                node = WHITEOUT
            elif kind == "dir":
                node = Dir(draw(st.sampled_from(DIR_MODES)), draw(xattrs()),
                           opaque=draw(st.booleans()))
                fill(node, depth + 1)
            elif kind == "hardlink":
                node = draw(st.sampled_from(files))
                node.nlink += 1
            elif kind == "symlink":
                target = draw(st.sampled_from((*SYMLINK_TARGETS, name)))
                node = Inode("symlink", 0o777, target=target)
            elif kind == "fifo":
                node = Inode("fifo", draw(st.sampled_from(FILE_MODES)))
            else:
                node = Inode("file", draw(st.sampled_from(FILE_MODES)), draw(contents()),
                             xattrs=draw(xattrs()))
                files.append(node)
            d.children[name] = node

    root = Dir()
    fill(root, 0)
    return root


@st.composite
def stacks(draw: st.DrawFn, max_layers: int = 3, max_names: int = 4,
           max_depth: int = 2, exclude: frozenset[str] = frozenset()) -> Stack:
    """1..``max_layers`` lower layers over a small name pool drawn from ``NAME_POOL``."""
    names = draw(st.lists(st.sampled_from(NAME_POOL), min_size=2, max_size=max_names,
                          unique=True))
    n = draw(st.integers(1, max_layers))
    lowers = [draw(layer(names, max_depth, exclude=exclude)) for _ in range(n)]
    for i, tree in enumerate(lowers):
        _drop_stray_whiteouts(tree, lowers[i + 1:])
    return Stack(lowers, names)


def _drop_stray_whiteouts(tree: Dir, below: list[Dir]) -> None:
    """Remove whiteouts whose dir does not merge with a dir in a layer below.

    The kernel reads a non-merged dir straight from its layer, so such a whiteout
    is listed by readdir but cannot be stat'ed: the layer is invalid (no extractor
    writes one), not an interesting test input.
    """
    from .layers import walk_layer
    from .model import Model, split

    below_model = Model(below)
    stray = []
    for path, node in walk_layer(tree):
        if node is WHITEOUT:
            parent = b"/".join(split(path)[:-1])
            m = below_model.lookup(parent)
            if m is None or not m.is_dir or not m.has_lower:
                stray.append(path)
    for path in stray:
        d = tree
        comps = split(path)
        for c in comps[:-1]:
            nxt = d.children[c]
            assert isinstance(nxt, Dir)
            d = nxt
        del d.children[comps[-1]]
