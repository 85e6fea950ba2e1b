"""Pure building of kernel overlayfs mount options (no syscalls, no filesystem access).

Owns: escaping of paths for the legacy option string, the one-page size check,
the layer-count limit and the choice between mount(2) and the new mount API.
Must not touch the filesystem; unit-tested without privileges.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .._sys.mountapi import FSCONFIG_STRING_MAX as FSCONFIG_STRING_MAX
from ..errors import MountError, UsageError

OVL_MAX_STACK: Final = 500
"""fs/overlayfs/params.h ``OVL_MAX_STACK``: most lower layers one overlay mount may stack."""

PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
"""mount(2) copies at most one page of option data (fs/namespace.c ``copy_mount_options``);
the string and its terminating NUL must fit."""



class Method(enum.Enum):
    """How a kernel overlay mount is made."""

    LEGACY = "mount(2)"
    """One ``mount(2)`` call with the whole option string (fits one page)."""
    FSCONFIG = "fsconfig lowerdir+"
    """The new mount API: one ``lowerdir+`` per layer (kernel >= 6.8), no page limit."""


def escape_path(path: bytes) -> bytes:
    """Escape a path for the overlay option string: ``\\`` ``,`` and ``:`` get a backslash.

    The kernel splits options on unescaped commas (``ovl_next_opt``), lowerdir on
    unescaped colons, and strips one backslash per escape (``ovl_unescape``) from
    lowerdir, upperdir and workdir alike.
    """
    out = path.replace(b"\\", b"\\\\")
    return out.replace(b",", b"\\,").replace(b":", b"\\:")


@dataclass(frozen=True, slots=True)
class OverlayOptions:
    """A validated request for one kernel overlay mount.

    ``lowerdirs[0]`` is the TOP layer, like ``lowerdir=top:...:bottom``. Without
    ``upperdir`` the mount is read-only. Paths are absolute bytes.
    """

    lowerdirs: tuple[bytes, ...]
    upperdir: bytes | None = None
    workdir: bytes | None = None
    userxattr: bool = False
    volatile: bool = False
    extra: tuple[str, ...] = ()
    """Further kernel options passed through verbatim after `feature_subset` (so they win),
    e.g. ``xino=off``."""

    @property
    def read_only(self) -> bool:
        return self.upperdir is None


FEATURE_SUBSET: Final = ("redirect_dir=off", "index=off", "metacopy=off")
"""SPEC §3: the feature subset both backends honour, stated explicitly so that a kernel
built with other defaults behaves the same (dir renames of lower dirs give EXDEV, copy-up
of one hardlink name breaks the link, data is always copied up)."""
FEATURE_SUBSET_USERXATTR: Final = ("index=off", "metacopy=off")
"""With ``userxattr`` the kernel forces ``redirect_dir=nofollow`` and refuses an explicit
``redirect_dir=off`` when ``redirect_always_follow`` is set, so it is left out."""


def feature_subset(userxattr: bool) -> tuple[str, ...]:
    """The options pinning SPEC §3's feature subset for a mount mode."""
    return FEATURE_SUBSET_USERXATTR if userxattr else FEATURE_SUBSET


_FORBIDDEN_EXTRA: Final = ("lowerdir", "upperdir", "workdir", "datadir", "userxattr", "volatile")


def make_options(
    lowerdirs: Sequence[str | bytes],
    upperdir: str | bytes | None = None,
    workdir: str | bytes | None = None,
    *,
    userxattr: bool = False,
    volatile: bool = False,
    extra: Sequence[str] = (),
) -> OverlayOptions:
    """Validate a mount request and return it as `OverlayOptions`.

    Raises:
        UsageError: no lowers, relative or NUL-containing paths, upper without work
            (or the reverse), volatile without an upper, a reserved key in ``extra``.
        MountError: more layers than the kernel can stack (``OVL_MAX_STACK``).
    """
    if not lowerdirs:
        raise UsageError("mount overlay: at least one lower dir is needed")
    lowers = tuple(_abs("lowerdir", p) for p in lowerdirs)
    if len(lowers) > OVL_MAX_STACK:
        raise MountError(
            f"mount overlay: {len(lowers)} lower layers exceed the kernel limit of "
            f"{OVL_MAX_STACK} (OVL_MAX_STACK); flatten the image or use the fuse backend"
        )
    if (upperdir is None) != (workdir is None):
        raise UsageError("mount overlay: upperdir and workdir must be given together")
    upper = None if upperdir is None else _abs("upperdir", upperdir)
    work = None if workdir is None else _abs("workdir", workdir)
    if volatile and upper is None:
        raise UsageError("mount overlay: volatile needs an upper dir")
    for opt in extra:
        key = opt.partition("=")[0]
        if not key or key in _FORBIDDEN_EXTRA or "," in opt:
            raise UsageError(f"mount overlay: option {opt!r} is not allowed as an extra option")
    return OverlayOptions(lowers, upper, work, userxattr, volatile, tuple(extra))


def _abs(what: str, path: str | bytes) -> bytes:
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise UsageError(f"mount overlay: {what} {raw!r} contains a NUL byte")
    if not raw.startswith(b"/"):
        raise UsageError(f"mount overlay: {what} {os.fsdecode(raw)!r} is not an absolute path")
    return os.path.normpath(raw)


def option_string(opts: OverlayOptions) -> bytes:
    """Render the legacy ``mount -o`` data string (escaped, comma separated)."""
    parts = [b"lowerdir=" + b":".join(escape_path(p) for p in opts.lowerdirs)]
    if opts.upperdir is not None and opts.workdir is not None:
        parts.append(b"upperdir=" + escape_path(opts.upperdir))
        parts.append(b"workdir=" + escape_path(opts.workdir))
    if opts.userxattr:
        parts.append(b"userxattr")
    if opts.volatile:
        parts.append(b"volatile")
    parts.extend(e.encode() for e in (*feature_subset(opts.userxattr), *opts.extra))
    return b",".join(parts)


def fits_one_page(data: bytes, page_size: int = PAGE_SIZE) -> bool:
    """True when ``data`` plus its NUL terminator fits in one page for mount(2)."""
    return len(data) + 1 <= page_size


def choose_method(opts: OverlayOptions, page_size: int = PAGE_SIZE) -> Method:
    """mount(2) when the option string fits one page, else the new mount API."""
    return Method.LEGACY if fits_one_page(option_string(opts), page_size) else Method.FSCONFIG


def fsconfig_steps(opts: OverlayOptions) -> list[tuple[str, bytes | None]]:
    """The fsconfig calls of the new mount API, in order: ``(key, value)``.

    ``value`` None means a flag. Layer paths are passed raw to ``lowerdir+`` (no
    escaping: the kernel takes them literally); upperdir/workdir are unescaped by
    the kernel even here, so they are escaped.
    """
    steps: list[tuple[str, bytes | None]] = [("lowerdir+", p) for p in opts.lowerdirs]
    if opts.upperdir is not None and opts.workdir is not None:
        steps.append(("upperdir", escape_path(opts.upperdir)))
        steps.append(("workdir", escape_path(opts.workdir)))
    if opts.userxattr:
        steps.append(("userxattr", None))
    if opts.volatile:
        steps.append(("volatile", None))
    for e in (*feature_subset(opts.userxattr), *opts.extra):
        key, eq, value = e.partition("=")
        steps.append((key, value.encode() if eq else None))
    return steps
