"""Inside the new mount namespace: turn a merged view into the container's root.

Owns: making mounts private, volume binds (targets resolved inside the root, never
following a symlink out of it), fresh /proc, a minimal /dev (null zero full random
urandom tty, devpts newinstance, shm, fd links), read-only /sys, pivot_root; and user
lookup in the container's /etc/passwd. Runs in the forked child only; must not touch
the host's mount namespace (everything happens after ``unshare(CLONE_NEWNS)``).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Final

from .._sys import ns

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEVICES: Final = ("null", "zero", "full", "random", "urandom", "tty")
_MAX_LINKS: Final = 40


@dataclass(frozen=True, slots=True)
class BindMount:
    """A host dir (volume data or bind source) mounted at ``target`` in the container."""

    source: str
    target: str
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class RootfsPlan:
    """The merged view to pivot into and what to mount inside it."""

    root: str
    binds: tuple[BindMount, ...] = field(default_factory=tuple)


def setup(plan: RootfsPlan) -> None:
    """Build the container's filesystem tree and pivot_root into it (child only)."""
    ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
    root = plan.root
    ns.mount(root, root, None, ns.MS_BIND | ns.MS_REC)  # pivot_root wants a mount point
    for bind in plan.binds:
        _bind(root, bind)
    _proc(root)
    _dev(root)
    _sys(root)
    os.chdir(root)
    ns.pivot_root(b".", b".")
    ns.umount(".", ns.MNT_DETACH)  # the old root, stacked under the new one
    os.chdir("/")


def _proc(root: str) -> None:
    target = resolve_in_root(root, "/proc", create_dir=True)
    ns.mount("proc", target, "proc", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)


def _dev(root: str) -> None:
    dev = resolve_in_root(root, "/dev", create_dir=True)
    ns.mount("tmpfs", dev, "tmpfs", ns.MS_NOSUID | ns.MS_STRICTATIME, "mode=755,size=65536k")
    for name in DEVICES:
        path = os.path.join(dev, name)
        host = os.stat(f"/dev/{name}")
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, host.st_rdev)
            os.chmod(path, 0o666)
        except PermissionError:
            # In a user namespace mknod is refused: bind the host node instead.
            with open(path, "w"):
                pass
            ns.mount(f"/dev/{name}", path, None, ns.MS_BIND)
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    ns.mount("devpts", pts, "devpts", ns.MS_NOSUID | ns.MS_NOEXEC,
             "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o1777)
    ns.mount("shm", shm, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC,
             "mode=1777,size=65536k")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        os.symlink(target, os.path.join(dev, name))


def _sys(root: str) -> None:
    target = resolve_in_root(root, "/sys", create_dir=True)
    flags = ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC
    try:
        ns.mount("sysfs", target, "sysfs", flags)
    except PermissionError:
        # sysfs of a net namespace we do not own: a read-only recursive bind of the host's.
        ns.mount("/sys", target, None, ns.MS_BIND | ns.MS_REC)
        ns.mount(None, target, None, ns.MS_BIND | ns.MS_REMOUNT | flags)


def _bind(root: str, bind: BindMount) -> None:
    is_dir = os.path.isdir(bind.source)
    target = resolve_in_root(root, bind.target, create_dir=is_dir, create_file=not is_dir)
    # Mount on the O_PATH fd's magic link: the target cannot be swapped for a symlink
    # between resolution and mount.
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        where = f"/proc/self/fd/{fd}"
        ns.mount(bind.source, where, None, ns.MS_BIND | ns.MS_REC)
        if bind.readonly:
            # The fd still names the covered dir; the new mount sits on the (symlink-free)
            # resolved path.
            ns.mount(None, target, None, ns.MS_BIND | ns.MS_REMOUNT | ns.MS_RDONLY)
    finally:
        os.close(fd)


def resolve_in_root(root: str, path: str, *, create_dir: bool = False,
                    create_file: bool = False) -> str:
    """Resolve ``path`` as if ``root`` were ``/`` (symlinks cannot leave it); create it.

    Returns a host path under ``root`` whose components are no symlinks. Missing
    components are created as dirs (the last one as a file with ``create_file``).
    """
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, name)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if not (create_dir or create_file):
                raise
            if parts or create_dir:
                os.mkdir(host, 0o755)
            else:
                os.close(os.open(host, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
            done.append(name)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, "too many symlinks", path)
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        if parts and not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, "not a directory", os.path.join("/", *done, name))
        done.append(name)
    return os.path.join(root, *done)


def resolve_user(user: str) -> tuple[int, int, list[int]]:
    """Map ``uid[:gid]`` or ``name[:group]`` to ids using the container's /etc files."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd = _table("/etc/passwd")
    if name.isdigit():
        uid = int(name)
        gid = next((int(r[3]) for r in passwd if r[2] == name), 0)
    else:
        row = next((r for r in passwd if r[0] == name), None)
        if row is None:
            raise OSError(errno.ENOENT, f"unable to find user {name}: no matching entries "
                          "in passwd file")
        uid, gid = int(row[2]), int(row[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            grow = next((r for r in _table("/etc/group") if r[0] == group), None)
            if grow is None:
                raise OSError(errno.ENOENT, f"unable to find group {group}")
            gid = int(grow[2])
    return uid, gid, [gid]


def _table(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f
                    if line.strip() and not line.startswith("#") and line.count(":") >= 3]
    except FileNotFoundError:
        return []
