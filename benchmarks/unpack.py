"""Layer unpack benchmark: cowfs ``unpack_layer`` beside GNU tar and ``umoci unpack``.

Owns the unpack section of the benchmarks (see benchmarks/README.md "Section
modules"): a realistic layer (a debootstrap ``--variant=minbase`` bookworm rootfs,
built once and cached under ``benchmarks/.work/unpack/``; a seeded synthetic tree
when debootstrap fails or a small ``scale`` is asked), tarred by GNU tar (pax,
xattrs) as an uncompressed and a zstd layer, then unpacked by each tool in
interleaved rounds on ext4 (a dir under /var/tmp) and on a private tmpfs.

    python -m benchmarks.unpack [--rounds N] [--scale F] [--md benchmarks/UNPACK.md]

As root; re-executes itself in a private mount namespace for the tmpfs mount.
cowfs runs in-process (as the store calls it); tar and umoci are subprocesses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".work" / "unpack"
TAR_X = ["tar", "-x", "--xattrs", "--xattrs-include=*", "--same-owner", "-p",
         "--numeric-owner"]
TOOLS = ("cowfs", "tar", "umoci")


# -- fixture ---------------------------------------------------------------------------
def _synthetic(root: Path, files: int, seed: int = 1) -> None:
    """A seeded tree shaped like a distro rootfs: many small files, some big, links."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    dirs = [root]
    for i in range(max(files // 12, 4)):
        d = rng.choice(dirs) / f"d{i}"
        d.mkdir()
        dirs.append(d)
    made: list[Path] = []
    for i in range(files):
        p = rng.choice(dirs) / f"f{i}.so"
        size = min(int(rng.lognormvariate(8.5, 1.6)), 8 << 20)
        p.write_bytes(rng.randbytes(size // 2) + bytes(size - size // 2))
        p.chmod(rng.choice([0o644, 0o755, 0o600]))
        made.append(p)
    for i in range(files // 20):
        os.symlink(f"../x{i}", rng.choice(dirs) / f"l{i}")
        os.link(rng.choice(made), rng.choice(dirs) / f"h{i}")


def build_fixture(scale: float, log: Callable[[str], None]) -> tuple[Path, str]:
    """Return (cache dir for this fixture, description); tars are built inside."""
    if scale >= 1.0:
        fx = CACHE / "minbase"
        rootfs = fx / "rootfs"
        if not (fx / "ok").exists():
            shutil.rmtree(fx, ignore_errors=True)
            fx.mkdir(parents=True)
            log("unpack: debootstrap --variant=minbase bookworm (once, cached)")
            r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)],
                               capture_output=True, text=True, check=False)
            if r.returncode == 0:
                (fx / "ok").write_text("debootstrap minbase bookworm\n")
            else:
                log(f"unpack: debootstrap failed ({r.stderr.strip()[-200:]}); "
                    "falling back to a synthetic tree")
                shutil.rmtree(fx, ignore_errors=True)
                return build_fixture(0.999, log)
        desc = "debootstrap --variant=minbase bookworm rootfs"
    else:
        files = max(int(6500 * scale), 50)
        fx = CACHE / f"synthetic-{files}"
        rootfs = fx / "rootfs"
        if not (fx / "ok").exists():
            shutil.rmtree(fx, ignore_errors=True)
            _synthetic(rootfs, files)
            (fx / "ok").write_text("synthetic\n")
        desc = f"synthetic tree ({files} files, seeded; not a real distro)"
    tar = fx / "layer.tar"
    if not tar.exists():
        subprocess.run(["tar", "-c", "-f", str(tar) + ".tmp", "--format=pax", "--xattrs",
                        "--xattrs-include=*", "--numeric-owner", "-C", str(rootfs), "."],
                       check=True)
        os.replace(str(tar) + ".tmp", tar)
    zst = fx / "layer.tar.zst"
    if not zst.exists():
        subprocess.run(["zstd", "-q", "-3", "-T0", "-f", "-o", str(zst) + ".tmp", str(tar)],
                       check=True)
        os.replace(str(zst) + ".tmp", zst)
    for name in ("layer.tar", "layer.tar.zst"):
        _oci_layout(fx, name)
    return fx, desc


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _oci_layout(fx: Path, layer_name: str) -> Path:
    """An OCI image layout holding just this layer (for ``umoci unpack``)."""
    layout = fx / f"oci-{layer_name.replace('.', '-')}"
    if (layout / "index.json").exists():
        return layout
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    layer = fx / layer_name
    digest = _sha(layer)
    if not (blobs / digest).exists():
        os.link(layer, blobs / digest)
    diff_id = _sha(fx / "layer.tar")
    zst = layer_name.endswith(".zst")
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}
                        ).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _put(blobs, config, "application/vnd.oci.image.config.v1+json"),
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar"
                    + ("+zstd" if zst else ""),
                    "digest": f"sha256:{digest}", "size": layer.stat().st_size}],
    }).encode()
    desc = _put(blobs, manifest, "application/vnd.oci.image.manifest.v1+json")
    desc["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return layout


def _put(blobs: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


# -- tools -------------------------------------------------------------------------------
def _run_cowfs(layer: Path, out: Path) -> None:
    from cowfs.store.unpack import unpack_layer

    out.mkdir()
    with open(layer, "rb") as f:
        unpack_layer(f, str(out))


def _run_tar(layer: Path, out: Path) -> None:
    out.mkdir()
    extra = ["-I", "zstd"] if layer.suffix == ".zst" else []
    subprocess.run([*TAR_X, *extra, "-f", str(layer), "-C", str(out)], check=True)


def _run_umoci(layer: Path, out: Path) -> None:
    layout = layer.parent / f"oci-{layer.name.replace('.', '-')}"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(out)], check=True,
                   capture_output=True)


