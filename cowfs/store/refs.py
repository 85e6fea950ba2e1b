"""Image names (``name:tag``) and the ``refs.json`` index mapping them to image ids.

Owns: docker-style normalization of names (``busybox`` → ``busybox:latest``,
``docker.io/library/x`` → ``x``) and atomic reads/writes of ``refs.json``.
Must not take locks itself: the store calls it inside its store-wide lock.
"""

from __future__ import annotations

import json
import os
import re
from typing import Final

from ..errors import StoreError, UsageError

_COMPONENT: Final = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST: Final = re.compile(r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_TAG: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HUB: Final = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def split_ref(ref: str) -> tuple[str, str]:
    """Split ``name[:tag]`` into (name, tag) with docker's default tag ``latest``."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, "latest"


def normalize_ref(ref: str) -> str:
    """Return the canonical ``name:tag`` for ``ref`` or raise UsageError.

    Docker Hub names are shown in their familiar form (``docker.io/library/busybox``
    → ``busybox``); other registries keep their host (``localhost/x``, ``host:5000/x``).
    Digest references (``@sha256:``) are not tags and are refused here.
    """
    if not ref or ref != ref.strip() or "@" in ref:
        raise UsageError(f"invalid image name {ref!r} (want NAME[:TAG])")
    name, tag = split_ref(ref)
    if not _TAG.match(tag):
        raise UsageError(f"invalid tag {tag!r} in image name {ref!r}")
    for hub in _HUB:
        if name.startswith(hub):
            name = name[len(hub):]
            if name.startswith("library/") and name.count("/") == 1:
                name = name[len("library/"):]
            break
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.match(first):
            raise UsageError(f"invalid registry host {first!r} in image name {ref!r}")
        parts = parts[1:]
    if not parts or not all(_COMPONENT.match(p) for p in parts) or len(name) > 255:
        raise UsageError(f"invalid image name {ref!r} (lowercase [a-z0-9._-] components)")
    return f"{name}:{tag}"


class RefIndex:
    """``refs.json``: {"name:tag": "sha256:<image id>"}; atomic replace on write."""

    def __init__(self, path: str, tmp_dir: str) -> None:
        self.path = path
        self.tmp_dir = tmp_dir

    def load(self) -> dict[str, str]:
        try:
            with open(self.path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"read {self.path}: not JSON: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise StoreError(f"read {self.path}: want an object of name:tag -> image id")
        return dict(data)

    def save(self, refs: dict[str, str]) -> None:
        write_json_atomic(self.path, dict(sorted(refs.items())), self.tmp_dir)


def write_json_atomic(path: str, data: object, tmp_dir: str) -> None:
    """Write JSON to a staging file in ``tmp_dir``, fsync, and rename over ``path``."""
    import tempfile  # lazy (also in cas/store): reading the store never needs it

    fd, tmp = tempfile.mkstemp(prefix="json-", dir=tmp_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
