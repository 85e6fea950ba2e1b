"""The benchmark fixture: a deterministic three-layer stack, its expected merged view, a tarball.

Owns the fixture's *description* (a pure, seeded model of every layer entry), writing it to
disk once (cached under ``benchmarks/.work/``), and computing the merged tree the overlay must
show from that description alone: never from another implementation's output. It must not
mount anything or time anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import tarfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cowfs import format as fmt

FIXTURE_VERSION = 3
"""Bump when the description changes, so cached fixtures are rebuilt."""
SEED = 20261129
CHUNK = 64 * 1024
_POOL_SIZE = 4 * 1024 * 1024
_POOL = random.Random(SEED).randbytes(_POOL_SIZE + CHUNK)
MIB = 1024 * 1024

LAYER_NAMES = ("L0", "L1", "L2")
"""Bottom to top. ``lowerdir=`` wants the top first: see `Fixture.lowerdirs`."""


def chunk(file_seed: int, k: int) -> bytes:
    """Chunk k (CHUNK bytes) of a pattern file: cheap to generate and to verify anywhere."""
    off = (file_seed * 131 + k * 7919) % _POOL_SIZE
    head = f"{file_seed:08x}:{k:08x}|".encode()
    return head + _POOL[off : off + CHUNK - len(head)]


def content(file_seed: int, size: int) -> bytes:
    """Full content of a file of the fixture (small files: one random block)."""
    if size <= CHUNK:
        return random.Random(file_seed).randbytes(size)
    n = (size + CHUNK - 1) // CHUNK
    return b"".join(chunk(file_seed, k) for k in range(n))[:size]


def crc_of(file_seed: int, size: int) -> int:
    """crc32 of `content` without holding the whole file in memory."""
    if size <= CHUNK:
        return zlib.crc32(content(file_seed, size))
    crc, left, k = 0, size, 0
    while left > 0:
        c = chunk(file_seed, k)[:left]
        crc = zlib.crc32(c, crc)
        left -= len(c)
        k += 1
    return crc


@dataclass(frozen=True, slots=True)
class Entry:
    """One object in a layer (or in the expected merged view)."""

    kind: str  # "f" file, "d" dir, "l" symlink, "w" whiteout (char 0/0)
    mode: int = 0o644
    size: int = 0
    seed: int = 0
    target: str = ""
    opaque: bool = False


@dataclass(slots=True)
class Description:
    """The whole fixture as data: layers bottom to top, special paths, tarball members."""

    scale: float
    layers: list[dict[str, Entry]] = field(default_factory=lambda: [{}, {}, {}])
    small_files: list[str] = field(default_factory=list)  # visible small files under tree/
    big: dict[str, str] = field(default_factory=dict)  # role -> merged path
    rm_dirs: list[str] = field(default_factory=list)
    mv_files: list[str] = field(default_factory=list)
    tar_members: list[tuple[str, Entry]] = field(default_factory=list)
    n_create: int = 0
    fio_size: int = 0


def _add(layer: dict[str, Entry], path: str, e: Entry) -> None:
    parts = path.split("/")
    for i in range(1, len(parts)):
        layer.setdefault("/".join(parts[:i]), Entry("d", 0o755))
    if e.kind == "d" and path in layer:
        layer[path] = Entry("d", e.mode, opaque=e.opaque or layer[path].opaque)
    else:
        layer[path] = e


def describe(scale: float) -> Description:
    """Build the seeded description of the fixture at `scale` (1.0 = about 20k small files)."""
    rng = random.Random(SEED)
    d = Description(scale=scale)
    l0, l1, l2 = d.layers
    seeds = iter(range(1, 10**9))
    n_small = max(60, int(20000 * scale))
    per_leaf = min(100, max(10, n_small // 20))
    whiteout_dir, opaque_dir = "tree/a00/b1", "tree/a00/b2"
    for i in range(n_small):
        leaf = i // per_leaf
        path = f"tree/a{leaf // 10:02d}/b{leaf % 10}/f{i:05d}.dat"
        size = rng.randint(1024, 8192)
        mode = rng.choice((0o644, 0o644, 0o644, 0o755, 0o600))
        r = rng.random()
        target = l0 if r < 0.7 or leaf < 3 else (l1 if r < 0.85 else l2)
        _add(target, path, Entry("f", mode, size, next(seeds)))
        if target is l0 and leaf >= 3:
            r2 = rng.random()
            if r2 < 0.05:  # overridden in a higher layer, with a new size and content
                over = l1 if r2 < 0.025 else l2
                _add(over, path, Entry("f", 0o644, rng.randint(1024, 8192), next(seeds)))
            elif r2 < 0.07:  # deleted by a whiteout in the middle layer
                _add(l1, path, Entry("w", 0))
        if i % per_leaf == 0:
            link = Entry("l", 0o777, target=path.rsplit("/", 1)[1])
            _add(l0, f"tree/a{leaf // 10:02d}/b{leaf % 10}/link", link)
    # A dir whited out in the middle layer, and one made opaque there (with a file of its own).
    _add(l1, whiteout_dir, Entry("w", 0))
    _add(l1, opaque_dir, Entry("d", 0o755, opaque=True))
    _add(l1, f"{opaque_dir}/only-in-l1.dat", Entry("f", 0o644, 3000, next(seeds)))
    # Large files (sequential read, copy-up) and one large file overridden in L1.
    big = {"seq": 256, "append": 128, "rewrite": 64, "over": 32}
    for role, mib in big.items():
        size = max(MIB, int(mib * MIB * scale)) // CHUNK * CHUNK
        _add(l0, f"big/{role}.bin", Entry("f", 0o644, size, next(seeds)))
        d.big[role] = f"big/{role}.bin"
    _add(l1, "big/over.bin", Entry("f", 0o644, max(MIB // 2, int(16 * MIB * scale)), next(seeds)))
    # Subtrees to rm -rf (split across L0 and L1) and files to rename.
    n_rm = max(20, int(2000 * scale))
    for t in range(10):
        d.rm_dirs.append(f"rm/t{t}")
        for j in range(n_rm // 10):
            layer = l0 if j % 3 else l1
            _add(layer, f"rm/t{t}/s{j % 4}/g{j:04d}", Entry("f", 0o644, 2048, next(seeds)))
    n_mv = max(20, int(2000 * scale))
    for j in range(n_mv):
        layer = l0 if j % 4 else l1
        _add(layer, f"mv/m{j:05d}", Entry("f", 0o644, 1500, next(seeds)))
        d.mv_files.append(f"mv/m{j:05d}")
    merged = merge(d.layers)
    d.small_files = sorted(p for p, e in merged.items() if p.startswith("tree/") and e.kind == "f")
    d.n_create = max(100, int(10000 * scale))
    d.fio_size = max(4 * MIB, int(256 * MIB * scale)) // MIB * MIB
    d.tar_members = _tar_members(rng, max(2 * MIB, int(100 * MIB * scale)), seeds)
    return d


def _tar_members(rng: random.Random, total: int, seeds: object) -> list[tuple[str, Entry]]:
    members: list[tuple[str, Entry]] = []
    it = iter(seeds)  # type: ignore[call-overload]
    nbytes, i = 0, 0
    while nbytes < total:
        dname = f"u/d{i // 100:03d}"
        if i % 100 == 0:
            members.append((dname, Entry("d", 0o755)))
            members.append((f"{dname}/link", Entry("l", 0o777, target="../README")))
        size = rng.randint(1024, 16384) if rng.random() < 0.9 else rng.randint(100_000, 300_000)
        members.append((f"{dname}/x{i:05d}", Entry("f", 0o644, size, next(it))))
        nbytes += size
        i += 1
    return members


def merge(layers: list[dict[str, Entry]]) -> dict[str, Entry]:
    """The merged view the kernel shows for `layers` (bottom to top), from the description.

    Top-down lookup: the topmost layer holding a name decides; a whiteout hides it and
    everything below; a non-dir hides what is below; dirs merge until an opaque one.
    """
    children: list[dict[str, set[str]]] = []
    for layer in layers:
        ch: dict[str, set[str]] = {"": set()}
        for p in layer:
            parent, _, name = p.rpartition("/")
            ch.setdefault(parent, set()).add(name)
        children.append(ch)
    top_down = list(range(len(layers) - 1, -1, -1))
    out: dict[str, Entry] = {}

    def visit(dirpath: str, stack: list[int]) -> None:
        names: set[str] = set()
        for li in stack:
            names |= children[li].get(dirpath, set())
        for name in sorted(names):
            path = f"{dirpath}/{name}" if dirpath else name
            sub: list[int] = []
            for li in stack:
                e = layers[li].get(path)
                if e is None:
                    continue
                if e.kind == "w":
                    break
                if e.kind != "d":
                    if not sub:
                        out[path] = e
                    break
                sub.append(li)
                if e.opaque:
                    break
            if sub:
                out[path] = Entry("d", layers[sub[0]][path].mode)
                visit(path, sub)

    visit("", top_down)
    return out


@dataclass(frozen=True, slots=True)
class Fixture:
    """A built fixture on disk: the layer dirs, the tarball and the expected merged tree."""

    root: Path
    desc: Description
    expected: dict[str, Entry]

    @property
    def layer_dirs(self) -> list[str]:
        """Layer dirs bottom to top."""
        return [str(self.root / n) for n in LAYER_NAMES]

    @property
    def lowerdirs(self) -> list[str]:
        """Layer dirs top first, as ``lowerdir=`` and cowfs.mount want them."""
        return list(reversed(self.layer_dirs))

    @property
    def tarball(self) -> str:
        return str(self.root / "untar.tar")

    def summary(self) -> dict[str, object]:
        files = [e for e in self.expected.values() if e.kind == "f"]
        every = [e for layer in self.desc.layers for e in layer.values()]
        layer_bytes = sum(e.size for e in every if e.kind == "f")
        return {
            "scale": self.desc.scale,
            "seed": SEED,
            "version": FIXTURE_VERSION,
            "layers": [len(layer) for layer in self.desc.layers],
            "layer_bytes": layer_bytes,
            "merged_entries": len(self.expected),
            "merged_files": len(files),
            "small_files": len(self.desc.small_files),
            "big_files": {k: self.expected[v].size for k, v in self.desc.big.items()},
            "whiteouts": sum(1 for e in every if e.kind == "w"),
            "opaque_dirs": sum(1 for e in every if e.opaque),
            "tar_members": len(self.desc.tar_members),
            "tar_bytes": sum(e.size for _, e in self.desc.tar_members),
            "create_files": self.desc.n_create,
            "fio_size": self.desc.fio_size,
        }


def _write_entry(root: str, path: str, e: Entry) -> None:
    full = os.path.join(root, path)
    if e.kind == "d":
        os.makedirs(full, exist_ok=True)
        os.chmod(full, e.mode)
        if e.opaque:
            os.setxattr(full, fmt.TRUSTED_OPAQUE, fmt.OPAQUE_YES)
    elif e.kind == "f":
        with open(full, "wb") as f:
            if e.size <= CHUNK:
                f.write(content(e.seed, e.size))
            else:
                left, k = e.size, 0
                while left > 0:
                    c = chunk(e.seed, k)[:left]
                    f.write(c)
                    left -= len(c)
                    k += 1
        os.chmod(full, e.mode)
    elif e.kind == "l":
        os.symlink(e.target, full)
    elif e.kind == "w":
        os.mknod(full, fmt.WHITEOUT_MODE, os.makedev(0, fmt.WHITEOUT_DEV))


def _write_tarball(path: str, members: list[tuple[str, Entry]]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, e in members:
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.uid, ti.gid, ti.mode = 1_700_000_000, 0, 0, e.mode
            if e.kind == "d":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif e.kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, e.target
                tar.addfile(ti)
            else:
                ti.size = e.size
                tar.addfile(ti, io.BytesIO(content(e.seed, e.size)))


def _key(scale: float) -> str:
    return hashlib.sha256(f"{FIXTURE_VERSION}:{SEED}:{scale!r}".encode()).hexdigest()[:12]


def build(cache_dir: Path, scale: float) -> Fixture:
    """Return the fixture at `scale`, building it under `cache_dir` unless already cached."""
    desc = describe(scale)
    root = cache_dir / f"fixture-{_key(scale)}"
    done = root / "done.json"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        tmp = cache_dir / f"fixture-{_key(scale)}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        for name, layer in zip(LAYER_NAMES, desc.layers, strict=True):
            base = str(tmp / name)
            os.makedirs(base)
            for p in sorted(layer):  # parents sort before children
                _write_entry(base, p, layer[p])
        _write_tarball(str(tmp / "untar.tar"), desc.tar_members)
        (tmp / "done.json").write_text(json.dumps({"scale": scale, "version": FIXTURE_VERSION}))
        os.rename(tmp, root)
    return Fixture(root, desc, merge(desc.layers))


def copy_to(fx: Fixture, dest: Path) -> Fixture:
    """Copy the fixture's layers and tarball to `dest` (e.g. a tmpfs), keeping xattrs/devices."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*LAYER_NAMES, "untar.tar"):
        subprocess.run(["cp", "-a", "--preserve=all", str(fx.root / name), str(dest)], check=True)
    return Fixture(dest, fx.desc, fx.expected)


