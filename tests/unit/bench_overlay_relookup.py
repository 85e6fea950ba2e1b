"""Micro benchmark of the overlay core alone: repeated readdir + lookup_entry (not a test).

Builds a 3-layer tree of ~20k files (100 per dir, 200 dirs, most dirs merging across
layers) under DIR, then times what the FUSE adapter does on a repeated walk: for each dir,
``readdir`` + ``lookup_entry`` of every entry (+ forget), round after round.

    .venv/bin/python tests/unit/bench_overlay_relookup.py [DIR] [ROUNDS]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from cowfs.overlay import ROOT_INO, Overlay


def build(base: str, dirs: int = 200, per_dir: int = 100) -> list[str]:
    lowers = [os.path.join(base, f"l{i}") for i in range(3)]
    for li, low in enumerate(lowers):
        for d in range(dirs):
            dp = os.path.join(low, "tree", f"a{d // 10:02d}", f"b{d % 10}")
            os.makedirs(dp, exist_ok=True)
            for f in range(per_dir):
                if f % 3 == li or (li == 2 and f % 3 == 0):
                    with open(os.path.join(dp, f"f{f:03d}"), "wb") as fh:
                        fh.write(b"x" * (f + li))
    return lowers


def walk(ov: Overlay, ino: int) -> int:
    n = 0
    for name, st in ov.readdir(ino):
        est = ov.lookup_entry(ino, name)
        n += 1
        if os.path.stat.S_ISDIR(st.st_mode):  # type: ignore[attr-defined]
            n += walk(ov, est.st_ino)
        ov.forget(est.st_ino, 1)
    return n


def main() -> None:
    base = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ovbench.")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if not os.path.isdir(os.path.join(base, "l0")):
        build(base)
    up, wk = os.path.join(base, "u"), os.path.join(base, "w")
    shutil.rmtree(up, ignore_errors=True)
    shutil.rmtree(wk, ignore_errors=True)
    os.makedirs(up)
    os.makedirs(wk)
    lowers = [os.path.join(base, f"l{i}") for i in (2, 1, 0)]
    ov = Overlay(lowers, up, wk)
    try:
        # keep the tree attached (the kernel holds dentries): one counted walk first
        held: list[int] = []

        def attach(ino: int) -> None:
            for name, st in ov.readdir(ino):
                est = ov.lookup_entry(ino, name)
                held.append(est.st_ino)
                if os.path.stat.S_ISDIR(st.st_mode):  # type: ignore[attr-defined]
                    attach(est.st_ino)

        t0 = time.perf_counter()
        attach(ROOT_INO)
        first = time.perf_counter() - t0
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            n = walk(ov, ROOT_INO)
            times.append(time.perf_counter() - t0)
        times.sort()
        med = times[len(times) // 2]
        print(f"readdir+lookup_entry: entries={n} first={first * 1e3:.0f} ms "
              f"repeat median={med * 1e3:.0f} ms ({med / n * 1e6:.1f} us/entry)")
        # What the FUSE adapter does on a repeated walk: names reused, lookup_entry only.
        listed: list[tuple[int, list[bytes]]] = []

        def names(ino: int) -> None:
            ents = ov.readdir(ino)
            listed.append((ino, [nm for nm, _ in ents]))
            for nm, st in ents:
                if os.path.stat.S_ISDIR(st.st_mode):  # type: ignore[attr-defined]
                    names(ov.lookup_entry(ino, nm).st_ino)
        names(ROOT_INO)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for ino, nms in listed:
                for nm in nms:
                    ov.forget(ov.lookup_entry(ino, nm).st_ino, 1)
            times.append(time.perf_counter() - t0)
        times.sort()
        med = times[len(times) // 2]
        print(f"lookup_entry only: median={med * 1e3:.0f} ms ({med / n * 1e6:.1f} us/entry)")
    finally:
        ov.close()


if __name__ == "__main__":
    main()
