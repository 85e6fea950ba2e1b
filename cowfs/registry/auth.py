"""Registry credentials and the WWW-Authenticate challenge parser.

Owns: reading docker/containers auth files and parsing challenges. No network.
Credentials come from (first match wins): an explicit ``user:password``,
``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``~/.docker/config.json``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass

from ..errors import RegistryError

_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (or ``Basic realm=...``)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3) or "")
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def _auth_files() -> list[str]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    files.append(os.path.join(os.path.expanduser("~"), ".docker", "config.json"))
    return files


def _lookup(auths: dict[str, dict[str, str]], registry: str) -> tuple[str, str] | None:
    candidates = [registry, f"https://{registry}", f"http://{registry}",
                  f"https://{registry}/v1/", f"https://{registry}/v2/"]
    if registry == "registry-1.docker.io":
        candidates += ["docker.io", "https://index.docker.io/v1/", "index.docker.io"]
    for key in candidates:
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError as exc:
                raise RegistryError(f"read credentials for {registry}: bad auth entry") from exc
            return user, password
        if entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
    return None


def find_credentials(registry: str, explicit: str | None = None) -> tuple[str, str] | None:
    """Return ``(user, password)`` for ``registry`` or None.

    Raises:
        RegistryError: an auth file exists but is not valid JSON (names the file).
    """
    if explicit:
        user, sep, password = explicit.partition(":")
        if not sep:
            raise RegistryError("--creds must be USER:PASSWORD")
        return user, password
    for path in _auth_files():
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise RegistryError(f"read credentials from {path}: {exc}") from exc
        auths = data.get("auths") if isinstance(data, dict) else None
        if isinstance(auths, dict):
            found = _lookup(auths, registry)
            if found:
                return found
    return None


def basic_header(creds: tuple[str, str]) -> str:
    """The ``Authorization`` header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
