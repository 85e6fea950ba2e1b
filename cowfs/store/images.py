"""Read image archives and layouts into import plans (no writes to the store).

Owns: format detection and parsing of docker-archive (``docker save``/``podman
save``, multi-image), OCI image layout dirs and archives (nested indexes, tags from
``org.opencontainers.image.ref.name``, platform selection), containers/image
``dir:`` layouts, and raw layer tars. Must not write anything: it only opens
members in place (tar archives are read by offset, never extracted) and hands the
store a list of `ImagePlan`s. Every manifest/config is checked to be JSON of the
right shape; digests are checked by the store as blobs stream in.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, cast

from .. import format as fmt
from ..errors import BadImage, DigestMismatch, NotFound, UsageError
from .cas import check_digest, digest_hex, sha256_bytes
from .refs import normalize_ref

log = logging.getLogger(__name__)

MAX_JSON: Final = 64 << 20
FORMATS: Final = ("auto", "docker-archive", "oci", "oci-archive", "dir", "raw")
REF_NAME: Final = "org.opencontainers.image.ref.name"
INDEX_TYPES: Final = (fmt.MT_OCI_INDEX, fmt.MT_DOCKER_LIST)
MANIFEST_TYPES: Final = (fmt.MT_OCI_MANIFEST, fmt.MT_DOCKER_MANIFEST)
DEFAULT_PLATFORM: Final = "linux/amd64"


@dataclass
class LayerPlan:
    """One layer blob to import: how to open it and what it must hash to."""

    open: Callable[[], BinaryIO]
    digest: str | None = None       # expected compressed digest; None = whatever it is
    media_type: str | None = None   # None = sniff the magic
    size: int | None = None


@dataclass
class ImagePlan:
    """One image found in a source; the store turns it into an image record."""

    config: bytes | None            # None only for raw layers (the store writes one)
    config_digest: str | None       # expected digest of config (from a manifest)
    manifest: bytes | None          # None: the store synthesizes one (docker-archive, raw)
    manifest_digest: str | None
    layers: list[LayerPlan]
    tags: list[str] = field(default_factory=list)
    source: str = ""


# --- sources: read-only access to named members ------------------------------------------

class Source:
    """A directory or a tar archive holding an image; members are read-only."""

    label: str

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read(self, name: str, limit: int = MAX_JSON) -> bytes:
        if self.size(name) > limit:
            raise BadImage(f"read {self.label}:{name}: larger than {limit} bytes")
        with self.open(name) as f:
            return f.read()

    def json(self, name: str) -> Any:
        data = self.read(name)
        return parse_json(data, f"{self.label}:{name}")


def _clean(name: str) -> str:
    """Normalize a member name; refuse absolute names and ``..`` (hostile archives)."""
    stripped = name
    while stripped.startswith("./"):
        stripped = stripped[2:]
    norm = posixpath.normpath(stripped or ".")
    if name.startswith("/") or norm == ".." or norm.startswith("../") or "\x00" in name:
        raise BadImage(f"member name {name!r}: escapes the archive")
    return norm


class DirSource(Source):
    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.label = root

    def _path(self, name: str) -> str:
        path = os.path.realpath(os.path.join(self.root, _clean(name)))
        if path != self.root and not path.startswith(self.root + os.sep):
            raise BadImage(f"read {self.label}:{name}: resolves outside the layout")
        return path

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise BadImage(f"read {self.label}:{name}: missing") from None

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise BadImage(f"read {self.label}:{name}: missing") from None


class TarSource(Source):
    """Members of an uncompressed tar, read by offset from the archive file."""

    def __init__(self, path: str) -> None:
        self.label = path
        try:
            self._tf = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError) as exc:
            raise BadImage(f"read {path}: not a tar archive: {exc}") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        for ti in self._tf.getmembers():
            try:
                self._members[_clean(ti.name)] = ti
            except BadImage:
                log.warning("read %s: ignoring member %r outside the archive", path, ti.name)

    def close(self) -> None:
        self._tf.close()

    def names(self) -> list[str]:
        return list(self._members)

    def _member(self, name: str) -> tarfile.TarInfo:
        ti = self._members.get(_clean(name))
        if ti is None or not (ti.isfile() or ti.islnk() or ti.issym()):
            raise BadImage(f"read {self.label}:{name}: missing")
        return ti

    def exists(self, name: str) -> bool:
        try:
            self._member(name)
        except BadImage:
            return False
        return True

    def open(self, name: str) -> BinaryIO:
        try:
            f = self._tf.extractfile(self._member(name))
        except (KeyError, tarfile.TarError) as exc:
            raise BadImage(f"read {self.label}:{name}: {exc}") from None
        if f is None:
            raise BadImage(f"read {self.label}:{name}: not a regular file")
        return cast("BinaryIO", f)

    def size(self, name: str) -> int:
        with self.open(name) as f:
            return f.seek(0, os.SEEK_END)


def parse_json(data: bytes, label: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadImage(f"parse {label}: not valid JSON: {exc}") from None


def _obj(v: Any, label: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BadImage(f"parse {label}: want a JSON object")
    return v


def _list(v: Any, label: str) -> list[Any]:
    if not isinstance(v, list):
        raise BadImage(f"parse {label}: want a JSON list")
    return v


# --- detection ---------------------------------------------------------------------------

def detect_format(path: str) -> str:
    """Guess the import format of ``path`` from its content, never its name."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "oci-layout")):
            return "oci"
        if os.path.isfile(os.path.join(path, "manifest.json")):
            if os.path.isfile(os.path.join(path, "version")):
                return "dir"
            return "docker-archive"
        raise BadImage(f"import {path}: directory is not an OCI layout, dir: layout or "
                       "unpacked docker-archive")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise NotFound(f"import {path}: {exc.strerror}") from None
    if head.startswith((fmt.GZIP_MAGIC, fmt.ZSTD_MAGIC)):
        return "raw"
    if head.startswith((fmt.BZIP2_MAGIC, fmt.XZ_MAGIC)):
        raise BadImage(f"import {path}: bzip2/xz compression is not supported (gzip, zstd)")
    is_ustar = len(head) == 512 and head[257:262] == b"ustar"
    if not is_ustar and not (len(head) == 0 or _is_v7_tar(head)):
        raise BadImage(f"import {path}: not a tar archive, image layout or compressed tar")
    with _tar(path) as src:
        names = set(src.names())
    if "manifest.json" in names:
        return "docker-archive"
    if "oci-layout" in names and "index.json" in names:
        return "oci-archive"
    return "raw"


