"""``push``: upload a stored image to a registry, byte-identical.

Owns: the push pipeline. The exact blobs the store keeps (compressed layers,
config, manifest) are uploaded, so the pushed digests equal the stored ones. A
blob the registry already has (HEAD) is skipped; one it has in another repository
of the same registry is cross-mounted instead of uploaded. Layers upload in
parallel (bounded); the manifest goes last.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import threading

from .. import format as fmt
from ..errors import RegistryError
from ..store import Image, Store
from .client import RegistryClient
from .distribution import Repository, sha256_digest
from .pull import TransferEvent, TransferFn
from .reference import parse_reference


def _manifest_bytes(store: Store, image: Image) -> tuple[bytes, str]:
    if image.manifest_digest and store.has_blob(image.manifest_digest):
        with open(store.blob_path(image.manifest_digest), "rb") as f:
            raw = f.read()
        media = image.manifest_media_type or json.loads(raw).get("mediaType") \
            or fmt.MT_OCI_MANIFEST
        return raw, media
    if not image.manifest:
        raise RegistryError(f"push {image.id}: the store has no manifest for this image")
    raw = json.dumps(image.manifest, separators=(",", ":")).encode()
    return raw, image.manifest.get("mediaType", fmt.MT_OCI_MANIFEST)


def push(store: Store, image_ref: str, dest: str, *, insecure: bool = False,
         creds: str | None = None, jobs: int = 3, mount_from: list[str] | None = None,
         progress: TransferFn | None = None) -> str:
    """Push ``image_ref`` from the store to ``dest``; returns the manifest digest."""
    image = store.get_image(image_ref)
    ref = parse_reference(dest)
    client = RegistryClient(ref.registry, insecure=insecure, creds=creds)
    try:
        repo = Repository(client, ref.repository)
        raw, media = _manifest_bytes(store, image)
        doc = json.loads(raw)
        blobs = [(str(d["digest"]), int(d.get("size", 0))) for d in doc.get("layers", [])]
        blobs.append((str(doc["config"]["digest"]), int(doc["config"].get("size", 0))))
        sources = [s for s in (mount_from or []) if s != ref.repository]
        count = len(blobs)
        lock = threading.Lock()

        def send(i: int, digest: str, size: int) -> None:
            if not store.has_blob(digest):
                raise RegistryError(f"push {image.short_id}: blob {digest} is not in the store")
            if repo.has_blob(digest):
                if progress:
                    progress(TransferEvent(i, count, digest, size, size, "exists"))
                return
            for src in sources:
                if repo.mount_blob(digest, src):
                    if progress:
                        progress(TransferEvent(i, count, digest, size, size, "mounted"))
                    return
            path = store.blob_path(digest)
            real = os.path.getsize(path)
            done = [0]

            def step(n: int) -> None:
                with lock:
                    done[0] += n
                if progress:
                    progress(TransferEvent(i, count, digest, done[0], real, "uploading"))

            with open(path, "rb") as f:
                repo.upload_blob(digest, f, real, progress=step)
            if progress:
                progress(TransferEvent(i, count, digest, real, real, "done"))

        with cf.ThreadPoolExecutor(max_workers=max(1, jobs),
                                   thread_name_prefix="push") as pool:
            futures = [pool.submit(send, i, d, s) for i, (d, s) in enumerate(blobs)]
            for fut in futures:
                fut.result()
        digest = repo.put_manifest(ref.digest or ref.tag or "latest", raw, media)
        if digest != sha256_digest(raw):
            raise RegistryError(f"push {dest}: registry stored the manifest as {digest}, "
                                f"expected {sha256_digest(raw)}")
        return digest
    finally:
        client.close()
