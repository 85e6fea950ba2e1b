"""Fixtures for container tests: a 2-layer busybox image in a temp store, a CLI runner,
and cleanup that force-removes every container (supervisors, mounts, cgroups) after a test.

The image is built in-test from /bin/busybox (busybox-static) as two OCI layer tars and
imported through the store API, the same path ``cowfs commit`` and ``pull`` use.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .layers import LayerTar

BUSYBOX = "/bin/busybox"
IMAGE = "busybox:test"
HELLO = b"hello from layer 2\n"


def busybox_layers() -> tuple[LayerTar, LayerTar]:
    """Layer 1: busybox + applet links + the dirs a container needs; layer 2: /app files."""
    base = LayerTar()
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "data", "mnt"):
        base.dir(d, mode=0o1777 if d == "tmp" else 0o755)
    with open(BUSYBOX, "rb") as f:
        base.file("bin/busybox", f.read(), mode=0o755)
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            base.symlink(f"bin/{a}", "busybox")
    base.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
              b"nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
    base.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    base.file("etc/motd", b"layer 1 motd\n")
    base.dir("etc/conf.d")
    base.file("etc/conf.d/a.conf", b"a\n")
    base.file("etc/conf.d/b.conf", b"b\n")
    top = LayerTar()
    top.dir("app")
    top.file("app/hello.txt", HELLO)
    top.file("app/delete-me", b"doomed\n")
    top.file("etc/motd", b"layer 2 motd\n")
    top.symlink("app/escape", "/etc")  # an absolute symlink: must stay inside the rootfs
    return base, top


def image_config(diff_ids: list[str]) -> dict[str, Any]:
    return {
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from-image"],
                   "Cmd": ["sh", "-c", "echo default cmd"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "busybox layer"}, {"created_by": "app layer"}],
    }


def import_busybox(root: str, tag: str = IMAGE) -> Any:
    from cowfs.store import open_store

    base, top = busybox_layers()
    blobs = [bytes(base), bytes(top)]
    store = open_store(root)
    return store.import_layers([lambda b=b: io.BytesIO(b) for b in blobs],  # type: ignore[misc]
                               image_config([base.diff_id(), top.diff_id()]), None,
                               tags=[tag])


@dataclass
class Env:
    """A temp store with the busybox image, and a way to run the cowfs CLI on it."""

    root: str
    backend: str

    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            input: bytes | None = None,
            backend_opt: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "cowfs.cli", "--root", self.root, *args]
        if backend_opt and args and args[0] in ("run", "create"):
            cmd[6:6] = ["--backend", self.backend]
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False,
                           input=input.decode() if input is not None else None, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def container(self, ref: str) -> Any:
        from cowfs.run import container

        return container.lookup(self.root, ref)

    def state(self, ref: str) -> dict[str, Any]:
        return dict(self.container(ref).state())


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``pred`` until truthy (no sleeps for synchronization)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cleanup_store(root: str) -> None:
    """Force-remove every container (kills supervisors and PID 1s, unmounts rootfs)."""
    from cowfs.run import container

    for c in container.list_containers(root):
        st = c.raw_state()
        if c.supervisor_alive(st):
            c.update_state(StopRequested=True)
            try:
                os.kill(int(st["SupervisorPid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        container.kill_all(c)
        container.remove(c, force=True)


def make_env(tmp_path: Path, backend: str) -> Iterator[Env]:
    root = str(tmp_path / "store")
    import_busybox(root)
    env = Env(root=root, backend=backend)
    try:
        yield env
        noise = supervisor_noise(root)
    finally:
        cleanup_store(root)
    assert not noise, f"supervisors logged problems (STYLE habit 11): {noise}"
    from cowfs.store import open_store

    assert open_store(root).fsck() == []  # image layers intact after whatever ran


def supervisor_noise(root: str) -> list[str]:
    """WARNING/ERROR/traceback lines in the supervisors' own logs."""
    from cowfs.run import container

    out = []
    for c in container.list_containers(root):
        try:
            text = Path(c.dir, "supervisor.log").read_text(errors="replace")
        except FileNotFoundError:
            continue
        out += [f"{c.name}: {line}" for line in text.splitlines()
                if any(w in line for w in ("WARNING", "ERROR", "Traceback", "Error"))]
    return out
