"""cowfs's own extractor on small layers built in-test: entries, whiteouts, digests."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from helpers.layers import LayerTar

from cowfs import format as fmt
from cowfs.errors import CorruptLayer, DigestMismatch
from cowfs.store.unpack import UnpackResult, unpack_layer

pytestmark = pytest.mark.needs_root


def unpack(layer: LayerTar | bytes, dest: Path, kind: str = "none", **kw: object
           ) -> UnpackResult:
    blob = layer.compressed(kind) if isinstance(layer, LayerTar) else layer
    dest.mkdir(exist_ok=True)
    return unpack_layer(io.BytesIO(blob), str(dest), **kw)  # type: ignore[arg-type]


def is_whiteout(p: Path) -> bool:
    st = os.lstat(p)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def opaque(p: Path) -> bytes | None:
    try:
        return os.getxattr(p, fmt.TRUSTED_OPAQUE)
    except OSError:
        return None


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_entries_and_digests(tmp: Path, kind: str) -> None:
    layer = (LayerTar().dir("etc", mode=0o750, uid=5, gid=6, mtime=1000)
             .file("etc/passwd", b"root:x:0:0\n", mode=0o644, uid=7, gid=8, mtime=2000)
             .file("usr/bin/su", b"\x7fELF", mode=0o4755, mtime=-86400 * 400)
             .dir("tmp", mode=0o1777)
             .symlink("etc/link", "/etc/passwd", uid=3)
             .hardlink("etc/passwd2", "etc/passwd")
             .fifo("run/fifo", mode=0o620)
             .chardev("dev/null", 1, 3))
    res = unpack(layer, tmp / "d", kind)
    raw = bytes(layer)
    blob = layer.compressed(kind)
    assert res.diff_id == layer.diff_id()
    assert res.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert (res.size, res.compressed_size) == (len(raw), len(blob))
    assert res.media_type == {"none": fmt.MT_OCI_LAYER, "gzip": fmt.MT_OCI_LAYER_GZIP,
                              "zstd": fmt.MT_OCI_LAYER_ZSTD}[kind]
    assert res.warnings == []
    d = tmp / "d"
    st = os.lstat(d / "etc")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (
        0o750, 5, 6, 1000 * 10**9)
    st = os.lstat(d / "etc/passwd")
    assert (d / "etc/passwd").read_bytes() == b"root:x:0:0\n"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns) == (
        0o644, 7, 8, 2000 * 10**9)
    assert st.st_nlink == 2 and os.lstat(d / "etc/passwd2").st_ino == st.st_ino
    st = os.lstat(d / "usr/bin/su")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_mtime_ns == -86400 * 400 * 10**9
    assert stat.S_IMODE(os.lstat(d / "tmp").st_mode) == 0o1777
    assert os.readlink(d / "etc/link") == "/etc/passwd" and os.lstat(d / "etc/link").st_uid == 3
    st = os.lstat(d / "run/fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620
    st = os.lstat(d / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def test_whiteouts_become_kernel_format(tmp: Path) -> None:
    layer = (LayerTar().whiteout("gone").whiteout("a/gone2")
             .file("b/keep", b"k").opaque("b")          # opaque after its child
             .file("c/x").whiteout("c/x")               # own entry is not hidden
             .whiteout("e/y").dir("e").opaque("e")      # whiteout inside an opaque dir
             .dir("f").whiteout("f")                    # own dir + whiteout → opaque
             .whiteout("g").file("g/new", b"n")         # whiteout then own subtree
             .whiteout("h").dir("h", mode=0o700))       # whiteout then own dir
    unpack(layer, tmp / "d")
    d = tmp / "d"
    assert is_whiteout(d / "gone") and is_whiteout(d / "a/gone2")
    assert not any(p.name.startswith(".wh.") for p in d.rglob("*"))
    assert opaque(d / "b") == b"y" and (d / "b/keep").read_bytes() == b"k"
    assert (d / "c/x").is_file() and opaque(d / "c") is None
    assert opaque(d / "e") == b"y" and os.listdir(d / "e") == []
    assert opaque(d / "f") == b"y"
    assert opaque(d / "g") == b"y" and (d / "g/new").read_bytes() == b"n"
    assert opaque(d / "h") == b"y" and stat.S_IMODE(os.lstat(d / "h").st_mode) == 0o700
    assert opaque(d) is None
    unpack(LayerTar().whiteout("x").file("y").opaque("").whiteout("z/w"), tmp / "r")
    assert opaque(tmp / "r") == b"y"
    assert sorted(os.listdir(tmp / "r")) == ["y", "z"] and os.listdir(tmp / "r/z") == []


def test_whiteout_ownership_and_whited_out_parent(tmp: Path) -> None:
    layer = LayerTar().whiteout("p").raw(_wh_owned("p/.wh.q", 33))
    res = unpack(layer, tmp / "d")
    assert is_whiteout(tmp / "d/p")
    assert os.listdir(tmp / "d") == ["p"]
    assert res.warnings and "non-directory" in res.warnings[0]
    unpack(LayerTar().raw(_wh_owned("x/.wh.y", 33)), tmp / "e")
    assert os.lstat(tmp / "e/x/y").st_uid == 33


def test_whiteout_of_a_dir_made_only_for_whiteouts(tmp: Path) -> None:
    layer = (LayerTar().whiteout("a/b/c").whiteout("a/b").whiteout("a")
             .whiteout("k/x").file("k/real").whiteout("k")
             .whiteout("m/x").dir("m").whiteout("m"))
    unpack(layer, tmp / "d")
    d = tmp / "d"
    assert is_whiteout(d / "a")
    assert opaque(d / "k") == b"y" and os.listdir(d / "k") == ["real"]
    assert opaque(d / "m") == b"y" and os.listdir(d / "m") == []


def test_sparse_bomb_is_bounded(tmp: Path) -> None:
    import subprocess

    src = tmp / "src"
    src.mkdir()
    with open(src / "hole", "wb") as f:
        f.truncate(1 << 30)
    subprocess.run(["tar", "-C", str(src), "--sparse", "--format=pax", "-cf",
                    str(tmp / "s.tar"), "hole"], check=True)
    from cowfs.errors import HostileInput

    with pytest.raises(HostileInput, match="sparse"):
        unpack((tmp / "s.tar").read_bytes(), tmp / "d", max_size=1 << 20)
    res = unpack((tmp / "s.tar").read_bytes(), tmp / "e")
    assert os.stat(tmp / "e/hole").st_size == 1 << 30 and res.size < 1 << 20


def _wh_owned(name: str, uid: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.uid = ti.gid = uid
    return ti


def test_bare_whiteout_is_an_error(tmp: Path) -> None:
    with pytest.raises(CorruptLayer, match="bare whiteout"):
        unpack(LayerTar().file("a/.wh."), tmp / "d")


def test_overlay_xattrs_are_escaped_and_empty_is_unset(tmp: Path) -> None:
    layer = LayerTar().file("f", xattrs={"trusted.overlay.opaque": "y", "user.a": "1",
                                         "user.empty": ""})
    unpack(layer, tmp / "d")
    got = dict((n, os.getxattr(tmp / "d/f", n)) for n in os.listxattr(tmp / "d/f"))
    assert got == {"trusted.overlay.overlay.opaque": b"y", "user.a": b"1"}
    assert opaque(tmp / "d/f") is None


def test_apply_semantics(tmp: Path) -> None:
    layer = (LayerTar().dir("a", mode=0o700).file("a/x", b"1").dir("a", mode=0o755, uid=9)
             .dir("b").file("b/y").file("b", b"now a file")
             .file("c", b"old").symlink("c", "target").file("c", b"new"))
    unpack(layer, tmp / "d")
    st = os.lstat(tmp / "d/a")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o755, 9)
    assert (tmp / "d/a/x").read_bytes() == b"1"
    assert (tmp / "d/b").read_bytes() == b"now a file"
    assert (tmp / "d/c").read_bytes() == b"new" and not (tmp / "d/c").is_symlink()


def test_digest_mismatch(tmp: Path) -> None:
    layer = LayerTar().file("f", b"x")
    with pytest.raises(DigestMismatch):
        unpack(layer, tmp / "d", expected_diff_id="sha256:" + "0" * 64)
    with pytest.raises(DigestMismatch):
        unpack(layer, tmp / "e", "gzip", expected_digest=layer.diff_id())
    res = unpack(layer, tmp / "f", "gzip", expected_diff_id=layer.diff_id())
    assert res.diff_id == layer.diff_id()


def test_garbage_truncation_and_missing_end_blocks(tmp: Path) -> None:
    with pytest.raises(CorruptLayer, match="not a tar"):
        unpack(b"hello world, this is not a tar" * 40, tmp / "a")
    raw = bytes(LayerTar().file("f", b"x" * 3000))
    with pytest.raises(CorruptLayer, match="truncated"):
        unpack(raw[:1500], tmp / "b")
    end = -(-len(raw.rstrip(b"\0")) // 512) * 512
    res = unpack(raw[:end], tmp / "c")  # no end-of-archive blocks: tolerated
    assert (tmp / "c/f").read_bytes() == b"x" * 3000
    assert res.size == end
    res = unpack(b"", tmp / "e")
    assert os.listdir(tmp / "e") == [] and res.size == 0
