"""Turn import plans (images.py) into stored blobs, layers and image records.

Owns: the import transaction: verify the config digest, copy every blob into the
CAS (verified against the manifest), unpack new layers (verified against the
config's DiffIDs), synthesize a manifest/config where the source has none, and
record the image. On failure nothing becomes visible: no image record, and blobs
and layers this import created are rolled back when no other import is in flight
(otherwise left for gc). Must not parse archives or untar.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform as pyplatform
import shutil
import time
from typing import Any

from .. import format as fmt
from ..errors import BadImage, DigestMismatch, NotFound, UsageError
from .cas import chain_ids, check_digest, sha256_bytes
from .compress import open_decompressed
from .images import (
    ImagePlan,
    LayerPlan,
    is_compressed_image_archive,
    open_plans,
    parse_json,
)
from .store import Image, ProgressEvent, ProgressFn, Store, rmtree

log = logging.getLogger(__name__)

__all__ = ["ImagePlan", "LayerPlan", "import_path", "import_plan"]

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64", "i686": "386"}


def import_path(store: Store, path: str, *, tag: str | None = None,
                platform: str | None = None, progress: ProgressFn | None = None,
                form: str = "auto") -> list[Image]:
    from .refs import normalize_ref

    tags = [normalize_ref(tag)] if tag else None
    with contextlib.ExitStack() as stack:
        src = path
        if form in ("auto", "docker-archive", "oci-archive") and is_compressed_image_archive(path):
            # `docker save | gzip`: decompress into flocked staging, then read it by offset.
            src, out = stack.enter_context(store.staging_file("stage-archive-"))
            with open(path, "rb") as f:
                stream, _mt = open_decompressed(f)
                shutil.copyfileobj(stream, out, 1 << 20)
            out.flush()
        return _import_plans(store, path, src, tags, platform, progress, form)
    raise AssertionError("unreachable")


def _import_plans(store: Store, path: str, src: str, tags: list[str] | None,
                  platform: str | None, progress: ProgressFn | None,
                  form: str) -> list[Image]:
    name = os.path.basename(os.path.normpath(path))
    with open_plans(src, form=form, platform=platform, name=name) as plans:
        if tags and len(plans) > 1:
            raise UsageError(f"import {path}: --tag needs a single image, found {len(plans)}")
        out = []
        for plan in plans:
            if tags:
                plan.tags = list(tags)
            out.append(import_plan(store, plan, progress))
        return out


def sniff_media_type(store: Store, digest: str, oci: bool) -> str:
    with store.blobs.open(digest) as f:
        head = f.read(4)
    if head.startswith(fmt.GZIP_MAGIC):
        return fmt.MT_OCI_LAYER_GZIP if oci else fmt.MT_DOCKER_LAYER_GZIP
    if head.startswith(fmt.ZSTD_MAGIC):
        return fmt.MT_OCI_LAYER_ZSTD
    return fmt.MT_OCI_LAYER if oci else fmt.MT_DOCKER_LAYER


class _Txn:
    """Blobs and layers created by one import, for rollback on failure."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.blobs: list[str] = []
        self.layers: list[str] = []

    def put(self, data: bytes, expected: str | None, what: str) -> str:
        import io

        digest, _size, created = self.store.blobs.put(io.BytesIO(data), expected, what=what)
        if created:
            self.blobs.append(digest)
        return digest

    def rollback(self) -> None:
        from .gc import referenced

        lock = self.store.gc_lock(shared=False)
        if not lock.acquire(blocking=False):
            log.info("import failed; other imports in flight, leaving its blobs for gc")
            return
        try:
            blobs, layers = referenced(self.store)
            for d in self.blobs:
                if d not in blobs:
                    self.store.blobs.remove(d)
            for d in self.layers:
                if d not in layers:
                    rmtree(os.path.join(self.store.layers_dir, d[7:]))
        finally:
            lock.release()


