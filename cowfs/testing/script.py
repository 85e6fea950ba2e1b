"""Render a machine run as a standalone, reproducible shell script.

Owns: turning a ``machine.Record`` (layer stack + operations) into a bash script
that builds the layers with ordinary commands (mkdir, printf, ln, mkfifo, mknod,
setfattr), mounts them with the kernel or with the program under test, replays
every operation with the exact syscalls the machine made (``syscalls.py`` is
embedded) and prints each result and the final merged tree, so the two outputs
can be diffed. Must not run anything itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from . import syscalls
from .adapters import Adapter, KernelAdapter
from .layers import layer_commands, shell_quote
from .machine import Arg, Record

SHELL_EQUIVALENT = {
    "create": "printf %s DATA > P",
    "write": "printf %s DATA | dd of=P bs=1 seek=OFFSET conv=notrunc",
    "append": "printf %s DATA >> P",
    "truncate": "truncate -s SIZE P",
    "unlink": "rm P",
    "mkdir": "mkdir -m MODE P",
    "rmdir": "rmdir P",
    "rename": "mv -T SRC DST, without mv's copy fallback on EXDEV",
    "link": "ln -P -T SRC DST",
    "symlink": "ln -s TARGET P",
    "chmod": "chmod MODE P",
    "setxattr": "setfattr -n NAME -v VALUE P",
    "removexattr": "setfattr -x NAME P",
    "fd_copyup": "exec 3< P; printf %s DATA 1<> P; cat <&3",
}
"""What each operation does, as the nearest shell command (the script uses exact syscalls)."""


def _arg(op: str, i: int, a: Arg) -> str:
    if isinstance(a, int):
        return oct(a) if op in ("mkdir", "chmod") else str(a)
    return shell_quote(a)


def _step_lines(op: str, args: Sequence[Arg]) -> list[str]:
    if op == "remount":
        return ['do_umount; rm -rf "$T/work"; mkdir "$T/work"; do_mount   # remount']
    line = "op " + " ".join([op, *(_arg(op, i, a) for i, a in enumerate(args))])
    return [f"{line:<40} # {SHELL_EQUIVALENT.get(op, op)}"]


def render(record: Record, adapter: Adapter, *, title: str = "") -> str:
    """The reproducer script for ``record``, mounting with ``adapter`` or the kernel."""
    stack = record.stack
    lowers = stack.lowers if stack is not None else []
    n = max(len(lowers), 1)
    lowerdirs = ":".join(f"$T/l{i}" for i in range(n))
    kernel = KernelAdapter()
    out: list[str] = [
        "#!/bin/bash",
        f"# Reproducer written by `cowfs check` (cowfs.testing){': ' + title if title else ''}",
        "#",
        *(f"# {line}" for line in record.failure.splitlines()),
        "#",
        "# Run as root:  unshare -m --propagation private bash THIS_SCRIPT [kernel|program]",
        f"# 'kernel' mounts kernel overlayfs (the oracle); 'program' (default) mounts with "
        f"{adapter.name}.",
        "# Each step prints its result; the merged tree is printed at the end. Diff the two runs.",
        "set -u",
        'IMPL=${1:-program}',
        'T=$(mktemp -d /tmp/cowfs-repro.XXXXXX)',
        "cat > \"$T/op.py\" <<'COWFS_OP_EOF'",
        inspect.getsource(syscalls).rstrip("\n"),
        "COWFS_OP_EOF",
        'op() { python3 "$T/op.py" "$T/merged" "$@"; }',
        'mkdir "$T/upper" "$T/work" "$T/merged"',
    ]
    for i in range(n):
        out.append(f'mkdir "$T/l{i}"' + ("   # the top lower layer" if i == 0 else ""))
    for i, tree in enumerate(lowers):
        out.extend(layer_commands(tree, f'"$T/l{i}"', userxattr=adapter.userxattr))
    prog_mount = adapter.describe_mount(lowerdirs, "$T/upper", "$T/work", '"$T/merged"')
    prog_umount = adapter.describe_unmount('"$T/merged"')
    out += [
        "do_mount() {",
        '  if [ "$IMPL" = kernel ]; then',
        "    " + kernel.describe_mount(lowerdirs, "$T/upper", "$T/work", '"$T/merged"'),
        "  else",
        f"    {prog_mount}",
        "  fi",
        "}",
        "do_umount() {",
        f'  if [ "$IMPL" = kernel ]; then umount "$T/merged"; else {prog_umount}; fi',
        "}",
        """trap 'mountpoint -q "$T/merged" && do_umount; rm -rf "$T"' EXIT""",
        "do_mount",
    ]
    for op, args in record.steps:
        out.extend(_step_lines(op, args))
    out += [
        'echo "--- merged tree:"',
        "op tree",
        "do_umount",
        'echo "--- upper dir after unmount:"',
        "(cd \"$T/upper\" && find . -mindepth 1 -printf '%y %m %p\\n' | sort"
        " && getfattr -R -h -d -m - -e hex . 2>/dev/null)",
    ]
    return "\n".join(out) + "\n"
