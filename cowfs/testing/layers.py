"""Write model layer trees to real directories in the kernel's overlay format.

Owns: turning a ``model.Dir`` tree into a layer dir (char 0/0 whiteouts, opaque
xattr, hardlinks, fifos, symlinks, user xattrs), the same as shell commands for
reproducer scripts, and the validity check of an upper dir after unmount. Must
not mount anything.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterator

from .. import format as fmt
from .model import WHITEOUT, Dir, Inode, Node, join


def walk_layer(d: Dir, path: bytes = b"") -> Iterator[tuple[bytes, Node]]:
    """Every (path, node) of a layer tree, parents before children, names sorted."""
    for name in sorted(d.children):
        node = d.children[name]
        child = join(path, name)
        yield child, node
        if isinstance(node, Dir):
            yield from walk_layer(node, child)


def write_layer(tree: Dir, dest: str, *, userxattr: bool = False) -> None:
    """Create ``tree`` under the existing empty dir ``dest`` (kernel overlay format)."""
    root = os.fsencode(dest)
    seen: dict[int, bytes] = {}
    dirs: list[tuple[bytes, Dir]] = [(root, tree)]
    for rel, node in walk_layer(tree):
        full = os.path.join(root, rel)
        if node is WHITEOUT:
            os.mknod(full, fmt.WHITEOUT_MODE, os.makedev(0, fmt.WHITEOUT_DEV))
        elif isinstance(node, Dir):
            os.mkdir(full)
            dirs.append((full, node))
        elif isinstance(node, Inode):
            if id(node) in seen:
                os.link(seen[id(node)], full, follow_symlinks=False)
                continue
            seen[id(node)] = full
            if node.kind == "symlink":
                os.symlink(node.target, full)
                continue
            if node.kind == "fifo":
                os.mkfifo(full)
            else:
                with open(full, "wb") as f:
                    f.write(node.data)
            for k, v in node.xattrs.items():
                os.setxattr(full, k, v)
            os.chmod(full, node.mode)
    for full, d in reversed(dirs):  # modes last: a 0o555 dir must stay writable until then
        for k, v in d.xattrs.items():
            os.setxattr(full, k, v)
        if d.opaque:
            os.setxattr(full, fmt.opaque_xattr(userxattr), fmt.OPAQUE_YES)
        os.chmod(full, d.mode)


def shell_quote(raw: bytes) -> str:
    """Quote bytes for POSIX-ish shells (bash/dash ``$'...'`` for non-printables)."""
    if all(0x20 <= b < 0x7F for b in raw):
        return shlex.quote(raw.decode())
    return "$'" + "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in b"'\\" else f"\\x{b:02x}" for b in raw
    ) + "'"


def layer_commands(tree: Dir, dest: str, *, userxattr: bool = False) -> list[str]:
    """Shell commands that build ``tree`` under ``dest`` (as ``write_layer`` does)."""
    cmds: list[str] = []
    seen: dict[int, str] = {}
    dirs: list[tuple[str, Dir]] = [(dest, tree)]
    for rel, node in walk_layer(tree):
        q = f"{dest}/{shell_quote(rel)}"
        if node is WHITEOUT:
            cmds.append(f"mknod {q} c 0 0")
        elif isinstance(node, Dir):
            cmds.append(f"mkdir {q}")
            dirs.append((q, node))
        elif isinstance(node, Inode):
            if id(node) in seen:
                cmds.append(f"ln -P -T {seen[id(node)]} {q}")
                continue
            seen[id(node)] = q
            if node.kind == "symlink":
                cmds.append(f"ln -s {shell_quote(node.target)} {q}")
                continue
            if node.kind == "fifo":
                cmds.append(f"mkfifo {q}")
            else:
                cmds.append(f"printf '%s' {shell_quote(node.data)} > {q}"
                            if b"\0" not in node.data else
                            f"printf {_printf_escape(node.data)} > {q}")
            cmds.extend(_xattr_cmd(q, k, v) for k, v in node.xattrs.items())
            cmds.append(f"chmod {node.mode:o} {q}")
    for q, d in reversed(dirs):
        cmds.extend(_xattr_cmd(q, k, v) for k, v in d.xattrs.items())
        if d.opaque:
            cmds.append(_xattr_cmd(q, fmt.opaque_xattr(userxattr), fmt.OPAQUE_YES))
        cmds.append(f"chmod {d.mode:o} {q}")
    return cmds


def _printf_escape(data: bytes) -> str:
    return "'" + "".join(f"\\{b:03o}" for b in data) + "'"


def _xattr_cmd(q: str, name: bytes, value: bytes) -> str:
    return f"setfattr -n {shell_quote(name)} -v 0x{value.hex() or '00'} {q}" if value else \
        f"setfattr -n {shell_quote(name)} {q}"


def check_upper(upper: str, *, userxattr: bool = False) -> list[str]:
    """Problems that make ``upper`` invalid kernel overlay format ([] when valid).

    Checks: no ``.wh.`` names, every char device is a 0/0 whiteout, no whiteout
    inside an opaque dir, opaque markers only as ``overlay.opaque=y`` in the mount's
    xattr namespace (no fuse-overlayfs-only markers), and only on dirs.
    """
    problems: list[str] = []
    want = fmt.opaque_xattr(userxattr)
    other = fmt.opaque_xattr(not userxattr)
    root = os.fsencode(upper)

    def visit(full: bytes, rel: bytes, in_opaque: bool) -> None:
        st = os.lstat(full)
        names = [os.fsencode(x) for x in os.listxattr(full, follow_symlinks=False)]
        opaque = False
        for name in names:
            if name == want:
                value = os.getxattr(full, name, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    problems.append(f"{rel!r}: opaque xattr on a non-directory")
                elif value != fmt.OPAQUE_YES:
                    problems.append(f"{rel!r}: {name!r} is {value!r}, the kernel writes 'y'")
                opaque = value == fmt.OPAQUE_YES
            elif name in (other, fmt.FOF_OPAQUE):
                problems.append(f"{rel!r}: has {name!r}, which this kernel mount ignores")
        if rel and fmt.is_wh_name(os.path.basename(rel)):
            problems.append(f"{rel!r}: a {fmt.WH_PREFIX_STR} file in the upper dir")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            if not fmt.is_whiteout_stat(st.st_mode, st.st_rdev):
                problems.append(f"{rel!r}: a device that is not a 0/0 whiteout")
            elif in_opaque:
                problems.append(f"{rel!r}: a whiteout inside an opaque dir")
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(full)):
                visit(os.path.join(full, name), join(rel, name), opaque)

    visit(root, b"", False)
    return problems
