"""Choose a backend (kernel or FUSE) and mount; the `Mount` object and the mount registry.

Owns: the backend choice (cached kernel probes + the store's whiteout dialect),
the Python mount API (`mount`, `Mount`, `mount_image`), launching the FUSE mount
program ``cowfs-overlay`` like a containers/storage mount_program, and the registry
of what cowfs mounted (``<run_dir>/mounts/<id>.json``, read by ``cowfs mounts``).
Must not implement overlay semantics or syscalls itself (`cowfs.kernel`,
`cowfs.fuse` and `cowfs._sys` do); it never imports pyfuse3.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Final, Protocol, final

from . import format as fmt
from .errors import (
    BackendUnavailable,
    Conflict,
    MountError,
    NotFound,
    StoreError,
    UsageError,
)
from .format import WhiteoutDialect
from .kernel import mount as kmount, probe
from .kernel.options import escape_path, make_options

log = logging.getLogger(__name__)

AUTO: Final = "auto"
KERNEL: Final = "kernel"
FUSE: Final = "fuse"
BACKENDS: Final = (AUTO, KERNEL, FUSE)

FUSE_PROGRAM: Final = "cowfs-overlay"
FUSE_START_TIMEOUT: Final = 60.0
"""Seconds the mount program may take to report the mount live (it returns once it is)."""
UNMOUNT_WAIT: Final = 10.0
"""Seconds to wait for a FUSE mount to disappear after ``fusermount3 -u``."""
MOUNTS_DIR: Final = "mounts"
EMPTY_DIR: Final = "empty"
"""An always-empty dir in the run dir, stacked under a single read-only layer."""


# --- where things live ---------------------------------------------------------------
def default_root() -> str:
    """The store root when none is given (SPEC §2): $COWFS_ROOT, /var/lib/cowfs or XDG."""
    env = os.environ.get("COWFS_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return fmt.DEFAULT_ROOT_PRIVILEGED
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(xdg, "cowfs")


def default_run_dir() -> str:
    """$COWFS_RUN_DIR, else the default store's ``run/`` (probe cache, mount registry)."""
    return os.environ.get("COWFS_RUN_DIR") or os.path.join(default_root(), fmt.RUN_DIR)


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


def kernel_refusal(dialect: WhiteoutDialect | None, userxattr: bool) -> str | None:
    """Why kernel overlayfs cannot read layers of ``dialect`` in this mode (None: it can)."""
    if dialect is WhiteoutDialect.WH_FILES:
        return ("the store's whiteout dialect is 'wh-files' (.wh. files), which kernel "
                "overlayfs does not read; use the fuse backend")
    if dialect is WhiteoutDialect.CHARDEV and userxattr:
        return ("the store's whiteout dialect is 'chardev' (trusted.overlay xattrs), which "
                "kernel overlayfs in userxattr mode (user namespace) cannot read")
    return None


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
@dataclass(frozen=True, slots=True)
class MountRecord:
    """One registry entry: what cowfs mounted where (``live`` None: other mount namespace)."""

    id: str
    mergeddir: str
    lowerdirs: list[str]
    upperdir: str | None
    workdir: str | None
    backend: str
    method: str
    userxattr: bool
    volatile: bool
    temp_target: bool
    mnt_ns: str
    pid: int
    created: float
    live: bool | None = None


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
        _unmount_backend(self.record.backend, self.record.mergeddir)
        self._mounted = False
        if self._registered:
            _unregister(self.run_dir, self.record.id)
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
            _detach_last_resort(self.record.backend, self.mergeddir)

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
    mergeddir = os.path.realpath(
        tempfile.mkdtemp(prefix="cowfs-merged-") if target is None
        else _existing_dir("target", target))
    if register and not temp_target:
        _refuse_double_mount(rdir, mergeddir)
    if register and upperdir is not None:
        _refuse_shared_upper(rdir, upperdir, workdir)
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
        id=_mount_id(mergeddir), mergeddir=mergeddir, lowerdirs=lowerdirs, upperdir=upperdir,
        workdir=workdir, backend=chosen, method=method, userxattr=ux, volatile=volatile,
        temp_target=temp_target, mnt_ns=_mnt_ns(), pid=os.getpid(), created=time.time(),
    )
    m = Mount(record, rdir, registered=register)
    if register:
        try:
            _register(rdir, record)
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
            method, ux = _mount_kernel(lowerdirs, upperdir, workdir, mergeddir, run_dir,
                                       dialect, userxattr, volatile, kernel_options)
            return KERNEL, method, ux
        except BackendUnavailable as exc:
            if backend != AUTO:
                raise
            log.info("backend auto: falling back to fuse: %s", exc)
    _mount_fuse(lowerdirs, upperdir, workdir, mergeddir, volatile, fuse_options)
    return FUSE, FUSE_PROGRAM, bool(userxattr)