def _is_v7_tar(head: bytes) -> bool:
    try:
        stored = int(head[148:156].strip(b"\x00 ") or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 256 + sum(head[156:512])


@contextmanager
def _tar(path: str) -> Iterator[TarSource]:
    src = TarSource(path)
    try:
        yield src
    finally:
        src.close()


_ARCHIVE_FIRST = re.compile(
    r"^(?:\./)?(?:[0-9a-f]{64}(?:\.json|\.tar|/.*)?|blobs/.*|blobs|oci-layout|index\.json|"
    r"manifest\.json|repositories)$")


def is_compressed_image_archive(path: str) -> bool:
    """True for a gzip/zstd file whose tar starts like a docker/OCI archive.

    ``docker save | gzip`` is a valid input to ``docker load``; a layer tar never starts
    with a blob name, ``manifest.json`` or ``oci-layout``, so the first member decides.
    """
    from .compress import open_decompressed

    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        if not f.read(4).startswith((fmt.GZIP_MAGIC, fmt.ZSTD_MAGIC)):
            return False
        f.seek(0)
        try:
            stream, _ = open_decompressed(f)
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                first = tf.next()
        except (tarfile.TarError, OSError, EOFError, ValueError, BadImage):
            return False
    return first is not None and bool(_ARCHIVE_FIRST.match(first.name))


@contextmanager
def open_plans(path: str, *, form: str = "auto", platform: str | None = None,
               name: str | None = None) -> Iterator[list[ImagePlan]]:
    """Parse ``path`` and yield its image plans; members stay readable inside the block.

    ``name`` (default: the basename of ``path``) names layout tags that are bare tags.
    """
    if form not in FORMATS:
        raise UsageError(f"import {path}: unknown format {form!r} (one of {', '.join(FORMATS)})")
    if not os.path.exists(path):
        raise NotFound(f"import {path}: no such file or directory")
    if form == "auto":
        form = detect_format(path)
    log.info("import %s: format %s", path, form)
    name = name or os.path.basename(os.path.normpath(path))
    if form == "raw":
        yield [ImagePlan(None, None, None, None, [LayerPlan(_file_opener(path))],
                         source="raw")]
        return
    if os.path.isdir(path):
        src: Source = DirSource(path)
        yield _plans(src, form, platform, name)
        return
    with _tar(path) as tsrc:
        yield _plans(tsrc, form, platform, name.split(".tar")[0])


def _plans(src: Source, form: str, platform: str | None, name: str) -> list[ImagePlan]:
    if form == "docker-archive":
        return docker_archive(src)
    if form in ("oci", "oci-archive"):
        return oci_layout(src, platform, name, form)
    if form == "dir":
        return dir_layout(src, platform)
    raise UsageError(f"import: format {form!r} needs a {'file' if form == 'raw' else 'dir'}")


# --- docker-archive ----------------------------------------------------------------------

def _digest_from_name(name: str) -> str | None:
    """``blobs/sha256/<hex>`` or ``<hex>.json`` names carry their digest; verify them."""
    base = posixpath.basename(name).removesuffix(".json")
    hexname = len(base) == 64 and all(c in "0123456789abcdef" for c in base)
    if hexname and (name.startswith("blobs/sha256/") or name.endswith(".json")):
        return "sha256:" + base
    return None


def _tags(raw: Any, label: str) -> list[str]:
    tags: list[str] = []
    for t in raw or []:
        try:
            tags.append(normalize_ref(str(t)))
        except UsageError as exc:
            log.warning("%s: ignoring tag: %s", label, exc)
    return tags


def docker_archive(src: Source) -> list[ImagePlan]:
    entries = _list(src.json("manifest.json"), f"{src.label}:manifest.json")
    if not entries:
        raise BadImage(f"parse {src.label}:manifest.json: no images")
    plans: list[ImagePlan] = []
    for i, e in enumerate(entries):
        label = f"{src.label}:manifest.json[{i}]"
        e = _obj(e, label)
        cfg_name = e.get("Config")
        layers = _list(e.get("Layers"), f"{label}.Layers")
        if not isinstance(cfg_name, str) or not all(isinstance(x, str) for x in layers):
            raise BadImage(f"parse {label}: Config and Layers must be paths")
        config = src.read(cfg_name)
        expect = _digest_from_name(cfg_name)
        if expect is not None and sha256_bytes(config) != expect:
            raise DigestMismatch(f"verify {src.label}:{cfg_name}: content hashes to "
                                 f"{sha256_bytes(config)}")
        plans.append(ImagePlan(
            config, None, None, None,
            [LayerPlan(_opener(src, n), _digest_from_name(n) if n.startswith("blobs/") else None,
                       None, src.size(n)) for n in layers],
            _tags(e.get("RepoTags"), label), "docker-archive"))
    if len(plans) == 1 and not plans[0].tags and src.exists("repositories"):
        repos = _obj(src.json("repositories"), f"{src.label}:repositories")
        plans[0].tags = _tags([f"{r}:{t}" for r, tags in repos.items()
                               for t in _obj(tags, f"{src.label}:repositories")], src.label)
    return plans


def _file_opener(path: str) -> Callable[[], BinaryIO]:
    return lambda: open(path, "rb")


def _opener(src: Source, name: str) -> Callable[[], BinaryIO]:
    return lambda: src.open(name)


# --- OCI image layout --------------------------------------------------------------------

def parse_platform(text: str | None) -> tuple[str, str, str | None]:
    """``os/arch[/variant]`` (or ``arch``) → (os, arch, variant)."""
    parts = (text or DEFAULT_PLATFORM).split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    if len(parts) > 3 or not all(parts):
        raise UsageError(f"invalid platform {text!r} (want os/arch[/variant])")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _matches(plat: Any, want: tuple[str, str, str | None]) -> bool:
    if not isinstance(plat, dict):
        return False
    if plat.get("os") != want[0] or plat.get("architecture") != want[1]:
        return False
    return want[2] is None or plat.get("variant") in (None, want[2])


class _Layout:
    """Blob access shared by OCI layouts and ``dir:`` layouts."""

    def __init__(self, src: Source, blob_name: Callable[[str], str],
                 platform: str | None) -> None:
        self.src = src
        self.blob_name = blob_name
        self.platform = parse_platform(platform)
        self.explicit = platform is not None

    def blob(self, desc: dict[str, Any], label: str) -> bytes:
        digest = check_digest(desc.get("digest"), f"{label}.digest")
        data = self.src.read(self.blob_name(digest))
        if sha256_bytes(data) != digest:
            raise DigestMismatch(f"verify {self.src.label}:{self.blob_name(digest)}: content "
                                 f"hashes to {sha256_bytes(data)}, want {digest}")
        return data

    def select(self, index: dict[str, Any], label: str) -> dict[str, Any]:
        """Pick the manifest for our platform from an index / manifest list."""
        mans = [_obj(m, label) for m in _list(index.get("manifests"), f"{label}.manifests")]
        if not mans:
            raise BadImage(f"parse {label}: empty index")
        hits = [m for m in mans if _matches(m.get("platform"), self.platform)]
        if hits:
            return hits[0]
        if len(mans) == 1 and "platform" not in mans[0]:
            return mans[0]
        raise NotFound(f"select image in {label}: no manifest for platform "
                       f"{'/'.join(p for p in self.platform if p)}")

    def resolve(self, desc: dict[str, Any], label: str, depth: int = 0) -> ImagePlan:
        """Follow index → manifest; return the plan of the selected manifest."""
        if depth > 8:
            raise BadImage(f"parse {label}: indexes nested too deep")
        data = self.blob(desc, label)
        doc = _obj(parse_json(data, f"{self.src.label}:{desc['digest']}"), label)
        mt = doc.get("mediaType") or desc.get("mediaType")
        if mt in INDEX_TYPES or (mt is None and "manifests" in doc):
            return self.resolve(self.select(doc, label), f"{label}>index", depth + 1)
        if mt not in MANIFEST_TYPES and not (mt is None and "layers" in doc):
            raise BadImage(f"parse {label}: unsupported manifest media type {mt!r}")
        return self.manifest_plan(data, doc, desc["digest"], label)

    def manifest_plan(self, data: bytes, doc: dict[str, Any], digest: str,
                      label: str) -> ImagePlan:
        cdesc = _obj(doc.get("config"), f"{label}.config")
        config = self.blob(cdesc, f"{label}.config")
        layers: list[LayerPlan] = []
        for i, ld in enumerate(_list(doc.get("layers"), f"{label}.layers")):
            ld = _obj(ld, f"{label}.layers[{i}]")
            d = check_digest(ld.get("digest"), f"{label}.layers[{i}].digest")
            size = ld.get("size")
            layers.append(LayerPlan(_opener(self.src, self.blob_name(d)), d,
                                    ld.get("mediaType"), size if isinstance(size, int) else None))
        if self.explicit:
            cfg = _obj(parse_json(config, f"{label}.config"), f"{label}.config")
            if not _matches({"os": cfg.get("os"), "architecture": cfg.get("architecture"),
                             "variant": cfg.get("variant")}, self.platform):
                raise NotFound(f"select image in {label}: config is "
                               f"{cfg.get('os')}/{cfg.get('architecture')}, not the "
                               "requested platform")
        return ImagePlan(config, check_digest(cdesc.get("digest")), data, digest, layers)


def _oci_blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest_hex(digest)}"


