"""``commit``: a container's upper dir -> an OCI layer tar -> a new image in the store.

Owns: translating the kernel overlay format of an upper dir back into OCI layer
format (char 0/0 whiteout -> ``.wh.NAME``; opaque dir -> ``.wh..wh..opq``, only when
the dir exists below, since a dir new in this layer hides nothing), preserving modes,
owners, times, xattrs (overlay-internal ones dropped) and hardlinks within the layer;
then registering image = old layers + this one. Must not modify the upper dir.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import stat
import tarfile
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from .. import driver, format as fmt
from ..errors import RunError, UsageError
from .container import Container, is_mountpoint, now
from .diff import is_opaque, lower_stat
from .images import open_store

log = logging.getLogger(__name__)


class _HashingWriter(io.RawIOBase):
    """A file wrapper that hashes what is written (the layer's DiffID)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.h.update(data)
        self.size += len(data)
        self.f.write(data)
        return len(data)


def write_layer(upper: str, lowers: Sequence[str], out: IO[bytes]) -> tuple[str, int]:
    """Write ``upper`` as an uncompressed OCI layer tar; return (diff_id, size)."""
    hw = _HashingWriter(out)
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        _add_dir(tf, upper, lowers, "", links)
    return "sha256:" + hw.h.hexdigest(), hw.size


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for n in names:
        if fmt.is_hidden_xattr(n.encode()):
            continue
        try:
            v = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
        out[f"SCHILY.xattr.{n}"] = v.decode("utf-8", "surrogateescape")
    return out


def _info(name: str, st: os.stat_result, path: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.mtime = st.st_mtime
    ti.uname = ti.gname = ""
    x = _xattrs(path)
    if x:
        ti.pax_headers = x
    return ti


def _add_dir(tf: tarfile.TarFile, upper: str, lowers: Sequence[str], rel: str,
             links: dict[tuple[int, int], str]) -> None:
    d = os.path.join(upper, rel)
    for name in sorted(os.listdir(d)):
        if name.startswith(fmt.WH_PREFIX_STR):
            continue  # foreign AUFS markers never reach a layer we write
        path = os.path.join(d, name)
        arc = f"{rel}{name}"
        st = os.lstat(path)
        if fmt.is_whiteout_stat(st.st_mode, st.st_rdev):
            if lower_stat(lowers, "/" + arc) is not None:
                ti = tarfile.TarInfo(f"{rel}{fmt.WH_PREFIX_STR}{name}")
                ti.mode, ti.mtime = 0o600, int(st.st_mtime)
                tf.addfile(ti)
            continue
        if stat.S_ISDIR(st.st_mode):
            ti = _info(arc, st, path)
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
            below = lower_stat(lowers, "/" + arc)
            if is_opaque(path) and below is not None and stat.S_ISDIR(below.st_mode):
                opq = tarfile.TarInfo(f"{arc}/{fmt.WH_OPAQUE_STR}")
                opq.mode, opq.mtime = 0o600, int(st.st_mtime)
                tf.addfile(opq)
            _add_dir(tf, upper, lowers, f"{arc}/", links)
        else:
            _add_entry(tf, arc, path, st, links)


def is_trusted_upper(upper: str) -> bool:
    """True if ``upper`` holds only the kernel format cowfs writes (char 0/0 whiteouts,
    ``overlay.opaque=y``); AUFS ``.wh.`` files or 6.7 xattr whiteouts (opaque ``x``)
    written by a foreign tool call for the naive tree diff instead."""
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            if name.startswith(fmt.WH_PREFIX_STR):
                return False
        for name in dirnames:
            for attr in (fmt.TRUSTED_OPAQUE, fmt.USER_OPAQUE):
                try:
                    if os.getxattr(os.path.join(dirpath, name), attr,
                                   follow_symlinks=False) == fmt.OPAQUE_XWHITEOUTS:
                        return False
                except OSError:
                    continue
    return True


def write_layer_naive(before: str, after: str, out: IO[bytes]) -> tuple[str, int]:
    """Write the difference between two mounted trees as an OCI layer (no upper needed):
    entries new or different in ``after``, and ``.wh.NAME`` for names gone from it."""
    hw = _HashingWriter(out)
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        _naive_dir(tf, before, after, "", links)
    return "sha256:" + hw.h.hexdigest(), hw.size


def _same_file(a: str, b: str, sa: os.stat_result, sb: os.stat_result) -> bool:
    if (stat.S_IFMT(sa.st_mode), sa.st_mode, sa.st_uid, sa.st_gid) != \
            (stat.S_IFMT(sb.st_mode), sb.st_mode, sb.st_uid, sb.st_gid):
        return False
    if _xattrs(a) != _xattrs(b):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev == sb.st_rdev
    if stat.S_ISREG(sa.st_mode):
        if sa.st_size != sb.st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                ca, cb = fa.read(1 << 20), fb.read(1 << 20)
                if ca != cb:
                    return False
                if not ca:
                    return True
    return True  # dirs: children are compared one by one; fifos: metadata only


def _naive_dir(tf: tarfile.TarFile, bdir: str | None, adir: str, rel: str,
               links: dict[tuple[int, int], str]) -> None:
    """Compare dir ``adir`` (after) with ``bdir`` (before; None if it was no dir)."""
    old = set(os.listdir(bdir)) if bdir is not None else set()
    new = sorted(os.listdir(adir))
    for name in sorted(old - set(new)):
        ti = tarfile.TarInfo(f"{rel}{fmt.WH_PREFIX_STR}{name}")
        ti.mode = 0o600
        tf.addfile(ti)
    for name in new:
        a = os.path.join(adir, name)
        sa = os.lstat(a)
        b = os.path.join(bdir, name) if bdir is not None and name in old else None
        sb = os.lstat(b) if b is not None else None
        same = b is not None and sb is not None and _same_file(b, a, sb, sa)
        if stat.S_ISDIR(sa.st_mode):
            if not same or sb is None or sa.st_mtime_ns != sb.st_mtime_ns:
                ti = _info(f"{rel}{name}", sa, a)
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            below = b if sb is not None and stat.S_ISDIR(sb.st_mode) else None
            _naive_dir(tf, below, a, f"{rel}{name}/", links)
        elif not same:
            _add_entry(tf, f"{rel}{name}", a, sa, links)


def _add_entry(tf: tarfile.TarFile, arc: str, path: str, st: os.stat_result,
               links: dict[tuple[int, int], str]) -> None:
    ti = _info(arc, st, path)
    if stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, links[key], 0
            tf.addfile(ti)
            return
        links[key] = arc
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
        with open(path, "rb") as f:
            tf.addfile(ti, f)
    elif stat.S_ISLNK(st.st_mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(path)
        tf.addfile(ti)
    elif stat.S_ISFIFO(st.st_mode):
        ti.type = tarfile.FIFOTYPE
        tf.addfile(ti)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tf.addfile(ti)
    # sockets are not representable in a layer: skipped, like docker does


def _naive(c: Container, out: IO[bytes]) -> str:
    """Mount the image alone and the container (or reuse its live mount); diff the trees."""
    run_dir = os.path.join(c.root, fmt.RUN_DIR)
    with contextlib.ExitStack() as stack:
        tmp_root = os.path.join(c.root, fmt.TMP_DIR)
        os.makedirs(tmp_root, exist_ok=True)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=tmp_root))
        before = os.path.join(tmp, "before")
        os.mkdir(before)
        stack.enter_context(driver.mount(c.lowerdirs, target=before, run_dir=run_dir,
                                         register=False))
        if is_mountpoint(c.merged):
            after = c.merged
        else:
            after = os.path.join(tmp, "after")
            os.mkdir(after)
            stack.enter_context(driver.mount(c.lowerdirs, upper=c.upper, work=c.work,
                                             target=after, run_dir=run_dir, register=False))
        diff_id, _ = write_layer_naive(before, after, out)
    return diff_id


def commit(c: Container, ref: str, *, author: str = "", message: str = "",
           naive: bool | None = None) -> Any:
    """Create image ``ref`` = the container's image layers + its upper dir; return it.

    ``naive`` forces (True) or forbids (False) the tree-diff path; by default it is used
    only for an upper dir that is not in the kernel format (:func:`is_trusted_upper`).
    """
    image_id = str(c.config.get("ImageId") or "")
    if not image_id:
        raise UsageError(f"commit {c.name}: created from a rootfs directory, not an image")
    store = open_store(c.root)
    base = store.get_image(image_id)
    config: dict[str, Any] = copy.deepcopy(base.config) if isinstance(base.config, dict) else {}
    os.makedirs(store.tmp_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=store.tmp_dir, prefix="commit-") as tmp:
        if naive is None:
            naive = not is_trusted_upper(c.upper)
        if naive:
            log.info("commit %s: naive tree diff of the mounted views", c.name)
            diff_id = _naive(c, tmp)
        else:
            diff_id, _size = write_layer(c.upper, c.lowerdirs, tmp)
        tmp.flush()
        rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        rootfs["diff_ids"] = [*list(base.diff_ids), diff_id]
        config["created"] = now()
        if author:
            config["author"] = author
        config.setdefault("history", []).append({
            "created": config["created"], "created_by": f"cowfs commit {c.name}",
            "comment": message or f"container {c.id[:12]}"})
        blobs = [store.blob_reader(d) for d in base.layer_digests]
        if len(blobs) != len(base.diff_ids):
            raise RunError(f"commit {c.name}: base image {base.id} has no layer blobs")
        name = tmp.name
        blobs.append(lambda: open(name, "rb"))  # noqa: SIM115 - the store closes it
        return store.import_layers(blobs, config, None, tags=[ref])
