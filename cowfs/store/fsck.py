"""Check the store's invariants (what tests run after every mutation).

Owns: read-only checks: store.json; every image record's config/manifest blobs,
layers and ChainIDs; every layer's layer.json against its dir; every blob hashing
to its name (``deep``); refs pointing at images; no stale entries in tmp/. Must
not repair anything.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .. import format as fmt
from .cas import chain_ids, sha256_file
from .store import Store


def _load(path: str, problems: list[str]) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: unreadable: {exc}")
        return None


def check(store: Store, *, deep: bool = True) -> list[str]:
    problems: list[str] = []
    meta = _load(os.path.join(store.root, fmt.STORE_META), problems)
    if isinstance(meta, dict) and meta.get("version") != fmt.STORE_VERSION:
        problems.append(f"store.json: version {meta.get('version')!r}")
    blobs = set(store.blobs.digests())
    for iid in store.image_ids():
        path = os.path.join(store.images_dir, iid[7:] + ".json")
        rec = _load(path, problems)
        if not isinstance(rec, dict):
            continue
        if rec.get("id") != iid:
            problems.append(f"image {iid}: record says id {rec.get('id')!r}")
        for key in ("config_digest", "manifest_digest"):
            if rec.get(key) not in blobs:
                problems.append(f"image {iid}: {key} blob {rec.get(key)} missing")
        diff_ids = rec.get("diff_ids", [])
        if rec.get("chain_ids") != chain_ids(diff_ids):
            problems.append(f"image {iid}: chain_ids do not match diff_ids")
        cfg_ids = rec.get("config", {}).get("rootfs", {}).get("diff_ids")
        if cfg_ids != diff_ids:
            problems.append(f"image {iid}: diff_ids differ from config rootfs.diff_ids")
        for x in rec.get("layers", []):
            if x.get("digest") not in blobs:
                problems.append(f"image {iid}: layer blob {x.get('digest')} missing")
        for d in diff_ids:
            if not store.has_layer(d):
                problems.append(f"image {iid}: layer {d} missing")
    for name in sorted(os.listdir(store.layers_dir)):
        ldir = os.path.join(store.layers_dir, name)
        meta = _load(os.path.join(ldir, fmt.LAYER_META), problems)
        if not isinstance(meta, dict):
            continue
        if meta.get("diff_id") != "sha256:" + name:
            problems.append(f"layer {name}: layer.json says diff_id {meta.get('diff_id')!r}")
        diff = os.path.join(ldir, fmt.LAYER_DIFF)
        if not os.path.isdir(diff) or os.path.islink(diff):
            problems.append(f"layer {name}: diff/ missing")
    for digest in sorted(blobs):
        if deep and sha256_file(store.blob_path(digest)) != digest:
            problems.append(f"blob {digest}: content does not hash to its name")
    ids = set(store.image_ids())
    for ref, iid in store.refs.load().items():
        if iid not in ids:
            problems.append(f"ref {ref}: points at missing image {iid}")
    for path in store.stale_tmp():
        problems.append(f"tmp: stale staging entry {os.path.basename(path)}")
    return problems