def _mount_kernel(lowerdirs: list[str], upperdir: str | None, workdir: str | None,
                  mergeddir: str, run_dir: str, dialect: WhiteoutDialect | None,
                  userxattr: bool | None, volatile: bool,
                  extra: Sequence[str]) -> tuple[str, bool]:
    if userxattr is None:
        userxattr = dialect is WhiteoutDialect.CHARDEV_USERXATTR or probe.in_user_namespace()
    refusal = kernel_refusal(dialect, userxattr)
    if refusal is None and dialect is WhiteoutDialect.CHARDEV_USERXATTR and not userxattr:
        refusal = ("the store's whiteout dialect is 'chardev-userxattr' (user.overlay "
                   "xattrs), which needs the userxattr mount option")
    if refusal:
        raise BackendUnavailable(f"mount with the kernel backend: {refusal}")
    opts = make_options(lowerdirs, upperdir, workdir, userxattr=userxattr, volatile=volatile,
                        extra=extra)
    if opts.read_only and len(opts.lowerdirs) == 1:
        opts = kmount.with_empty_bottom(opts, _empty_dir(run_dir))
    return kmount.mount_overlay(opts, mergeddir).value, userxattr


def _empty_dir(run_dir: str) -> str:
    path = os.path.join(run_dir, EMPTY_DIR)
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise MountError(f"mount overlay: a read-only mount of one layer needs the empty dir "
                         f"{path}: {exc.strerror}") from None
    if os.listdir(path):
        raise MountError(f"mount overlay: {path} must stay empty but holds entries")
    return path


# --- the FUSE backend -------------------------------------------------------------------
def fuse_program() -> list[str]:
    """The command of the FUSE mount program: ``cowfs-overlay`` beside this Python, else
    ``python -m cowfs.fuse.program``.

    Raises:
        BackendUnavailable: neither is installed.
    """
    beside = os.path.join(os.path.dirname(sys.executable), FUSE_PROGRAM)
    if os.access(beside, os.X_OK):
        return [beside]
    import importlib.util

    try:
        spec = importlib.util.find_spec("cowfs.fuse.program")
    except ImportError:
        spec = None
    if spec is None:
        raise BackendUnavailable(
            f"mount with the fuse backend: {FUSE_PROGRAM} is not installed next to "
            f"{sys.executable} and cowfs.fuse.program is missing")
    return [sys.executable, "-m", "cowfs.fuse.program"]


def fuse_escape(path: str) -> str:
    """Escape a path for the ``-o`` option of the mount program (kernel escapes + quotes)."""
    return os.fsdecode(escape_path(os.fsencode(path))).replace('"', '\\"')


def fuse_option_string(lowerdirs: Sequence[str], upperdir: str | None, workdir: str | None,
                       *, volatile: bool = False, extra: Sequence[str] = ()) -> str:
    """Render ``lowerdir=A:B[,upperdir=U,workdir=W][,volatile][,extra]`` for cowfs-overlay."""
    parts = ["lowerdir=" + ":".join(fuse_escape(p) for p in lowerdirs)]
    if upperdir is not None and workdir is not None:
        parts += [f"upperdir={fuse_escape(upperdir)}", f"workdir={fuse_escape(workdir)}"]
    if volatile:
        parts.append("volatile")
    parts.extend(extra)
    return ",".join(parts)


