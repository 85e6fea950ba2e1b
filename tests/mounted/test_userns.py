"""cowfs-overlay as uid 0 of a user namespace: what rootless podman does with a mount program.

There ``trusted.overlay.*`` cannot be written, so the upper must use the kernel's userxattr
format (char 0/0 whiteouts, ``user.overlay.opaque``), and kernel overlayfs mounted with
``userxattr`` in the same kind of namespace must show the same tree.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from helpers.mounting import PROGRAM, make_dirs, pid_alive, wait_for

from cowfs import format as fmt

pytestmark = [pytest.mark.needs_fuse, pytest.mark.needs_userns]

SCRIPT = """\
set -eu
"$PROG" -o "lowerdir=$B/lower,upperdir=$B/upper,workdir=$B/work,log=$B/log" "$B/m"
cd "$B/m"
rm -rf d && mkdir d && echo new > d/n
rm f
echo more >> keep
ln -s keep link
cd /
find "$B/m" | sort | sed "s|$B/m||"
cat "$B/m/keep" "$B/m/d/n"
fusermount3 -u "$B/m"
"""

KERNEL = """\
set -eu
mount -t overlay overlay -o "lowerdir=$B/lower,upperdir=$B/upper,workdir=$B/work,userxattr" "$B/k"
find "$B/k" | sort | sed "s|$B/k||"
cat "$B/k/keep" "$B/k/d/n"
umount "$B/k"
"""


def test_userns_mount_writes_userxattr_format(tmp_path: Path) -> None:
    low, up, _work, _m, _k = make_dirs(tmp_path, "lower", "upper", "work", "m", "k")
    (low / "d").mkdir()
    (low / "d" / "old").write_text("old\n")
    (low / "f").write_text("f\n")
    (low / "keep").write_text("keep\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PROG": PROGRAM, "B": str(tmp_path)}
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", SCRIPT], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    pid = int((tmp_path / "log").read_text().split()[2])
    wait_for(lambda: not pid_alive(pid), 20, "the daemon to exit")
    assert r.stdout.split() == ["/d", "/d/n", "/keep", "/link", "keep", "more", "new"]
    # userxattr format in the upper: char 0/0 whiteout, user.overlay.opaque on the new dir.
    st = os.lstat(up / "f")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(up / "d", fmt.USER_OPAQUE.decode()) == fmt.OPAQUE_YES
    assert not any(n.startswith("trusted.") for n in os.listxattr(up / "d"))
    log = (tmp_path / "log").read_text()
    assert " WARNING " not in log and " ERROR " not in log, log
    k = subprocess.run(["unshare", "-Urm", "sh", "-c", KERNEL], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert k.returncode == 0, k.stderr
    assert k.stdout == r.stdout  # the kernel (userxattr) sees the same tree
