"""``python -m benchmarks``: cowfs beside the kernel and fuse-overlayfs, one fixture, interleaved.

Owns the command line, the private mount namespace, and the order of the whole run (fixture,
backing store, column checks, timed rounds, sections, reports). Timing and checking live in
`workloads`, mounting in `backends`, statistics in `report`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import fixture, report
from .backends import ALL
from .runner import Options, Runner, backing_store, machine_info, say, select_workloads
from .sections import SECTIONS, run_section
from .workloads import BY_NAME

HERE = Path(__file__).resolve().parent
NS_MARK = "COWFS_BENCH_PRIVATE_NS"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--backing", choices=("tmpfs", "disk"), default="tmpfs",
                   help="where layers and uppers live (default: a private tmpfs)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="fixture size (1.0: ~20k small files, ~480 MiB large files)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="",
                   help="comma list of workloads and sections (" + ",".join(
                       [*BY_NAME, *SECTIONS]) + ")")
    p.add_argument("--impl", default=",".join(ALL), help="comma list of columns: " + ",".join(ALL))
    p.add_argument("--fio-runtime", type=float, default=5.0, help="seconds per fio sample")
    p.add_argument("--sample-timeout", type=float, default=600.0,
                   help="watchdog: end a sample (kill its daemon) after this many seconds")
    p.add_argument("--json", default=str(HERE / ".work" / "results.json"), help="JSON output")
    p.add_argument("--md", default=str(HERE / "RESULTS.md"),
                   help="Markdown output ('' for none)")
    p.add_argument("--work", default=str(HERE / ".work"),
                   help="cache and scratch dir (fixture cached here)")
    p.add_argument("--no-sections", action="store_true", help="skip the unpack and run sections")
    p.add_argument("--nice", type=int, default=0,
                   help="scheduling niceness of the run and everything it starts (e.g. -10 on a "
                   "machine shared with other jobs)")
    p.add_argument("-q", "--quiet", action="store_true")
    return p.parse_args(argv)


def _in_private_ns() -> bool:
    try:
        return os.readlink("/proc/self/ns/mnt") != os.readlink("/proc/1/ns/mnt")
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if os.geteuid() != 0:
        print("bench: needs root (kernel overlay mounts, drop_caches)", file=sys.stderr)
        return 2
    if not _in_private_ns() and os.environ.get(NS_MARK) != "1":
        # Everything the benchmark mounts must stay out of the host's mount table.
        env = dict(os.environ, **{NS_MARK: "1"})
        cmd = ["unshare", "-m", "--propagation", "private", sys.executable, "-m", "benchmarks"]
        os.execvpe("unshare", [*cmd, *argv], env)
    a = parse(argv)
    if a.nice:
        os.setpriority(os.PRIO_PROCESS, 0, a.nice)
    only = [x for x in a.only.split(",") if x]
    impls = [x for x in a.impl.split(",") if x]
    bad = [i for i in impls if i not in ALL]
    if bad:
        print(f"bench: unknown column(s) {bad}; known: {list(ALL)}", file=sys.stderr)
        return 2
    opts = Options(work=Path(a.work).resolve(), backing=a.backing, scale=a.scale,
                   rounds=a.rounds, only=[x for x in only if x not in SECTIONS], impls=impls,
                   fio_runtime=a.fio_runtime, log=not a.quiet, sample_timeout=a.sample_timeout)
    sections = [s for s in SECTIONS if not a.no_sections and (not only or s in only)]
    workloads = select_workloads(opts.only) if (not only or opts.only) else []
    doc = run_all(opts, workloads, sections, argv)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if a.md:
        Path(a.md).write_text(report.markdown(doc))
    say(opts, f"wrote {a.json}" + (f" and {a.md}" if a.md else ""))
    if not a.quiet:
        print(report.markdown(doc))
    failed = [f"{m}/{i}" for m, row in doc["summary"]["stats"].items()
              for i, c in row.items() if not c["checks_ok"]]
    if failed:
        print(f"bench: result checks FAILED for {failed}", file=sys.stderr)
    return 1 if failed else 0


def run_all(opts: Options, workloads: list[Any], sections: list[str],
            argv: list[str]) -> dict[str, Any]:
    started = datetime.now(UTC)
    load_before = list(os.getloadavg())
    t0 = time.monotonic()
    opts.work.mkdir(parents=True, exist_ok=True)
    say(opts, f"fixture at scale {opts.scale} (cached under {opts.work})")
    fx = fixture.build(opts.work / "cache", opts.scale)
    doc: dict[str, Any] = {}
    with backing_store(opts) as back:
        if opts.backing == "tmpfs":
            say(opts, f"copying the fixture to tmpfs {back}")
            fx = fixture.copy_to(fx, back / "fixture")
        scratch = back / f"scratch-{os.getpid()}"
        scratch.mkdir(parents=True, exist_ok=True)
        runner = Runner(opts, fx, scratch)
        if workloads:
            runner.check_columns()
            runner.run(workloads)
        names = list(opts.impls)
        doc["columns"] = {
            n: {"available": n in runner.impls, "reason": runner.unavailable.get(n),
                "version": runner.impls[n].version() if n in runner.impls else ""}
            for n in names if n in runner.impls or n in runner.unavailable}
        doc["verify"] = runner.verify
        doc["samples"] = runner.samples
        doc["summary"] = report.summarize(runner.samples, list(runner.impls))
        doc["targets"] = report.targets(doc["summary"])
        doc["sections"] = {}
        for s in sections:
            say(opts, f"section {s}")
            doc["sections"][s] = run_section(s, back / f"section-{s}", rounds=opts.rounds,
                                             scale=opts.scale, backing=opts.backing,
                                             log=lambda m: say(opts, m))
        shutil.rmtree(scratch, ignore_errors=True)
    doc["meta"] = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "elapsed_s": time.monotonic() - t0,
        "command": "python -m benchmarks " + shlex.join(argv),
        "machine": machine_info(),
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
        "backing": opts.backing,
        "scale": opts.scale,
        "rounds": opts.rounds,
        "fio_runtime": opts.fio_runtime,
        "fixture": fx.summary(),
        "workloads": [w.name for w in workloads],
    }
    return {"meta": doc.pop("meta"), **doc}


if __name__ == "__main__":
    sys.exit(main())
