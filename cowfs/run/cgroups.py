"""Per-container cgroups: cgroup v2 when its controllers are usable, else v1 controllers.

Owns: finding the hierarchies (from /proc/self/mountinfo), creating
``<hierarchy>/cowfs/<id>``, writing memory/cpu/pids limits, adding pids, reading OOM
events, removing the groups. Must not decide policy: the caller says what limits it
wants; when none can be enforced it gets a clear warning, never a silent no-op.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Final

log = logging.getLogger(__name__)

PARENT: Final = "cowfs"
CPU_PERIOD_US: Final = 100_000
V1_CONTROLLERS: Final = ("memory", "pids", "cpu")


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits; None = unlimited."""

    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None

    def any(self) -> bool:
        return self.memory is not None or self.cpus is not None or self.pids is not None


@dataclass(slots=True)
class Cgroup:
    """The cgroup dirs of one container (one for v2, one per controller for v1)."""

    version: int
    paths: dict[str, str] = field(default_factory=dict)
    """controller ("unified" for v2) -> directory."""

    def add(self, pid: int) -> None:
        for path in dict.fromkeys(self.paths.values()):
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def enter(self) -> None:
        """Move the calling process into the group(s); call it single-threaded (a fresh
        fork), before it runs anything the limits should cover.

        On v1 this writes ``0`` (the caller) to ``tasks``: moving only the current
        thread lets the kernel skip the global threadgroup lock, whose RCU grace period
        makes a ``cgroup.procs`` write by another process cost ~10 ms (half a container
        start). For a single-threaded process, its thread is the whole process. v2
        domain groups take ``0`` in ``cgroup.procs``.
        """
        name = "tasks" if self.version == 1 else "cgroup.procs"
        for path in dict.fromkeys(self.paths.values()):
            with open(os.path.join(path, name), "w") as f:
                f.write("0")

    def oom_killed(self) -> bool:
        """True if the kernel's OOM killer hit this group."""
        path = self.paths.get("memory") or self.paths.get("unified")
        if path is None:
            return False
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(path, name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        except OSError:
            return False
        return False

    def pids(self) -> list[int]:
        out: set[int] = set()
        for path in self.paths.values():
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    out.update(int(x) for x in f.read().split())
            except OSError:
                continue
        return sorted(out)

    def remove(self, timeout: float = 2.0) -> None:
        """rmdir the groups (retrying while exiting processes leave them)."""
        deadline = time.monotonic() + timeout
        for path in dict.fromkeys(self.paths.values()):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("remove cgroup %s: %s", path, exc.strerror)
                        break
                    time.sleep(0.01)


def _mountinfo() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                out.append((fields[4], rfields[0], set(rfields[2].split(","))))
    return out


def _v2_root(wanted: set[str]) -> str | None:
    for mnt, fstype, _ in _mountinfo():
        if fstype != "cgroup2":
            continue
        try:
            with open(os.path.join(mnt, "cgroup.controllers")) as f:
                have = set(f.read().split())
        except OSError:
            continue
        if wanted <= have:
            return mnt
    return None


def _v1_roots() -> dict[str, str]:
    out: dict[str, str] = {}
    for mnt, fstype, opts in _mountinfo():
        if fstype == "cgroup":
            for ctrl in V1_CONTROLLERS:
                if ctrl in opts and ctrl not in out:
                    out[ctrl] = mnt
    return out


def _write(path: str, name: str, value: str) -> None:
    with open(os.path.join(path, name), "w") as f:
        f.write(value)


def limits_problem(limits: Limits) -> str | None:
    """Why ``limits`` cannot be enforced on this host (None when they can).

    The CLI warns with this at create time, where the user sees it (the supervisor's
    own warning goes to its log)."""
    if not limits.any():
        return None
    wanted = {name for name, v in (("memory", limits.memory), ("pids", limits.pids),
                                   ("cpu", limits.cpus)) if v is not None}
    if _v2_root(wanted) is not None:
        return None
    have = _v1_roots()
    missing = sorted(wanted - set(have))
    if not missing:
        return None
    return (f"no cgroup v2 hierarchy with the {', '.join(sorted(wanted))} controller(s) and "
            f"no cgroup v1 {', '.join(missing)} controller mounted")


def create(container_id: str, limits: Limits) -> Cgroup | None:
    """Create the container's cgroup(s) with ``limits``; None if no hierarchy is usable.

    Logs a WARNING naming what was asked for when limits cannot be enforced.
    """
    wanted = {"memory", "pids", "cpu"}
    reasons = []
    root = _v2_root(wanted)
    if root is not None:
        try:
            return _create_v2(root, container_id, limits)
        except OSError as exc:
            reasons.append(f"cgroup v2 at {root}: {exc.strerror}")
    else:
        reasons.append("no cgroup v2 hierarchy with memory, pids and cpu controllers")
    roots = _v1_roots()
    if roots:
        try:
            return _create_v1(roots, container_id, limits)
        except OSError as exc:
            reasons.append(f"cgroup v1: {exc.strerror} {exc.filename or ''}".rstrip())
    else:
        reasons.append("no cgroup v1 memory/pids/cpu controllers mounted")
    if limits.any():
        log.warning("resource limits (%s) cannot be enforced: %s", limits, "; ".join(reasons))
    else:
        log.info("container runs without a cgroup: %s", "; ".join(reasons))
    return None


def _create_v2(root: str, cid: str, limits: Limits) -> Cgroup:
    parent = os.path.join(root, PARENT)
    os.makedirs(parent, exist_ok=True)
    for d in (root, parent):
        with contextlib.suppress(OSError):
            _write(d, "cgroup.subtree_control", "+memory +pids +cpu")
    path = os.path.join(parent, cid)
    os.makedirs(path, exist_ok=True)
    cg = Cgroup(version=2, paths={"unified": path})
    try:
        if limits.memory is not None:
            _write(path, "memory.max", str(limits.memory))
            with contextlib.suppress(FileNotFoundError):
                _write(path, "memory.swap.max", "0")
        if limits.pids is not None:
            _write(path, "pids.max", str(limits.pids))
        if limits.cpus is not None:
            _write(path, "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
    except OSError:
        cg.remove()
        raise
    return cg


def _create_v1(roots: dict[str, str], cid: str, limits: Limits) -> Cgroup:
    cg = Cgroup(version=1)
    try:
        for ctrl, mnt in roots.items():
            path = os.path.join(mnt, PARENT, cid)
            os.makedirs(path, exist_ok=True)
            cg.paths[ctrl] = path
        need = {"memory": limits.memory, "pids": limits.pids, "cpu": limits.cpus}
        for ctrl, value in need.items():
            if value is not None and ctrl not in cg.paths:
                raise OSError(errno.ENOENT, f"controller {ctrl} not mounted")
        if limits.memory is not None:
            mem = cg.paths["memory"]
            _write(mem, "memory.limit_in_bytes", str(limits.memory))
            with contextlib.suppress(FileNotFoundError):
                _write(mem, "memory.memsw.limit_in_bytes", str(limits.memory))
        if limits.pids is not None:
            _write(cg.paths["pids"], "pids.max", str(limits.pids))
        if limits.cpus is not None:
            cpu = cg.paths["cpu"]
            _write(cpu, "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu, "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US)))
    except OSError:
        cg.remove()
        raise
    return cg


