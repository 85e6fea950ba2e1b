"""Detect what this host lets the tests do; each function returns a reason or None."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile


@functools.cache
def fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "needs fusermount3 (apt: fuse3)"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        return f"needs pyfuse3 ({exc})"
    return None


@functools.cache
def overlay_unavailable() -> str | None:
    """Try a real scratch overlay mount in a private mount namespace."""
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    with tempfile.TemporaryDirectory() as d:
        for sub in ("l", "u", "w", "m"):
            os.mkdir(os.path.join(d, sub))
        cmd = [
            "unshare", "-m", "--propagation", "private", "mount", "-t", "overlay", "overlay",
            "-o", f"lowerdir={d}/l,upperdir={d}/u,workdir={d}/w", f"{d}/m",
        ]
        if os.geteuid() != 0:
            cmd[1:1] = ["-Ur"]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return f"cannot mount kernel overlayfs here: {r.stderr.strip()}"
    return None


@functools.cache
def userns_unavailable() -> str | None:
    r = subprocess.run(["unshare", "-Ur", "true"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"needs unprivileged user namespaces: {r.stderr.strip()}"
    return None