def _ref_to_tag(ref: str, default_name: str) -> str | None:
    """A ref.name annotation is a full name (``a/b:t``) or just a tag (``t``)."""
    try:
        if "/" in ref or ":" in ref:
            return normalize_ref(ref)
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in default_name.lower())
        return normalize_ref(f"{name.strip('._-') or 'image'}:{ref}")
    except UsageError as exc:
        log.warning("ignoring ref name %r: %s", ref, exc)
        return None


def oci_layout(src: Source, platform: str | None, name: str, form: str) -> list[ImagePlan]:
    layout = _obj(src.json("oci-layout"), f"{src.label}:oci-layout")
    if not str(layout.get("imageLayoutVersion", "")).startswith("1."):
        raise BadImage(f"parse {src.label}:oci-layout: unsupported imageLayoutVersion "
                       f"{layout.get('imageLayoutVersion')!r}")
    index = _obj(src.json("index.json"), f"{src.label}:index.json")
    lay = _Layout(src, _oci_blob_name, platform)
    by_digest: dict[str, ImagePlan] = {}
    descs = [_obj(d, f"{src.label}:index.json") for d in
             _list(index.get("manifests"), f"{src.label}:index.json.manifests")]
    if not descs:
        raise BadImage(f"parse {src.label}:index.json: no manifests")
    skipped = 0
    for i, d in enumerate(descs):
        label = f"{src.label}:index.json.manifests[{i}]"
        if "platform" in d and d.get("mediaType") not in INDEX_TYPES \
                and not _matches(d["platform"], lay.platform):
            skipped += 1
            continue
        plan = lay.resolve(d, label)
        plan = by_digest.setdefault(plan.manifest_digest or "", plan)
        ann = d.get("annotations")
        ref = ann.get(REF_NAME) if isinstance(ann, dict) else None
        if isinstance(ref, str):
            tag = _ref_to_tag(ref, name)
            if tag and tag not in plan.tags:
                plan.tags.append(tag)
        plan.source = form
    if not by_digest:
        raise NotFound(f"import {src.label}: no image for platform {platform or DEFAULT_PLATFORM}"
                       f" ({skipped} for other platforms)")
    return list(by_digest.values())


# --- containers/image dir: layout ---------------------------------------------------------

def dir_layout(src: Source, platform: str | None) -> list[ImagePlan]:
    version = src.read("version", 4096)
    if not version.startswith(b"Directory Transport Version"):
        raise BadImage(f"parse {src.label}:version: not a containers/image dir: layout")
    lay = _Layout(src, digest_hex, platform)
    data = src.read("manifest.json")
    doc = _obj(parse_json(data, f"{src.label}:manifest.json"), f"{src.label}:manifest.json")
    mt = doc.get("mediaType")
    label = f"{src.label}:manifest.json"
    if mt in INDEX_TYPES or (mt is None and "manifests" in doc):
        desc = lay.select(doc, label)
        d = check_digest(desc.get("digest"), label)
        name = f"{digest_hex(d)}.manifest.json"
        data = src.read(name)
        if sha256_bytes(data) != d:
            raise DigestMismatch(f"verify {src.label}:{name}: content hashes to "
                                 f"{sha256_bytes(data)}, want {d}")
        doc = _obj(parse_json(data, f"{src.label}:{name}"), f"{src.label}:{name}")
    plan = lay.manifest_plan(data, doc, sha256_bytes(data), label)
    plan.source = "dir"
    return [plan]
