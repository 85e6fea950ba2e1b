"""Rootless format interchange: an upper the core writes in userxattr mode
(``user.overlay.opaque``, char 0/0 whiteouts) mounts with the kernel's ``-o userxattr``
inside a user namespace and shows the same tree; and the reverse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conformance.backends import UMASK, CoreFS, Stack
from conformance.runner import apply, make_stack
from conformance.scenarios import BY_NAME
from cowfs import format as fmt
from cowfs.overlay import Overlay

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay, pytest.mark.needs_userns]

SCENARIOS = ["unlink_whiteouts", "mkdir_opaque", "rmdir_rules", "rename_files_across_layers"]

WALK = textwrap.dedent("""
    import json, os, stat, sys
    root = sys.argv[1]
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ["link", os.readlink(p)]
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ["dir"]
            elif stat.S_ISREG(st.st_mode):
                try:  # files of uids the namespace does not map stay unreadable
                    with open(p, "rb") as f:
                        out[rel] = ["file", f.read().hex()]
                except PermissionError:
                    out[rel] = ["file", "?"]
            else:
                out[rel] = ["other", stat.S_IFMT(st.st_mode)]
    print(json.dumps(out))
""")


class UserxattrCoreFS(CoreFS):
    """The core in userxattr mode (what a rootless FUSE mount runs)."""

    def _open(self) -> None:
        s = self.stack
        assert s.upper is not None and s.work is not None
        self.ov = Overlay([str(p) for p in s.lowers], str(s.upper), str(s.work),
                          userxattr=True)


def _kernel_userxattr(stack: Stack, script: str) -> dict[str, Any]:
    """Mount with -o userxattr in a new user+mount namespace and walk (or run SCRIPT)."""
    assert stack.upper is not None
    opts = (f"lowerdir={':'.join(str(p) for p in stack.lowers)},upperdir={stack.upper},"
            f"workdir={stack.work},userxattr")
    cmd = ["unshare", "-Urm", "--propagation", "private", "sh", "-c",
           'mount -t overlay overlay -o "$1" "$2" && exec "$3" -c "$4" "$2"',
           "sh", opts, str(stack.mnt), sys.executable, script]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout.splitlines()[-1]))


def _core_tree(stack: Stack) -> dict[str, Any]:
    fs = UserxattrCoreFS(stack)
    try:
        out: dict[str, Any] = {}

        def walk(d: str) -> None:
            for n in fs.listdir(d):
                p = f"{d}/{n}" if d else n
                st = fs.lstat(p)
                if (st.st_mode & 0o170000) == 0o120000:
                    out[p] = ["link", fs.readlink(p)]
                elif (st.st_mode & 0o170000) == 0o040000:
                    out[p] = ["dir"]
                    walk(p)
                elif (st.st_mode & 0o170000) == 0o100000:
                    readable = st.st_uid == 0 or st.st_mode & 0o004
                    out[p] = ["file", fs.read(p).hex() if readable else "?"]
                else:
                    out[p] = ["other", st.st_mode & 0o170000]

        walk("")
        return out
    finally:
        fs.unmount()


@pytest.mark.parametrize("name", SCENARIOS)
def test_core_userxattr_upper_on_rootless_kernel(name: str, tmp_path: Path) -> None:
    sc = BY_NAME[name]
    stack = make_stack(tmp_path, sc)
    old = os.umask(UMASK)
    try:
        fs = UserxattrCoreFS(stack)
        try:
            apply(fs, sc.ops)
        finally:
            fs.unmount()
    finally:
        os.umask(old)
    assert stack.upper is not None
    for d, _dirs, _files in os.walk(stack.upper):  # only the userxattr namespace written
        names = [os.fsencode(x) for x in os.listxattr(d)]
        assert fmt.TRUSTED_OPAQUE not in names, d
    assert _kernel_userxattr(stack, WALK) == _core_tree(stack)


@pytest.mark.parametrize("name", ["unlink_whiteouts", "mkdir_opaque"])
def test_rootless_kernel_upper_through_core(name: str, tmp_path: Path) -> None:
    sc = BY_NAME[name]
    stack = make_stack(tmp_path, sc)
    ops = json.dumps([list(op) for op in sc.ops if all(isinstance(a, str | int)
                                                        for a in op)])
    script = textwrap.dedent("""
        import json, os, sys
        from cowfs._sys.linux import AT_FDCWD, renameat2
        root = sys.argv[1]
        P = lambda p: os.path.join(root, p)
        for op in json.loads(OPS):
            name, args = op[0], op[1:]
            try:
                if name == "unlink": os.unlink(P(args[0]))
                elif name == "rmdir": os.rmdir(P(args[0]))
                elif name == "mkdir": os.mkdir(P(args[0]), *args[1:])
                elif name == "rename": renameat2(AT_FDCWD, P(args[0]).encode(), AT_FDCWD,
                                                 P(args[1]).encode(), *args[2:])
            except OSError:
                pass
    """).replace("OPS", repr(ops)) + WALK
    env_script = f"import sys; sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
    seen_by_kernel = _kernel_userxattr(stack, env_script + script)
    assert stack.upper is not None
    opaque_user = [d for d, _, _ in os.walk(stack.upper)
                   if fmt.USER_OPAQUE in [os.fsencode(x) for x in os.listxattr(d)]]
    if name == "mkdir_opaque":
        assert opaque_user, "the kernel wrote no user.overlay.opaque"
    assert _core_tree(stack) == seen_by_kernel