RUNNERS: dict[str, Callable[[Path, Path], None]] = {
    "cowfs": _run_cowfs, "tar": _run_tar, "umoci": _run_umoci}


def _tree(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            extra: Any = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = st.st_size
            xa = sorted(os.listxattr(p, follow_symlinks=False))
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_gid,
                                             st.st_mtime_ns, extra, st.st_nlink, tuple(xa))
    return out


def _cpu() -> float:
    """CPU seconds (user + sys) of this process's threads and its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def _rm(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def bench_on(base: Path, fx: Path, rounds: int, log: Callable[[str], None],
             label: str) -> list[dict[str, Any]]:
    """Interleaved rounds of every tool on both layers, unpacking under ``base``."""
    rows: list[dict[str, Any]] = []
    for layer in (fx / "layer.tar", fx / "layer.tar.zst"):
        times: dict[str, list[float]] = {t: [] for t in TOOLS}
        cpus: dict[str, list[float]] = {t: [] for t in TOOLS}
        # umoci 0.4.7 (Debian 12) refuses +zstd layers: it runs on the plain tar only
        tools = [t for t in TOOLS
                 if t != "umoci" or (shutil.which("umoci") and layer.suffix == ".tar")]
        identical: bool | None = None
        for r in range(rounds + 1):  # round 0 warms the page cache and is not counted
            order = tools[r % len(tools):] + tools[: r % len(tools)]
            # Outputs of the previous round are deleted together, then the fs settles:
            # on ext4 a run right after deleting a 200 MB tree pays for that deletion.
            for tool in order:
                _rm(base / f"out-{tool}")
            os.sync()
            time.sleep(1.0)
            for tool in order:
                out = base / f"out-{tool}"
                os.sync()
                c0 = _cpu()
                t0 = time.perf_counter()
                RUNNERS[tool](layer, out)
                dt = time.perf_counter() - t0
                if r:
                    times[tool].append(dt)
                    cpus[tool].append(_cpu() - c0)
            if r == 0:
                identical = _tree(base / "out-cowfs") == _tree(base / "out-tar")
        for tool in tools:
            _rm(base / f"out-{tool}")
        med = {t: statistics.median(v) for t, v in times.items() if v}
        row: dict[str, Any] = {"backing": label, "layer": layer.name}
        for t in tools:
            row[f"{t}_s"] = round(med[t], 3)
        for t in tools:
            row[f"{t}_cpu_s"] = round(statistics.median(cpus[t]), 3)
        row["cowfs/tar"] = round(med["cowfs"] / med["tar"], 2)
        if "umoci" in med:
            row["cowfs/umoci"] = round(med["cowfs"] / med["umoci"], 2)
        row["same_tree_as_tar"] = identical
        log(f"unpack: {label} {layer.name}: " + ", ".join(
            f"{t} {med[t]:.3f}s" for t in tools) + f"; cowfs/tar {row['cowfs/tar']}")
        rows.append(row)
    return rows


def run(work: Path | None = None, rounds: int = 5, scale: float = 1.0,
        backing: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the unpack benchmark; the section entry point of ``python -m benchmarks``.

    With ``backing`` ("tmpfs"/"disk") and ``work`` (a dir on that backing) it measures
    there only; without, it measures on ext4 under /var/tmp and on a private tmpfs
    (this needs a private mount namespace: ``main()`` provides one).
    """
    fx, desc = build_fixture(scale, log)
    load = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    if backing is not None and work is not None:
        rows += bench_on(work, fx, rounds, log, backing)
    else:
        with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cowfs-unpack-") as d:
            rows += bench_on(Path(d), fx, rounds, log, "ext4 (/var/tmp)")
        with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="cowfs-unpack-tmpfs-") as d:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g", "tmpfs", d], check=True)
            try:
                rows += bench_on(Path(d), fx, rounds, log, "tmpfs")
            finally:
                subprocess.run(["umount", d], check=True)
    sizes = {n: (fx / n).stat().st_size for n in ("layer.tar", "layer.tar.zst")}
    entries = int(subprocess.run(["tar", "-tf", str(fx / "layer.tar")], capture_output=True,
                                 check=True).stdout.count(b"\n"))
    load = max(load, os.getloadavg()[0])
    return {"fixture": desc, "entries": entries, "sizes": sizes, "rounds": rounds,
            "load": load, "cpus": os.cpu_count(), "rows": rows,
            "markdown": markdown(desc, entries, sizes, rounds, rows, load)}


