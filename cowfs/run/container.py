"""Containers in the store: ``containers/<id>/{config.json,state.json,upper,work,merged}``.

Owns: creating, finding, listing and removing containers; their persistent state
(updated under a per-container flock, reconciled against the live process so a host
crash reads as "exited"); mounting and unmounting their rootfs. Must not launch
processes (``supervisor`` does) nor talk to a terminal (``cli``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .. import driver, format as fmt
from .._sys import ns
from ..errors import Conflict, CowfsError, NotFound, RunError, UsageError
from . import cgroups

log = logging.getLogger(__name__)

CONFIG: Final = "config.json"
STATE: Final = "state.json"
LOG: Final = "container.log"
LOCK: Final = "lock"
_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_HOST_RE: Final = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$")
"""RFC 1123-ish; sethostname(2) takes at most 64 bytes."""
CRASH_EXIT: Final = 137
"""Exit code reported for a container whose process vanished without a recorded exit."""
VOLATILE_MARKER: Final = os.path.join("work", "incompat", "volatile")
"""What kernel overlayfs leaves in a workdir mounted ``volatile``; it refuses to mount
that workdir again (the upper may have lost writes that were never synced)."""


def now() -> str:
    """RFC 3339 UTC timestamp with nanoseconds like docker's."""
    ns_ = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns_ // 10**9)) + \
        f".{ns_ % 10**9:09d}Z"


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in ticks) or None if gone/zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def is_mountpoint(path: str) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].encode().decode("unicode_escape")
            if mnt == target:
                return True
    return False


