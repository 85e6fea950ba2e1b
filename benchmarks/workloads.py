"""The timed workloads: each times only its own work on a mounted merged view, then checks it.

Owns what is timed (the tight loop or the subprocess of the workload, nothing around it) and
how its result is checked against the fixture's description. It must not mount (except the
mount-latency workload, which mounts through the `Impl` it is given) nor report.
Every column runs exactly the same code, so the harness's own cost is the same for all.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cowfs import format as fmt

from .backends import Impl, is_mounted
from .fixture import CHUNK, MIB, Fixture, chunk, content

HIGHER_IS_BETTER = frozenset({"fio_randrw_iops"})
LATENCY_ONLY = frozenset({"mount", "unmount"})
"""Not in the workload geomean: mount latency has its own target (a Python program starts in
tens of milliseconds where a C one starts in one, which says nothing about the filesystem)."""
UNITS = {"fio_randrw_iops": "IOPS"}


@dataclass(slots=True)
class Result:
    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    daemon_cpu: dict[str, float] = field(default_factory=dict)  # metric -> CPU seconds


def _cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of the given processes (all their threads, exited ones included)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b") ", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLK_TCK


_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Ctx:
    """One sample: a fixture, an implementation, and (for mounted workloads) a live mount."""

    fx: Fixture
    impl: Impl
    mnt: str
    upper: str
    work: str
    fio_runtime: float = 5.0
    pids: list[int] = field(default_factory=list)  # the FUSE daemon, if any

    @contextlib.contextmanager
    def timed(self, r: Result, metric: str, *, record: bool = True) -> Iterator[None]:
        """Time the block as `metric` (unless `record` is false); note the daemon's CPU."""
        c0 = _cpu_seconds(self.pids) if self.pids else 0.0
        t0 = time.perf_counter()
        yield
        t1 = time.perf_counter()
        if record:
            r.metrics[metric] = t1 - t0
        if self.pids:
            r.daemon_cpu[metric] = _cpu_seconds(self.pids) - c0


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    metrics: tuple[str, ...]
    fn: Callable[[Ctx], Result]
    cold: bool = False  # drop the kernel's caches before mounting
    mounted: bool = True  # the harness mounts a fresh overlay around fn


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc().syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs {path}")
    finally:
        os.close(fd)


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def _expect(problems: list[str], what: str, got: object, want: object) -> None:
    if got != want:
        problems.append(f"{what}: expected {want!r}, got {got!r}")


def _is_whiteout(path: str, name: str) -> bool:
    st = os.lstat(os.path.join(path, name))
    return fmt.is_whiteout_stat(st.st_mode, st.st_rdev)


def _listdir_visible(path: str) -> list[str]:
    """Names in an upper dir, minus the ``.wh.`` namespace (fuse-overlayfs's opaque markers)."""
    if not os.path.isdir(path):
        return []
    return [n for n in os.listdir(path) if not fmt.is_wh_name(os.fsencode(n))]


# --- mount / unmount ---------------------------------------------------------------------

def mount_latency(ctx: Ctx) -> Result:
    r = Result()
    t0 = time.perf_counter()
    ctx.impl.mount(ctx.fx.lowerdirs, ctx.upper, ctx.work, ctx.mnt)
    t1 = time.perf_counter()
    try:
        ctx.impl.after_mount(ctx.mnt)
        want = sorted(p for p in ctx.fx.expected if "/" not in p)
        _expect(r.problems, "mounted", is_mounted(ctx.mnt), True)
        _expect(r.problems, "root listing", sorted(os.listdir(ctx.mnt)), want)
    finally:
        t2 = time.perf_counter()
        ctx.impl.unmount(ctx.mnt)
        t3 = time.perf_counter()
    _expect(r.problems, "mounted after unmount", is_mounted(ctx.mnt), False)
    ctx.impl.settle(ctx.mnt)
    r.metrics = {"mount": t1 - t0, "unmount": t3 - t2}
    return r


# --- tree walk -----------------------------------------------------------------------------

def _walk(root: str) -> tuple[int, int]:
    n = nbytes = 0
    stack = [root]
    while stack:
        d = stack.pop()
        for name in os.listdir(d):
            p = d + "/" + name
            st = os.lstat(p)
            n += 1
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
            elif stat.S_ISREG(st.st_mode):
                nbytes += st.st_size
    return n, nbytes


