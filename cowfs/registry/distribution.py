"""OCI distribution API operations on one repository: manifests and blobs.

Owns: manifest fetch/put (OCI and Docker schema2, indexes and lists), platform
selection, blob download with streaming digest verification and resume, blob
upload (monolithic or chunked, cross-repository mount, HEAD existence checks).
Knows nothing about the store.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from .. import format as fmt
from ..errors import DigestMismatch, RegistryError
from .client import RegistryClient

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join([
    fmt.MT_OCI_INDEX, fmt.MT_OCI_MANIFEST, fmt.MT_DOCKER_LIST, fmt.MT_DOCKER_MANIFEST,
])
INDEX_TYPES = frozenset({fmt.MT_OCI_INDEX, fmt.MT_DOCKER_LIST})
MANIFEST_TYPES = frozenset({fmt.MT_OCI_MANIFEST, fmt.MT_DOCKER_MANIFEST})
CHUNK = 8 << 20
MAX_MANIFEST = 4 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise RegistryError(f"unsupported or malformed digest {digest!r}")
    return hexpart


@dataclass(frozen=True, slots=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise RegistryError(f"invalid platform {text!r} (want os/arch[/variant])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, p: dict[str, Any]) -> bool:
        if p.get("os") != self.os or p.get("architecture") != self.architecture:
            return False
        return self.variant is None or p.get("variant") == self.variant

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass
class Manifest:
    """A fetched manifest: its exact bytes (digests are over them), type and digest."""

    raw: bytes
    media_type: str
    digest: str

    @property
    def doc(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.raw)
        except ValueError as exc:
            raise RegistryError(f"manifest {self.digest} is not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return doc


class Repository:
    """One repository (``name``) on a registry."""

    def __init__(self, client: RegistryClient, name: str) -> None:
        self.client = client
        self.name = name
        self.pull_scope = f"repository:{name}:pull"
        self.push_scope = f"repository:{name}:pull,push"

    # --- manifests ------------------------------------------------------------------
    def get_manifest(self, reference: str) -> Manifest:
        resp = self.client.request(
            "GET", f"/v2/{self.name}/manifests/{reference}",
            headers={"Accept": MANIFEST_ACCEPT}, scope=self.pull_scope)
        raw = resp.data
        if len(raw) > MAX_MANIFEST:
            raise RegistryError(f"manifest {self.name}:{reference} is too large")
        digest = sha256_digest(raw)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"manifest {reference}: registry sent content hashing to "
                                 f"{digest}")
        media = (resp.header("Content-Type") or "").split(";")[0].strip()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise RegistryError(f"manifest {self.name}:{reference} is not JSON ({exc})") from None
        media = doc.get("mediaType") or media
        if media not in INDEX_TYPES and media not in MANIFEST_TYPES:
            if "manifests" in doc:
                media = fmt.MT_OCI_INDEX
            elif "layers" in doc:
                media = fmt.MT_OCI_MANIFEST
            else:
                raise RegistryError(f"{self.name}:{reference}: unsupported manifest type "
                                    f"{media!r}")
        return Manifest(raw, media, digest)

    def resolve_image_manifest(self, reference: str, platform: Platform) -> tuple[
            Manifest, Manifest | None]:
        """Return ``(image manifest, index it was selected from or None)``."""
        top = self.get_manifest(reference)
        if top.media_type in MANIFEST_TYPES:
            return top, None
        index = top
        for _ in range(4):  # nested indexes
            candidates = [m for m in index.doc.get("manifests", [])
                          if platform.matches(m.get("platform") or {})]
            if not candidates:
                have = ", ".join(
                    "/".join(filter(None, [(m.get("platform") or {}).get("os"),
                                           (m.get("platform") or {}).get("architecture"),
                                           (m.get("platform") or {}).get("variant")]))
                    for m in index.doc.get("manifests", []))
                raise RegistryError(f"{self.name}:{reference}: no manifest for platform "
                                    f"{platform} (available: {have or 'none'})")
            chosen = self.get_manifest(candidates[0]["digest"])
            if chosen.media_type in MANIFEST_TYPES:
                return chosen, top
            index = chosen
        raise RegistryError(f"{self.name}:{reference}: indexes nested too deeply")

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> str:
        resp = self.client.request(
            "PUT", f"/v2/{self.name}/manifests/{reference}", body=raw,
            headers={"Content-Type": media_type}, scope=self.push_scope, ok=(200, 201, 202))
        return resp.header("Docker-Content-Digest") or sha256_digest(raw)

    # --- blobs ----------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        resp = self.client.request("HEAD", f"/v2/{self.name}/blobs/{digest}",
                                   scope=self.pull_scope, ok=(200, 404))
        return resp.status == 200

    def get_blob_bytes(self, digest: str, limit: int = 64 << 20) -> bytes:
        resp = self.client.request("GET", f"/v2/{self.name}/blobs/{digest}",
                                   scope=self.pull_scope)
        if len(resp.data) > limit:
            raise RegistryError(f"blob {digest} is larger than {limit} bytes")
        if sha256_digest(resp.data) != digest:
            raise DigestMismatch(f"blob {digest}: registry sent content hashing to "
                                 f"{sha256_digest(resp.data)}")
        return resp.data

    def download_blob(self, digest: str, dest: str, *, size: int | None = None,
                      progress: Callable[[int], None] | None = None) -> None:
        """Download ``digest`` into ``dest``, resuming a partial ``dest`` with Range.

        The digest is verified over the whole file; on mismatch ``dest`` is removed
        and DigestMismatch raised. Interrupted transfers are retried from where they
        stopped (the partial file is kept between attempts and between runs).
        """
        _check_digest(digest)
        attempts = 0
        while True:
            have = os.path.getsize(dest) if os.path.exists(dest) else 0
            if size is not None and have > size:
                os.unlink(dest)
                have = 0
            if size is not None and have == size:
                break
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                resp = self.client.request(
                    "GET", f"/v2/{self.name}/blobs/{digest}", headers=headers,
                    scope=self.pull_scope, stream=True, ok=(200, 206, 416))
                if resp.status == 416:  # nothing more to send: we have it all
                    break
                mode = "ab" if resp.status == 206 else "wb"
                try:
                    with open(dest, mode) as f:
                        for chunk in resp.iter_chunks():
                            f.write(chunk)
                            if progress:
                                progress(len(chunk))
                        f.flush()
                        os.fsync(f.fileno())
                finally:
                    self.client.abandon(resp)  # a body cut short: drop its connection
                if size is None or os.path.getsize(dest) >= size:
                    break
                raise ConnectionError("short read")
            except (ConnectionError, OSError, RegistryError, http.client.HTTPException) as exc:
                if isinstance(exc, DigestMismatch):
                    raise
                attempts += 1
                if attempts > self.client.retries:
                    raise RegistryError(f"download blob {digest}: {exc}") from exc
                log.info("resuming blob %s after %s", digest, exc)
                time.sleep(self.client.backoff * 2 ** (attempts - 1))
        h = hashlib.sha256()
        with open(dest, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        got = "sha256:" + h.hexdigest()
        if got != digest:
            os.unlink(dest)
            raise DigestMismatch(f"blob {digest}: downloaded content hashes to {got}")

    def mount_blob(self, digest: str, from_repo: str) -> bool:
        """Try a cross-repository mount; True if the registry now has the blob here."""
        resp = self.client.request(
            "POST", f"/v2/{self.name}/blobs/uploads/?mount={digest}&from={from_repo}",
            scope=f"{self.push_scope} repository:{from_repo}:pull", ok=(201, 202))
        if resp.status == 202:  # mount refused: an upload session was opened; cancel it
            loc = resp.header("Location")
            if loc:
                try:
                    self.client.request("DELETE", self._abs(loc), scope=self.push_scope,
                                        ok=(200, 202, 204, 404))
                except RegistryError:
                    pass
            return False
        return True

    def _abs(self, location: str) -> str:
        if "://" in location:
            return location
        return f"{self.client.scheme}://{self.client.host}{location}"

    def upload_blob(self, digest: str, src: BinaryIO, size: int, *,
                    chunk_size: int = 32 << 20,
                    progress: Callable[[int], None] | None = None) -> None:
        """Upload a blob: monolithic PUT when small, chunked PATCHes otherwise."""
        resp = self.client.request("POST", f"/v2/{self.name}/blobs/uploads/",
                                   scope=self.push_scope, ok=(202,))
        loc = resp.header("Location")
        if not loc:
            raise RegistryError(f"upload {digest}: registry gave no upload location")
        url = self._abs(loc)
        sep = "&" if "?" in url else "?"
        if size <= chunk_size:
            data = src.read()
            self.client.request("PUT", f"{url}{sep}digest={digest}", body=data,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(len(data))},
                                scope=self.push_scope, ok=(201,))
            if progress:
                progress(len(data))
            return
        offset = 0
        while offset < size:
            chunk = src.read(chunk_size)
            if not chunk:
                break
            resp = self.client.request(
                "PATCH", url, body=chunk, scope=self.push_scope, ok=(202,),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(len(chunk)),
                         "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
            offset += len(chunk)
            if progress:
                progress(len(chunk))
            loc = resp.header("Location")
            if loc:
                url = self._abs(loc)
        sep = "&" if "?" in url else "?"
        self.client.request("PUT", f"{url}{sep}digest={digest}", body=b"",
                            headers={"Content-Length": "0"}, scope=self.push_scope, ok=(201,))
