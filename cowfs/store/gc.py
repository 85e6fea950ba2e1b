"""Garbage collection: remove layers and blobs that no image references.

Owns: the reference walk (images → config, manifest, layer blobs, DiffIDs;
containers reference images, and `Store.remove_image` never deletes an image a
container uses) and the deletion of what is left. Must not delete images, tags or
containers. Runs under the exclusive gc lock, so no import is in flight.
"""

from __future__ import annotations

import json
import logging
import os

from .. import format as fmt
from .lock import FileLock
from .store import Store, rmtree

log = logging.getLogger(__name__)


def referenced(store: Store) -> tuple[set[str], set[str]]:
    """(blob digests, layer DiffIDs) that some image record references."""
    blobs: set[str] = set()
    layers: set[str] = set()
    for iid in store.image_ids():
        try:
            with open(os.path.join(store.images_dir, iid[7:] + ".json"), "rb") as f:
                rec = json.load(f)
        except (OSError, ValueError):
            log.warning("gc: unreadable image record %s; keeping everything", iid)
            raise
        blobs.add(rec.get("config_digest", iid))
        if rec.get("manifest_digest"):
            blobs.add(rec["manifest_digest"])
        for x in rec.get("layers", []):
            blobs.add(x["digest"])
        layers.update(rec.get("diff_ids", []))
    return blobs, layers


def collect(store: Store, *, blocking: bool = True) -> list[str]:
    """Delete unreferenced layers and blobs; returns their digests.

    With ``blocking=False`` it returns [] at once if an import holds the gc lock.
    """
    lock = store.gc_lock(shared=False)
    if not lock.acquire(blocking=blocking):
        log.info("gc: imports in flight, skipped")
        return []
    removed: list[str] = []
    try:
        with store.lock():
            blobs, layers = referenced(store)
            store.clean_tmp()
        for name in sorted(os.listdir(store.layers_dir)):
            diff_id = "sha256:" + name
            if diff_id in layers:
                continue
            # Rename out of layers/ first: the layer vanishes atomically, then is deleted.
            grave = os.path.join(store.tmp_dir, f"gc-{name}")
            os.rename(os.path.join(store.layers_dir, name), grave)
            with FileLock(grave):  # live staging, not debris, for a concurrent open
                rmtree(grave)
            removed.append(diff_id)
        for digest in store.blobs.digests():
            if digest not in blobs:
                store.blobs.remove(digest)
                removed.append(digest)
        for name in os.listdir(store.locks_dir):
            if name.startswith("layer-") and not os.path.isdir(
                    os.path.join(store.layers_dir, name[6:])):
                path = os.path.join(store.locks_dir, name)
                probe = store.layer_lock("sha256:" + name[6:])
                if probe.acquire(blocking=False):
                    os.unlink(path)
                    probe.release()
    finally:
        lock.release()
    if removed:
        log.info("gc: removed %d layers/blobs", len(removed))
    _ = fmt
    return removed
