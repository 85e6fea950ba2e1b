"""Run the benchmark: backing store, fixture, verification, then interleaved rounds of samples.

Owns the order of samples (round by round, workload by workload, one sample per column in a
rotating order: A B C D, B C D A, ...), a fresh upper/work per sample, the watchdog that ends a
hung sample, and collecting raw samples and check results. It must not format reports.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fixture
from .backends import ALL, Impl, is_mounted
from .workloads import BY_NAME, Ctx, Workload, drop_caches

SAMPLE_TIMEOUT = 600.0


@dataclass(slots=True)
class Options:
    work: Path
    backing: str = "tmpfs"
    scale: float = 1.0
    rounds: int = 3
    only: list[str] = field(default_factory=list)
    impls: list[str] = field(default_factory=lambda: list(ALL))
    fio_runtime: float = 5.0
    log: bool = True
    sample_timeout: float = SAMPLE_TIMEOUT


def say(opts: Options, msg: str) -> None:
    if opts.log:
        print(f"bench: {msg}", file=sys.stderr, flush=True)


def _tool_version(argv: list[str], line: int = 0) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (r.stdout + r.stderr).strip().splitlines()
    return lines[line].strip() if len(lines) > line else "?"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    try:
        import pyfuse3
        pyfuse3_version = str(pyfuse3.__version__)
    except Exception:
        pyfuse3_version = "?"
    try:
        import trio
        trio_version = str(trio.__version__)
    except Exception:
        trio_version = "?"
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "os": _tool_version(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "versions": {
            "python": platform.python_version(),
            "pyfuse3": pyfuse3_version,
            "trio": trio_version,
            "libfuse": _tool_version(["fusermount3", "--version"]),
            "fuse-overlayfs": _tool_version(["/usr/bin/fuse-overlayfs", "--version"], 1),
            "fio": _tool_version(["fio", "--version"]),
            "tar": _tool_version(["tar", "--version"]),
            "umoci": _tool_version(["umoci", "--version"]),
            "runc": _tool_version(["runc", "--version"]),
            "cowfs": _tool_version(["git", "-C", str(Path(__file__).parent), "log", "-1",
                                    "--format=%h %cI %s"]),
        },
    }


@contextlib.contextmanager
def backing_store(opts: Options) -> Any:
    """Yield the dir holding layers and scratch: a private tmpfs, or a dir on disk."""
    if opts.backing == "disk":
        d = opts.work / "disk"
        d.mkdir(parents=True, exist_ok=True)
        yield d
        return
    d = opts.work / f"tmpfs-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=90%", "cowfs-bench", str(d)],
                   check=True, capture_output=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            d.rmdir()


class Runner:
    def __init__(self, opts: Options, fx: fixture.Fixture, scratch: Path) -> None:
        self.opts, self.fx, self.scratch = opts, fx, scratch
        self.impls: dict[str, Impl] = {n: ALL[n]() for n in opts.impls}
        self.unavailable: dict[str, str] = {}
        self.verify: dict[str, dict[str, Any]] = {}
        self.samples: list[dict[str, Any]] = []
        self._n = 0

    def _dirs(self, impl: Impl) -> tuple[str, str, str, Path]:
        self._n += 1
        base = self.scratch / f"{impl.name}-{self._n}"
        for sub in ("upper", "work", "mnt"):
            (base / sub).mkdir(parents=True)
        return str(base / "upper"), str(base / "work"), str(base / "mnt"), base

    def _discard(self, base: Path, impl: Impl, mnt: str) -> None:
        if is_mounted(mnt):
            impl.cleanup(mnt)
        shutil.rmtree(base, ignore_errors=True)

    def check_columns(self) -> None:
        """Drop unavailable columns; verify each remaining merged view before any timing."""
        for name, impl in list(self.impls.items()):
            why = impl.unavailable()
            if why is None:
                why = self._verify(impl)
            if why is not None:
                say(self.opts, f"column {name} unavailable: {why}")
                self.unavailable[name] = why
                del self.impls[name]

    def _verify(self, impl: Impl) -> str | None:
        upper, work, mnt, base = self._dirs(impl)
        t0 = time.perf_counter()
        try:
            impl.mount(self.fx.lowerdirs, upper, work, mnt)
            impl.after_mount(mnt)
            problems = fixture.verify_tree(mnt, self.fx.expected)
            impl.unmount(mnt)
            impl.settle(mnt)
        except Exception as exc:
            problems = [f"{type(exc).__name__}: {exc}"]
        finally:
            self._discard(base, impl, mnt)
        self.verify[impl.name] = {"ok": not problems, "entries": len(self.fx.expected),
                                  "problems": problems, "seconds": time.perf_counter() - t0}
        say(self.opts, f"verified {impl.name}: {'ok' if not problems else problems[:3]}")
        if problems:
            return f"merged view differs from the expected tree: {problems[:3]}"
        return None

    def sample(self, impl: Impl, w: Workload, rnd: int) -> dict[str, Any]:
        upper, work, mnt, base = self._dirs(impl)
        ctx = Ctx(self.fx, impl, mnt, upper, work, self.opts.fio_runtime)
        rec: dict[str, Any] = {"round": rnd, "workload": w.name, "impl": impl.name,
                               "load1": os.getloadavg()[0]}
        dog = threading.Timer(self.opts.sample_timeout, impl.kill, [mnt])
        dog.daemon = True
        try:
            if w.cold:
                drop_caches()
            if w.mounted:
                impl.mount(self.fx.lowerdirs, upper, work, mnt)
                impl.after_mount(mnt)
                ctx.pids = impl.daemon_pids(mnt)
            dog.start()
            try:
                res = w.fn(ctx)
            finally:
                if w.mounted and is_mounted(mnt):
                    impl.unmount(mnt)
                    impl.settle(mnt)
            rec["metrics"], rec["problems"] = res.metrics, res.problems
            rec["daemon_cpu"] = res.daemon_cpu
        except Exception as exc:
            rec["metrics"] = {}
            rec["problems"] = [f"{type(exc).__name__}: {exc}"]
            say(self.opts, f"{impl.name} {w.name}: {traceback.format_exc(limit=3)}")
        finally:
            dog.cancel()
            self._discard(base, impl, mnt)
        rec["ok"] = not rec["problems"] and bool(rec["metrics"])
        return rec

    def run(self, workloads: list[Workload]) -> None:
        names = list(self.impls)
        for rnd in range(self.opts.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)] if names else []
            for w in workloads:
                for name in order:
                    rec = self.sample(self.impls[name], w, rnd)
                    self.samples.append(rec)
                    shown = " ".join(f"{k}={v:.4g}" for k, v in rec["metrics"].items())
                    flag = "" if rec["ok"] else f"  CHECK FAILED: {rec['problems'][:2]}"
                    say(self.opts, f"round {rnd + 1} {w.name:<15} {name:<16} {shown}{flag}")


def select_workloads(only: list[str]) -> list[Workload]:
    from .workloads import WORKLOADS

    if not only:
        return list(WORKLOADS)
    unknown = [n for n in only if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"bench: unknown workload(s) {unknown}; known: {list(BY_NAME)}")
    return [w for w in WORKLOADS if w.name in only]