def _check_walk(ctx: Ctx, r: Result, got: tuple[int, int], what: str) -> None:
    exp = ctx.fx.expected
    want = (len(exp), sum(e.size for e in exp.values() if e.kind == "f"))
    _expect(r.problems, f"{what} (entries, file bytes)", got, want)


def walk_cold_hot(ctx: Ctx) -> Result:
    r = Result()
    with ctx.timed(r, "walk_cold"):
        cold = _walk(ctx.mnt)
    with ctx.timed(r, "walk_hot"):
        hot = _walk(ctx.mnt)
    _check_walk(ctx, r, cold, "walk_cold")
    _check_walk(ctx, r, hot, "walk_hot")
    return r


def walk_warm(ctx: Ctx) -> Result:
    r = Result()
    with ctx.timed(r, "walk_warm"):
        got = _walk(ctx.mnt)
    _check_walk(ctx, r, got, "walk_warm")
    return r


# --- reads --------------------------------------------------------------------------------

def _read_small(paths: list[str]) -> int:
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        total += len(os.read(fd, 65536))
        os.close(fd)
    return total


def _smallread(ctx: Ctx, first: str, second: str | None) -> Result:
    r = Result()
    paths = [f"{ctx.mnt}/{p}" for p in ctx.fx.desc.small_files]
    want = sum(ctx.fx.expected[p].size for p in ctx.fx.desc.small_files)
    with ctx.timed(r, first):
        got = _read_small(paths)
    _expect(r.problems, f"{first} bytes", got, want)
    if second:
        with ctx.timed(r, second):
            got = _read_small(paths)
        _expect(r.problems, f"{second} bytes", got, want)
    for p in ctx.fx.desc.small_files[::97]:  # content of a sample, untimed
        e = ctx.fx.expected[p]
        with open(f"{ctx.mnt}/{p}", "rb") as f:
            if f.read() != content(e.seed, e.size):
                r.problems.append(f"content of {p} differs")
    return r


def smallread_cold_hot(ctx: Ctx) -> Result:
    """Cold (caches dropped, fresh mount), then hot: again on the same mount (page cache)."""
    return _smallread(ctx, "smallread_cold", "smallread_hot")


def smallread_warm(ctx: Ctx) -> Result:
    """Warm: a fresh mount over warm backing caches (every read goes through the overlay)."""
    return _smallread(ctx, "smallread_warm", None)