@dataclass(eq=False)
class Container:
    """One container directory. ``config`` is fixed at create; ``state`` changes."""

    root: str
    id: str
    config: dict[str, Any]

    @property
    def dir(self) -> str:
        return os.path.join(self.root, fmt.CONTAINERS_DIR, self.id)

    @property
    def name(self) -> str:
        return str(self.config["Name"])

    @property
    def upper(self) -> str:
        return os.path.join(self.dir, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.dir, "work")

    @property
    def merged(self) -> str:
        return os.path.join(self.dir, "merged")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, LOG)

    @property
    def lowerdirs(self) -> list[str]:
        return list(self.config["LowerDirs"])

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def raw_state(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.dir, STATE)) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except FileNotFoundError:
            return {"Status": "created"}
        except ValueError:
            # A power loss can leave an empty file (the state is not fsynced): all we
            # know is that it is not running now.
            return {"Status": "exited", "ExitCode": CRASH_EXIT, "Error": "state file unreadable"}

    def _write_state(self, state: Mapping[str, Any]) -> None:
        tmp = os.path.join(self.dir, STATE + ".tmp")
        # No fsync: state changes several times per start, and after a crash it is
        # reconciled against the live processes anyway (see state()); rename keeps it
        # from being torn while the machine is up.
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.rename(tmp, os.path.join(self.dir, STATE))

    def update_state(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into state.json atomically (under the container lock)."""
        with self.locked():
            state = self.raw_state()
            state.update(changes)
            self._write_state(state)
            return state

    def state(self) -> dict[str, Any]:
        """The state as a user sees it: a "running" container whose process is gone
        (host crash, SIGKILL of everything) reads as exited, its layer untouched."""
        state = self.raw_state()
        if state.get("Status") in ("running", "restarting") and not self.pid_alive(state):
            state = dict(state, Status="exited", Running=False, Pid=0,
                         ExitCode=state.get("ExitCode") or CRASH_EXIT,
                         Error=state.get("Error") or "container process vanished (host crash?)")
        state["Running"] = state.get("Status") == "running"
        return state

    def pid_alive(self, state: Mapping[str, Any] | None = None) -> bool:
        st = state if state is not None else self.raw_state()
        pid = int(st.get("Pid") or 0)
        return pid > 0 and proc_start_time(pid) == st.get("PidStart")

    def supervisor_alive(self, state: Mapping[str, Any] | None = None) -> bool:
        st = state if state is not None else self.raw_state()
        pid = int(st.get("SupervisorPid") or 0)
        return pid > 0 and proc_start_time(pid) == st.get("SupervisorStart")

    def is_running(self) -> bool:
        return bool(self.state()["Running"])


def containers_dir(root: str) -> str:
    return os.path.join(root, fmt.CONTAINERS_DIR)


def list_containers(root: str) -> list[Container]:
    """Every container in the store, oldest first."""
    out = []
    try:
        names = os.listdir(containers_dir(root))
    except FileNotFoundError:
        return []
    for cid in names:
        try:
            with open(os.path.join(containers_dir(root), cid, CONFIG)) as f:
                out.append(Container(root, cid, json.load(f)))
        except (OSError, ValueError):
            continue  # half-created or half-removed
    out.sort(key=lambda c: str(c.config.get("Created", "")))
    return out


def lookup(root: str, ref: str) -> Container:
    """Find a container by name, full id or unique id prefix."""
    cands = list_containers(root)
    for c in cands:
        if ref in (c.name, c.id):
            return c
    hits = [c for c in cands if len(ref) >= 3 and c.id.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UsageError(f"find container {ref}: ambiguous id prefix")
    raise NotFound(f"find container {ref}: no such container")


def create(root: str, *, image: str, image_id: str, lowerdirs: Sequence[str],
           argv: Sequence[str], env: Sequence[str], workdir: str = "/", user: str = "",
           name: str | None = None, hostname: str | None = None, tty: bool = False,
           interactive: bool = False, mounts: Sequence[Mapping[str, Any]] = (),
           limits: Mapping[str, Any] | None = None, restart: str = "no",
           auto_remove: bool = False, backend: str = "auto") -> Container:
    """Create the container dir (upper, work, merged) and its config; status "created"."""
    if not argv:
        raise UsageError("create container: no command given and the image has none")
    cid = os.urandom(32).hex()
    if name is None:
        name = f"cowfs_{cid[:8]}"
    if not _NAME_RE.match(name):
        raise UsageError(f"create container: invalid name {name!r}")
    parse_restart(restart)
    if hostname is not None and not _HOST_RE.match(hostname):
        raise UsageError(f"create container: invalid hostname {hostname!r}")
    os.makedirs(containers_dir(root), exist_ok=True)
    # The name check and the creation hold a store-wide lock so two `create --name x`
    # cannot both win.
    with _root_lock(root):
        if any(c.name == name for c in list_containers(root)):
            raise Conflict(f"create container: the name {name!r} is already in use")
        tmp = os.path.join(containers_dir(root), f".tmp-{cid}")
        os.mkdir(tmp, 0o700)
        for sub in ("upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, sub), 0o755)
        config = {
            "Id": cid, "Name": name, "Created": now(), "Image": image, "ImageId": image_id,
            "LowerDirs": list(lowerdirs), "Argv": list(argv), "Env": list(env),
            "WorkingDir": workdir or "/", "User": user, "Hostname": hostname or cid[:12],
            "Tty": tty, "OpenStdin": interactive, "Mounts": [dict(m) for m in mounts],
            "Limits": dict(limits or {}), "RestartPolicy": restart, "AutoRemove": auto_remove,
            "Backend": backend,
            # read by cowfs.store (image_users) to refuse removing an image in use
            "image": image, "image_id": image_id,
        }
        with open(os.path.join(tmp, CONFIG), "w") as f:
            json.dump(config, f, indent=1)
        with open(os.path.join(tmp, STATE), "w") as f:
            json.dump({"Status": "created", "ExitCode": 0, "RestartCount": 0}, f)
        os.rename(tmp, os.path.join(containers_dir(root), cid))
    log.info("created container %s (%s)", name, cid[:12])
    return Container(root, cid, config)


@contextlib.contextmanager
def _root_lock(root: str) -> Iterator[None]:
    fd = os.open(os.path.join(containers_dir(root), ".lock"),
                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def parse_restart(policy: str) -> tuple[str, int]:
    """``no|always|unless-stopped|on-failure[:N]`` -> (name, max retries; 0 = unlimited)."""
    name, _, count = policy.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped") or (
            count and (name != "on-failure" or not count.isdigit())):
        raise UsageError(f"parse restart policy {policy!r}: want no|always|on-failure[:N]")
    return name, int(count or 0)


def remove(c: Container, *, force: bool = False) -> None:
    """Delete the container and its writable layer; refuse a running one unless ``force``."""
    if c.is_running():
        if not force:
            raise Conflict(f"remove container {c.name}: it is running (stop it or use -f)")
        kill_all(c)
    # Let a supervisor that is finishing up (unmount, cgroup, log) do so before the
    # directory goes away under it.
    deadline = time.monotonic() + 10.0
    me = os.getpid()  # the supervisor itself removes --rm containers
    while c.supervisor_alive() and int(c.raw_state().get("SupervisorPid") or 0) != me \
            and time.monotonic() < deadline:
        if not c.pid_alive():
            c.update_state(StopRequested=True)
        time.sleep(0.02)
    unmount_rootfs(c)
    cgroups.remove_leftovers(c.id)
    trash = os.path.join(containers_dir(c.root), f".rm-{c.id}")
    try:
        os.rename(c.dir, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
    log.info("removed container %s", c.name)


def kill_all(c: Container, timeout: float = 5.0) -> None:
    """SIGKILL the container's PID 1 (the kernel kills the rest of its PID namespace)."""
    state = c.raw_state()
    c.update_state(StopRequested=True)
    if c.pid_alive(state):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(state["Pid"]), 9)
    wait_stopped(c, timeout)


