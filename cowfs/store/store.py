"""The layer store: blobs, DiffID-keyed layers, image records and names (SPEC §2).

Owns: the store directory (layout in ``cowfs/format.py``), publication of layers
(unpack into ``tmp/``, syncfs, rename), image records and tags, and the locking
protocol below. Must not parse archives (images.py), untar (unpack.py) or mount.

Locking:
* ``lock`` (store-wide, exclusive, short): refs.json and images/*.json updates,
  tmp/ cleanup at open, rmi.
* ``run/locks/layer-<hex>`` (per layer, exclusive): held while a layer with that
  DiffID is unpacked, so two importers of one layer unpack it once.
* ``run/locks/gc`` (shared by every import for its duration, exclusive by gc): gc
  never deletes a blob or layer an import in flight has stored but not yet recorded.
* every staging entry in ``tmp/`` is flocked by its writer; an unlocked entry is
  stale (its writer died) and is removed when a store is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .. import format as fmt
from ..errors import BadImage, Conflict, DigestMismatch, NotFound, StoreError, UsageError
from .cas import BlobStore, chain_ids, check_digest, digest_hex, fsync_dir, sha256_bytes
from .lock import FileLock, is_locked
from .refs import RefIndex, normalize_ref, write_json_atomic

log = logging.getLogger(__name__)

OWN_TMP_PREFIXES = ("blob-", "layer-", "json-", "gc-", "stage-")
FOREIGN_STALE_AFTER = 3600.0


@dataclass(frozen=True)
class ProgressEvent:
    """Import progress: layer ``index`` of ``count`` has ``done`` of ``total`` bytes."""

    index: int
    count: int
    name: str
    done: int
    total: int | None
    status: str = "copying"   # copying | unpacking | exists | done


ProgressFn = Callable[[ProgressEvent], None]
BlobOpener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class Layer:
    """An unpacked layer: ``path`` is its diff dir in kernel overlay format."""

    diff_id: str
    digest: str | None
    path: str
    size: int
    media_type: str
    compressed_size: int | None = None
    created: str = ""
    digests: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    """An image record; ``layers`` lists per-layer descriptors, bottom first."""

    id: str
    tags: tuple[str, ...]
    config: dict[str, Any]
    manifest: dict[str, Any]
    diff_ids: tuple[str, ...]
    chain_ids: tuple[str, ...]
    layer_digests: tuple[str, ...]
    created: str
    size: int
    manifest_digest: str = ""
    manifest_media_type: str = ""
    layer_media_types: tuple[str, ...] = ()
    layer_sizes: tuple[int, ...] = ()
    imported: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def rmtree(path: str) -> None:
    """Remove a tree even if the layer made some dirs read-only (rootless case)."""
    def onerror(func: Any, p: str, exc: Any) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(p) and not os.path.islink(p):
            with contextlib.suppress(OSError):
                os.chmod(p, stat.S_IRWXU)
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=onerror)
        else:
            os.unlink(path)


class Store:
    """An open store at ``root``; see `open_store`."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.tmp_dir = os.path.join(self.root, fmt.TMP_DIR)
        self.run_dir = os.path.join(self.root, fmt.RUN_DIR)
        self.containers_dir = os.path.join(self.root, fmt.CONTAINERS_DIR)
        self.volumes_dir = os.path.join(self.root, fmt.VOLUMES_DIR)
        self.layers_dir = os.path.join(self.root, fmt.LAYERS_DIR)
        self.images_dir = os.path.join(self.root, fmt.IMAGES_DIR)
        self.locks_dir = os.path.join(self.run_dir, "locks")
        try:
            for d in (self.root, self.tmp_dir, self.run_dir, self.containers_dir,
                      self.volumes_dir, self.layers_dir, self.images_dir, self.locks_dir):
                os.makedirs(d, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"open store {self.root}: {exc.strerror}") from None
        self.blobs = BlobStore(self.root, self.tmp_dir)
        self.refs = RefIndex(os.path.join(self.root, fmt.REFS_FILE), self.tmp_dir)
        with self.lock():
            self.meta = self._init_meta()
            self.clean_tmp()
        self.dialect = fmt.WhiteoutDialect(self.meta["whiteout_dialect"])

    # --- locks and metadata ---------------------------------------------------------------

    def lock(self) -> FileLock:
        """The store-wide lock (exclusive; keep critical sections short)."""
        return FileLock(os.path.join(self.root, fmt.STORE_LOCK))

    def layer_lock(self, diff_id: str) -> FileLock:
        return FileLock(os.path.join(self.locks_dir, f"layer-{digest_hex(diff_id)}"))

    def gc_lock(self, *, shared: bool) -> FileLock:
        return FileLock(os.path.join(self.locks_dir, "gc"), shared=shared)

    def _init_meta(self) -> dict[str, Any]:
        path = os.path.join(self.root, fmt.STORE_META)
        try:
            with open(path, "rb") as f:
                meta = json.load(f)
        except FileNotFoundError:
            from .unpack import detect_rootless

            # trusted.* xattrs need root in the initial user namespace; else userxattr.
            dialect = (fmt.WhiteoutDialect.CHARDEV_USERXATTR if detect_rootless()
                       else fmt.WhiteoutDialect.CHARDEV)
            meta = {"version": fmt.STORE_VERSION, "whiteout_dialect": dialect.value,
                    "created": _now()}
            write_json_atomic(path, meta, self.tmp_dir)
            return meta
        except ValueError as exc:
            raise StoreError(f"open store {self.root}: {fmt.STORE_META} is not JSON: {exc}") \
                from None
        if not isinstance(meta, dict) or meta.get("version") != fmt.STORE_VERSION:
            raise StoreError(f"open store {self.root}: unsupported store version "
                             f"{meta.get('version') if isinstance(meta, dict) else meta!r}")
        try:
            fmt.WhiteoutDialect(meta.get("whiteout_dialect"))
        except ValueError:
            raise StoreError(f"open store {self.root}: unknown whiteout dialect "
                             f"{meta.get('whiteout_dialect')!r}") from None
        return meta

    def stale_tmp(self) -> list[str]:
        """Entries of tmp/ whose writer is gone (nobody holds their flock).

        Entries the store itself names (``blob-``, ``layer-``, ``json-``, ``gc-``,
        ``stage-``) are always flocked while live. Other parts' entries that are not
        flocked count as stale only after `FOREIGN_STALE_AFTER` seconds untouched.
        """
        out = []
        now = time.time()
        for name in sorted(os.listdir(self.tmp_dir)):
            path = os.path.join(self.tmp_dir, name)
            if not name.startswith(OWN_TMP_PREFIXES):
                try:
                    if now - os.lstat(path).st_mtime < FOREIGN_STALE_AFTER:
                        continue
                except FileNotFoundError:
                    continue
            if not is_locked(path):
                out.append(path)
        return out

    @contextlib.contextmanager
    def staging_file(self, prefix: str = "stage-") -> Iterator[tuple[str, BinaryIO]]:
        """A flocked temp file in tmp/ (same fs as the store), removed on exit.

        Use it for anything staged in tmp/ so a concurrent `open_store` never mistakes
        it for debris.
        """
        import tempfile

        fd, path = tempfile.mkstemp(prefix=prefix, dir=self.tmp_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with os.fdopen(os.dup(fd), "w+b") as f:
                yield path, f
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)

    def clean_tmp(self) -> list[str]:
        """Remove stale staging entries (call with the store lock held)."""
        stale = self.stale_tmp()
        for path in stale:
            log.info("store %s: removing stale staging entry %s", self.root, path)
            rmtree(path)
        return stale

    # --- blobs ------------------------------------------------------------------------------

    def put_blob(self, stream: BinaryIO, expected_digest: str | None = None) -> str:
        """Verified CAS write; DigestMismatch (nothing stored) if it hashes differently."""
        return self.blobs.put(stream, expected_digest)[0]

    def has_blob(self, digest: str) -> bool:
        return self.blobs.has(digest)

    def blob_path(self, digest: str) -> str:
        return self.blobs.path(digest)

    # --- layers -----------------------------------------------------------------------------

    def _layer_dir(self, diff_id: str) -> str:
        return os.path.join(self.layers_dir, digest_hex(diff_id))

    def get_layer(self, diff_id: str) -> Layer:
        d = self._layer_dir(check_digest(diff_id, "layer"))
        try:
            with open(os.path.join(d, fmt.LAYER_META), "rb") as f:
                meta = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"layer {diff_id}: not in the store") from None
        except ValueError as exc:
            raise StoreError(f"read layer {diff_id}: layer.json is not JSON: {exc}") from None
        return Layer(diff_id=meta["diff_id"], digest=meta.get("digest"),
                     path=os.path.join(d, fmt.LAYER_DIFF), size=int(meta.get("size", 0)),
                     media_type=meta.get("media_type", fmt.MT_OCI_LAYER),
                     compressed_size=meta.get("compressed_size"),
                     created=meta.get("created", ""), digests=tuple(meta.get("digests", ())))

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isfile(os.path.join(self._layer_dir(diff_id), fmt.LAYER_META))

    def layers(self) -> list[Layer]:
        out = []
        for name in sorted(os.listdir(self.layers_dir)):
            with contextlib.suppress(NotFound, BadImage):
                out.append(self.get_layer("sha256:" + name))
        return out

    def ensure_layer(self, blob_opener: BlobOpener, diff_id: str | None = None, *,
                     digest: str | None = None,
                     progress: Callable[[int], None] | None = None) -> Layer:
        """Return the layer with ``diff_id``, unpacking ``blob_opener()`` if it is new.

        Deduplicated by DiffID and safe against concurrent importers (per-layer lock;
        the loser of a publication race discards its copy). The unpacked tree is staged
        in tmp/, flushed with syncfs and renamed into layers/. Raises DigestMismatch if
        the content's DiffID is not ``diff_id`` (nothing is published).
        """
        if diff_id is not None:
            check_digest(diff_id, "diff_id")
            if self.has_layer(diff_id):
                return self._note_digest(diff_id, digest)
            with self.layer_lock(diff_id):
                if self.has_layer(diff_id):
                    return self._note_digest(diff_id, digest)
                return self._unpack(blob_opener, diff_id, digest, progress)
        return self._unpack(blob_opener, None, digest, progress)

    def _unpack(self, blob_opener: BlobOpener, want: str | None, digest: str | None,
                progress: Callable[[int], None] | None) -> Layer:
        # lazy (here and below): reading images (``cowfs run IMAGE``) needs neither the
        # extractor nor the decompressors, ~10 ms of start-up
        import tempfile

        from .._sys.syncfs import syncfs
        from .unpack import unpack_layer

        stage = tempfile.mkdtemp(prefix="layer-", dir=self.tmp_dir)
        stage_lock = FileLock(stage)
        stage_lock.acquire()
        try:
            diff = os.path.join(stage, fmt.LAYER_DIFF)
            os.mkdir(diff, 0o755)
            rootless = self.dialect is fmt.WhiteoutDialect.CHARDEV_USERXATTR
            with blob_opener() as src:
                res = unpack_layer(src, diff, rootless=rootless, progress=progress)
            if want is not None and res.diff_id != want:
                raise DigestMismatch(f"verify layer {digest or want}: uncompressed content "
                                     f"hashes to {res.diff_id}, config says {want}")
            if digest is not None and res.digest != digest:
                raise DigestMismatch(f"verify layer blob: content hashes to {res.digest}, "
                                     f"want {digest}")
            for w in res.warnings:
                log.warning("layer %s: %s", res.diff_id, w)
            meta = {"diff_id": res.diff_id, "digest": res.digest, "digests": [res.digest],
                    "size": res.size, "compressed_size": res.compressed_size,
                    "media_type": res.media_type, "created": _now(),
                    "warnings": list(res.warnings)}
            with open(os.path.join(stage, fmt.LAYER_META), "w") as f:
                json.dump(meta, f, indent=1)
                f.write("\n")
            fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
            try:
                syncfs(fd)
            finally:
                os.close(fd)
            if want is None:
                # DiffID learnt only now (raw layer): take its lock before publishing.
                with self.layer_lock(res.diff_id):
                    return self._publish(stage, res.diff_id, res.digest)
            return self._publish(stage, res.diff_id, res.digest)
        finally:
            stage_lock.release()
            rmtree(stage)

    def _publish(self, stage: str, diff_id: str, digest: str) -> Layer:
        final = self._layer_dir(diff_id)
        if self.has_layer(diff_id):
            return self._note_digest(diff_id, digest)
        if os.path.lexists(final):  # a dir without layer.json: debris; never half-visible
            rmtree(final)
        os.rename(stage, final)
        fsync_dir(self.layers_dir)
        log.info("store: published layer %s", diff_id)
        return self.get_layer(diff_id)

    def _note_digest(self, diff_id: str, digest: str | None) -> Layer:
        """Remember another compressed digest known to produce this DiffID."""
        layer = self.get_layer(diff_id)
        if digest is None or digest in layer.digests:
            return layer
        path = os.path.join(self._layer_dir(diff_id), fmt.LAYER_META)
        with self.lock():
            with open(path, "rb") as f:
                meta = json.load(f)
            meta.setdefault("digests", []).append(digest)
            write_json_atomic(path, meta, self.tmp_dir)
        return self.get_layer(diff_id)

    def verify_blob_diff_id(self, digest: str, diff_id: str) -> None:
        """Check that a stored blob decompresses to ``diff_id`` (nothing is written)."""
        import hashlib

        from .compress import open_decompressed

        h = hashlib.sha256()
        with self.blobs.open(digest) as raw:
            stream, _mt = open_decompressed(raw)
            while chunk := stream.read(1 << 20):
                h.update(chunk)
        got = "sha256:" + h.hexdigest()
        if got != diff_id:
            raise DigestMismatch(f"verify layer {digest}: uncompressed content hashes to "
                                 f"{got}, config says {diff_id}")

    # --- images and names -------------------------------------------------------------------

    def _image_path(self, image_id: str) -> str:
        return os.path.join(self.images_dir, digest_hex(image_id) + ".json")

    def _read_image(self, image_id: str, refs: dict[str, str]) -> Image:
        path = self._image_path(image_id)
        try:
            with open(path, "rb") as f:
                rec = json.load(f)
        except FileNotFoundError:
            raise NotFound(f"image {image_id}: not in the store") from None
        except ValueError as exc:
            raise StoreError(f"read image {path}: not JSON: {exc}") from None
        return image_from_record(rec, tuple(t for t, i in refs.items() if i == image_id))

    def image_ids(self) -> list[str]:
        return ["sha256:" + n.removesuffix(".json") for n in sorted(os.listdir(self.images_dir))
                if n.endswith(".json") and len(n) == 69]

    def images(self) -> list[Image]:
        refs = self.refs.load()
        out = []
        for iid in self.image_ids():
            with contextlib.suppress(NotFound):
                out.append(self._read_image(iid, refs))
        return sorted(out, key=lambda i: (i.imported, i.id), reverse=True)

    def resolve(self, ref_or_id: str) -> str:
        """Image id for a name, a full id, or a unique id prefix (like docker)."""
        refs = self.refs.load()
        text = ref_or_id.strip()
        if text.startswith("sha256:") and len(text) == 71:
            if os.path.isfile(self._image_path(text)):
                return text
            raise NotFound(f"image {ref_or_id}: not in the store")
        with contextlib.suppress(UsageError):
            name = normalize_ref(text)
            if name in refs:
                return refs[name]
        prefix = text.removeprefix("sha256:")
        if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
            hits = [i for i in self.image_ids() if i[7:].startswith(prefix)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UsageError(f"image {ref_or_id}: ambiguous id prefix ({len(hits)} images)")
        raise NotFound(f"image {ref_or_id}: not in the store")

    def get_image(self, ref_or_id: str) -> Image:
        """The image named by a tag, id or unique id prefix; NotFound otherwise."""
        return self._read_image(self.resolve(ref_or_id), self.refs.load())

    def layer_dirs(self, image: Image | str) -> list[str]:
        """Diff dirs of an image, TOP FIRST (ready for ``lowerdir=``)."""
        img = self.get_image(image) if isinstance(image, str) else image
        dirs = []
        for d in reversed(img.diff_ids):
            path = os.path.join(self._layer_dir(d), fmt.LAYER_DIFF)
            if not os.path.isdir(path):
                raise StoreError(f"image {img.short_id}: layer {d} is missing (run fsck)")
            dirs.append(path)
        return dirs

    def tag(self, image: Image | str, name: str) -> str:
        """Point ``name`` (normalized to name:tag) at an image; moves an existing tag."""
        ref = normalize_ref(name)
        with self.lock():
            iid = image.id if isinstance(image, Image) else self.resolve(image)
            refs = self.refs.load()
            refs[ref] = iid
            self.refs.save(refs)
        return ref

    def untag(self, name: str) -> str:
        ref = normalize_ref(name)
        with self.lock():
            refs = self.refs.load()
            if ref not in refs:
                raise NotFound(f"untag {name}: no such image name")
            del refs[ref]
            self.refs.save(refs)
        return ref

    def image_users(self, image_id: str) -> list[str]:
        """Containers whose ``containers/<id>/config.json`` names this image."""
        users = []
        refs = self.refs.load()
        for cid in sorted(os.listdir(self.containers_dir)):
            try:
                with open(os.path.join(self.containers_dir, cid, "config.json"), "rb") as f:
                    cfg = json.load(f)
            except (OSError, ValueError):
                continue
            ref = cfg.get("image_id") or cfg.get("image") if isinstance(cfg, dict) else None
            if not isinstance(ref, str):
                continue
            if ref in (image_id, image_id[7:]) or refs.get(ref) == image_id:
                users.append(cid)
            else:
                with contextlib.suppress(UsageError):
                    if refs.get(normalize_ref(ref)) == image_id:
                        users.append(cid)
        return users

    def remove_image(self, ref: str, force: bool = False, *, prune: bool = True) -> list[str]:
        """Remove a name or an image, like ``docker rmi``; returns what was removed.

        A name of an image with other names is just untagged. An image a container
        uses is refused (Conflict) unless ``force``, which removes its names but keeps
        the record while the container exists. ``prune`` then runs gc if no import is
        in flight, so the image's unshared layers and blobs go too.
        """
        removed: list[str] = []
        with self.lock():
            iid = self.resolve(ref)
            refs = self.refs.load()
            names = [t for t, i in refs.items() if i == iid]
            by_name = False
            with contextlib.suppress(UsageError):
                by_name = normalize_ref(ref) in names
            if by_name and len(names) > 1:
                del refs[normalize_ref(ref)]
                self.refs.save(refs)
                return [f"Untagged: {normalize_ref(ref)}"]
            users = self.image_users(iid)
            if users and not force:
                raise Conflict(f"remove image {ref}: in use by container(s) "
                               f"{', '.join(u[:12] for u in users)} (use -f to force)")
            for t in names:
                del refs[t]
                removed.append(f"Untagged: {t}")
            self.refs.save(refs)
            if users:
                log.warning("image %s stays (untagged) while containers use it: %s",
                            iid[7:19], ", ".join(users))
                return removed
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._image_path(iid))
            fsync_dir(self.images_dir)
            removed.append(f"Deleted: {iid}")
        if prune:
            from .gc import collect

            # a digest can name a layer and its blob (uncompressed), or an image and its
            # config blob: report each once, like docker
            for x in collect(self, blocking=False):
                if f"Deleted: {x}" not in removed:
                    removed.append(f"Deleted: {x}")
        return removed

    def gc(self) -> list[str]:
        """Remove layers and blobs no image references; returns what was removed."""
        from .gc import collect

        return collect(self, blocking=True)

    def fsck(self, *, deep: bool = True) -> list[str]:
        """Check the store's invariants; returns problems ([] when healthy)."""
        from .fsck import check

        return check(self, deep=deep)

    # --- import -----------------------------------------------------------------------------

    def import_path(self, path: str, *, tag: str | None = None, platform: str | None = None,
                    progress: ProgressFn | None = None, form: str = "auto") -> list[Image]:
        """Import every image in an archive/layout (or a raw layer tar) at ``path``."""
        from .importer import import_path

        return import_path(self, path, tag=tag, platform=platform, progress=progress, form=form)

    def import_layers(self, blobs: list[BlobOpener], config: dict[str, Any] | bytes,
                      manifest: dict[str, Any] | bytes | None = None,
                      tags: list[str] | tuple[str, ...] = (),
                      progress: ProgressFn | None = None) -> Image:
        """Import one image from layer blob openers plus its config (and manifest).

        Pass ``config``/``manifest`` as the exact bytes received to keep their digests
        (a dict is serialized compactly). ``blobs[i]`` must match the manifest's
        ``layers[i]`` (verified), or config ``rootfs.diff_ids[i]`` without a manifest.
        """
        from .importer import ImagePlan, LayerPlan, import_plan

        cfg = config if isinstance(config, bytes) else json.dumps(config).encode()
        man = manifest if isinstance(manifest, bytes) or manifest is None \
            else json.dumps(manifest).encode()
        descs: list[Any] = []
        if man is not None:
            doc = json.loads(man)
            descs = doc.get("layers", []) if isinstance(doc, dict) else []
            if len(descs) != len(blobs):
                raise BadImage(f"import: manifest lists {len(descs)} layers, got {len(blobs)}")
        layers = [LayerPlan(b, descs[i].get("digest") if descs else None,
                            descs[i].get("mediaType") if descs else None)
                  for i, b in enumerate(blobs)]
        plan = ImagePlan(cfg, None, man, sha256_bytes(man) if man else None, layers,
                         [normalize_ref(t) for t in tags], "api")
        return import_plan(self, plan, progress)

    def write_image(self, rec: dict[str, Any], tags: list[str]) -> Image:
        """Record an image (and point ``tags`` at it) under the store lock."""
        iid = check_digest(rec["id"])
        with self.lock():
            for d in rec["diff_ids"]:
                if not self.has_layer(d):
                    raise StoreError(f"record image {iid}: layer {d} vanished")
            old = None
            with contextlib.suppress(FileNotFoundError, ValueError), \
                    open(self._image_path(iid), "rb") as f:
                old = json.load(f)
            if isinstance(old, dict) and old.get("id") == iid:
                rec = old  # already stored: keep its record (manifest, blobs); just tag
            elif "config" not in rec:
                raise NotFound(f"tag image {iid}: removed meanwhile")
            else:
                write_json_atomic(self._image_path(iid), rec, self.tmp_dir)
            refs = self.refs.load()
            for t in tags:
                refs[t] = iid
            self.refs.save(refs)
            return image_from_record(rec, tuple(t for t, i in refs.items() if i == iid))

    def has_image(self, image_id: str) -> bool:
        """True if a complete record of this image (and all its layers) is stored."""
        try:
            img = self._read_image(image_id, {})
        except (NotFound, StoreError):
            return False
        return all(self.has_layer(d) for d in img.diff_ids) and all(
            self.has_blob(d) for d in (img.id, img.manifest_digest, *img.layer_digests))

    def blob_reader(self, digest: str) -> BlobOpener:
        return lambda: self.blobs.open(digest)

    @contextlib.contextmanager
    def importing(self) -> Iterator[None]:
        """Hold the shared gc lock for an import (gc waits for imports in flight)."""
        with self.gc_lock(shared=True):
            yield


def image_from_record(rec: dict[str, Any], tags: tuple[str, ...]) -> Image:
    layers = rec.get("layers", [])
    return Image(
        id=rec["id"], tags=tuple(sorted(tags)), config=rec.get("config", {}),
        manifest=rec.get("manifest", {}), diff_ids=tuple(rec["diff_ids"]),
        chain_ids=tuple(rec.get("chain_ids") or chain_ids(list(rec["diff_ids"]))),
        layer_digests=tuple(x["digest"] for x in layers), created=rec.get("created", ""),
        size=int(rec.get("size", 0)), manifest_digest=rec.get("manifest_digest", ""),
        manifest_media_type=rec.get("manifest_media_type", ""),
        layer_media_types=tuple(x.get("media_type", "") for x in layers),
        layer_sizes=tuple(int(x.get("size", 0)) for x in layers),
        imported=rec.get("imported", ""), source=rec.get("source", ""), extra=rec)


def open_store(root: str | None = None) -> Store:
    """Open (creating if needed) the store at ``root`` (default: $COWFS_ROOT or SPEC §2)."""
    return Store(root if root is not None else fmt.default_root())

