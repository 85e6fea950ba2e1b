"""Reference parsing and credential lookup (no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from cowfs.errors import RegistryError, UsageError
from cowfs.registry.auth import find_credentials, parse_challenge
from cowfs.registry.client import RegistryClient
from cowfs.registry.reference import parse_reference


@pytest.mark.parametrize(
    ("text", "registry", "repo", "tag", "digest"),
    [
        ("busybox", "registry-1.docker.io", "library/busybox", "latest", None),
        ("docker.io/foo/bar:1.0", "registry-1.docker.io", "foo/bar", "1.0", None),
        ("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", "latest", None),
        ("localhost/x:y", "localhost", "x", "y", None),
        ("quay.io/a/b@sha256:" + "a" * 64, "quay.io", "a/b", None, "sha256:" + "a" * 64),
    ],
)
def test_parse_reference(text: str, registry: str, repo: str, tag: str | None,
                         digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repo, tag, digest)


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a/b:bad tag", "x@sha256:zz", "a//b"])
def test_bad_reference_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(bad)


def test_parse_bearer_challenge() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                        'scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg",
                        "scope": "repository:a/b:pull,push"}


def test_credentials_from_auth_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {"r.example:5000": {
        "auth": base64.b64encode(b"me:pw:with:colons").decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    assert find_credentials("r.example:5000") == ("me", "pw:with:colons")
    assert find_credentials("other.example") is None
    auth.write_text("{not json")
    with pytest.raises(RegistryError, match=r"auth\.json"):
        find_credentials("r.example:5000")


def test_plain_http_only_to_loopback() -> None:
    RegistryClient("127.0.0.1:5000", insecure=True)
    RegistryClient("localhost:5000", insecure=True)
    with pytest.raises(RegistryError, match="loopback"):
        RegistryClient("registry.example.com", insecure=True)
