"""Named volumes (``volumes/<name>/_data`` in the store) and ``-v`` mount specs.

Owns: parsing ``-v NAME:/path[:ro]`` / ``-v /host:/path[:ro]``, creating volumes on first
use, listing, inspecting and removing them (refused while a container refers to one).
Volumes live outside every container's writable layer, so they survive ``rm``. Must not
mount anything (``rootfs`` binds them inside the container's mount namespace).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from .. import format as fmt
from ..errors import Conflict, NotFound, UsageError
from .container import Container, list_containers, now

_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
META: Final = "volume.json"


@dataclass(frozen=True, slots=True)
class MountSpec:
    """One ``-v``: a named volume or a host bind, at ``target`` in the container."""

    kind: str  # "volume" | "bind"
    source: str  # volume name or absolute host path
    target: str
    readonly: bool = False
    anonymous: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"Type": self.kind, "Source": self.source, "Destination": self.target,
                "RW": not self.readonly, "Anonymous": self.anonymous}


def parse_spec(spec: str) -> MountSpec:
    """Parse a ``-v`` argument (``NAME:/dst[:ro|rw]``, ``/src:/dst[:ro]``, or ``/dst``)."""
    parts = spec.split(":")
    readonly = False
    if len(parts) == 3:
        if parts[2] not in ("ro", "rw"):
            raise UsageError(f"parse volume {spec!r}: mode must be ro or rw")
        readonly = parts[2] == "ro"
        parts = parts[:2]
    if len(parts) == 1:  # anonymous volume
        source, target = "", parts[0]
    elif len(parts) == 2:
        source, target = parts
    else:
        raise UsageError(f"parse volume {spec!r}: want SRC:DST[:ro]")
    if not target.startswith("/") or target.rstrip("/") == "":
        raise UsageError(f"parse volume {spec!r}: the container path must be absolute, not /")
    if source.startswith("/"):
        return MountSpec("bind", os.path.normpath(source), os.path.normpath(target), readonly)
    if source and not _NAME_RE.match(source):
        raise UsageError(f"parse volume {spec!r}: invalid volume name {source!r}")
    return MountSpec("volume", source or os.urandom(32).hex(), os.path.normpath(target),
                     readonly, anonymous=not source)


def volumes_dir(root: str) -> str:
    return os.path.join(root, fmt.VOLUMES_DIR)


def volume_path(root: str, name: str) -> str:
    """The host dir holding a volume's data."""
    if not _NAME_RE.match(name):
        raise UsageError(f"volume {name!r}: invalid name")
    return os.path.join(volumes_dir(root), name, fmt.VOLUME_DATA)


def create(root: str, name: str | None = None) -> dict[str, Any]:
    """Create a volume (idempotent: an existing one is returned as is)."""
    name = name or os.urandom(32).hex()
    data = volume_path(root, name)
    vdir = os.path.dirname(data)
    if not os.path.isdir(data):
        os.makedirs(volumes_dir(root), exist_ok=True)
        tmp = os.path.join(volumes_dir(root), f".tmp-{os.urandom(8).hex()}")
        os.makedirs(os.path.join(tmp, fmt.VOLUME_DATA), 0o755)
        with open(os.path.join(tmp, META), "w") as f:
            json.dump({"Name": name, "CreatedAt": now(), "Driver": "local", "Labels": {}}, f)
        try:
            os.rename(tmp, vdir)
        except OSError:  # lost a race with another creator: theirs wins
            shutil.rmtree(tmp, ignore_errors=True)
    return inspect(root, name)


def inspect(root: str, name: str) -> dict[str, Any]:
    data = volume_path(root, name)
    try:
        with open(os.path.join(os.path.dirname(data), META)) as f:
            meta: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        raise NotFound(f"inspect volume {name}: no such volume") from None
    meta.update(Mountpoint=data, Scope="local",
                UsedBy=[c.name for c in users(root, name)])
    return meta


def list_volumes(root: str) -> list[dict[str, Any]]:
    try:
        names = sorted(n for n in os.listdir(volumes_dir(root)) if not n.startswith("."))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        try:
            out.append(inspect(root, n))
        except (NotFound, UsageError):
            continue
    return out


def users(root: str, name: str, containers: Iterable[Container] | None = None
          ) -> list[Container]:
    """Containers (running or not) whose config mounts volume ``name``."""
    cs = list_containers(root) if containers is None else containers
    return [c for c in cs
            if any(m.get("Type") == "volume" and m.get("Source") == name
                   for m in c.config.get("Mounts", []))]


def remove(root: str, name: str, *, force: bool = False) -> None:
    """Delete a volume and its data; refuse one a container refers to."""
    inspect(root, name)  # NotFound
    used = users(root, name)
    if used and not force:
        raise Conflict(f"remove volume {name}: in use by container "
                       f"{', '.join(c.name for c in used)}")
    vdir = os.path.dirname(volume_path(root, name))
    trash = os.path.join(volumes_dir(root), f".rm-{os.urandom(8).hex()}")
    os.rename(vdir, trash)
    shutil.rmtree(trash, ignore_errors=True)


def host_source(root: str, spec: dict[str, Any]) -> str:
    """Host path to bind for a mount entry of a container config (creating volumes)."""
    if spec["Type"] == "volume":
        create(root, str(spec["Source"]))
        return volume_path(root, str(spec["Source"]))
    src = str(spec["Source"])
    if not os.path.exists(src):
        raise NotFound(f"bind mount {src}: no such file or directory on the host")
    return src
