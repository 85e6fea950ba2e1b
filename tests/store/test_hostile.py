"""Hostile layers against cowfs's extractor: each shape is refused or neutralised and
nothing outside the destination is created or modified (anchors.md §4.3 CVE shapes).

Every test keeps a sentinel tree beside the destination and compares a full
snapshot of it (content, mode, owner, mtime, xattrs, link count) before and after.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.layers import LayerTar
from helpers.unpacktree import snapshot

from cowfs.errors import CorruptLayer, DigestMismatch, HostileInput
from cowfs.store.unpack import UnpackResult, unpack_layer

pytestmark = pytest.mark.needs_root


class Sentinel:
    """A dir outside every destination, with a file and a subdir, that must not change."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.dir = base / "outside"
        self.dir.mkdir()
        (self.dir / "sub").mkdir(mode=0o750)
        self.secret = self.dir / "secret"
        self.secret.write_bytes(b"secret\n")
        self.secret.chmod(0o640)
        for p in (self.secret, self.dir / "sub", self.dir):
            os.utime(p, ns=(10**18, 10**18))
        self.before = snapshot(str(self.dir))
        self.base_listing = sorted(os.listdir(base))

    def check(self, *extra: str) -> None:
        assert snapshot(str(self.dir)) == self.before, "the sentinel outside dest changed"
        assert sorted(os.listdir(self.base)) == sorted([*self.base_listing, *extra])


@pytest.fixture
def outside(tmp: Path) -> Iterator[Sentinel]:
    s = Sentinel(tmp)
    yield s
    s.check(*[n for n in os.listdir(tmp) if n.startswith("dest")])


def unpack(layer: LayerTar | bytes, dest: Path, **kw: object) -> UnpackResult:
    dest.mkdir()
    blob = bytes(layer) if isinstance(layer, LayerTar) else layer
    return unpack_layer(io.BytesIO(blob), str(dest), **kw)  # type: ignore[arg-type]


def test_dotdot_traversal(tmp: Path, outside: Sentinel) -> None:
    with pytest.raises(HostileInput, match="leaves the layer root"):
        unpack(LayerTar().file("../outside/secret", b"pwned"), tmp / "dest")
    with pytest.raises(HostileInput):
        unpack(LayerTar().dir("a").file("a/../../outside/new", b"pwned"), tmp / "dest2")
    with pytest.raises(HostileInput):
        unpack(LayerTar().whiteout("../outside/secret"), tmp / "dest3")


def test_absolute_path_is_confined(tmp: Path, outside: Sentinel) -> None:
    absname = str(outside.secret)
    res = unpack(LayerTar().file(absname, b"confined").file(str(outside.dir / "new"), b"n"),
                 tmp / "dest")
    assert (tmp / "dest" / absname.lstrip("/")).read_bytes() == b"confined"
    assert any("leading '/'" in w for w in res.warnings)


def test_absolute_symlink_then_write_through_it(tmp: Path, outside: Sentinel) -> None:
    layer = LayerTar().symlink("x", str(outside.dir)).file("x/secret", b"pwned")
    with pytest.raises(HostileInput, match="symlink"):
        unpack(layer, tmp / "dest")
    layer = LayerTar().symlink("y", str(outside.dir)).dir("y/sub", mode=0o777)
    with pytest.raises(HostileInput, match="symlink"):
        unpack(layer, tmp / "dest2")


def test_relative_symlink_escaping_then_write(tmp: Path, outside: Sentinel) -> None:
    layer = (LayerTar().dir("a").symlink("a/up", "../../outside")
             .file("a/up/secret", b"pwned"))
    with pytest.raises(HostileInput, match="symlink"):
        unpack(layer, tmp / "dest")
    # a symlink that stays inside the layer is still never written through
    layer = LayerTar().dir("real").symlink("in", "real").file("in/f", b"x")
    with pytest.raises(HostileInput, match="symlink"):
        unpack(layer, tmp / "dest2")