def wait_stopped(c: Container, timeout: float) -> bool:
    """Poll until the container is no longer running (and its supervisor recorded it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = c.raw_state()
        if not c.pid_alive(st) and (st.get("Status") != "running"
                                    or not c.supervisor_alive(st)):
            return True
        time.sleep(0.02)
    return False


# --- rootfs mount ---------------------------------------------------------------------

def mount_rootfs(c: Container) -> str:
    """Mount the merged view (image layers + upper) at ``merged``; return the backend used.

    A ``--rm`` container's writable layer is mounted ``volatile`` (as podman does): it is
    deleted when the container exits, so nothing is synced for it, and unmounting no
    longer syncs the whole filesystem under the store (umount2 4-44 ms -> ~1.5 ms here).
    Only a host crash while it runs leaves such a container behind; it cannot start
    again (clear error) and ``rm`` removes it.
    """
    if is_mountpoint(c.merged):
        # Left over from a crash (or another supervisor): start from a clean mount.
        unmount_rootfs(c)
    volatile = bool(c.config.get("AutoRemove"))
    if os.path.lexists(os.path.join(c.work, VOLATILE_MARKER)):
        raise RunError(f"mount rootfs of {c.name}: its writable layer was mounted volatile "
                       "(--rm) and the container was not removed (host crash?); its content "
                       "may be incomplete: remove the container")
    backend = str(c.config.get("Backend") or "auto")
    run_dir = os.path.join(c.root, fmt.RUN_DIR)
    try:
        m = driver.mount(c.lowerdirs, upper=c.upper, work=c.work, target=c.merged,
                         backend=backend, run_dir=run_dir, volatile=volatile,
                         dialect=driver.read_store_dialect(c.root))
    except CowfsError as exc:
        raise RunError(f"mount rootfs of {c.name}: {exc}") from None
    log.info("rootfs of %s mounted with the %s backend", c.name, m.backend)
    return m.backend


def unmount_rootfs(c: Container) -> None:
    """Unmount the merged view if mounted (detached if busy); idempotent."""
    if not is_mountpoint(c.merged):
        return
    try:
        driver.unmount_path(c.merged, os.path.join(c.root, fmt.RUN_DIR))
    except NotFound:
        return  # someone else (the supervisor) unmounted it first
    except (CowfsError, OSError) as exc:
        log.warning("unmount rootfs of %s: %s; detaching it", c.name, exc)
        with contextlib.suppress(OSError):
            ns.umount(c.merged, ns.MNT_DETACH)
