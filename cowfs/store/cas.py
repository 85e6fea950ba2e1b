"""Content-addressed blobs: ``blobs/sha256/<hex>``, verified on the way in.

Owns: digest syntax, hashing, and the tmp → fsync → rename publication of blobs.
Must not know about images or layers. A blob path is only ever built from a
validated digest (no traversal through a crafted digest, CVE-2014-9358 shape).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Callable
from typing import BinaryIO, Final

from .. import format as fmt
from ..errors import BadImage, DigestMismatch, NotFound

CHUNK: Final = 1 << 20
_DIGEST_RE: Final = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_digest(digest: object, what: str = "digest") -> str:
    """Return ``digest`` if it is ``sha256:<64 hex>``; raise BadImage otherwise."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise BadImage(f"{what}: invalid digest {digest!r} (want sha256:<64 hex>)")
    return digest


def digest_hex(digest: str) -> str:
    return check_digest(digest)[len("sha256:"):]


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(..n-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else sha256_bytes(f"{out[-1]} {d}".encode()))
    return out


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """``<root>/blobs/sha256/<hex>``; writes are staged in ``tmp_dir`` (same fs)."""

    def __init__(self, root: str, tmp_dir: str) -> None:
        self.dir = os.path.join(root, fmt.BLOBS_DIR, "sha256")
        self.tmp_dir = tmp_dir
        os.makedirs(self.dir, exist_ok=True)

    def path(self, digest: str) -> str:
        return os.path.join(self.dir, digest_hex(digest))

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"open blob {digest}: not in the store") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def digests(self) -> list[str]:
        return sorted("sha256:" + n for n in os.listdir(self.dir) if not n.startswith("."))

    def put(
        self,
        src: BinaryIO,
        expected: str | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        what: str = "blob",
    ) -> tuple[str, int, bool]:
        """Copy ``src`` into the store, verifying ``expected`` if given.

        Returns (digest, size, created). Raises DigestMismatch (nothing stored) if
        the content does not hash to ``expected``.
        """
        if expected is not None:
            check_digest(expected, what)
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix="blob-", dir=self.tmp_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)  # marks the staging file live for tmp/ cleanup
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(os.dup(fd), "wb") as out:
                while chunk := src.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + h.hexdigest()
            if expected is not None and digest != expected:
                raise DigestMismatch(f"verify {what}: content hashes to {digest}, want {expected}")
            final = self.path(digest)
            if os.path.exists(final):
                return digest, size, False
            os.chmod(tmp, 0o644)
            os.rename(tmp, final)
            fsync_dir(self.dir)
            return digest, size, True
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.close(fd)

    def put_bytes(self, data: bytes, expected: str | None = None, what: str = "blob") -> str:
        import io

        return self.put(io.BytesIO(data), expected, what=what)[0]

    def remove(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass
