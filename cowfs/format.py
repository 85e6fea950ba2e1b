"""The on-disk contract of cowfs: overlay encodings and the store layout.

Owns every constant that names something on disk. No other module may spell a
whiteout prefix or an overlay xattr name as a string literal; they import it
from here. Stdlib only.

Overlay encodings (SPEC §3)
===========================

cowfs *writes* exactly the kernel's format:

* whiteout: a character device with device number 0/0 named like the entry it
  hides (``mknod NAME c 0 0``).
* opaque directory: xattr ``trusted.overlay.opaque`` = ``y`` when mounted by
  root, ``user.overlay.opaque`` = ``y`` in *userxattr* mode (rootless kernel
  overlay, kernel >= 5.11). No plain whiteouts are left inside an opaque dir.
* origin (for stable inode numbers across copy-up and remount):
  ``trusted.cowfs.origin`` / ``user.cowfs.origin`` holding ``"<dev>:<ino>"``
  of the lower object that was copied up. The kernel ignores it.

cowfs *reads* every dialect found in the wild (lowers and foreign uppers):

* char 0/0 whiteouts;
* AUFS/OCI style ``.wh.NAME`` files and ``.wh..wh..opq`` sentinels (what
  containers/storage extracts when a mount_program is configured, and what
  fuse-overlayfs writes when it cannot mknod);
* both xattr namespaces, plus fuse-overlayfs's ``user.fuseoverlayfs.opaque``;
* kernel 6.7 xattr whiteouts: a zero-size regular file with
  ``overlay.whiteout`` inside a dir whose ``overlay.opaque`` is ``x``.

Names starting with ``.wh.`` are never visible in a merged view.

Store layout (SPEC §2)
======================

::

    <root>/
      lock                         store-wide flock (short critical sections)
      store.json                   {"version": 1, "whiteout_dialect": "chardev"}
      blobs/sha256/<hex>           compressed blobs exactly as received
      layers/<diffid-hex>/
        diff/                      the unpacked layer, kernel overlay format
        layer.json                 digests, sizes, media type, created
      images/<image-id-hex>.json   manifest, config, diff_ids, chain_ids, layer digests
      refs.json                    name:tag -> image id
      containers/<id>/{upper,work,merged,config.json,state.json}
      volumes/<name>/_data
      run/                         probes cache, pid files, mounts registry
        locks/layer-<diffid-hex>   per-layer flock held while that layer is unpacked
        locks/gc                   shared by imports in flight, exclusive by gc
      tmp/                         staging on the same fs; each entry flocked by its
                                   writer, unlocked (stale) entries removed at open
      downloads/<hex>.partial      interrupted registry downloads, resumed by the next pull

The store records the whiteout dialect it was written in (``store.json``); a
backend that cannot read that dialect is refused by the driver.
"""

from __future__ import annotations

import enum
import stat
from typing import Final

# --- OCI / AUFS whiteouts (image-spec layer.md) -----------------------------------
WH_PREFIX: Final = b".wh."
"""Prefix of an OCI whiteout file: ``.wh.NAME`` deletes NAME in lower layers."""
WH_OPAQUE: Final = b".wh..wh..opq"
"""OCI opaque marker: hides every lower child of the directory holding it."""
WH_META_PREFIX: Final = b".wh..wh."
"""Reserved prefix (AUFS metadata: ``.wh..wh..opq``, ``.wh..wh.plnk``...)."""

WH_PREFIX_STR: Final = WH_PREFIX.decode()
WH_OPAQUE_STR: Final = WH_OPAQUE.decode()

# --- kernel overlayfs xattrs ------------------------------------------------------
TRUSTED_OVERLAY: Final = b"trusted.overlay."
USER_OVERLAY: Final = b"user.overlay."
OVL_OPAQUE_SUFFIX: Final = b"opaque"
OVL_WHITEOUT_SUFFIX: Final = b"whiteout"
OPAQUE_YES: Final = b"y"
"""Value of ``overlay.opaque`` marking an opaque dir."""
OPAQUE_XWHITEOUTS: Final = b"x"
"""Value of ``overlay.opaque`` (kernel 6.7) marking a merge dir holding xattr whiteouts."""
TRUSTED_OPAQUE: Final = TRUSTED_OVERLAY + OVL_OPAQUE_SUFFIX
USER_OPAQUE: Final = USER_OVERLAY + OVL_OPAQUE_SUFFIX
TRUSTED_XWHITEOUT: Final = TRUSTED_OVERLAY + OVL_WHITEOUT_SUFFIX
USER_XWHITEOUT: Final = USER_OVERLAY + OVL_WHITEOUT_SUFFIX
FOF_OPAQUE: Final = b"user.fuseoverlayfs.opaque"
"""fuse-overlayfs (C) fallback opaque marker; read, never written."""
FOF_PREFIX: Final = b"user.fuseoverlayfs."
TRUSTED_OVERLAY_ESCAPED: Final = b"trusted.overlay.overlay."
"""Image-supplied ``trusted.overlay.X`` is stored as ``trusted.overlay.overlay.X`` (6.7 nesting)."""

