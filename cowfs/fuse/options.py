"""Command line of ``cowfs-overlay``: fuse-overlayfs's contract, parsed into `MountOptions`.

Pure (no I/O besides reading the environment for defaults): owns the ``-o`` grammar
(commas, ``"quoted,values"``, backslash escapes, ``\\:`` inside ``lowerdir``), the
``mount.fuse3`` form ``PROG SOURCE MOUNTPOINT -o OPTS`` and the list of accepted
options. It must not check directories or mount anything (see `cowfs.fuse.daemon`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import UsageError

DEFAULT_TIMEOUT = 1_000_000_000.0
"""Entry/attr timeout in seconds, like fuse-overlayfs: every change goes through us."""

DEFAULT_SPIN_US = 50
"""How long the daemon polls for the next request before sleeping (``spin=``, µs)."""

# Options handed to libfuse (fuse_session_new accepts these; anything else fails the mount).
FUSE_PASSTHROUGH_FLAGS = frozenset({
    "allow_other", "allow_root", "default_permissions", "suid", "nosuid", "dev", "nodev",
    "exec", "noexec", "ro", "rw", "atime", "noatime", "relatime", "norelatime",
    "strictatime", "nostrictatime", "diratime", "nodiratime", "lazytime", "nolazytime",
    "sync", "async", "dirsync", "blkdev",
})
FUSE_PASSTHROUGH_VALUES = frozenset({"max_read", "fsname", "subtype", "blksize"})

# Accepted for compatibility and ignored: mount(8)/mount.fuse3 noise and options whose
# effect cowfs already has (noacl: ACLs are not enabled; redirect_dir=off/index=off/
# metacopy=off: the only mode cowfs implements; xino: inode numbers are always unique).
IGNORED_FLAGS = frozenset({
    "noacl", "auto", "noauto", "nofail", "user", "nouser", "users", "owner", "group",
    "defaults", "_netdev", "loop", "threaded", "fast_ino", "noxattrs", "userxattr",
    "auto_unmount", "debug", "silent", "remount", "bind", "private", "shared",
})
IGNORED_VALUES = frozenset({
    "context", "fscontext", "defcontext", "rootcontext", "xino", "index", "metacopy",
    "nfs_export", "xattr_permissions", "plugins", "rootmode", "user_id", "group_id",
    "redirect_dir", "uuid", "source", "fd", "max_idle_threads", "clone_fd", "x-systemd",
    "comment",
})
# Accepted but not implemented yet; a warning says so.
UNIMPLEMENTED_VALUES: frozenset[str] = frozenset()

IdMap = tuple[tuple[int, int, int], ...]
"""``(on_disk, shown, count)`` ranges of ``uidmapping=``/``gidmapping=``."""


@dataclass(frozen=True, slots=True)
class MountOptions:
    """Everything the daemon needs to know, already validated for shape (not for existence)."""

    mountpoint: str
    lowerdirs: tuple[str, ...]
    upperdir: str | None = None
    workdir: str | None = None
    source: str = "cowfs-overlay"
    foreground: bool = False
    debug: bool = False
    timeout: float = DEFAULT_TIMEOUT
    writeback: bool = True
    fsync: bool = True
    volatile: bool = False
    read_only: bool = False
    squash_uid: int | None = None
    squash_gid: int | None = None
    uid_map: IdMap = ()
    gid_map: IdMap = ()
    static_nlink: bool = False
    spin_us: int = DEFAULT_SPIN_US
    log_file: str | None = None
    log_level: str = "WARNING"
    fuse_options: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = field(default=())


def split_options(text: str) -> list[str]:
    """Split one ``-o`` argument on commas, honouring ``"..."`` and ``\\,``.

    Quotes are removed; a backslash before a comma or quote is removed too. Other
    backslashes are kept verbatim so that ``lowerdir`` can see its ``\\:`` escapes.
    Empty items (podman's ``,,``) are dropped.
    """
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ',"':
            cur.append(text[i + 1])
            i += 2
            continue
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if quoted:
        raise UsageError(f"parse options {text!r}: unterminated quote")
    items.append("".join(cur))
    return [item for item in items if item]


def split_lowerdir(value: str) -> tuple[str, ...]:
    """Split ``lowerdir=A:B:C`` on unescaped colons (``\\:`` is a colon, ``\\\\`` a backslash)."""
    dirs: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            cur.append(value[i + 1])
            i += 2
            continue
        if c == ":":
            dirs.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    dirs.append("".join(cur))
    if any(not d for d in dirs):
        raise UsageError(f"parse lowerdir={value!r}: empty layer path")
    return tuple(dirs)


def _unescape(value: str) -> str:
    """Drop backslash escapes from a plain option value."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _bool(key: str, value: str) -> bool:
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"parse option {key}={value}: expected 0 or 1")