@pytest.mark.needs_overlay
def test_symlink_in_one_layer_write_in_the_next(tmp: Path, outside: Sentinel) -> None:
    unpack(LayerTar().symlink("x", "../outside").symlink("y", str(outside.dir)), tmp / "dest1")
    unpack(LayerTar().file("x/secret", b"layer2").file("y/new", b"layer2"), tmp / "dest2")
    for name in ("x", "y"):
        assert (tmp / "dest2" / name).is_dir() and not (tmp / "dest2" / name).is_symlink()
    merged = tmp / "dest_merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp / 'dest2'}:{tmp / 'dest1'}", str(merged)], check=True)
    try:
        assert (merged / "x/secret").read_bytes() == b"layer2"
        assert (merged / "y/new").read_bytes() == b"layer2"
        assert not (merged / "x").is_symlink()
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_hardlink_to_outside(tmp: Path, outside: Sentinel) -> None:
    with pytest.raises(HostileInput):
        unpack(LayerTar().hardlink("h", "../outside/secret"), tmp / "dest")
    with pytest.raises(CorruptLayer, match="not in layer"):
        unpack(LayerTar().hardlink("h", str(outside.secret)), tmp / "dest2")
    with pytest.raises(HostileInput, match="symlink"):
        unpack(LayerTar().symlink("s", str(outside.dir)).hardlink("h", "s/secret"),
               tmp / "dest3")
    # a hardlink to an in-layer symlink links the symlink itself; writing the name
    # afterwards replaces it and never writes the symlink's target
    unpack(LayerTar().symlink("s", str(outside.secret)).hardlink("h", "s")
           .file("h", b"pwned", mode=0o777), tmp / "dest4")
    assert (tmp / "dest4/h").read_bytes() == b"pwned"
    assert os.readlink(tmp / "dest4/s") == str(outside.secret)


def test_dot_symlink_cve_2021_29136(tmp: Path, outside: Sentinel) -> None:
    for i, name in enumerate(["/.", ".", "./", "a/.."]):
        layer = LayerTar().symlink(name, str(outside.dir)).file("secret", b"pwned")
        with pytest.raises(HostileInput, match="layer root"):
            unpack(layer, tmp / f"dest{i}")


def test_chmod_chown_through_symlink_cve_2021_32760(tmp: Path, outside: Sentinel) -> None:
    layer = (LayerTar().symlink("f", str(outside.secret)).symlink("d", "../outside")
             .symlink("g", "../outside/sub")
             .file("f", b"", mode=0o4777, uid=1234, gid=1234)
             .dir("d", mode=0o777, uid=1234, gid=1234)
             .raw(_dir_over("g")))
    unpack(layer, tmp / "dest")
    for name in ("d", "g"):
        st = os.lstat(tmp / "dest" / name)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777
    st = os.lstat(tmp / "dest/f")
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, stat.S_IMODE(st.st_mode)) == (1234, 0o4777)


def _dir_over(name: str) -> object:
    import tarfile

    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode, ti.uid, ti.gid, ti.mtime = 0o777, 4321, 4321, 5
    return ti


def test_whiteout_under_whited_out_parent_or_symlink(tmp: Path, outside: Sentinel) -> None:
    res = unpack(LayerTar().whiteout("x").whiteout("x/y")
                 .symlink("s", "../outside").whiteout("s/secret").opaque("s")
                 .symlink("t", str(outside.dir)).whiteout("t/sub"), tmp / "dest")
    assert sorted(os.listdir(tmp / "dest")) == ["s", "t", "x"]
    assert any("non-directory" in w for w in res.warnings)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_decompression_bomb_is_bounded(tmp: Path, outside: Sentinel, kind: str) -> None:
    zeros = b"\0" * (64 << 20)
    if kind == "gzip":
        blob = gzip.compress(zeros, compresslevel=9, mtime=0)
    else:
        import zstandard

        blob = zstandard.ZstdCompressor(level=19).compress(zeros)
    assert len(blob) < 1 << 20
    with pytest.raises(HostileInput, match="bomb"):
        unpack(blob, tmp / "dest", max_size=8 << 20)
    big = bytes(LayerTar().file("big", b"\1" * (9 << 20)))
    with pytest.raises(HostileInput, match="bomb"):
        unpack(big, tmp / "dest2", max_size=8 << 20)


def test_digest_mismatch(tmp: Path, outside: Sentinel) -> None:
    layer = LayerTar().file("f", b"x")
    with pytest.raises(DigestMismatch, match="expected"):
        unpack(layer.compressed("gzip"), tmp / "dest", expected_digest=layer.diff_id())
    with pytest.raises(DigestMismatch, match="diff_id"):
        unpack(layer, tmp / "dest2", expected_diff_id="sha256:" + "1" * 64)


def test_not_a_tar(tmp: Path, outside: Sentinel) -> None:
    with pytest.raises(CorruptLayer, match="not a tar"):
        unpack(os.urandom(4096), tmp / "dest")
    with pytest.raises(CorruptLayer, match="not a tar"):
        unpack(gzip.compress(b"{\"json\": 1}" * 100), tmp / "dest2")
    with pytest.raises(CorruptLayer, match="gzip"):
        unpack(gzip.compress(bytes(LayerTar().file("f", b"x")))[:-20], tmp / "dest3")
    with pytest.raises(CorruptLayer, match="whiteout"):
        unpack(LayerTar().file(".wh."), tmp / "dest4")
