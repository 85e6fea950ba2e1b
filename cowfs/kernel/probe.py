"""Feature probes for kernel overlayfs: real scratch mounts, cached in a run dir.

Owns: deciding by experiment (never by kernel version) whether this process can
mount overlay, use ``userxattr``, pass ``lowerdir+`` through fsconfig, and create
char 0/0 whiteouts. Each result is cached as ``<run_dir>/<feature>-true|false``
holding the reason and the context it was measured in (uid, user namespace,
kernel release); a different context probes again. Must not choose a backend.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .. import _sys
from .._sys import mountapi
from ..errors import CowfsError
from .mount import mount_overlay, unmount
from .options import Method, make_options, option_string

log = logging.getLogger(__name__)

OVERLAY: Final = "overlay"
"""Can this process mount kernel overlayfs (with ``userxattr`` inside a user namespace)?"""
USERXATTR: Final = "userxattr"
"""Does a mount with ``userxattr`` work (``user.overlay.*`` xattrs, kernel >= 5.11)?"""
LOWERDIR_PLUS: Final = "lowerdir-plus"
"""Does the new mount API take one ``lowerdir+`` per layer (kernel >= 6.8)?"""
WHITEOUT: Final = "whiteout"
"""Can this process mknod a char 0/0 whiteout (unprivileged in a userns since 5.8)?"""
FEATURES: Final = (OVERLAY, USERXATTR, LOWERDIR_PLUS, WHITEOUT)

_INIT_UID_MAP: Final = ("0", "0", "4294967295")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe: ``ok``, a one-line ``reason``, and whether it came
    from the cache."""

    feature: str
    ok: bool
    reason: str
    cached: bool = False


def in_user_namespace() -> bool:
    """True when this process runs in a user namespace other than the initial one.

    The initial namespace maps the whole 32-bit id range onto itself.
    """
    try:
        with open("/proc/self/uid_map") as f:
            lines = [ln.split() for ln in f if ln.strip()]
    except OSError:
        return False
    return not (len(lines) == 1 and tuple(lines[0]) == _INIT_UID_MAP)


def context() -> str:
    """The context a probe result holds for: uid, user namespace, kernel release."""
    try:
        userns = os.readlink("/proc/self/ns/user")
    except OSError:
        userns = "user:[?]"
    return f"euid={os.geteuid()} {userns} kernel={os.uname().release}"


_memo: dict[tuple[str, str, str], ProbeResult] = {}


def probe(feature: str, run_dir: str, *, refresh: bool = False) -> ProbeResult:
    """Return whether ``feature`` works here, probing once and caching in ``run_dir``.

    Raises:
        ValueError: an unknown feature name.
    """
    if feature not in _PROBES:
        raise ValueError(f"unknown probe feature {feature!r}")
    ctx = context()
    key = (os.path.abspath(run_dir), feature, ctx)
    if not refresh:
        if key in _memo:
            return _memo[key]
        cached = _read_cache(run_dir, feature, ctx)
        if cached is not None:
            _memo[key] = cached
            return cached
    ok, reason = _run_probe(feature, run_dir)
    result = ProbeResult(feature, ok, reason)
    _write_cache(run_dir, feature, ctx, result)
    _memo[key] = ProbeResult(feature, ok, reason, cached=True)
    log.debug("probe %s: %s (%s)", feature, ok, reason)
    return result


def probe_all(run_dir: str) -> dict[str, ProbeResult]:
    """Probe (or read from cache) every feature in `FEATURES`."""
    return {f: probe(f, run_dir) for f in FEATURES}


def forget(run_dir: str | None = None) -> None:
    """Drop in-process memoized results (all, or those of one run dir)."""
    for key in list(_memo):
        if run_dir is None or key[0] == os.path.abspath(run_dir):
            del _memo[key]


def _cache_path(run_dir: str, feature: str, ok: bool) -> str:
    return os.path.join(run_dir, f"{feature}-{'true' if ok else 'false'}")


def _read_cache(run_dir: str, feature: str, ctx: str) -> ProbeResult | None:
    for ok in (True, False):
        try:
            with open(_cache_path(run_dir, feature, ok)) as f:
                reason = f.readline().rstrip("\n")
                saved_ctx = f.readline().rstrip("\n").removeprefix("context: ")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            log.debug("probe cache %s unreadable: %s", feature, exc)
            return None
        if saved_ctx == ctx:
            return ProbeResult(feature, ok, reason, cached=True)
    return None


