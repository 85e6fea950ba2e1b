"""Extractor input handling: compression framing, progress, tolerated and refused
stream shapes, and header dialects that GNU tar and tarfile do not write by default."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from helpers.layers import LayerTar

from cowfs import format as fmt
from cowfs.errors import CorruptLayer
from cowfs.store.compress import open_decompressed
from cowfs.store.tar import TarReader, parse_pax
from cowfs.store.unpack import UnpackResult, unpack_layer

pytestmark = pytest.mark.needs_root


def unpack(blob: bytes, dest: Path, **kw: object) -> UnpackResult:
    dest.mkdir()
    return unpack_layer(io.BytesIO(blob), str(dest), **kw)  # type: ignore[arg-type]


def test_multi_member_gzip_multi_frame_zstd_and_trailing_bytes(tmp: Path) -> None:
    raw = bytes(LayerTar().file("a", b"A" * 5000).file("b", b"B" * 7000))
    cut = 1536
    blobs = {
        "gz-members": gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]),
        "gz-junk": gzip.compress(raw) + b"\0" * 100,
        "zst-frames": (zstandard.ZstdCompressor().compress(raw[:cut])
                       + zstandard.ZstdCompressor().compress(raw[cut:])),
    }
    for name, blob in blobs.items():
        res = unpack(blob, tmp / name)
        assert res.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest(), name
        assert res.digest == "sha256:" + hashlib.sha256(blob).hexdigest(), name
        assert res.compressed_size == len(blob)
        assert (tmp / name / "b").read_bytes() == b"B" * 7000


def test_errors_stop_the_read_ahead_thread(tmp: Path) -> None:
    import threading

    from cowfs.errors import HostileInput

    before = threading.active_count()
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (16 << 20))
    with pytest.raises(HostileInput):
        unpack(bomb, tmp / "a", max_size=1 << 20)
    bad = LayerTar().file("f", b"x").file("../escape").file("g", b"y" * (3 << 20))
    with pytest.raises(HostileInput):
        unpack(bad.compressed("gzip"), tmp / "b")
    assert threading.active_count() == before


@pytest.mark.parametrize("kind", ["none", "gzip"])
def test_progress_reports_compressed_bytes(tmp: Path, kind: str) -> None:
    blob = LayerTar().file("big", os.urandom(3 << 20)).compressed(kind)
    seen: list[int] = []
    res = unpack(blob, tmp / "d", progress=seen.append)
    assert sum(seen) == len(blob) == res.compressed_size and len(seen) >= 3


def test_open_decompressed_sniffs_magic() -> None:
    raw = bytes(LayerTar().file("f", b"x"))
    for kind, mt in (("none", fmt.MT_OCI_LAYER), ("gzip", fmt.MT_OCI_LAYER_GZIP),
                     ("zstd", fmt.MT_OCI_LAYER_ZSTD)):
        blob = LayerTar().file("f", b"x").compressed(kind)
        stream, got = open_decompressed(io.BytesIO(blob))  # type: ignore[arg-type]
        assert got == mt and stream.read(1 << 20) + stream.read(1 << 20) == raw
    with pytest.raises(CorruptLayer, match="xz"):
        open_decompressed(io.BytesIO(fmt.XZ_MAGIC + b"rest"))  # type: ignore[arg-type]


def test_pax_global_header_libarchive_xattrs_and_empty_unset(tmp: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"uid": "4242", "comment": "global"}) as tf:
        ti = tarfile.TarInfo("f")
        ti.pax_headers = {"LIBARCHIVE.xattr.user.l%61": "aGVsbG8", "SCHILY.xattr.user.gone": ""}
        tf.addfile(ti, io.BytesIO(b""))
        ti = tarfile.TarInfo("g")
        ti.uid = 7
        ti.pax_headers = {"uid": "7"}
        tf.addfile(ti, io.BytesIO(b""))
    unpack(buf.getvalue(), tmp / "d")
    assert os.getxattr(tmp / "d/f", "user.la") == b"hello"
    assert "user.gone" not in os.listxattr(tmp / "d/f")
    assert os.lstat(tmp / "d/f").st_uid == 4242 and os.lstat(tmp / "d/g").st_uid == 7


def test_gnu_base256_v7_and_long_names(tmp: Path) -> None:
    long = "l" * 150 + "/" + "m" * 120
    layer = LayerTar(format=tarfile.GNU_FORMAT)
    layer.file(long, b"gnu long name", uid=3_000_000, mtime=-(10**9))
    layer.symlink("s", "t" * 300)
    layer.hardlink("h", long)
    unpack(bytes(layer), tmp / "d")
    st = os.lstat(tmp / "d" / long)
    assert (st.st_uid, st.st_mtime_ns, st.st_nlink) == (3_000_000, -(10**18), 2)
    assert os.readlink(tmp / "d/s") == "t" * 300
    v7 = LayerTar(format=tarfile.USTAR_FORMAT).file("v7dir/", b"").file("v7dir/f", b"x")
    raw = bytearray(bytes(v7))
    raw[156] = 0  # AREGTYPE with a trailing slash: a v7 directory
    raw[257:265] = b"\0" * 8  # no ustar magic
    raw[148:156] = b"%06o\0 " % (sum(raw[:148]) + sum(raw[156:512]) + 256)
    unpack(bytes(raw), tmp / "v7")
    assert (tmp / "v7/v7dir").is_dir() and (tmp / "v7/v7dir/f").read_bytes() == b"x"


def test_refused_shapes(tmp: Path) -> None:
    with pytest.raises(CorruptLayer, match="PAX"):
        parse_pax(b"99 path=x\n")
    with pytest.raises(CorruptLayer, match="out of range"):
        unpack(bytes(LayerTar(format=tarfile.GNU_FORMAT).file("f", uid=2**40)), tmp / "u")
    ti = tarfile.TarInfo("x")
    ti.type = b"M"  # GNU multi-volume continuation: never in a layer
    with pytest.raises(CorruptLayer, match="unsupported entry type"):
        unpack(bytes(LayerTar().raw(ti)), tmp / "a")
    raw = bytearray(bytes(LayerTar().file("a", b"1").file("b", b"2")))
    raw[1024 + 148] ^= 1  # second header checksum broken
    with pytest.raises(CorruptLayer, match="checksum"):
        unpack(bytes(raw), tmp / "b")
    with pytest.raises(CorruptLayer, match="too long"):
        unpack(bytes(LayerTar().file("n" * 300, b"x")), tmp / "c")
    with pytest.raises(CorruptLayer, match="null"):
        unpack(bytes(LayerTar().symlink("s", "x" * 120 + "\0y")), tmp / "e")
    tr = TarReader(io.BytesIO(bytes(raw[:512]) + b"\0" * 1024))  # type: ignore[arg-type]
    assert tr.next() is not None and tr.next() is None and tr.ended_cleanly


def test_aufs_metadata_and_hardlink_errors(tmp: Path) -> None:
    res = unpack(bytes(LayerTar().file(".wh..wh.plnk/123.456", b"x").file(".wh..wh.aufs")
                       .file("ok")), tmp / "a")
    assert os.listdir(tmp / "a") == ["ok"] and len(res.warnings) == 2
    with pytest.raises(CorruptLayer, match="not in layer"):
        unpack(bytes(LayerTar().hardlink("h", "missing")), tmp / "b")
    with pytest.raises(CorruptLayer):
        unpack(bytes(LayerTar().dir("d").hardlink("h", "d")), tmp / "c")
