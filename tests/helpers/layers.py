"""Build test layer tars (OCI layer shape) in memory: files, dirs, links, devices,
xattrs, whiteouts and opaque markers, optionally gzip/zstd compressed.

Written by cowfs for its tests and used beside real peer tools (buildah, umoci,
skopeo, podman), never instead of them. Hostile shapes (absolute names, ``..``,
links out of the root) are allowed on purpose: the extractor must refuse them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass, field

WH = ".wh."
OPQ = ".wh..wh..opq"


@dataclass
class LayerTar:
    """An ordered list of tar members; ``bytes()`` renders the archive."""

    members: list[tuple[tarfile.TarInfo, bytes | None]] = field(default_factory=list)
    format: int = tarfile.PAX_FORMAT
    mtime: int = 1_700_000_000

    def _info(self, name: str, kind: bytes, mode: int, uid: int, gid: int,
              mtime: int | None, xattrs: dict[str, str] | None) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.mtime = self.mtime if mtime is None else mtime
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        return ti

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, uid: int = 0,
             gid: int = 0, mtime: int | None = None,
             xattrs: dict[str, str] | None = None) -> LayerTar:
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid, mtime, xattrs)
        ti.size = len(data)
        self.members.append((ti, data))
        return self

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0,
            mtime: int | None = None, xattrs: dict[str, str] | None = None) -> LayerTar:
        self.members.append((self._info(name, tarfile.DIRTYPE, mode, uid, gid, mtime, xattrs),
                             None))
        return self

    def symlink(self, name: str, target: str, uid: int = 0, gid: int = 0) -> LayerTar:
        ti = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid, None, None)
        ti.linkname = target
        self.members.append((ti, None))
        return self

    def hardlink(self, name: str, target: str) -> LayerTar:
        ti = self._info(name, tarfile.LNKTYPE, 0o644, 0, 0, None, None)
        ti.linkname = target
        self.members.append((ti, None))
        return self

    def fifo(self, name: str, mode: int = 0o644) -> LayerTar:
        self.members.append((self._info(name, tarfile.FIFOTYPE, mode, 0, 0, None, None), None))
        return self

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o666) -> LayerTar:
        ti = self._info(name, tarfile.CHRTYPE, mode, 0, 0, None, None)
        ti.devmajor, ti.devminor = major, minor
        self.members.append((ti, None))
        return self

    def whiteout(self, path: str) -> LayerTar:
        """Add ``.wh.NAME`` deleting ``path`` in lower layers."""
        head, _, base = path.rstrip("/").rpartition("/")
        return self.file(f"{head}/{WH}{base}" if head else f"{WH}{base}", mode=0o600)

    def opaque(self, dirpath: str) -> LayerTar:
        """Add ``DIR/.wh..wh..opq`` hiding every lower child of ``dirpath``."""
        d = dirpath.rstrip("/")
        return self.file(f"{d}/{OPQ}" if d else OPQ, mode=0o600)

    def raw(self, ti: tarfile.TarInfo, data: bytes | None = None) -> LayerTar:
        self.members.append((ti, data))
        return self

    def __bytes__(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=self.format) as tf:
            for ti, data in self.members:
                tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def compressed(self, kind: str = "none") -> bytes:
        raw = bytes(self)
        if kind == "none":
            return raw
        if kind == "gzip":
            return gzip.compress(raw, mtime=0)
        if kind == "zstd":
            import zstandard

            return zstandard.ZstdCompressor().compress(raw)
        raise ValueError(kind)

    def diff_id(self) -> str:
        return "sha256:" + hashlib.sha256(bytes(self)).hexdigest()