def entry_dict(e: Entry) -> dict[str, object]:
    return asdict(e)


def scan_tree(root: str) -> dict[str, tuple[str, int, int, str, int]]:
    """What a mount shows: path -> (kind, mode bits, size, symlink target, crc32 of files)."""
    out: dict[str, tuple[str, int, int, str, int]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        base = os.path.join(root, rel) if rel else root
        for name in os.listdir(base):
            p = f"{rel}/{name}" if rel else name
            full = os.path.join(root, p)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                out[p] = ("d", mode, 0, "", 0)
                stack.append(p)
            elif stat.S_ISLNK(st.st_mode):
                out[p] = ("l", 0o777, 0, os.readlink(full), 0)
            elif stat.S_ISREG(st.st_mode):
                crc = 0
                with open(full, "rb", buffering=0) as f:
                    while data := f.read(MIB):
                        crc = zlib.crc32(data, crc)
                out[p] = ("f", mode, st.st_size, "", crc)
            else:
                out[p] = ("?", mode, st.st_size, "", st.st_rdev)
    return out


def verify_tree(root: str, expected: dict[str, Entry], limit: int = 10) -> list[str]:
    """Compare a mounted merged view against `expected`; return up to `limit` problems."""
    got = scan_tree(root)
    problems: list[str] = []
    for p in sorted(set(expected) | set(got)):
        e, g = expected.get(p), got.get(p)
        if e is None:
            problems.append(f"unexpected entry {p}")
        elif g is None:
            problems.append(f"missing entry {p}")
        else:
            want = (e.kind, 0o777 if e.kind == "l" else e.mode, e.size if e.kind == "f" else 0,
                    e.target, crc_of(e.seed, e.size) if e.kind == "f" else 0)
            if want != g:
                problems.append(f"{p}: expected {want}, got {g}")
        if len(problems) >= limit:
            problems.append("... (more)")
            break
    return problems