def _int(key: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"parse option {key}={value}: not an integer") from None
    if n < 0:
        raise UsageError(f"parse option {key}={value}: must not be negative")
    return n


def parse_idmap(key: str, value: str) -> IdMap:
    """Parse fuse-overlayfs's ``ID:MAPPED-ID:LEN[:ID2:MAPPED-ID2:LEN2...]`` (``,`` also
    separates triples, as in the manual's spelling)."""
    parts = value.replace(",", ":").split(":")
    if len(parts) % 3 or not all(p.isdigit() for p in parts):
        raise UsageError(f"parse option {key}={value}: expected ID:MAPPED-ID:LEN triples")
    nums = [int(p) for p in parts]
    out = tuple((nums[i], nums[i + 1], nums[i + 2]) for i in range(0, len(nums), 3))
    if any(n == 0 for _a, _b, n in out):
        raise UsageError(f"parse option {key}={value}: empty range")
    return out


def _abs(path: str) -> str:
    # podman runs us with cwd = the storage dir; relative paths are taken from there.
    return os.path.abspath(path)


def parse_args(argv: Sequence[str], *, euid: int | None = None) -> MountOptions:
    """Parse ``cowfs-overlay`` arguments (without the program name).

    Raises:
        UsageError: for a malformed command line or option value.
    """
    euid = os.geteuid() if euid is None else euid
    opts: list[str] = []
    positional: list[str] = []
    foreground = debug = False
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-o":
            if i + 1 >= len(args):
                raise UsageError("parse arguments: -o needs a value")
            opts.extend(split_options(args[i + 1]))
            i += 2
            continue
        if a.startswith("-o"):
            opts.extend(split_options(a[2:]))
        elif a in ("-f", "--foreground"):
            foreground = True
        elif a == "-d":
            debug = foreground = True
        elif a == "-s":
            pass  # libfuse's single-threaded flag: cowfs is always one thread
        elif a == "--":
            positional.extend(args[i + 1 :])
            break
        elif a.startswith("-") and a != "-":
            raise UsageError(f"parse arguments: unknown flag {a}")
        else:
            positional.append(a)
        i += 1
    if len(positional) == 1:
        source, mountpoint = "cowfs-overlay", positional[0]
    elif len(positional) == 2:
        source, mountpoint = positional
    else:
        raise UsageError(
            "parse arguments: expected MOUNTPOINT or SOURCE MOUNTPOINT, got "
            f"{len(positional)} positional arguments"
        )
    return _build(opts, source, mountpoint, foreground, debug, euid)