def markdown(desc: str, entries: int, sizes: dict[str, int], rounds: int,
             rows: list[dict[str, Any]], load: float = 0.0) -> str:
    lines = [f"Layer: {desc}, {entries} entries; layer.tar {sizes['layer.tar'] / 1e6:.0f} MB, "
             f"layer.tar.zst {sizes['layer.tar.zst'] / 1e6:.0f} MB (zstd -3). "
             f"Medians of {rounds} interleaved rounds (after one warm-up round): wall seconds, "
             f"and CPU seconds (user+sys, all threads and children) in parentheses. "
             f"{os.cpu_count()} CPUs, 1-min load average up to {load:.1f} during the run.",
             "",
             "| backing | layer | cowfs | GNU tar | umoci | cowfs/tar | cowfs/umoci "
             "| same tree as tar |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(t: str, r: dict[str, Any] = r) -> str:
            return f"{r[t + '_s']} ({r[t + '_cpu_s']})" if t + "_s" in r else "n/a"
        lines.append(f"| {r['backing']} | {r['layer']} | {cell('cowfs')} | {cell('tar')} | "
                     f"{cell('umoci')} | {r['cowfs/tar']} | "
                     f"{r.get('cowfs/umoci', 'n/a')} | {r['same_tree_as_tar']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.unpack", description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--md", default=str(REPO / "benchmarks" / "UNPACK.md"))
    ap.add_argument("--json", default=str(CACHE / "results.json"))
    args = ap.parse_args(argv)
    if os.environ.get("COWFS_UNPACK_BENCH_NS") != "1":
        env = dict(os.environ, COWFS_UNPACK_BENCH_NS="1")
        cmd = ["unshare", "-m", "--propagation", "private", sys.executable, "-m",
               "benchmarks.unpack", *(argv if argv is not None else sys.argv[1:])]
        return subprocess.run(cmd, env=env, cwd=REPO, check=False).returncode
    res = run(rounds=args.rounds, scale=args.scale)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1))
    if args.md:
        head = ("# Layer unpack: cowfs vs GNU tar vs umoci\n\n"
                "Written by `python -m benchmarks.unpack` (benchmarks/unpack.py). cowfs runs "
                "in-process (`cowfs.store.unpack.unpack_layer`, as the store calls it); "
                "`tar -x --xattrs --xattrs-include='*' --same-owner -p --numeric-owner` "
                "(`-I zstd` for the zstd layer) and `umoci unpack` (OCI layout with the same "
                "blob) are subprocesses. Output trees are removed between rounds (then `sync` "
                "and a 1 s settle) and `sync` is called before each timed run; no tool "
                "fsyncs. cowfs also computes the layer's sha256 "
                "digest/DiffID while unpacking (tar and umoci's unpack step do not), which is "
                "about 0.12 s of CPU for this layer. On a shared, loaded 2-CPU machine the "
                "wall times vary from run to run (ext4 most: writeback and other jobs' I/O); "
                "the CPU seconds are the steadier comparison.\n\n")
        Path(args.md).write_text(head + res["markdown"])
    print(res["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
