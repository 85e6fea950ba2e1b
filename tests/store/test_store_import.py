"""Import from every supported format, with digest verification and hostile inputs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from helpers.layers import LayerTar
from store_helpers import (
    Img,
    base_layer,
    docker_archive,
    oci_files,
    sha,
    write_dir,
    write_tar,
)

from cowfs.errors import BadImage, DigestMismatch, NotFound, UsageError
from cowfs.store import Store


def two_layer(kind: str = "gzip", tags: list[str] | None = None, arch: str = "amd64") -> Img:
    top = LayerTar().file("etc/motd", b"hello\n").whiteout("bin/tool").opaque("etc")
    return Img([(base_layer(), kind), (top, kind)], tags=tags or [], arch=arch)


def check_image_tree(store: Store, ref: str) -> None:
    img = store.get_image(ref)
    dirs = store.layer_dirs(img)
    assert len(dirs) == 2
    top, base = dirs
    assert Path(base, "etc/os-release").read_bytes() == b"ID=base\n"
    st = os.lstat(os.path.join(top, "bin/tool"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # whiteout in kernel format
    assert os.readlink(os.path.join(base, "bin/sh")) == "tool"
    assert store.fsck() == []


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_docker_archive(store: Store, tmp_path: Path, kind: str) -> None:
    img = two_layer(kind, ["busybox"])
    [got] = store.import_path(str(docker_archive(tmp_path / "a.tar", [img])))
    assert got.tags == ("busybox:latest",)
    assert got.id == sha(img.config())
    assert list(got.layer_digests) == [sha(b) for b in img.blobs()]
    assert list(got.diff_ids) == [lt.diff_id() for lt, _ in img.layers]
    assert got.chain_ids[0] == got.diff_ids[0]
    assert got.chain_ids[1] == sha(f"{got.diff_ids[0]} {got.diff_ids[1]}".encode())
    check_image_tree(store, "busybox")


def test_docker_archive_multi_image_and_legacy_layout(store: Store, tmp_path: Path) -> None:
    a = two_layer("none", ["a:1", "a:2"])
    b = Img([(base_layer(), "none")], tags=["docker.io/library/b:x"])
    got = store.import_path(str(docker_archive(tmp_path / "m.tar", [a, b], legacy=True)))
    assert [g.tags for g in got] == [("a:1", "a:2"), ("b:x",)]
    # the shared base layer is stored once
    assert len(store.layers()) == 2
    assert store.fsck() == []


def test_docker_archive_unpacked_dir(store: Store, tmp_path: Path) -> None:
    import tarfile

    arch = docker_archive(tmp_path / "a.tar", [two_layer("gzip", ["d:1"])])
    out = tmp_path / "unpacked"
    with tarfile.open(arch) as tf:
        tf.extractall(out, filter="data")
    [got] = store.import_path(str(out))
    assert got.tags == ("d:1",)


@pytest.mark.parametrize("archive", [False, True])
def test_oci_layout_tags_and_platform(store: Store, tmp_path: Path, archive: bool) -> None:
    amd, arm = two_layer("gzip", arch="amd64"), two_layer("zstd", arch="arm64")
    files = oci_files([amd, arm], ref_names=[["v1", "example.com/x/y:v2"], ["arm"]])
    src = write_tar(tmp_path / "lay.tar", files) if archive else \
        write_dir(tmp_path / "lay", files)
    got = store.import_path(str(src))  # default platform linux/amd64 skips the arm64 one
    assert len(got) == 1
    assert got[0].tags == ("example.com/x/y:v2", "lay:v1")
    assert got[0].manifest_digest == sha(amd.manifest())
    [arm_img] = store.import_path(str(src), platform="linux/arm64")
    assert arm_img.id == sha(arm.config()) and arm_img.tags == ("lay:arm",)
    check_image_tree(store, "lay:v1")
    with pytest.raises(NotFound, match="platform"):
        store.import_path(str(src), platform="linux/s390x")


def test_oci_nested_index_selects_platform(store: Store, tmp_path: Path) -> None:
    amd, arm = two_layer("gzip", arch="amd64"), two_layer("gzip", arch="arm64")
    arm.env = ["ARM=1"]
    lay = write_dir(tmp_path / "n", oci_files([arm, amd], ref_names=[["multi"]], nested=True))
    [got] = store.import_path(str(lay))
    assert got.id == sha(amd.config())
    [got] = store.import_path(str(lay), platform="linux/arm64")
    assert got.id == sha(arm.config())
    assert store.get_image("n:multi").id == got.id  # the tag moved to the last import


def test_dir_layout(store: Store, tmp_path: Path) -> None:
    img = two_layer("gzip")
    files = {"version": b"Directory Transport Version: 1.1\n", "manifest.json": img.manifest()}
    for blob in [img.config(), *img.blobs()]:
        files[sha(blob)[7:]] = blob
    [got] = store.import_path(str(write_dir(tmp_path / "d", files)), tag="dirimg")
    assert got.tags == ("dirimg:latest",) and got.manifest_digest == sha(img.manifest())
    check_image_tree(store, "dirimg")


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_raw_layer_detected_by_magic(store: Store, tmp_path: Path, kind: str) -> None:
    lt = base_layer()
    path = tmp_path / "layer.bin"  # the name says nothing about the compression
    path.write_bytes(lt.compressed(kind))
    [got] = store.import_path(str(path), tag="raw:1")
    assert got.diff_ids == (lt.diff_id(),)
    assert got.layer_digests == (sha(lt.compressed(kind)),)
    assert got.config["rootfs"]["diff_ids"] == [lt.diff_id()]
    layer = store.get_layer(lt.diff_id())
    assert layer.media_type.endswith({"none": "tar", "gzip": "gzip", "zstd": "zstd"}[kind])
    assert store.fsck() == []


def _nothing_stored(store: Store) -> None:
    assert store.images() == []
    assert store.layers() == []
    assert store.blobs.digests() == []
    assert os.listdir(store.tmp_dir) == []
    assert store.fsck() == []


def test_blob_digest_mismatch_stores_nothing(store: Store, tmp_path: Path) -> None:
    img = two_layer("gzip")
    files = oci_files([img], ref_names=[["t"]])
    evil = LayerTar().file("etc/passwd", b"root::0:0::/:/bin/sh\n").compressed("gzip")
    files[f"blobs/sha256/{sha(img.blobs()[1])[7:]}"] = evil
    with pytest.raises(DigestMismatch, match="hashes to"):
        store.import_path(str(write_dir(tmp_path / "bad", files)))
    _nothing_stored(store)


def test_diff_id_mismatch_stores_nothing(store: Store, tmp_path: Path) -> None:
    img = two_layer("none", ["x"])
    cfg = json.loads(img.config())
    cfg["rootfs"]["diff_ids"][1] = sha(b"something else")
    bad = json.dumps(cfg).encode()
    arch = docker_archive(tmp_path / "a.tar", [img], override={f"{sha(img.config())[7:]}.json":
                                                              bad})
    # the config name carries its digest: caught before any layer is stored
    with pytest.raises(DigestMismatch):
        store.import_path(str(arch))
    _nothing_stored(store)
    # same defect without a digest in the config's name: caught at the DiffID check
    files = {"manifest.json": json.dumps([{"Config": "config.js", "RepoTags": ["x"],
                                           "Layers": ["l0.tar", "l1.tar"]}]).encode(),
             "config.js": bad, "l0.tar": img.blobs()[0], "l1.tar": img.blobs()[1]}
    with pytest.raises(DigestMismatch, match="config says"):
        store.import_path(str(write_tar(tmp_path / "c.tar", files)))
    _nothing_stored(store)


def test_config_digest_mismatch(store: Store, tmp_path: Path) -> None:
    img = two_layer("gzip")
    files = oci_files([img])
    files[f"blobs/sha256/{sha(img.config())[7:]}"] = img.config() + b" "
    with pytest.raises(DigestMismatch):
        store.import_path(str(write_dir(tmp_path / "bad", files)))
    _nothing_stored(store)


@pytest.mark.parametrize("which", ["manifest.json", "config"])
def test_bad_json_is_one_line_naming_the_file(store: Store, tmp_path: Path, which: str) -> None:
    img = two_layer("none", ["x"])
    if which == "manifest.json":
        override = {"manifest.json": b"[{not json"}
    else:
        override = {"manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]).encode(),
                    "c.json": b"\x00garbage"}
    arch = docker_archive(tmp_path / "a.tar", [img], override=override)
    with pytest.raises(BadImage) as exc:
        store.import_path(str(arch))
    msg = str(exc.value)
    assert "\n" not in msg and "not valid JSON" in msg
    assert ("manifest.json" if which == "manifest.json" else "image config") in msg
    _nothing_stored(store)


def test_hostile_member_names_and_digests(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_bytes(b"[]")
    files = {"manifest.json": json.dumps([{"Config": "../secret", "Layers": []}]).encode()}
    with pytest.raises(BadImage, match=r"escapes|missing"):
        store.import_path(str(write_tar(tmp_path / "a.tar", files)))
    lay = tmp_path / "lay"
    write_dir(lay, {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                    "index.json": json.dumps({"manifests": [
                        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         "digest": "sha256:../../../secret", "size": 2}]}).encode()})
    with pytest.raises(BadImage, match="invalid digest"):
        store.import_path(str(lay))
    (lay / "index.json").write_bytes(json.dumps({"manifests": [
        {"digest": "sha256:" + "0" * 64}]}).encode())
    os.symlink(str(outside), lay / "blobs")
    with pytest.raises(BadImage, match="outside"):
        store.import_path(str(lay))
    _nothing_stored(store)


def test_not_an_image(store: Store, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello, this is not a tar" * 40)
    with pytest.raises(BadImage, match="not a tar"):
        store.import_path(str(junk))
    with pytest.raises(NotFound):
        store.import_path(str(tmp_path / "missing"))
    with pytest.raises(UsageError):
        store.import_path(str(junk), tag="Bad Name")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(BadImage):
        store.import_path(str(empty))
    _nothing_stored(store)


def test_archive_links_stay_inside_the_archive(store: Store, tmp_path: Path) -> None:
    """A layer member that is a symlink/hardlink to a host path is never read from the host."""
    import io
    import tarfile

    img = two_layer("none", ["x"])
    cfg = img.config()
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        path = tmp_path / f"links{kind!r}.tar"
        with tarfile.open(path, "w") as tf:
            for name, data in {f"{sha(cfg)[7:]}.json": cfg, "l0.tar": img.blobs()[0],
                               "manifest.json": json.dumps([{
                                   "Config": f"{sha(cfg)[7:]}.json", "RepoTags": ["x"],
                                   "Layers": ["l0.tar", "l1.tar"]}]).encode()}.items():
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            ti = tarfile.TarInfo("l1.tar")
            ti.type = kind
            ti.linkname = "/etc/hostname" if kind == tarfile.SYMTYPE else "../../etc/hostname"
            tf.addfile(ti)
        with pytest.raises(BadImage):
            store.import_path(str(path))
        _nothing_stored(store)


@pytest.mark.parametrize(("name", "content", "words"), [
    ("index.json", b"{]", "index.json: not valid JSON"),
    ("oci-layout", b'{"imageLayoutVersion": "2.0.0"}', "imageLayoutVersion"),
    ("index.json", b'{"manifests": {}}', "want a JSON list"),
])
def test_bad_oci_layout_files(store: Store, tmp_path: Path, name: str, content: bytes,
                              words: str) -> None:
    files = oci_files([two_layer("gzip")], ref_names=[["t"]])
    files[name] = content
    with pytest.raises(BadImage, match=words):
        store.import_path(str(write_dir(tmp_path / "lay", files)))
    _nothing_stored(store)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_compressed_image_archives(store: Store, tmp_path: Path, kind: str) -> None:
    """``docker save | gzip`` (and a zstd OCI archive) import as images, not raw layers."""
    import gzip

    import zstandard

    def squeeze(data: bytes) -> bytes:
        return gzip.compress(data) if kind == "gzip" else \
            zstandard.ZstdCompressor().compress(data)

    img = two_layer("gzip", ["squeezed:1"])
    da = docker_archive(tmp_path / "a.tar", [img]).read_bytes()
    (tmp_path / "a.tar.gz").write_bytes(squeeze(da))
    [got] = store.import_path(str(tmp_path / "a.tar.gz"))
    assert got.tags == ("squeezed:1",) and got.id == sha(img.config())
    oa = write_tar(tmp_path / "o.tar", oci_files([img], ref_names=[["v9"]])).read_bytes()
    (tmp_path / "o.tar.zst").write_bytes(squeeze(oa))
    [got] = store.import_path(str(tmp_path / "o.tar.zst"))
    assert got.tags == ("o:v9", "squeezed:1")
    assert os.listdir(store.tmp_dir) == []
    check_image_tree(store, "squeezed:1")
