"""Run peer container tools (podman, buildah, skopeo) in a throwaway sandbox.

The script runs in a private mount namespace where /etc is overlaid with the files
those tools insist on (containers/policy.json, passwd, group), ``$RR`` is a short
runroot, and ``$P``/``$B`` are podman/buildah bound to temp roots under ``cwd`` with
``--runtime runc`` (crun refuses this host's cgroup setup). Nothing is written to the
host's /etc, /var or /run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PRELUDE = r"""
set -e
T=$(mktemp -d); mkdir -p $T/u/containers $T/w
[ -e /etc/passwd ] || echo 'root:x:0:0:root:/root:/bin/sh' > $T/u/passwd
[ -e /etc/group ] || echo 'root:x:0:' > $T/u/group
[ -e /etc/containers/policy.json ] || \
  echo '{"default":[{"type":"insecureAcceptAnything"}]}' > $T/u/containers/policy.json
mount -t overlay overlay -o lowerdir=/etc,upperdir=$T/u,workdir=$T/w /etc
export TMPDIR=$PWD/tmp BUILDAH_ISOLATION=chroot
mkdir -p $TMPDIR
RR=$(mktemp -d /tmp/cowfs-rr.XXXXXX)  # podman wants a runroot shorter than 50 chars
trap 'rm -rf $RR $T' EXIT
B="buildah --root $PWD/broot --runroot $RR/b --storage-driver overlay"
P="podman --root $PWD/proot --runroot $RR/p --storage-driver vfs --runtime runc \
   --cgroup-manager cgroupfs --events-backend file"
PRUN="--net none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
"""


def peer(script: str, cwd: Path, *, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (bash) after PRELUDE in ``cwd``; fail the test if it fails."""
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c",
                        PRELUDE + script], cwd=cwd, capture_output=True, text=True,
                       check=False, timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"peer tools failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r