def _build(opts: list[str], source: str, mountpoint: str, foreground: bool, debug: bool,
           euid: int) -> MountOptions:
    warnings: list[str] = []
    lowerdirs: tuple[str, ...] = ()
    upper = work = log_file = None
    timeout = DEFAULT_TIMEOUT
    writeback = fsync = True
    volatile = read_only = static_nlink = False
    spin_us = DEFAULT_SPIN_US
    squash_uid: int | None = None
    squash_gid: int | None = None
    maps: dict[str, IdMap] = {"uidmapping": (), "gidmapping": ()}
    log_level = "DEBUG" if debug else ""
    fuse: set[str] = {"default_permissions"}
    if euid == 0:
        fuse.add("allow_other")  # like fuse-overlayfs: other uids use the mount
    for opt in opts:
        key, eq, raw = opt.partition("=")
        if key == "lowerdir" and eq:
            lowerdirs = tuple(_abs(d) for d in split_lowerdir(raw))
            continue
        value = _unescape(raw)
        if key == "upperdir" and eq:
            upper = _abs(value)
        elif key == "workdir" and eq:
            work = _abs(value)
        elif key == "timeout" and eq:
            try:
                timeout = float(value)
            except ValueError:
                raise UsageError(f"parse option timeout={value}: not a number") from None
        elif key == "writeback" and eq:
            writeback = _bool(key, value)
        elif key == "spin" and eq:
            spin_us = _int(key, value)
            if not 0 <= spin_us <= 10_000:
                raise UsageError(f"parse option spin={value}: microseconds from 0 to 10000")
        elif key == "fsync" and eq:
            fsync = _bool(key, value)
        elif key == "volatile" and not eq:
            volatile = True
        elif key == "static_nlink" and not eq:
            static_nlink = True
        elif key == "squash_to_root" and not eq:
            squash_uid = squash_gid = 0
        elif key == "squash_to_uid" and eq:
            squash_uid = _int(key, value)
        elif key == "squash_to_gid" and eq:
            squash_gid = _int(key, value)
        elif key == "log" and eq:
            log_file = _abs(value)
        elif key == "debug_log_level" and eq:
            log_level = value.upper()
        elif key == "ro" and not eq:
            read_only = True
            fuse.add("ro")
        elif key == "redirect_dir" and eq and value not in ("off", "nofollow"):
            warnings.append(f"option redirect_dir={value} not supported; using redirect_dir=off")
        elif key in maps and eq:
            maps[key] = parse_idmap(key, value)
        elif key in UNIMPLEMENTED_VALUES and eq:
            warnings.append(f"option {key} is accepted but not implemented; ids are not mapped")
        elif (key in FUSE_PASSTHROUGH_FLAGS and not eq) or (
            key in FUSE_PASSTHROUGH_VALUES and eq
        ):
            fuse.add(opt if not eq else f"{key}={value}")
        elif (key in IGNORED_FLAGS and not eq) or (key in IGNORED_VALUES and eq) or (
            key.startswith("x-")
        ):
            pass
        else:
            warnings.append(f"unknown option {opt!r} ignored")
    if not lowerdirs:
        raise UsageError("parse options: lowerdir= is required")
    if (upper is None) != (work is None):
        raise UsageError("parse options: upperdir= and workdir= go together")
    if not log_level:
        # A log file is ours alone: say when we mount and unmount. syslog: problems only.
        log_level = "INFO" if log_file else "WARNING"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise UsageError(f"parse option debug_log_level={log_level.lower()}: unknown level")
    if upper is None or read_only:
        fuse.add("ro")
        read_only = True
        writeback = False
    if not any(o.startswith("fsname=") for o in fuse):
        fuse.add(f"fsname={source}")
    if not any(o.startswith("subtype=") for o in fuse):
        fuse.add("subtype=cowfs-overlay")
    if euid == 0:
        # fuse-overlayfs as root: suid binaries work, no atime updates (like its mounts).
        if "nosuid" not in fuse:
            fuse.add("suid")
        if not fuse & {"atime", "relatime", "strictatime"}:
            fuse.add("noatime")
    if "rw" in fuse and "ro" in fuse:
        fuse.discard("rw")
    return MountOptions(
        mountpoint=_abs(mountpoint), lowerdirs=lowerdirs, upperdir=upper, workdir=work,
        source=source, foreground=foreground, debug=debug, timeout=timeout,
        writeback=writeback, fsync=fsync and not volatile, volatile=volatile,
        read_only=read_only, squash_uid=squash_uid, squash_gid=squash_gid,
        uid_map=maps["uidmapping"], gid_map=maps["gidmapping"],
        static_nlink=static_nlink, spin_us=spin_us, log_file=log_file, log_level=log_level,
        fuse_options=frozenset(fuse), warnings=tuple(warnings),
    )
