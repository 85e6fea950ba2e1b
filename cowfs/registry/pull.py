"""``pull``: fetch an image from a registry into the store.

Owns: the pull pipeline. Layers download in parallel (bounded) into resumable
partial files under ``<store>/downloads``; the store imports the image through
``Store.import_layers``, which unpacks layer *i* as soon as its download is done
while later layers are still downloading. A blob the store already has is never
fetched again; the result is identical to importing the same image from an archive
(same blobs, DiffIDs and image ID).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from .. import format as fmt
from ..errors import RegistryError
from ..store import Image, Store
from .client import RegistryClient
from .distribution import Platform, Repository
from .reference import parse_reference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferEvent:
    """Progress of one blob: ``done`` of ``total`` bytes; status is a short word."""

    index: int
    count: int
    digest: str
    done: int
    total: int | None
    status: str  # waiting | downloading | exists | unpacking | uploading | mounted | done


TransferFn = Callable[[TransferEvent], None]


def downloads_dir(store: Store) -> str:
    path = os.path.join(store.root, fmt.DOWNLOADS_DIR)
    os.makedirs(path, exist_ok=True)
    return path


def pull(store: Store, ref_text: str, *, platform: str = "linux/amd64",
         insecure: bool = False, creds: str | None = None, jobs: int = 3,
         tag: str | None = None, progress: TransferFn | None = None) -> Image:
    """Pull ``ref_text`` into ``store`` and tag it; returns the stored image.

    Raises:
        RegistryError: protocol, auth or transfer failure (after retries).
        DigestMismatch: the registry served content that does not match its digest;
            nothing of that blob is stored.
    """
    ref = parse_reference(ref_text)
    client = RegistryClient(ref.registry, insecure=insecure, creds=creds)
    downloads = _Downloads()
    try:
        repo = Repository(client, ref.repository)
        manifest, _index = repo.resolve_image_manifest(ref.reference, Platform.parse(platform))
        doc = manifest.doc
        config_desc = doc.get("config")
        layer_descs = doc.get("layers")
        if not isinstance(config_desc, dict) or not isinstance(layer_descs, list):
            raise RegistryError(f"{ref}: manifest has no config or layers")
        cdigest = str(config_desc.get("digest", ""))
        if store.has_blob(cdigest):
            with open(store.blob_path(cdigest), "rb") as f:
                config = f.read()
        else:
            config = repo.get_blob_bytes(cdigest)
        if store.has_image(cdigest):
            # Already stored (maybe from other compressed blobs): the store only tags it,
            # so nothing is downloaded.
            openers = [_Download(store, str(d.get("digest", "")), None) for d in layer_descs
                       if isinstance(d, dict)]
        else:
            openers = downloads.start(store, repo, layer_descs, jobs, progress)
        tags = [tag or ref.local_name]
        try:
            image = store.import_layers([o.open for o in openers], config, manifest.raw,
                                        tags=tags)
        except BaseException:
            for o in openers:
                o.cancel()
            raise
        for o in openers:
            o.finish()
        if progress:
            for i, d in enumerate(layer_descs):
                progress(TransferEvent(i, len(layer_descs), d["digest"], d.get("size", 0),
                                       d.get("size"), "done"))
        return image
    finally:
        downloads.stop()  # no worker may use the client (or leave a socket) after this
        client.close()


class _Download:
    """One layer blob: a future for its partial file, opened by the store when ready."""

    def __init__(self, store: Store, digest: str, future: cf.Future[str] | None) -> None:
        self.store = store
        self.digest = digest
        self.future = future

    def open(self) -> BinaryIO:
        if self.future is None:
            return self.store.blobs.open(self.digest)
        path = self.future.result()
        return open(path, "rb")

    def cancel(self) -> None:
        if self.future is not None:
            self.future.cancel()

    def finish(self) -> None:
        """Remove the partial file once the store holds the blob."""
        if self.future is not None and self.future.done() and not self.future.cancelled():
            with contextlib.suppress(Exception):
                path = self.future.result()
                if self.store.has_blob(self.digest):
                    os.unlink(path)


class _Cancelled(Exception):
    """Raised inside a download when the pull no longer needs it."""


class _Downloads:
    """The pull's download workers: started in parallel, stopped before the client closes."""

    def __init__(self) -> None:
        self.pool: cf.ThreadPoolExecutor | None = None
        self.cancel = threading.Event()

    def stop(self) -> None:
        """Cancel what has not started, end running downloads at their next chunk, and
        wait for the workers (a download the store never asked for ends here too)."""
        self.cancel.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def start(self, store: Store, repo: Repository, descs: list[Any], jobs: int,
              progress: TransferFn | None) -> list[_Download]:
        pool = self.pool = cf.ThreadPoolExecutor(max_workers=max(1, jobs),
                                                 thread_name_prefix="pull")
        cancel = self.cancel
        out: list[_Download] = []
        lock = threading.Lock()
        count = len(descs)
        for i, desc in enumerate(descs):
            if not isinstance(desc, dict) or "digest" not in desc:
                raise RegistryError(f"manifest layer {i} has no digest")
            digest = str(desc["digest"])
            size = desc.get("size")
            if store.has_blob(digest):
                if progress:
                    progress(TransferEvent(i, count, digest, size or 0, size, "exists"))
                out.append(_Download(store, digest, None))
                continue
            hexpart = digest.partition(":")[2]
            dest = os.path.join(downloads_dir(store), f"{hexpart}.partial")

            def fetch(i: int = i, digest: str = digest, size: int | None = size,
                      dest: str = dest) -> str:
                done = [0]

                def step(n: int) -> None:
                    if cancel.is_set():
                        raise _Cancelled(digest)
                    with lock:
                        done[0] += n
                    if progress:
                        progress(TransferEvent(i, count, digest, done[0], size,
                                               "downloading"))

                repo.download_blob(digest, dest, size=size, progress=step)
                return dest

            if progress:
                progress(TransferEvent(i, count, digest, 0, size, "waiting"))
            out.append(_Download(store, digest, pool.submit(fetch)))
        return out