def _write_cache(run_dir: str, feature: str, ctx: str, result: ProbeResult) -> None:
    import tempfile  # lazy: only a cache miss writes (start-up cost of every mount)

    try:
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{feature}-")
        with os.fdopen(fd, "w") as f:
            f.write(f"{result.reason}\ncontext: {ctx}\n")
        os.replace(tmp, _cache_path(run_dir, feature, result.ok))
        try:
            os.unlink(_cache_path(run_dir, feature, not result.ok))
        except FileNotFoundError:
            pass
    except OSError as exc:
        log.warning("cannot cache probe %s in %s: %s", feature, run_dir, exc.strerror)


def _run_probe(feature: str, run_dir: str) -> tuple[bool, str]:
    import shutil
    import tempfile  # lazy, like _write_cache

    try:
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        scratch = tempfile.mkdtemp(dir=run_dir, prefix=".probe-")
    except OSError as exc:
        return False, f"cannot make a scratch dir in {run_dir}: {exc.strerror}"
    try:
        return _PROBES[feature](scratch)
    finally:
        shutil.rmtree(scratch, onerror=_force_remove)


def _force_remove(fn: Callable[..., object], path: str, exc: object) -> None:
    # overlayfs leaves work/work with mode 000; make it traversable and retry.
    import shutil

    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        log.debug("probe cleanup could not remove %s", path)


def _dirs(scratch: str) -> dict[str, str]:
    out = {}
    for name in ("lower1", "lower2", "upper", "work", "merged"):
        out[name] = os.path.join(scratch, name)
        os.mkdir(out[name])
    os.mkdir(os.path.join(out["lower2"], "d"))
    with open(os.path.join(out["lower2"], "d", "f"), "w") as f:
        f.write("lower")
    return out


def _probe_mount(scratch: str, *, userxattr: bool) -> tuple[bool, str]:
    d = _dirs(scratch)
    opts = make_options([d["lower1"], d["lower2"]], d["upper"], d["work"], userxattr=userxattr)
    mode = " with userxattr" if userxattr else ""
    try:
        _sys.mount(b"overlay", os.fsencode(d["merged"]), b"overlay", 0, option_string(opts))
    except OSError as exc:
        return False, f"mount -t overlay{mode} as euid {os.geteuid()}: {exc.strerror}"
    try:
        # The kernel must be able to copy up and to leave a whiteout in the upper.
        with open(os.path.join(d["merged"], "d", "f"), "a") as f:
            f.write("+")
        os.unlink(os.path.join(d["merged"], "d", "f"))
    except OSError as exc:
        return False, f"overlay{mode} mounted but copy-up/whiteout failed: {exc.strerror}"
    finally:
        unmount(d["merged"], lazy_fallback=True)
    st = os.lstat(os.path.join(d["upper"], "d", "f"))
    if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
        return False, f"overlay{mode} did not write a char 0/0 whiteout"
    return True, f"scratch overlay mount{mode} as euid {os.geteuid()} works"


def _probe_overlay(scratch: str) -> tuple[bool, str]:
    return _probe_mount(scratch, userxattr=in_user_namespace())


def _probe_userxattr(scratch: str) -> tuple[bool, str]:
    return _probe_mount(scratch, userxattr=True)


def _probe_lowerdir_plus(scratch: str) -> tuple[bool, str]:
    d = _dirs(scratch)
    opts = make_options([d["lower1"], d["lower2"]], userxattr=in_user_namespace())
    try:
        mount_overlay(opts, d["merged"], method=Method.FSCONFIG)
    except CowfsError as exc:
        return False, str(exc)
    try:
        ok = os.path.exists(os.path.join(d["merged"], "d", "f"))
    finally:
        unmount(d["merged"], lazy_fallback=True)
    if not ok:
        return False, "fsconfig lowerdir+ mounted but the lower layer is not visible"
    return True, "fsopen/fsconfig lowerdir+/fsmount/move_mount works"


def _probe_whiteout(scratch: str) -> tuple[bool, str]:
    path = os.path.join(scratch, "wh")
    try:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    except OSError as exc:
        why = "not permitted" if exc.errno == errno.EPERM else exc.strerror
        return False, f"mknod c 0 0 as euid {os.geteuid()}: {why}"
    return True, f"mknod c 0 0 as euid {os.geteuid()} works"


def has_new_mount_api() -> bool:
    """True when fsopen(2) exists and opens an overlay context (no mount made)."""
    try:
        fd = mountapi.fsopen("overlay")
    except OSError:
        return False
    os.close(fd)
    return True


_PROBES: Final[dict[str, Callable[[str], tuple[bool, str]]]] = {
    OVERLAY: _probe_overlay,
    USERXATTR: _probe_userxattr,
    LOWERDIR_PLUS: _probe_lowerdir_plus,
    WHITEOUT: _probe_whiteout,
}
