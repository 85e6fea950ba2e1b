"""Export an image as a docker-archive, an OCI layout dir or an OCI archive.

Owns: writing the archive/layout from the blobs the store kept exactly as
received, so a re-import yields identical config and layer digests (and, for OCI
exports of OCI images, the identical manifest digest). Must not modify the store.
Output is staged next to the destination and renamed into place.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO, Final

from .. import format as fmt
from ..errors import Conflict, UsageError
from .cas import digest_hex, sha256_bytes
from .refs import split_ref
from .store import Image, Store

log = logging.getLogger(__name__)

EXPORT_FORMATS: Final = ("docker-archive", "oci", "oci-archive")
REF_NAME: Final = "org.opencontainers.image.ref.name"
_TO_OCI: Final = {
    fmt.MT_DOCKER_LAYER: fmt.MT_OCI_LAYER,
    fmt.MT_DOCKER_LAYER_GZIP: fmt.MT_OCI_LAYER_GZIP,
    fmt.MT_DOCKER_CONFIG: fmt.MT_OCI_CONFIG,
}


def oci_manifest(store: Store, img: Image) -> bytes:
    """The image's manifest as OCI: the original bytes if already OCI, else converted."""
    original = store.blobs.read(img.manifest_digest)
    if img.manifest_media_type == fmt.MT_OCI_MANIFEST:
        return original
    doc: dict[str, Any] = json.loads(original)
    doc["mediaType"] = fmt.MT_OCI_MANIFEST
    doc["config"]["mediaType"] = fmt.MT_OCI_CONFIG
    for layer in doc["layers"]:
        layer["mediaType"] = _TO_OCI.get(layer["mediaType"], layer["mediaType"])
    return json.dumps(doc, indent=2).encode()


def _blob_entries(store: Store, img: Image) -> Iterator[tuple[str, str]]:
    """(archive name, store path) of config and layer blobs, each once."""
    seen: set[str] = set()
    for d in (img.id, *img.layer_digests):
        if d not in seen:
            seen.add(d)
            yield f"blobs/sha256/{digest_hex(d)}", store.blob_path(d)


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes | None = None,
             path: str | None = None) -> None:
    ti = tarfile.TarInfo(name)
    ti.mode, ti.mtime, ti.uid, ti.gid = 0o644, 0, 0, 0
    if path is not None:
        ti.size = os.path.getsize(path)
        with open(path, "rb") as f:
            tf.addfile(ti, f)
        return
    assert data is not None
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def _tar_dir(tf: tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
    tf.addfile(ti)


def _docker_archive(store: Store, img: Image, out: BinaryIO) -> None:
    layers = [f"blobs/sha256/{digest_hex(d)}" for d in img.layer_digests]
    manifest = [{"Config": f"blobs/sha256/{digest_hex(img.id)}",
                 "RepoTags": list(img.tags), "Layers": layers}]
    repos: dict[str, dict[str, str]] = {}
    for t in img.tags:
        name, tag = split_ref(t)
        repos.setdefault(name, {})[tag] = digest_hex(img.layer_digests[-1]) \
            if img.layer_digests else ""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("blobs", "blobs/sha256"):
            _tar_dir(tf, d)
        for name, path in _blob_entries(store, img):
            _tar_add(tf, name, path=path)
        _tar_add(tf, "manifest.json", json.dumps(manifest).encode())
        if repos:
            _tar_add(tf, "repositories", json.dumps(repos).encode())


def _oci_files(store: Store, img: Image) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    man = oci_manifest(store, img)
    desc: dict[str, Any] = {"mediaType": fmt.MT_OCI_MANIFEST, "digest": sha256_bytes(man),
                            "size": len(man)}
    entries = ([dict(desc, annotations={REF_NAME: t}) for t in img.tags] or [desc])
    index = {"schemaVersion": 2, "mediaType": fmt.MT_OCI_INDEX, "manifests": entries}
    small = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        f"blobs/sha256/{digest_hex(desc['digest'])}": man,
    }
    return small, list(_blob_entries(store, img))


def export_image(store: Store, ref: str, form: str, path: str, *,
                 overwrite: bool = False) -> Image:
    """Write image ``ref`` to ``path`` as ``form`` (docker-archive, oci, oci-archive)."""
    if form not in EXPORT_FORMATS:
        raise UsageError(f"export: unknown format {form!r} (one of {', '.join(EXPORT_FORMATS)})")
    img = store.get_image(ref)
    empty_dir = os.path.isdir(path) and not os.listdir(path) and form == "oci"
    if os.path.lexists(path) and not overwrite and not empty_dir:
        raise Conflict(f"export {ref}: {path} exists (use --force)")
    parent = os.path.dirname(os.path.abspath(path))
    if form == "oci":
        stage = tempfile.mkdtemp(prefix=".cowfs-export-", dir=parent)
        try:
            small, blobs = _oci_files(store, img)
            os.makedirs(os.path.join(stage, "blobs", "sha256"))
            for name, data in small.items():
                with open(os.path.join(stage, name), "wb") as f:
                    f.write(data)
            for name, src in blobs:
                shutil.copyfile(src, os.path.join(stage, name))
            if os.path.isdir(path):
                os.rmdir(path) if not os.listdir(path) else shutil.rmtree(path)
            os.rename(stage, path)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return img
    fd, stage = tempfile.mkstemp(prefix=".cowfs-export-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if form == "docker-archive":
                _docker_archive(store, img, out)
            else:
                small, blobs = _oci_files(store, img)
                with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
                    for d in ("blobs", "blobs/sha256"):
                        _tar_dir(tf, d)
                    for name, data in small.items():
                        _tar_add(tf, name, data)
                    for name, src in blobs:
                        _tar_add(tf, name, path=src)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(stage, 0o644)
        os.replace(stage, path)
    except BaseException:
        if os.path.exists(stage):
            os.unlink(stage)
        raise
    log.info("exported %s as %s to %s", img.short_id, form, path)
    return img
