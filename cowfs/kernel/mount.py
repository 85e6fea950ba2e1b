"""Mount and unmount kernel overlayfs through `cowfs._sys`.

Owns: the mount(2) fast path, the new-mount-API path for stacks whose options do
not fit one page, readable errors for both, and umount2 with a lazy last resort.
Must not choose backends or probe (that is `cowfs.driver` / `cowfs.kernel.probe`).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from contextlib import ExitStack

from .. import _sys
from .._sys import mountapi
from ..errors import BackendUnavailable, MountError, UsageError
from .options import (
    FSCONFIG_STRING_MAX,
    PAGE_SIZE,
    Method,
    OverlayOptions,
    choose_method,
    fits_one_page,
    fsconfig_steps,
    option_string,
)

log = logging.getLogger(__name__)

OVERLAY: bytes = b"overlay"
UNMOUNT_RETRY_SECONDS: float = 2.0
"""How long a busy mount is retried before falling back to a lazy (MNT_DETACH) unmount."""


def with_empty_bottom(opts: OverlayOptions, empty_dir: str | bytes | None) -> OverlayOptions:
    """Return options the kernel accepts for a read-only single-layer mount.

    The kernel refuses one lowerdir without an upperdir ("at least 2 lowerdir are
    needed while upperdir nonexistent"), so an empty dir is stacked below it: it
    adds no names and keeps whiteouts in the single layer hidden, as a merged view must.
    """
    if not opts.read_only or len(opts.lowerdirs) != 1:
        return opts
    if empty_dir is None:
        raise UsageError("mount overlay: a read-only mount of one layer needs an empty dir")
    bottom = os.fsencode(empty_dir)
    return OverlayOptions((*opts.lowerdirs, bottom), None, None, opts.userxattr,
                          opts.volatile, opts.extra)


def mount_overlay(
    opts: OverlayOptions, target: str | bytes, *, method: Method | None = None
) -> Method:
    """Mount kernel overlayfs at ``target``; return the method used.

    Args:
        opts: a validated request (see `cowfs.kernel.options.make_options`).
        target: an existing directory.
        method: force mount(2) or the new mount API; default: mount(2) when the
            option string fits one page, else fsconfig with ``lowerdir+``.

    Raises:
        MountError: the kernel refused (the kernel's own message when it gave one).
        BackendUnavailable: the stack needs ``lowerdir+`` and this kernel lacks it.
    """
    tgt = os.fsencode(target)
    chosen = method or choose_method(opts)
    if chosen is Method.LEGACY:
        data = option_string(opts)
        if not fits_one_page(data):
            # mount(2) would silently cut the string at one page.
            raise MountError(
                f"mount overlay at {os.fsdecode(tgt)}: the option string of {len(data)} bytes "
                f"does not fit one page ({PAGE_SIZE} bytes) for mount(2); use the new mount API")
        try:
            _sys.mount(OVERLAY, tgt, OVERLAY, 0, data)
        except OSError as exc:
            detail = _explain(opts) if exc.errno == errno.EINVAL else []
            raise _mount_error(opts, tgt, exc, detail) from None
    else:
        _mount_fsconfig(opts, tgt)
    log.debug("mounted overlay at %r with %s (%d layers)", tgt, chosen.value,
              len(opts.lowerdirs))
    return chosen


def _mount_fsconfig(opts: OverlayOptions, target: bytes) -> None:
    try:
        fs_fd = mountapi.fsopen("overlay")
    except OSError as exc:
        why = "the options do not fit one page and " if choose_method(opts) is Method.FSCONFIG \
            else ""
        raise BackendUnavailable(
            f"mount overlay with {len(opts.lowerdirs)} layers: {why}the new mount API is "
            f"unavailable: fsopen: {exc.strerror}"
        ) from None
    with ExitStack() as stack:
        stack.callback(os.close, fs_fd)
        try:
            _configure(stack, fs_fd, opts)
            mountapi.fsconfig_create(fs_fd)
            mnt_fd = mountapi.fsmount(fs_fd)
            stack.callback(os.close, mnt_fd)
            mountapi.move_mount_to(mnt_fd, target)
        except OSError as exc:
            raise _mount_error(opts, target, exc, mountapi.fscontext_messages(fs_fd)) from None


def _configure(stack: ExitStack, fs_fd: int, opts: OverlayOptions) -> None:
    for key, value in fsconfig_steps(opts):
        if value is None:
            mountapi.fsconfig_flag(fs_fd, key)
        elif len(value) + 1 > FSCONFIG_STRING_MAX and key in ("lowerdir+", "upperdir",
                                                               "workdir"):
            # Too long for an fsconfig string: hand the kernel an O_PATH fd (6.13+).
            path = value if key == "lowerdir+" else _unescape(value)
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            mountapi.fsconfig_fd(fs_fd, key, fd)
        else:
            try:
                mountapi.fsconfig_string(fs_fd, key, value)
            except OSError as exc:
                if key == "lowerdir+" and exc.errno == errno.EINVAL and not _has_lowerdir_plus():
                    raise BackendUnavailable(
                        f"mount overlay with {len(opts.lowerdirs)} layers: the options do not "
                        "fit one page and this kernel has no 'lowerdir+' (needs Linux >= 6.8)"
                    ) from None
                raise


def _unescape(value: bytes) -> bytes:
    out = bytearray()
    it = iter(value)
    for b in it:
        if b == 0x5C:
            b = next(it, 0x5C)
        out.append(b)
    return bytes(out)


def _has_lowerdir_plus() -> bool:
    """Ask a throwaway context whether ``lowerdir+`` is a known key (EINVAL vs ENOENT)."""
    try:
        fd = mountapi.fsopen("overlay")
    except OSError:
        return False
    try:
        mountapi.fsconfig_string(fd, "lowerdir+", b"/")
        return True
    except OSError as exc:
        return exc.errno != errno.EINVAL
    finally:
        os.close(fd)


def _explain(opts: OverlayOptions) -> list[str]:
    """Replay a failed mount(2) through fsconfig to collect the kernel's reason."""
    try:
        fs_fd = mountapi.fsopen("overlay")
    except OSError:
        return []
    try:
        with ExitStack() as stack:
            _configure(stack, fs_fd, opts)
            mountapi.fsconfig_create(fs_fd)
    except (OSError, MountError):
        pass
    finally:
        msgs = mountapi.fscontext_messages(fs_fd)
        os.close(fs_fd)
    return msgs


def _mount_error(
    opts: OverlayOptions, target: bytes, exc: OSError, detail: list[str]
) -> MountError:
    why = exc.strerror or str(exc)
    if detail:
        why += " (" + "; ".join(m.removeprefix("e ").strip() for m in detail) + ")"
    elif exc.errno == errno.EINVAL:
        why += " (the kernel logs the reason to dmesg)"
    elif exc.errno == errno.ELOOP:
        # overlayfs answers ELOOP when layers overlap (ovl_check_layer / ovl_setup_trap).
        why += " (the layers overlap: a lower, the upper or the work dir lies inside another)"
    elif exc.errno == errno.EBUSY:
        why += " (the upper or work dir is in use by another overlay mount)"
    cls = BackendUnavailable if exc.errno in (errno.EPERM, errno.ENODEV) else MountError
    n = len(opts.lowerdirs)
    return cls(f"mount overlay at {os.fsdecode(target)} ({n} layer{'s' * (n != 1)}): {why}")


def unmount(target: str | bytes, *, lazy_fallback: bool = True) -> None:
    """Unmount ``target`` with umount2; retry while busy, then detach lazily.

    Raises:
        MountError: ``target`` is not a mount point, or unmounting failed.
    """
    tgt = os.fsencode(target)
    deadline = time.monotonic() + UNMOUNT_RETRY_SECONDS
    while True:
        try:
            _sys.umount2(tgt, 0)
            return
        except OSError as exc:
            if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            if exc.errno == errno.EBUSY and lazy_fallback:
                log.warning("unmount %s: busy for %.1fs, detaching lazily",
                            os.fsdecode(tgt), UNMOUNT_RETRY_SECONDS)
                _sys.umount2(tgt, _sys.MNT_DETACH)
                return
            raise MountError(f"unmount {os.fsdecode(tgt)}: {exc.strerror}") from None