def _read_big(path: str) -> int:
    buf = bytearray(MIB)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def _check_chunks(r: Result, path: str, seed: int, size: int, what: str) -> None:
    nchunks = size // CHUNK
    with open(path, "rb") as f:
        for k in sorted({0, nchunks // 3, nchunks // 2, nchunks - 1}):
            f.seek(k * CHUNK)
            if f.read(CHUNK) != chunk(seed, k)[: size - k * CHUNK]:
                r.problems.append(f"{what}: chunk {k} of {path} differs")


def _seqread(ctx: Ctx, first: str, second: str | None) -> Result:
    r = Result()
    rel = ctx.fx.desc.big["seq"]
    e = ctx.fx.expected[rel]
    path = f"{ctx.mnt}/{rel}"
    for metric in (first, second):
        if metric:
            with ctx.timed(r, metric):
                got = _read_big(path)
            _expect(r.problems, f"{metric} bytes", got, e.size)
    _check_chunks(r, path, e.seed, e.size, "seqread")
    return r


def seqread_cold_hot(ctx: Ctx) -> Result:
    return _seqread(ctx, "seqread_cold", "seqread_hot")


def seqread_warm(ctx: Ctx) -> Result:
    return _seqread(ctx, "seqread_warm", None)


# --- copy-up ------------------------------------------------------------------------------

def copyup_append(ctx: Ctx) -> Result:
    r = Result()
    rel = ctx.fx.desc.big["append"]
    e = ctx.fx.expected[rel]
    path = f"{ctx.mnt}/{rel}"
    with ctx.timed(r, "copyup_append"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"!")
        os.close(fd)
    _expect(r.problems, "merged size", os.lstat(path).st_size, e.size + 1)
    up = f"{ctx.upper}/{rel}"
    _expect(r.problems, "upper size", os.lstat(up).st_size if os.path.exists(up) else None,
            e.size + 1)
    with open(path, "rb") as f:
        f.seek(e.size)
        _expect(r.problems, "appended byte", f.read(), b"!")
    _check_chunks(r, path, e.seed, e.size, "copyup_append")
    return r


REWRITE_SEED = 777_777


def copyup_rewrite(ctx: Ctx) -> Result:
    r = Result()
    rel = ctx.fx.desc.big["rewrite"]
    e = ctx.fx.expected[rel]
    path = f"{ctx.mnt}/{rel}"
    block = b"".join(chunk(REWRITE_SEED, k) for k in range(MIB // CHUNK))
    full, rest = divmod(e.size, MIB)
    with ctx.timed(r, "copyup_rewrite"):
        fd = os.open(path, os.O_WRONLY)
        for _ in range(full):
            os.write(fd, block)
        if rest:
            os.write(fd, block[:rest])
        os.fsync(fd)
        os.close(fd)
    _expect(r.problems, "merged size", os.lstat(path).st_size, e.size)
    with open(path, "rb") as f:
        for k in (0, e.size // CHUNK - 1):
            f.seek(k * CHUNK)
            want = chunk(REWRITE_SEED, k % (MIB // CHUNK))
            _expect(r.problems, f"rewritten chunk {k}", f.read(CHUNK) == want, True)
    _expect(r.problems, "copied up", os.path.exists(f"{ctx.upper}/{rel}"), True)
    return r


# --- create, untar, rm -rf, rename ----------------------------------------------------------

CREATE_PAYLOAD = b"c" * 1024


def create(ctx: Ctx) -> Result:
    r = Result()
    n = ctx.fx.desc.n_create
    base = f"{ctx.mnt}/new"
    paths = [f"{base}/n{i:05d}" for i in range(n)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    with ctx.timed(r, "create"):
        os.mkdir(base)
        for p in paths:
            fd = os.open(p, flags, 0o644)
            os.write(fd, CREATE_PAYLOAD)
            os.close(fd)
        syncfs(ctx.mnt)
    _expect(r.problems, "files in merged new/", len(os.listdir(base)), n)
    up = _listdir_visible(f"{ctx.upper}/new")
    _expect(r.problems, "files in upper new/", len(up), n)
    sizes = {os.lstat(f"{ctx.upper}/new/{x}").st_size for x in up[:: max(1, n // 50)]}
    _expect(r.problems, "sizes in upper", sizes, {len(CREATE_PAYLOAD)})
    return r


def untar(ctx: Ctx) -> Result:
    r = Result()
    dest = f"{ctx.mnt}/untar"
    os.mkdir(dest)
    with ctx.timed(r, "untar"):
        p = subprocess.run(["tar", "-xf", ctx.fx.tarball, "-C", dest], capture_output=True,
                           text=True)
    if p.returncode != 0:
        r.problems.append(f"tar exit {p.returncode}: {p.stderr.strip()[-300:]}")
    for i, (name, e) in enumerate(ctx.fx.desc.tar_members):
        full = f"{dest}/{name}"
        try:
            st = os.lstat(full)
        except OSError as exc:
            r.problems.append(f"untar: {name}: {exc}")
            break
        if e.kind == "f":
            _expect(r.problems, f"size of {name}", st.st_size, e.size)
            if i % 101 == 0:
                with open(full, "rb") as f:
                    same = f.read() == content(e.seed, e.size)
                _expect(r.problems, f"content of {name}", same, True)
        elif e.kind == "l":
            _expect(r.problems, f"target of {name}", os.readlink(full), e.target)
        if len(r.problems) > 5:
            break
    return r


def rmrf(ctx: Ctx) -> Result:
    r = Result()
    dirs = [f"{ctx.mnt}/{d}" for d in ctx.fx.desc.rm_dirs]
    with ctx.timed(r, "rmrf"):
        p = subprocess.run(["rm", "-rf", *dirs], capture_output=True, text=True)
    if p.returncode != 0:
        r.problems.append(f"rm exit {p.returncode}: {p.stderr.strip()[-300:]}")
    _expect(r.problems, "merged rm/ after rm -rf", os.listdir(f"{ctx.mnt}/rm"), [])
    up = f"{ctx.upper}/rm"
    names = sorted(os.listdir(up)) if os.path.isdir(up) else []
    whiteouts = sorted(n for n in names if _is_whiteout(up, n))
    want = sorted(d.rsplit("/", 1)[1] for d in ctx.fx.desc.rm_dirs)
    _expect(r.problems, "whiteouts in upper rm/", whiteouts, want)
    return r


def rename(ctx: Ctx) -> Result:
    r = Result()
    pairs = [(f"{ctx.mnt}/{p}", f"{ctx.mnt}/{p}.r") for p in ctx.fx.desc.mv_files]
    with ctx.timed(r, "rename"):
        for a, b in pairs:
            os.rename(a, b)
    want = sorted(p.rsplit("/", 1)[1] + ".r" for p in ctx.fx.desc.mv_files)
    _expect(r.problems, "merged mv/ after rename", sorted(os.listdir(f"{ctx.mnt}/mv")), want)
    for p in ctx.fx.desc.mv_files[:: max(1, len(pairs) // 20)]:
        _expect(r.problems, f"size of {p}.r", os.lstat(f"{ctx.mnt}/{p}.r").st_size,
                ctx.fx.expected[p].size)
    up = f"{ctx.upper}/mv"
    gone = [n for n in os.listdir(up) if not n.endswith(".r")] if os.path.isdir(up) else []
    _expect(r.problems, "whiteouts in upper mv/",
            sum(1 for n in gone if _is_whiteout(up, n)), len(pairs))
    return r


# --- fio ---------------------------------------------------------------------------------------

def fio(ctx: Ctx) -> Result:
    r = Result()
    d = f"{ctx.mnt}/fio"
    os.mkdir(d)
    cmd = ["fio", "--name=randrw", f"--directory={d}", "--rw=randrw", "--bs=4k",
           f"--size={ctx.fx.desc.fio_size}", "--ioengine=psync", "--invalidate=0", "--thread",
           "--time_based", f"--runtime={ctx.fio_runtime:g}", "--output-format=json"]
    with ctx.timed(r, "fio_randrw_iops", record=False):  # fio reports the metric itself
        p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        r.problems.append(f"fio exit {p.returncode}: {p.stderr.strip()[-300:]}")
        return r
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    _expect(r.problems, "fio error", job["error"], 0)
    rd, wr = job["read"], job["write"]
    if not (rd["io_bytes"] > 0 and wr["io_bytes"] > 0):
        r.problems.append(f"fio moved no data: read {rd['io_bytes']} write {wr['io_bytes']}")
    up = f"{ctx.upper}/fio"
    files = _listdir_visible(up)
    sizes = [os.lstat(f"{up}/{f}").st_size for f in files]
    _expect(r.problems, "fio file in upper (sizes)", sizes, [ctx.fx.desc.fio_size])
    r.metrics["fio_randrw_iops"] = float(rd["iops"] + wr["iops"])
    return r


WORKLOADS: list[Workload] = [
    Workload("mount", ("mount", "unmount"), mount_latency, mounted=False),
    Workload("walk", ("walk_cold", "walk_hot"), walk_cold_hot, cold=True),
    Workload("walk_warm", ("walk_warm",), walk_warm),
    Workload("smallread", ("smallread_cold", "smallread_hot"), smallread_cold_hot, cold=True),
    Workload("smallread_warm", ("smallread_warm",), smallread_warm),
    Workload("seqread", ("seqread_cold", "seqread_hot"), seqread_cold_hot, cold=True),
    Workload("seqread_warm", ("seqread_warm",), seqread_warm),
    Workload("copyup_append", ("copyup_append",), copyup_append),
    Workload("copyup_rewrite", ("copyup_rewrite",), copyup_rewrite),
    Workload("create", ("create",), create),
    Workload("untar", ("untar",), untar),
    Workload("rmrf", ("rmrf",), rmrf),
    Workload("rename", ("rename",), rename),
    Workload("fio", ("fio_randrw_iops",), fio),
]
BY_NAME = {w.name: w for w in WORKLOADS}
METRICS = [m for w in WORKLOADS for m in w.metrics]