def _mount_fuse(lowerdirs: list[str], upperdir: str | None, workdir: str | None,
                mergeddir: str, volatile: bool, extra: Sequence[str]) -> None:
    cmd = [*fuse_program(), "-o",
           fuse_option_string(lowerdirs, upperdir, workdir, volatile=volatile, extra=extra),
           mergeddir]
    # stderr goes to a file, not a pipe: the daemon keeps running after the program
    # returns, and a pipe it inherited could keep a reader waiting forever.
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, timeout=FUSE_START_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise MountError(f"mount {mergeddir} with {FUSE_PROGRAM}: not live after "
                             f"{FUSE_START_TIMEOUT:.0f}s") from None
        err.seek(0)
        msg = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise MountError(f"mount {mergeddir} with {FUSE_PROGRAM}: "
                         f"{_fuse_failure(msg) or f'exit status {proc.returncode}'}")
    if mountinfo().get(mergeddir) is None:
        raise MountError(f"mount {mergeddir} with {FUSE_PROGRAM}: it exited 0 but nothing "
                         "is mounted there")
    log.debug("mounted %s with %s", mergeddir, FUSE_PROGRAM)


def _fuse_failure(stderr: str) -> str:
    """The informative part of a failed mount program's stderr, on one line: libfuse's and
    fusermount3's own messages (the real cause) plus the program's last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith(("fuse:", "fusermount"))]
    last = lines[-1:] if lines else []
    return "; ".join(dict.fromkeys(causes + last))


def _unmount_fuse(target: str) -> None:
    r = subprocess.run(["fusermount3", "-u", target], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0 and target in mountinfo():
        deadline = time.monotonic() + kmount.UNMOUNT_RETRY_SECONDS
        while r.returncode != 0 and time.monotonic() < deadline and target in mountinfo():
            time.sleep(0.05)
            r = subprocess.run(["fusermount3", "-u", target], capture_output=True, text=True,
                               check=False)
        if r.returncode != 0 and target in mountinfo():
            log.warning("unmount %s: fusermount3 -u failed (%s), detaching lazily", target,
                        r.stderr.strip())
            _detach_last_resort(FUSE, target)
    _wait_unmounted(target)


def _wait_unmounted(target: str) -> None:
    deadline = time.monotonic() + UNMOUNT_WAIT
    while target in mountinfo():
        if time.monotonic() > deadline:
            raise MountError(f"unmount {target}: still mounted after {UNMOUNT_WAIT:.0f}s")
        time.sleep(0.02)


def _unmount_backend(backend: str, target: str) -> None:
    if backend == FUSE:
        _unmount_fuse(target)
    else:
        kmount.unmount(target)


def _detach_last_resort(backend: str, target: str) -> None:
    if target not in mountinfo():
        return
    if backend == FUSE and os.geteuid() != 0:
        subprocess.run(["fusermount3", "-u", "-z", target], capture_output=True, check=False)
        return
    with contextlib.suppress(OSError):
        from . import _sys

        _sys.umount2(os.fsencode(target), _sys.MNT_DETACH)


# --- mounts of this namespace --------------------------------------------------------------
def _unoctal(field: bytes) -> str:
    return os.fsdecode(field.decode("unicode_escape").encode("latin-1"))


def mountinfo() -> dict[str, str]:
    """Mount points of this mount namespace mapped to their fs type (last one wins)."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            sep = fields.index(b"-")
            out[_unoctal(fields[4])] = fields[sep + 1].decode()
    return out


def _mnt_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return "mnt:[?]"


# --- the registry of cowfs mounts ---------------------------------------------------------
def _mount_id(mergeddir: str) -> str:
    return hashlib.sha256(os.fsencode(mergeddir)).hexdigest()[:16]