def import_plan(store: Store, plan: ImagePlan, progress: ProgressFn | None = None) -> Image:
    """Import one planned image atomically (see module docstring)."""
    txn = _Txn(store)
    try:
        with store.importing():
            return _import(store, plan, progress, txn)
    except BaseException:
        txn.rollback()
        raise


def _emit(progress: ProgressFn | None, index: int, count: int, name: str, status: str,
          total: int | None) -> Any:
    if progress is None:
        return None
    done = [0]
    progress(ProgressEvent(index, count, name, 0, total, status))

    def step(n: int) -> None:
        done[0] += n
        progress(ProgressEvent(index, count, name, done[0], total, status))
    return step


def _store_layer(store: Store, lp: LayerPlan, want: str | None, index: int, count: int,
                 progress: ProgressFn | None, txn: _Txn) -> tuple[str, int, str | None]:
    """Copy one blob in (verified) and make sure its layer exists; (digest, size, diff_id)."""
    if lp.digest is not None and store.has_blob(lp.digest):
        digest = lp.digest
        size = os.path.getsize(store.blob_path(digest))
        if progress:
            progress(ProgressEvent(index, count, digest, size, size, "exists"))
    else:
        step = _emit(progress, index, count, lp.digest or "layer", "copying", lp.size)
        with lp.open() as src:
            digest, size, created = store.blobs.put(src, lp.digest, progress=step,
                                                    what=f"layer {index + 1}")
        if created:
            txn.blobs.append(digest)
    if want is not None and store.has_layer(want):
        layer = store.get_layer(want)
        if digest not in layer.digests:
            # A new compressed form of a known DiffID: prove it before trusting it.
            store.verify_blob_diff_id(digest, want)
            store.ensure_layer(store.blob_reader(digest), want, digest=digest)
        return digest, size, want
    step = _emit(progress, index, count, digest, "unpacking", size)
    had = set(os.listdir(store.layers_dir))
    layer = store.ensure_layer(store.blob_reader(digest), want, digest=digest, progress=step)
    if layer.diff_id[7:] not in had:
        txn.layers.append(layer.diff_id)
    return digest, size, layer.diff_id