# cowfs's own hidden xattrs (never shown in a merged view).
TRUSTED_COWFS: Final = b"trusted.cowfs."
USER_COWFS: Final = b"user.cowfs."
ORIGIN_SUFFIX: Final = b"origin"

HIDDEN_XATTR_PREFIXES: Final = (
    TRUSTED_OVERLAY, USER_OVERLAY, FOF_PREFIX, TRUSTED_COWFS, USER_COWFS,
)
"""xattrs with these prefixes are overlay-internal and hidden from merged-view users."""

WHITEOUT_MODE: Final = stat.S_IFCHR | 0o000
WHITEOUT_DEV: Final = 0
"""A kernel whiteout is ``S_IFCHR`` with ``st_rdev == makedev(0, 0)``."""


class WhiteoutDialect(enum.Enum):
    """How whiteouts and opaque markers are written in an upper/layer dir."""

    CHARDEV = "chardev"
    """Kernel format: char 0/0 + ``trusted.overlay.opaque`` (root)."""
    CHARDEV_USERXATTR = "chardev-userxattr"
    """Kernel userxattr format: char 0/0 + ``user.overlay.opaque`` (rootless)."""
    WH_FILES = "wh-files"
    """AUFS format: ``.wh.NAME`` files + ``.wh..wh..opq`` (read-only support)."""


def overlay_xattr_prefix(userxattr: bool) -> bytes:
    """Return the overlay xattr namespace for a mount mode."""
    return USER_OVERLAY if userxattr else TRUSTED_OVERLAY


def opaque_xattr(userxattr: bool) -> bytes:
    """Return the opaque xattr name written in a mount mode."""
    return USER_OPAQUE if userxattr else TRUSTED_OPAQUE


def origin_xattr(userxattr: bool) -> bytes:
    """Return the name of cowfs's origin xattr in a mount mode."""
    return (USER_COWFS if userxattr else TRUSTED_COWFS) + ORIGIN_SUFFIX


def is_whiteout_stat(st_mode: int, st_rdev: int) -> bool:
    """True if a stat result describes a kernel char 0/0 whiteout."""
    return stat.S_ISCHR(st_mode) and st_rdev == 0


def is_wh_name(name: bytes) -> bool:
    """True for any name in the reserved ``.wh.`` namespace (never visible merged)."""
    return name.startswith(WH_PREFIX)


def is_hidden_xattr(name: bytes) -> bool:
    """True for overlay-internal xattrs hidden from merged-view users."""
    return name.startswith(HIDDEN_XATTR_PREFIXES)


# --- store layout -----------------------------------------------------------------
STORE_VERSION: Final = 1
STORE_META: Final = "store.json"
STORE_LOCK: Final = "lock"
BLOBS_DIR: Final = "blobs"
LAYERS_DIR: Final = "layers"
LAYER_DIFF: Final = "diff"
LAYER_META: Final = "layer.json"
IMAGES_DIR: Final = "images"
REFS_FILE: Final = "refs.json"
CONTAINERS_DIR: Final = "containers"
VOLUMES_DIR: Final = "volumes"
VOLUME_DATA: Final = "_data"
RUN_DIR: Final = "run"
TMP_DIR: Final = "tmp"
DOWNLOADS_DIR: Final = "downloads"
"""Partial registry downloads (``<hex>.partial``), kept across runs so a pull resumes."""
DEFAULT_ROOT_PRIVILEGED: Final = "/var/lib/cowfs"


def default_root() -> str:
    """The store root when none is given (SPEC §2): ``$COWFS_ROOT``, else
    ``/var/lib/cowfs`` for root, else ``$XDG_DATA_HOME/cowfs``."""
    import os

    env = os.environ.get("COWFS_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return DEFAULT_ROOT_PRIVILEGED
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(xdg, "cowfs")

# --- media types ------------------------------------------------------------------
MT_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# --- compression magic (sniffed, never trusted from names) -------------------------
GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC: Final = b"BZh"
XZ_MAGIC: Final = b"\xfd7zXZ\x00"