def _register(run_dir: str, record: MountRecord) -> None:
    reg = os.path.join(run_dir, MOUNTS_DIR)
    data = asdict(record)
    del data["live"]
    blob = json.dumps(data).encode()
    # Kept to a few syscalls: this runs on every mount (the fast path is benchmarked).
    tmp = os.path.join(reg, f".{record.id}.{os.getpid()}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(reg, mode=0o700, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, os.path.join(reg, record.id + ".json"))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _refuse_double_mount(run_dir: str, mergeddir: str) -> None:
    # One stat on the fast path; mountinfo is read only when a record exists.
    if not os.path.exists(os.path.join(run_dir, MOUNTS_DIR, _mount_id(mergeddir) + ".json")):
        return
    if any(r.mergeddir == mergeddir and r.live for r in list_mounts(run_dir)):
        raise Conflict(f"mount {mergeddir}: cowfs already has a mount there "
                       "(see 'cowfs mounts'; unmount it first)")


def _refuse_shared_upper(run_dir: str, upperdir: str, workdir: str | None) -> None:
    """Refuse an upper/work dir that a live cowfs mount already writes to.

    With ``index=off`` the kernel only warns about a shared upper ("undefined behavior"),
    and two FUSE daemons on one upper would corrupt it; the registry is the guard.
    """
    reg = os.path.join(run_dir, MOUNTS_DIR)
    try:
        names = [n for n in os.listdir(reg) if n.endswith(".json")]
    except FileNotFoundError:
        return
    mine = {upperdir, workdir}
    for name in names:
        try:
            with open(os.path.join(reg, name)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not mine & {data.get("upperdir"), data.get("workdir")}:
            continue
        live = [r for r in list_mounts(run_dir) if mine & {r.upperdir, r.workdir}]
        if live:
            raise Conflict(f"mount: upper dir {upperdir} is in use by the cowfs mount at "
                           f"{live[0].mergeddir} (see 'cowfs mounts')")
        return


def _unregister(run_dir: str, mount_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(run_dir, MOUNTS_DIR, mount_id + ".json"))


def list_mounts(run_dir: str | None = None, *, prune: bool = True) -> list[MountRecord]:
    """What cowfs mounted, from the registry in ``run_dir``.

    ``live`` is checked against this mount namespace; entries of this namespace that
    are no longer mounted are dropped (and deleted when ``prune``). Entries made in
    another mount namespace are listed with ``live=None`` while some process is still in
    that namespace, else dropped likewise.
    """
    reg = os.path.join(run_dir or default_run_dir(), MOUNTS_DIR)
    try:
        names = sorted(n for n in os.listdir(reg) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    here, ns = mountinfo(), _mnt_ns()
    out: list[MountRecord] = []
    for name in names:
        path = os.path.join(reg, name)
        try:
            with open(path) as f:
                data: dict[str, Any] = json.load(f)
            rec = MountRecord(**data)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("mount registry: skipping unreadable %s: %s", path, exc)
            continue
        if rec.mnt_ns != ns:
            if prune and not _ns_in_use(rec.mnt_ns):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            out.append(_with_live(rec, None))
        elif rec.mergeddir in here:
            out.append(_with_live(rec, True))
        elif prune:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return out


def _ns_in_use(mnt_ns: str) -> bool:
    """True while a process we can see is in mount namespace ``mnt_ns`` (a namespace
    nobody is in is gone, and its mounts with it). Processes we may not inspect (other
    users', a sandbox's init) are ignored: cowfs's namespaces are held by our own."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/mnt") == mnt_ns:
                    return True
    return False


def _with_live(rec: MountRecord, live: bool | None) -> MountRecord:
    data = asdict(rec)
    data["live"] = live
    return MountRecord(**data)


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
        if rec is not None and rec.mnt_ns == _mnt_ns():
            _unregister(rdir, rec.id)
        raise NotFound(f"unmount {path}: nothing is mounted there")
    if rec is not None:
        Mount(rec, rdir, registered=True).unmount()
        return rec
    if fstype == "overlay":
        kmount.unmount(path)
    elif fstype.startswith("fuse"):
        _unmount_fuse(path)
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
                 volatile=volatile, register=register)
