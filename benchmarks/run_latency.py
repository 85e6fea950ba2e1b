"""``cowfs run --rm ROOTFS true`` latency beside ``runc run`` on the same busybox rootfs.

Owns the ``run`` section of the benchmarks (benchmarks/README.md "Section modules"):
one busybox-static rootfs dir; cowfs runs it as an overlay lower (kernel backend, and
FUSE when asked) with a fresh writable layer per run, namespaces, /proc, /dev, cgroups,
supervisor and ``--rm`` cleanup; runc runs an OCI bundle on the same dir. Rounds are
interleaved; medians are reported, with the bare ``python -c pass`` start-up as a floor,
and the load average before and after (the numbers scale with it on a shared machine).
cowfs runs as ``python -m cowfs.cli`` (the ``cowfs`` console script costs the same), with
its bytecode compiled first, as an installed package has it: under
``PYTHONDONTWRITEBYTECODE=1`` every edited module would otherwise be compiled again on
each run (~20 ms of the run path after an edit).

    python -m benchmarks.run_latency [--rounds N] [--backends kernel,fuse]

As root, inside a private mount namespace (``make bench`` provides one).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"


def make_rootfs(root: Path) -> Path:
    """A minimal busybox rootfs (the same dir for every runtime)."""
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox" and not (root / "bin" / a).exists():
            os.symlink("busybox", root / "bin" / a)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


def make_bundle(work: Path, rootfs: Path) -> Path:
    """An OCI runtime bundle for runc whose root is ``rootfs``."""
    bundle = work / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"]["args"] = ["true"]
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _import_image(store: Path, rootfs: Path, work: Path) -> str:
    """The same rootfs as a one-layer image in a cowfs store (``cowfs import``)."""
    layer = work / "rootfs.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(layer), "."],
                   check=True)
    subprocess.run([sys.executable, "-m", "cowfs.cli", "--root", str(store), "import",
                    "--tag", "runlat:1", str(layer)], check=True, capture_output=True)
    return "runlat:1"


def loadavg() -> str:
    """The 1/5/15-minute load averages, as /proc/loadavg has them."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def compile_cowfs() -> None:
    """Bring cowfs's ``__pycache__`` up to date (only stale modules are compiled)."""
    import cowfs

    compileall.compile_dir(str(Path(cowfs.__file__).parent), quiet=1)


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}...: exit {r.returncode}: "
                           f"{r.stderr.decode(errors='replace').strip()[:300]}")
    return dt


def run(work: Path | None = None, rounds: int = 15, backends: tuple[str, ...] = ("kernel",),
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure; returns ``{"rows": [...], "markdown": ...}`` (seconds, medians)."""
    owned = work is None
    work = Path(tempfile.mkdtemp(prefix="cowfs-runlat-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    try:
        rootfs = make_rootfs(work / "rootfs")
        store = work / "store"
        cmds: dict[str, list[str]] = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
        }
        image = _import_image(store, rootfs, work)
        cowfs = [sys.executable, "-m", "cowfs.cli"]
        for b in backends:
            cmds[f"cowfs run --rm IMAGE ({b})"] = [
                *cowfs, "--root", str(store), "run", "--rm", "--backend", b, image, "true"]
            cmds[f"cowfs run --rm ROOTFS-DIR ({b})"] = [
                *cowfs, "--root", str(store), "run", "--rm", "--backend", b, str(rootfs),
                "true"]
        if shutil.which("runc"):
            bundle = make_bundle(work, rootfs)
            state = work / "runc-state"
            cmds["runc run"] = ["runc", "--root", str(state), "run", "--bundle", str(bundle),
                                "RUNID"]
        compile_cowfs()
        times: dict[str, list[float]] = {k: [] for k in cmds}
        load_before = loadavg()
        for i in range(rounds + 1):  # round 0 warms caches and is dropped
            for name, cmd in cmds.items():
                c = [x.replace("RUNID", f"lat{i}") for x in cmd]
                dt = _time(c)
                if i:
                    times[name].append(dt)
            log(f"run latency: round {i}/{rounds}")
        load_after = loadavg()
        runc = statistics.median(times["runc run"]) if "runc run" in times else None
        rows = []
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"runtime": name, "median_ms": round(med * 1000, 1),
                         "min_ms": round(min(ts) * 1000, 1),
                         "vs_runc": round(med / runc, 2) if runc else None})
        md = ["| runtime | median ms | min ms | vs runc |", "|---|---:|---:|---:|"]
        md += [f"| {r['runtime']} | {r['median_ms']} | {r['min_ms']} | {r['vs_runc']} |"
               for r in rows]
        md += ["", f"{rounds} interleaved rounds; load average {load_before} before, "
               f"{load_after} after."]
        return {"rows": rows, "rounds": rounds, "load_before": load_before,
                "load_after": load_after, "markdown": "\n".join(md)}
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--backends", default="kernel", help="comma list of kernel,fuse")
    args = ap.parse_args(argv)
    res = run(rounds=args.rounds, backends=tuple(args.backends.split(",")),
              log=lambda m: print(m, file=sys.stderr))
    print(res["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
