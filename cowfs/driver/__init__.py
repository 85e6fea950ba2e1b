"""Choose a backend (kernel or FUSE) and mount; the `Mount` object.

Owns: the backend choice (cached kernel probes + the store's whiteout dialect) and the
Python mount API (`mount`, `Mount`, `mount_image`, `unmount_path`). The backends live
in `._backends` (kernel request, the ``cowfs-overlay`` mount program), the registry of
what cowfs mounted in `._registry` (read by ``cowfs mounts``). Must not implement
overlay semantics or syscalls itself (`cowfs.kernel`, `cowfs.fuse`, `cowfs._sys` do);
it never imports pyfuse3.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Protocol, final

from .. import format as fmt
from ..errors import BackendUnavailable, NotFound, StoreError, UsageError
from ..format import WhiteoutDialect
from ..kernel import mount as kmount, probe
from ._backends import (
    FUSE as FUSE,
    FUSE_PROGRAM as FUSE_PROGRAM,
    KERNEL as KERNEL,
    detach_last_resort,
    fuse_option_string as fuse_option_string,
    fuse_program as fuse_program,
    kernel_refusal as kernel_refusal,
    mount_fuse,
    mount_kernel,
    unmount_backend,
    unmount_fuse,
)
from ._registry import (
    MOUNTS_DIR as MOUNTS_DIR,
    MountRecord as MountRecord,
    default_root as default_root,
    default_run_dir as default_run_dir,
    list_mounts as list_mounts,
    mnt_ns,
    mount_id,
    mountinfo as mountinfo,
    refuse_double_mount,
    refuse_shared_upper,
    register as register_mount,
    unregister,
)

log = logging.getLogger(__name__)

AUTO: Final = "auto"
BACKENDS: Final = (AUTO, KERNEL, FUSE)


# --- whiteout dialects ---------------------------------------------------------------
def read_store_dialect(root: str) -> WhiteoutDialect | None:
    """The ``whiteout_dialect`` recorded in ``<root>/store.json`` (None if unrecorded).

    Raises:
        StoreError: store.json is unreadable or names an unknown dialect.
    """
    path = os.path.join(root, fmt.STORE_META)
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StoreError(f"read {path}: {exc}") from None
    value = meta.get("whiteout_dialect") if isinstance(meta, dict) else None
    if value is None:
        return None
    try:
        return WhiteoutDialect(value)
    except ValueError:
        raise StoreError(f"read {path}: unknown whiteout_dialect {value!r}") from None


# --- choosing ------------------------------------------------------------------------
def choose_backend(
    run_dir: str | None = None, *, dialect: WhiteoutDialect | None = None
) -> tuple[str, str]:
    """Pick ``kernel`` when a (cached) scratch mount says it works here, else ``fuse``.

    Returns:
        ``(backend, reason)``; the reason is one line fit for a log.
    """
    userxattr = probe.in_user_namespace()
    refusal = kernel_refusal(dialect, userxattr)
    if refusal:
        return FUSE, refusal
    result = probe.probe(probe.OVERLAY, run_dir or default_run_dir())
    if result.ok:
        mode = " with userxattr (user namespace)" if userxattr else ""
        return KERNEL, f"kernel overlayfs works here{mode}: {result.reason}"
    return FUSE, f"kernel overlayfs is unavailable: {result.reason}"


# --- the Mount object -----------------------------------------------------------------
@final
class Mount:
    """A live overlay mount made by `mount`; unmount it with `unmount` or a ``with`` block.

    Attributes mirror ``docker inspect``'s GraphDriver data: ``lowerdirs`` (top
    first), ``upperdir``, ``workdir`` (None when read-only), ``mergeddir`` and the
    ``backend`` actually used (``"kernel"`` or ``"fuse"``).
    """

    def __init__(self, record: MountRecord, run_dir: str, registered: bool) -> None:
        self.record = record
        self.run_dir = run_dir
        self._registered = registered
        self._mounted = True

    @property
    def lowerdirs(self) -> list[str]:
        return list(self.record.lowerdirs)

    @property
    def upperdir(self) -> str | None:
        return self.record.upperdir

    @property
    def workdir(self) -> str | None:
        return self.record.workdir

    @property
    def mergeddir(self) -> str:
        return self.record.mergeddir

    @property
    def backend(self) -> str:
        return self.record.backend

    @property
    def mounted(self) -> bool:
        return self._mounted

    def unmount(self) -> None:
        """Unmount (idempotent), drop the registry entry, remove a temporary target."""
        if not self._mounted:
            return
        unmount_backend(self.record.backend, self.record.mergeddir)
        self._mounted = False
        if self._registered:
            unregister(self.run_dir, self.record.id)
        if self.record.temp_target:
            with contextlib.suppress(OSError):
                os.rmdir(self.record.mergeddir)

    def __enter__(self) -> Mount:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.unmount()
            return
        try:
            self.unmount()
        except BaseException:
            # The body's error wins; still never leave the mount behind.
            log.exception("unmount %s after an error in the with-body", self.mergeddir)
            detach_last_resort(self.record.backend, self.mergeddir)

    def __repr__(self) -> str:
        state = "mounted" if self._mounted else "unmounted"
        return f"<Mount {self.backend} {self.mergeddir!r} {state}>"


# --- mounting --------------------------------------------------------------------------
def mount(
    lowers: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    upper: str | os.PathLike[str] | None = None,
    work: str | os.PathLike[str] | None = None,
    target: str | os.PathLike[str] | None = None,
    backend: str = AUTO,
    *,
    run_dir: str | None = None,
    dialect: WhiteoutDialect | None = None,
    userxattr: bool | None = None,
    volatile: bool = False,
    kernel_options: Sequence[str] = (),
    fuse_options: Sequence[str] = (),
    register: bool = True,
) -> Mount:
    """Mount an overlay of ``lowers`` (top first) and return the live `Mount`.

    Usable as ``with cowfs.mount(...) as m:`` (unmounted on exit, also when the body
    raises) or as a plain call (call ``m.unmount()``). Without ``upper`` the mount is
    read-only. ``target`` None mounts on a new temp dir, removed at unmount.

    Args:
        backend: ``"auto"`` (kernel when it works here, else fuse), ``"kernel"``, ``"fuse"``.
        run_dir: probe cache and mount registry (default: the default store's ``run/``).
        dialect: whiteout dialect of the layers; a backend that cannot read it is refused.
        userxattr: kernel ``userxattr`` mode; default: on inside a user namespace.
        volatile: skip syncs (kernel ``volatile``, FUSE ``volatile``).
        register: record the mount in the registry for ``cowfs mounts``.

    Raises:
        UsageError, NotFound: bad arguments or missing dirs.
        BackendUnavailable: the requested backend cannot run here (with the reason).
        MountError: the mount itself failed.
    """
    if backend not in BACKENDS:
        raise UsageError(f"mount: unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    lowerdirs = _lower_list(lowers)
    upperdir, workdir = _upper_work(upper, work)
    rdir = os.path.abspath(run_dir or default_run_dir())
    temp_target = target is None
    if register and upperdir is not None:
        refuse_shared_upper(rdir, upperdir, workdir)
    if target is not None:
        mergeddir = os.path.realpath(_existing_dir("target", target))
        if register:
            refuse_double_mount(rdir, mergeddir)
    else:
        import tempfile  # lazy: most callers give a target (start-up cost)

        mergeddir = os.path.realpath(tempfile.mkdtemp(prefix="cowfs-merged-"))
    try:
        chosen, method, ux = _do_mount(backend, lowerdirs, upperdir, workdir, mergeddir, rdir,
                                       dialect, userxattr, volatile, kernel_options,
                                       fuse_options)
    except BaseException:
        if temp_target:
            with contextlib.suppress(OSError):
                os.rmdir(mergeddir)
        raise
    record = MountRecord(
        id=mount_id(mergeddir), mergeddir=mergeddir, lowerdirs=lowerdirs, upperdir=upperdir,
        workdir=workdir, backend=chosen, method=method, userxattr=ux, volatile=volatile,
        temp_target=temp_target, mnt_ns=mnt_ns(), pid=os.getpid(), created=time.time(),
    )
    m = Mount(record, rdir, registered=register)
    if register:
        try:
            register_mount(rdir, record)
        except OSError as exc:
            # The mount works; only `cowfs mounts` will not know it.
            log.warning("mount %s: cannot record it in %s: %s", mergeddir, rdir,
                        exc.strerror or exc)
            m._registered = False
        except BaseException:
            m.unmount()
            raise
    return m


def _do_mount(backend: str, lowerdirs: list[str], upperdir: str | None, workdir: str | None,
              mergeddir: str, run_dir: str, dialect: WhiteoutDialect | None,
              userxattr: bool | None, volatile: bool, kernel_options: Sequence[str],
              fuse_options: Sequence[str]) -> tuple[str, str, bool]:
    chosen = backend
    if backend == AUTO:
        chosen, reason = choose_backend(run_dir, dialect=dialect)
        log.info("backend auto: chose %s: %s", chosen, reason)
    if chosen == KERNEL:
        try:
            method, ux = mount_kernel(lowerdirs, upperdir, workdir, mergeddir, run_dir,
                                       dialect, userxattr, volatile, kernel_options)
            return KERNEL, method, ux
        except BackendUnavailable as exc:
            if backend != AUTO:
                raise
            log.info("backend auto: falling back to fuse: %s", exc)
    mount_fuse(lowerdirs, upperdir, workdir, mergeddir, volatile, fuse_options)
    return FUSE, FUSE_PROGRAM, bool(userxattr)


def unmount_path(target: str, run_dir: str | None = None) -> MountRecord | None:
    """Unmount ``target`` (``cowfs umount``): a registered mount by its backend, else an
    unregistered overlay or FUSE mount by its fs type.

    Returns:
        The registry record, or None when the mount was not registered.

    Raises:
        NotFound: nothing is mounted at ``target``.
        UsageError: ``target`` is neither an overlay nor a FUSE mount.
    """
    rdir = os.path.abspath(run_dir or default_run_dir())
    path = os.path.realpath(target)
    fstype = mountinfo().get(path)
    rec = next((r for r in list_mounts(rdir, prune=False) if r.mergeddir == path), None)
    if fstype is None:
        if rec is not None and rec.mnt_ns == mnt_ns():
            unregister(rdir, rec.id)
        raise NotFound(f"unmount {path}: nothing is mounted there")
    if rec is not None:
        Mount(rec, rdir, registered=True).unmount()
        return rec
    if fstype == "overlay":
        kmount.unmount(path)
    elif fstype.startswith("fuse"):
        unmount_fuse(path)
    else:
        raise UsageError(f"unmount {path}: not an overlay mount (fs type {fstype})")
    return None


# --- argument handling -----------------------------------------------------------------------
def _existing_dir(what: str, path: str | os.PathLike[str]) -> str:
    full = os.path.abspath(os.fspath(path))
    if not os.path.isdir(full):
        raise NotFound(f"mount: {what} {full} is not an existing directory")
    return full


def _lower_list(lowers: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[str]:
    items = [lowers] if isinstance(lowers, str | os.PathLike) else list(lowers)
    if not items:
        raise UsageError("mount: at least one lower dir is needed")
    return [_existing_dir("lower dir", p) for p in items]


def _upper_work(upper: str | os.PathLike[str] | None,
                work: str | os.PathLike[str] | None) -> tuple[str | None, str | None]:
    if upper is None and work is None:
        return None, None
    if upper is None or work is None:
        raise UsageError("mount: upper and work dirs must be given together")
    u, w = os.path.abspath(os.fspath(upper)), os.path.abspath(os.fspath(work))
    for d in (u, w):
        os.makedirs(d, mode=0o755, exist_ok=True)
    if os.stat(u).st_dev != os.stat(w).st_dev:
        raise UsageError(f"mount: work dir {w} must be on the same filesystem as upper dir {u}")
    return u, w


# --- images from a store ------------------------------------------------------------------
class StoreLike(Protocol):
    """The part of `cowfs.store.Store` that mounting an image needs."""

    @property
    def root(self) -> str: ...
    @property
    def run_dir(self) -> str: ...
    def get_image(self, ref: str) -> Any: ...
    def layer_dirs(self, image: Any) -> list[str]: ...


def mount_image(
    store: StoreLike,
    ref: str,
    *,
    upper: str | os.PathLike[str] | None = None,
    work: str | os.PathLike[str] | None = None,
    target: str | os.PathLike[str] | None = None,
    backend: str = AUTO,
    volatile: bool = False,
    userxattr: bool | None = None,
    register: bool = True,
) -> Mount:
    """Mount image ``ref`` of ``store`` (its layers as lowers, top first).

    The store's recorded whiteout dialect decides which backends may read it; the
    probe cache and registry live in the store's run dir.
    """
    image = store.get_image(ref)
    lowers = store.layer_dirs(image)
    dialect = getattr(store, "dialect", None)
    if not isinstance(dialect, WhiteoutDialect):
        dialect = read_store_dialect(store.root)
    return mount(lowers, upper, work, target, backend, run_dir=store.run_dir, dialect=dialect,
                 volatile=volatile, userxattr=userxattr, register=register)
