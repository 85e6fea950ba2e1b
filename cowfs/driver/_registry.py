"""The registry of what cowfs mounted, and the mount table of this namespace.

Owns: ``<run_dir>/mounts/<id>.json`` records (written at mount, removed at unmount,
pruned when stale), reading ``/proc/self/mountinfo``, and the guards that refuse a
second mount on a target or a shared upper. Must not mount or unmount anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Final

from .. import format as fmt
from ..errors import Conflict

log = logging.getLogger(__name__)

MOUNTS_DIR: Final = "mounts"


# --- where things live ---------------------------------------------------------------
def default_root() -> str:
    """The store root when none is given (SPEC §2); see `cowfs.format.default_root`."""
    return fmt.default_root()


def default_run_dir() -> str:
    """$COWFS_RUN_DIR, else the default store's ``run/`` (probe cache, mount registry)."""
    return os.environ.get("COWFS_RUN_DIR") or os.path.join(default_root(), fmt.RUN_DIR)


# --- records ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MountRecord:
    """One registry entry: what cowfs mounted where (``live`` None: other mount namespace)."""

    id: str
    mergeddir: str
    lowerdirs: list[str]
    upperdir: str | None
    workdir: str | None
    backend: str
    method: str
    userxattr: bool
    volatile: bool
    temp_target: bool
    mnt_ns: str
    pid: int
    created: float
    live: bool | None = None


# --- mounts of this namespace --------------------------------------------------------------
def _unoctal(field: bytes) -> str:
    return os.fsdecode(field.decode("unicode_escape").encode("latin-1"))


def mountinfo() -> dict[str, str]:
    """Mount points of this mount namespace mapped to their fs type (last one wins)."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            sep = fields.index(b"-")
            out[_unoctal(fields[4])] = fields[sep + 1].decode()
    return out


def mnt_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return "mnt:[?]"


# --- the registry of cowfs mounts ---------------------------------------------------------
def mount_id(mergeddir: str) -> str:
    return hashlib.sha256(os.fsencode(mergeddir)).hexdigest()[:16]


def register(run_dir: str, record: MountRecord) -> None:
    reg = os.path.join(run_dir, MOUNTS_DIR)
    data = asdict(record)
    del data["live"]
    blob = json.dumps(data).encode()
    # Kept to a few syscalls: this runs on every mount (the fast path is benchmarked).
    tmp = os.path.join(reg, f".{record.id}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(reg, mode=0o700, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, os.path.join(reg, record.id + ".json"))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def refuse_double_mount(run_dir: str, mergeddir: str) -> None:
    # One stat on the fast path; mountinfo is read only when a record exists.
    if not os.path.exists(os.path.join(run_dir, MOUNTS_DIR, mount_id(mergeddir) + ".json")):
        return
    if any(r.mergeddir == mergeddir and r.live for r in list_mounts(run_dir)):
        raise Conflict(f"mount {mergeddir}: cowfs already has a mount there "
                       "(see 'cowfs mounts'; unmount it first)")


def refuse_shared_upper(run_dir: str, upperdir: str, workdir: str | None) -> None:
    """Refuse an upper/work dir that a live cowfs mount already writes to.

    With ``index=off`` the kernel only warns about a shared upper ("undefined behavior"),
    and two FUSE daemons on one upper would corrupt it; the registry is the guard.
    """
    reg = os.path.join(run_dir, MOUNTS_DIR)
    try:
        names = [n for n in os.listdir(reg) if n.endswith(".json")]
    except FileNotFoundError:
        return
    mine = {upperdir, workdir}
    for name in names:
        try:
            with open(os.path.join(reg, name)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not mine & {data.get("upperdir"), data.get("workdir")}:
            continue
        live = [r for r in list_mounts(run_dir) if mine & {r.upperdir, r.workdir}]
        if live:
            raise Conflict(f"mount: upper dir {upperdir} is in use by the cowfs mount at "
                           f"{live[0].mergeddir} (see 'cowfs mounts')")
        return


def unregister(run_dir: str, mount_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(run_dir, MOUNTS_DIR, mount_id + ".json"))


def list_mounts(run_dir: str | None = None, *, prune: bool = True) -> list[MountRecord]:
    """What cowfs mounted, from the registry in ``run_dir``.

    ``live`` is checked against this mount namespace; entries of this namespace that
    are no longer mounted are dropped (and deleted when ``prune``). Entries made in
    another mount namespace are listed with ``live=None`` while some process is still in
    that namespace, else dropped likewise.
    """
    reg = os.path.join(run_dir or default_run_dir(), MOUNTS_DIR)
    try:
        names = sorted(n for n in os.listdir(reg) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    here, ns = mountinfo(), mnt_ns()
    out: list[MountRecord] = []
    for name in names:
        path = os.path.join(reg, name)
        try:
            with open(path) as f:
                data: dict[str, Any] = json.load(f)
            rec = MountRecord(**data)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("mount registry: skipping unreadable %s: %s", path, exc)
            continue
        if rec.mnt_ns != ns:
            if prune and not _ns_in_use(rec.mnt_ns):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            out.append(_with_live(rec, None))
        elif rec.mergeddir in here:
            out.append(_with_live(rec, True))
        elif prune:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return out


def _ns_in_use(mnt_ns: str) -> bool:
    """True while a process we can see is in mount namespace ``mnt_ns`` (a namespace
    nobody is in is gone, and its mounts with it). Processes we may not inspect (other
    users', a sandbox's init) are ignored: cowfs's namespaces are held by our own."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/mnt") == mnt_ns:
                    return True
    return False


def _with_live(rec: MountRecord, live: bool | None) -> MountRecord:
    data = asdict(rec)
    data["live"] = live
    return MountRecord(**data)