def of_pid(pid: int) -> Cgroup | None:
    """The cowfs cgroup(s) a process is in (for ``exec`` to join), from /proc/PID/cgroup."""
    v1, v2 = _v1_roots(), None
    cg1 = Cgroup(version=1)
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if f"/{PARENT}/" not in path + "/":
            continue
        if ctrls == "":
            v2 = v2 or _v2_root(set())
            if v2:
                return Cgroup(version=2, paths={"unified": v2 + path})
        for ctrl in ctrls.split(","):
            if ctrl in v1:
                cg1.paths[ctrl] = v1[ctrl] + path
    return cg1 if cg1.paths else None


def paths_of(container_id: str) -> list[str]:
    """Every cowfs cgroup dir that exists for ``container_id`` (also after a crash)."""
    roots = set(_v1_roots().values())
    for mnt, fstype, _ in _mountinfo():
        if fstype == "cgroup2":
            roots.add(mnt)
    return [p for p in (os.path.join(r, PARENT, container_id) for r in sorted(roots))
            if os.path.isdir(p)]


def remove_leftovers(container_id: str) -> None:
    """Remove cgroup dirs a crashed supervisor left for ``container_id``."""
    Cgroup(version=1, paths={p: p for p in paths_of(container_id)}).remove()


def parse_memory(text: str) -> int:
    """Parse ``256m``/``1g``/``512k``/bytes like docker's --memory."""
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    mult = 1
    if t and t[-1] in units:
        mult = units[t[-1]]
        t = t[:-1]
    if not t.isdigit() or int(t) <= 0:
        raise ValueError(f"invalid memory size {text!r} (like 256m, 1g)")
    return int(t) * mult
