"""Overlay core run as an unprivileged user (userxattr mode): still writes kernel-format
char 0/0 whiteouts and ``user.overlay.opaque``, and copies up without chown rights."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from cowfs import format as fmt

NOBODY = 65534

SCRIPT = textwrap.dedent("""
    import os, sys
    from cowfs.overlay import Overlay, Caller
    base = sys.argv[1]
    me = Caller(os.getuid(), os.getgid())
    o = Overlay([base + "/l"], base + "/u", base + "/w", userxattr=True)
    d = o.resolve(b"d")
    fd = o.open(o.resolve(b"d/f"), os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"+")
    os.close(fd)
    o.unlink(d, b"f")
    o.unlink(1, b"g")
    o.rmdir(d, b"sub")
    o.mkdir(d, b"sub", 0o755, me)
    fd, st = o.create(1, b"new", os.O_WRONLY, 0o644, me)
    os.close(fd)
    o.rename(1, b"new", 1, b"h")
    o.close()
""")


@pytest.mark.needs_root
@pytest.mark.needs_tool("setpriv")
def test_unprivileged_userxattr() -> None:
    # pytest's tmp dirs sit under 0700 parents: nobody needs a reachable one
    top = Path(tempfile.mkdtemp(prefix="cowfs-rootless-", dir="/tmp"))
    try:
        _run_as_nobody(top)
    finally:
        shutil.rmtree(top)


def _run_as_nobody(tmp_path: Path) -> None:
    base = tmp_path / "rl"
    (base / "l/d/sub").mkdir(parents=True)
    (base / "l/d/f").write_text("x")
    (base / "l/g").write_text("g")
    (base / "l/h").write_text("h")
    (base / "u").mkdir()
    (base / "w").mkdir()
    for root, dirs, files in os.walk(base):
        for n in [root, *(os.path.join(root, x) for x in dirs + files)]:
            os.chown(n, NOBODY, NOBODY)
    os.chmod(tmp_path, 0o755)
    r = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", SCRIPT, str(base)],
        capture_output=True, text=True, check=False, cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert r.returncode == 0, r.stderr
    up = base / "u"
    for wh in ("g", "d/f"):
        st = os.lstat(up / wh)
        assert fmt.is_whiteout_stat(st.st_mode, st.st_rdev), wh
    assert os.getxattr(up / "d/sub", fmt.USER_OPAQUE) == b"y"
    assert stat.S_ISREG(os.lstat(up / "h").st_mode)
    assert os.lstat(up / "h").st_uid == NOBODY
    assert os.listdir(base / "w/work") == []
