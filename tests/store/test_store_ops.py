"""Names, rmi, gc, dedup, fsck, tmp/ cleanup and export round trips."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from helpers.layers import LayerTar
from store_helpers import (
    Img,
    base_layer,
    docker_archive,
    du,
    oci_files,
    sha,
    write_dir,
    write_tar,
)

from cowfs.errors import Conflict, DigestMismatch, NotFound, UsageError
from cowfs.store import Store, normalize_ref, open_store
from cowfs.store.export import export_image
from cowfs.store.lock import FileLock


@pytest.mark.parametrize(("ref", "want"), [
    ("busybox", "busybox:latest"),
    ("busybox:1.36", "busybox:1.36"),
    ("docker.io/library/busybox", "busybox:latest"),
    ("registry-1.docker.io/library/alpine:3", "alpine:3"),
    ("docker.io/foo/bar:x", "foo/bar:x"),
    ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
    ("localhost/x:y", "localhost/x:y"),
])
def test_normalize_ref(ref: str, want: str) -> None:
    assert normalize_ref(ref) == want


@pytest.mark.parametrize("bad", ["", "UPPER", "a b", "a:", "x@sha256:00", "-x", "a//b", " a"])
def test_normalize_ref_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        normalize_ref(bad)


def big_base(seed: str) -> LayerTar:
    return base_layer().file("usr/lib/big.bin", (seed * 64).encode() * 4096)  # ~256 KiB+


def test_dedup_shared_base_layer_stored_once(store: Store, tmp_path: Path) -> None:
    base = big_base("x")
    a = Img([(base, "gzip"), (LayerTar().file("a", b"a"), "gzip")], tags=["a"])
    b = Img([(base, "gzip"), (LayerTar().file("b", b"b"), "gzip")], tags=["b"])
    store.import_path(str(docker_archive(tmp_path / "a.tar", [a])))
    one = du(store.root)
    store.import_path(str(docker_archive(tmp_path / "b.tar", [b])))
    two = du(store.root)
    base_size = du(store.get_layer(base.diff_id()).path)
    assert base_size > 200_000
    # the second image added only its small top layer and metadata, not the base again
    assert two - one < base_size / 4
    assert len(store.layers()) == 3
    assert store.get_image("a").diff_ids[0] == store.get_image("b").diff_ids[0]
    assert store.fsck() == []


def test_tag_resolve_untag(store: Store, tmp_path: Path) -> None:
    img = Img([(base_layer(), "none")], tags=["one"])
    [got] = store.import_path(str(docker_archive(tmp_path / "a.tar", [img])))
    assert store.tag(got.short_id, "two:v2") == "two:v2"
    assert store.get_image("two:v2").id == got.id
    assert store.get_image(got.id[7:13]).id == got.id  # id prefix
    assert store.get_image(got.id).tags == ("one:latest", "two:v2")
    with pytest.raises(NotFound):
        store.get_image("three")
    # rmi of one of several names only untags
    assert store.remove_image("one") == ["Untagged: one:latest"]
    assert store.get_image(got.id).tags == ("two:v2",)
    assert store.fsck() == []


def test_rmi_refuses_while_container_uses_image_then_gc(store: Store, tmp_path: Path) -> None:
    img = Img([(big_base("y"), "gzip")], tags=["used"])
    [got] = store.import_path(str(docker_archive(tmp_path / "a.tar", [img])))
    cdir = Path(store.containers_dir, "c0ffee")
    cdir.mkdir()
    (cdir / "config.json").write_text(json.dumps({"image": got.id}))
    with pytest.raises(Conflict, match="c0ffee"):
        store.remove_image("used")
    assert store.gc() == []  # still referenced
    # forced: the name goes, the image stays while the container exists
    assert store.remove_image("used", force=True) == ["Untagged: used:latest"]
    assert store.get_image(got.id).tags == ()
    assert store.layer_dirs(got)
    (cdir / "config.json").unlink()
    cdir.rmdir()
    removed = store.remove_image(got.id)
    assert f"Deleted: {got.id}" in removed
    assert f"Deleted: {got.diff_ids[0]}" in removed  # pruned with the image
    assert store.layers() == [] and store.blobs.digests() == []
    assert store.fsck() == []


def test_gc_keeps_shared_removes_unreferenced(store: Store, tmp_path: Path) -> None:
    base = base_layer()
    a = Img([(base, "gzip"), (LayerTar().file("a", b"a"), "gzip")], tags=["a"])
    b = Img([(base, "gzip")], tags=["b"])
    store.import_path(str(docker_archive(tmp_path / "ab.tar", [a, b])))
    store.remove_image("a", prune=False)
    assert len(store.layers()) == 2
    removed = store.gc()
    assert a.layers[1][0].diff_id() in removed
    assert sha(a.config()) in removed
    assert [x.diff_id for x in store.layers()] == [base.diff_id()]
    assert store.layer_dirs("b")
    assert store.fsck() == []


def test_fsck_finds_problems(store: Store, tmp_path: Path) -> None:
    img = Img([(base_layer(), "gzip")], tags=["f"])
    [got] = store.import_path(str(docker_archive(tmp_path / "a.tar", [img])))
    assert store.fsck() == []
    blob = store.blob_path(got.layer_digests[0])
    os.chmod(blob, 0o644)
    with open(blob, "ab") as f:
        f.write(b"x")
    Path(store.tmp_dir, "layer-stale").mkdir()
    meta = Path(store.get_layer(got.diff_ids[0]).path).parent / "layer.json"
    rec = json.loads(meta.read_text())
    rec["diff_id"] = sha(b"other")
    meta.write_text(json.dumps(rec))
    problems = store.fsck()
    assert any("does not hash" in p for p in problems)
    assert any("stale staging entry layer-stale" in p for p in problems)
    assert any("layer.json says diff_id" in p for p in problems)


def test_tmp_cleaned_at_open_except_live_entries(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s"))
    stale = Path(store.tmp_dir, "layer-dead")
    (stale / "diff" / "ro").mkdir(parents=True)
    os.chmod(stale / "diff" / "ro", 0o500)
    live = Path(store.tmp_dir, "layer-live")
    live.mkdir()
    young = Path(store.tmp_dir, "commit-young")  # another part's unlocked temp file
    young.write_bytes(b"x")
    old = Path(store.tmp_dir, "commit-old")
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200,) * 2)
    with FileLock(str(live)):
        again = open_store(store.root)
        assert not stale.exists() and not old.exists()
        assert live.exists() and young.exists()
        with again.staging_file() as (path, f):
            f.write(b"staged")
            assert open_store(store.root).fsck() == []
            assert os.path.exists(path)
        assert not os.path.exists(path)
        assert again.fsck() == []
    assert open_store(store.root).fsck() == []
    assert not live.exists()
    young.unlink()


@pytest.mark.parametrize("form", ["docker-archive", "oci", "oci-archive"])
@pytest.mark.parametrize("src_kind", ["docker", "oci"])
def test_export_reimport_identical(tmp_path: Path, form: str, src_kind: str) -> None:
    img = Img([(base_layer(), "gzip"), (LayerTar().file("x", b"x").whiteout("etc"), "zstd")],
              tags=["round:trip"])
    src = docker_archive(tmp_path / "in.tar", [img]) if src_kind == "docker" else \
        write_dir(tmp_path / "in", oci_files([img], ref_names=[["round:trip"]]))
    s1 = open_store(str(tmp_path / "s1"))
    [a] = s1.import_path(str(src))
    out = tmp_path / ("out" if form == "oci" else "out.tar")
    export_image(s1, "round:trip", form, str(out))
    s2 = open_store(str(tmp_path / "s2"))
    [b] = s2.import_path(str(out))
    assert (b.id, b.diff_ids, b.layer_digests, b.tags) == (a.id, a.diff_ids, a.layer_digests,
                                                          a.tags)
    if form != "docker-archive" and src_kind == "oci":
        assert b.manifest_digest == a.manifest_digest == sha(img.manifest())
    if form == "docker-archive":
        with tarfile.open(out) as tf:
            man = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert man[0]["RepoTags"] == ["round:trip"]
    assert s2.fsck() == [] and s1.fsck() == []
    with pytest.raises(Conflict, match="exists"):
        export_image(s1, "round:trip", form, str(out))


def test_known_diff_id_new_compression_is_verified(store: Store, tmp_path: Path) -> None:
    base = base_layer()
    store.import_path(str(docker_archive(tmp_path / "g.tar", [Img([(base, "gzip")],
                                                                  tags=["g"])])))
    z = Img([(base, "zstd")], tags=["z"], env=["Z=1"])
    [got] = store.import_path(str(docker_archive(tmp_path / "z.tar", [z])))
    assert got.layer_digests == (sha(base.compressed("zstd")),)
    layer = store.get_layer(base.diff_id())
    assert set(layer.digests) == {sha(base.compressed("gzip")), sha(base.compressed("zstd"))}
    assert len(store.layers()) == 1
    # a blob claiming a stored DiffID without producing it is refused, nothing recorded
    liar = Img([(LayerTar().file("etc/shadow", b"evil"), "gzip")], tags=["liar"])
    cfg = json.loads(liar.config())
    cfg["rootfs"]["diff_ids"] = [base.diff_id()]
    cfg["config"]["Env"] = ["LIAR=1"]  # not the config of an image already stored
    files = {"manifest.json": json.dumps([{"Config": "c.json", "RepoTags": ["liar"],
                                           "Layers": ["l.tar"]}]).encode(),
             "c.json": json.dumps(cfg).encode(), "l.tar": liar.blobs()[0]}
    with pytest.raises(DigestMismatch, match="config says"):
        store.import_path(str(write_tar(tmp_path / "liar.tar", files)))
    with pytest.raises(NotFound):
        store.get_image("liar")
    assert sha(liar.blobs()[0]) not in store.blobs.digests()
    assert store.fsck() == []