def _import(store: Store, plan: ImagePlan, progress: ProgressFn | None, txn: _Txn) -> Image:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    count = len(plan.layers)
    if plan.config is None:
        return _import_raw(store, plan, progress, txn, now)
    cfg_digest = sha256_bytes(plan.config)
    if plan.config_digest is not None and cfg_digest != plan.config_digest:
        raise DigestMismatch(f"verify config: content hashes to {cfg_digest}, manifest says "
                             f"{plan.config_digest}")
    cfg = parse_json(plan.config, f"image config {cfg_digest}")
    rootfs = cfg.get("rootfs") if isinstance(cfg, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise BadImage(f"parse image config {cfg_digest}: no rootfs.diff_ids list")
    diff_ids = [check_digest(d, f"config {cfg_digest} rootfs.diff_ids") for d in diff_ids]
    if len(diff_ids) != count:
        raise BadImage(f"parse image config {cfg_digest}: {len(diff_ids)} diff_ids for "
                       f"{count} layers")
    if store.has_image(cfg_digest):
        log.info("image %s already stored; tagging only", cfg_digest)
        with contextlib.suppress(NotFound):  # removed meanwhile: import it again
            return store.write_image({"id": cfg_digest, "diff_ids": diff_ids}, plan.tags)
    man_doc: dict[str, Any] | None = None
    if plan.manifest is not None:
        doc = parse_json(plan.manifest, f"manifest {plan.manifest_digest}")
        if not isinstance(doc, dict):
            raise BadImage(f"parse manifest {plan.manifest_digest}: want a JSON object")
        man_doc = doc
    txn.put(plan.config, cfg_digest, "config")
    layers = []
    for i, lp in enumerate(plan.layers):
        digest, size, _ = _store_layer(store, lp, diff_ids[i], i, count, progress, txn)
        layer = store.get_layer(diff_ids[i])
        mt = lp.media_type or sniff_media_type(store, digest, oci=False)
        layers.append({"digest": digest, "diff_id": diff_ids[i], "media_type": mt,
                       "size": layer.size, "compressed_size": size})
    if plan.manifest is None or man_doc is None:
        manifest = synth_manifest(cfg_digest, len(plan.config), layers,
                                  oci=any(x["media_type"] == fmt.MT_OCI_LAYER_ZSTD
                                          for x in layers))
        man_doc = json.loads(manifest)
    else:
        manifest = plan.manifest
    man_digest = txn.put(manifest, None, "manifest")
    rec = _record(cfg_digest, cfg, man_doc, man_digest, layers, diff_ids, now, plan.source)
    return store.write_image(rec, plan.tags)


def _record(cfg_digest: str, cfg: dict[str, Any], man: dict[str, Any], man_digest: str,
            layers: list[dict[str, Any]], diff_ids: list[str], now: str,
            source: str) -> dict[str, Any]:
    chains = chain_ids(diff_ids)
    for x, c in zip(layers, chains, strict=True):
        x["chain_id"] = c
    return {
        "id": cfg_digest, "config_digest": cfg_digest, "manifest_digest": man_digest,
        "manifest_media_type": man.get("mediaType") or fmt.MT_OCI_MANIFEST,
        "diff_ids": diff_ids, "chain_ids": chains, "layers": layers,
        "created": cfg.get("created", ""), "imported": now,
        "size": sum(int(x["size"]) for x in layers), "source": source,
        "os": cfg.get("os", ""), "architecture": cfg.get("architecture", ""),
        "config": cfg, "manifest": man,
    }


def synth_manifest(cfg_digest: str, cfg_size: int, layers: list[dict[str, Any]],
                   oci: bool) -> bytes:
    """A schema2 manifest for sources that carry none (docker-archive, raw layers)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": fmt.MT_OCI_MANIFEST if oci else fmt.MT_DOCKER_MANIFEST,
        "config": {"mediaType": fmt.MT_OCI_CONFIG if oci else fmt.MT_DOCKER_CONFIG,
                   "size": cfg_size, "digest": cfg_digest},
        "layers": [{"mediaType": _as_oci(x["media_type"]) if oci else x["media_type"],
                    "size": x["compressed_size"], "digest": x["digest"]} for x in layers],
    }
    return json.dumps(doc, indent=3).encode()


def _as_oci(mt: str) -> str:
    return {fmt.MT_DOCKER_LAYER: fmt.MT_OCI_LAYER,
            fmt.MT_DOCKER_LAYER_GZIP: fmt.MT_OCI_LAYER_GZIP}.get(mt, mt)


def _import_raw(store: Store, plan: ImagePlan, progress: ProgressFn | None, txn: _Txn,
                now: str) -> Image:
    digest, size, diff_id = _store_layer(store, plan.layers[0], None, 0, 1, progress, txn)
    assert diff_id is not None
    layer = store.get_layer(diff_id)
    cfg = {
        "created": now,
        "architecture": _ARCH.get(pyplatform.machine(), pyplatform.machine()),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": now, "created_by": "cowfs import (raw layer)"}],
    }
    cfg_bytes = json.dumps(cfg).encode()
    cfg_digest = txn.put(cfg_bytes, None, "config")
    layers = [{"digest": digest, "diff_id": diff_id, "size": layer.size,
               "compressed_size": size,
               "media_type": sniff_media_type(store, digest, oci=True)}]
    manifest = synth_manifest(cfg_digest, len(cfg_bytes), layers, oci=True)
    man_digest = txn.put(manifest, None, "manifest")
    rec = _record(cfg_digest, cfg, json.loads(manifest), man_digest, layers, [diff_id], now,
                  "raw")
    return store.write_image(rec, plan.tags)

