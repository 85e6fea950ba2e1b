"""Image references (``[host[:port]/]repo[:tag][@digest]``), normalized like docker.

Owns: parsing and formatting of references; no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

DOCKER_HUB = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image reference."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def local_name(self) -> str:
        """The ``name:tag`` the store records for a pulled image."""
        return f"{self.registry}/{self.repository}:{self.tag or 'latest'}"


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def parse_reference(text: str) -> Reference:
    """Parse ``text`` into a Reference, applying docker's defaults.

    Raises:
        UsageError: the reference is malformed (the message names the bad part).
    """
    if not text or text != text.strip():
        raise UsageError(f"invalid image reference {text!r}")
    rest = text
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.match(digest):
            raise UsageError(f"invalid digest in image reference {text!r}")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise UsageError(f"invalid tag {tag!r} in image reference {text!r}")
    parts = rest.split("/")
    if len(parts) > 1 and _looks_like_host(parts[0]):
        registry, path = parts[0], parts[1:]
    else:
        registry, path = DOCKER_HUB, parts
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if len(path) == 1:
            path = ["library", *path]
    for comp in path:
        if not _COMPONENT.match(comp):
            raise UsageError(f"invalid repository name {'/'.join(path)!r} in {text!r}")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, "/".join(path), tag, digest)
