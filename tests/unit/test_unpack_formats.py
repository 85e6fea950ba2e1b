"""Format coverage: archives written by GNU tar and Python tarfile, extracted by cowfs
and by GNU tar (the oracle), must give the same tree: types, modes incl. setuid/
setgid/sticky, owners incl. big uids, content, symlink targets, devices, xattrs
incl. a binary security.capability, hardlink groups, mtimes incl. pre-epoch and ns.
Sparse files must stay sparse.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers.layers import LayerTar
from helpers.unpacktree import diff, snapshot

from cowfs.store.tar import REG, TarReader
from cowfs.store.unpack import unpack_layer

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_tool("tar")]

# VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, permitted = CAP_NET_BIND_SERVICE (10)
CAP_V2 = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
BIG_UID = 3_000_000  # > 0o7777777: needs PAX or GNU base-256
LONG = "d" * 60 + "/" + "e" * 70 + "/" + "f" * 80 + "/" + "g" * 90  # > 255 chars
TAR_X = ["tar", "-x", "--xattrs", "--xattrs-include=*", "--same-owner", "-p",
         "--numeric-owner"]


def make_tree(root: Path, *, sparse: bool = True, xattrs: bool = True) -> None:
    """A source tree exercising every kind of entry the extractor must preserve."""
    root.mkdir()
    (root / "etc").mkdir(mode=0o755)
    (root / "etc/hosts").write_bytes(b"127.0.0.1 localhost\n")
    (root / "bin").mkdir()
    su = root / "bin/su"
    su.write_bytes(b"\x7fELF" + os.urandom(3000))
    os.chown(su, 0, 0)
    su.chmod(0o4755)
    sg = root / "bin/wall"
    sg.write_bytes(b"wall")
    os.chown(sg, 0, 5)
    sg.chmod(0o2755)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "ro").mkdir()
    (root / "ro/zero").write_bytes(b"")
    (root / "ro/zero").chmod(0o000)
    big = root / "owned"
    big.write_bytes(b"big uid")
    os.chown(big, BIG_UID, BIG_UID + 1)
    os.symlink("/etc/hosts", root / "abs-link")
    os.symlink("../etc/hosts", root / "bin/rel-link")
    os.symlink("dangling/target", root / "dangling")
    for n in ("a", "b", "c"):
        p = root / f"bin/{n}"
        if n == "a":
            p.write_bytes(b"hardlinked")
        else:
            os.link(root / "bin/a", p)
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "sda", 0o660 | 0o060000, os.makedev(8, 0))
    deep = root / LONG
    deep.mkdir(parents=True)
    (deep / ("h" * 120)).write_bytes(b"long name")
    os.link(deep / ("h" * 120), root / "link-to-long")
    os.symlink("x" * 150, root / "long-target")
    old = root / "old"
    old.write_bytes(b"1960")
    os.utime(old, ns=(-315_619_200_000_000_000, -315_619_200_123_456_789))
    os.utime(root / "etc/hosts", ns=(1_600_000_000_987_654_321,) * 2)
    if xattrs:
        os.setxattr(root / "etc/hosts", "user.mime", b"text/plain")
        os.setxattr(root / "etc/hosts", "trusted.t", b"\x00\xff\x01")
        os.setxattr(su, "security.capability", CAP_V2)
        os.setxattr(root / "etc", "user.dir", b"1")
    if sparse:
        with open(root / "sparse", "wb") as f:
            f.seek(3 << 20)
            f.write(b"middle" * 1000)
            f.seek(9 << 20)
            f.write(b"end")
            f.truncate(12 << 20)
        with open(deep / "sparse-with-a-long-name", "wb") as f:  # GNUSparseFile alias + path
            f.seek(1 << 20)
            f.write(b"x")
    for p in (root / "etc", root / "bin", root / LONG.split("/")[0], root):
        os.utime(p, ns=(1_500_000_000_000_000_001,) * 2)


def gnu_tar(src: Path, out: Path, *args: str) -> bytes:
    subprocess.run(["tar", "-c", "-f", str(out), "-C", str(src), "--numeric-owner", *args,
                    "."], check=True)
    return out.read_bytes()


def extract_both(tmp: Path, blob: bytes) -> tuple[Path, Path]:
    ref, got = tmp / "ref", tmp / "got"
    ref.mkdir()
    got.mkdir()
    subprocess.run([*TAR_X, "-C", str(ref)], input=blob, check=True)
    res = unpack_layer(io.BytesIO(blob), str(got))
    assert res.warnings == []
    return ref, got


def assert_same(ref: Path, got: Path) -> None:
    problems = diff(snapshot(str(ref)), snapshot(str(got)))
    assert problems == [], "\n".join(problems[:20])


def assert_sparse(p: Path) -> None:
    st = os.stat(p)
    assert st.st_size == 12 << 20
    assert st.st_blocks * 512 < 1 << 20, "sparse file was written dense"


@pytest.mark.parametrize("args", [
    ["--format=pax", "--xattrs", "--xattrs-include=*", "--sparse"],
    ["--format=pax", "--xattrs", "--xattrs-include=*", "--sparse", "--sparse-version=0.0"],
    ["--format=pax", "--xattrs", "--xattrs-include=*", "--sparse", "--sparse-version=0.1"],
    ["--format=gnu", "--sparse"],
], ids=["pax-sparse1.0", "pax-sparse0.0", "pax-sparse0.1", "gnu"])
def test_gnu_tar_archives(tmp: Path, args: list[str]) -> None:
    make_tree(tmp / "src")
    blob = gnu_tar(tmp / "src", tmp / "layer.tar", *args)
    ref, got = extract_both(tmp, blob)
    assert_same(ref, got)
    assert_sparse(got / "sparse")
    if "--xattrs" in args:
        assert os.getxattr(got / "bin/su", "security.capability") == CAP_V2
    assert os.lstat(got / "old").st_mtime_ns < 0


@pytest.mark.parametrize("form", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                  tarfile.PAX_FORMAT], ids=["ustar", "gnu", "pax"])
def test_python_tarfile_archives(tmp: Path, form: int) -> None:
    make_tree(tmp / "src", sparse=False, xattrs=False)
    if form == tarfile.USTAR_FORMAT:  # ustar cannot hold these: leave them out
        for p in ("owned", "old", "long-target", "link-to-long"):
            os.unlink(tmp / "src" / p)
        subprocess.run(["rm", "-rf", str(tmp / "src" / LONG.split("/")[0])], check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=form) as tf:
        tf.add(str(tmp / "src"), arcname=".")
    ref, got = extract_both(tmp, buf.getvalue())
    assert_same(ref, got)


def test_pax_binary_xattrs_ns_times_and_big_ids(tmp: Path) -> None:
    cap = CAP_V2.decode("utf-8", "surrogateescape")
    layer = (LayerTar().dir(".").dir("bin").file("bin/ping", b"p", mode=0o755,
                             xattrs={"security.capability": cap, "user.bin": "\udcff\x00x"})
             .file("f", b"x", uid=BIG_UID, gid=2**32 - 2, mtime=-1))
    blob = bytes(layer)
    ref, got = extract_both(tmp, blob)
    assert_same(ref, got)
    assert os.getxattr(got / "bin/ping", "security.capability") == CAP_V2
    assert os.getxattr(got / "bin/ping", "user.bin") == b"\xff\x00x"
    st = os.lstat(got / "f")
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (BIG_UID, 2**32 - 2, -10**9)


def test_reader_entries_match_tarfile(tmp: Path) -> None:
    """The header parser agrees with Python's tarfile on names, sizes, ids and links."""
    make_tree(tmp / "src", sparse=False)
    blob = gnu_tar(tmp / "src", tmp / "l.tar", "--format=pax", "--xattrs")
    tr = TarReader(io.BytesIO(blob))  # type: ignore[arg-type]
    ours = []
    while (e := tr.next()) is not None:
        ours.append((e.name.decode(), e.size if e.kind == REG else 0, e.uid, e.gid,
                     e.linkname.decode(), e.mode))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        theirs = [(m.name if m.name == "." else "./" + m.name.removeprefix("./"),
                   m.size if m.isreg() else 0, m.uid, m.gid, m.linkname, m.mode)
                  for m in tf]
    assert [o[0].rstrip("/") for o in ours] == [t[0].rstrip("/") for t in theirs]
    assert [o[1:] for o in ours] == [t[1:] for t in theirs]
    assert tr.ended_cleanly
