"""Crash safety and concurrency of imports, with real processes and SIGKILL."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from store_helpers import sha

from cowfs.store import open_store

NFILES = 12000


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A docker-archive whose one layer has many files (slow enough to kill mid-unpack)."""
    d = tmp_path_factory.mktemp("big")
    layer = d / "layer.tar"
    chunk = os.urandom(4096)
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(NFILES // 100):
            ti = tarfile.TarInfo(f"d{i:03d}")
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tf.addfile(ti)
            for j in range(100):
                ti = tarfile.TarInfo(f"d{i:03d}/f{j:03d}")
                ti.size = len(chunk)
                tf.addfile(ti, io.BytesIO(chunk))
    diff_id = sha(layer.read_bytes())
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    archive = d / "big.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(layer, f"blobs/sha256/{diff_id[7:]}")
        ti = tarfile.TarInfo(f"{sha(cfg)[7:]}.json")
        ti.size = len(cfg)
        tf.addfile(ti, io.BytesIO(cfg))
        man = json.dumps([{"Config": ti.name, "RepoTags": ["big:1"],
                           "Layers": [f"blobs/sha256/{diff_id[7:]}"]}]).encode()
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(man)
        tf.addfile(ti, io.BytesIO(man))
    layer.unlink()
    return archive


def _import(root: Path, archive: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cowfs.cli", "--root", str(root), "import", str(archive)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(pred: object, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if callable(pred) and pred():
            return
        if proc.poll() is not None:
            pytest.fail(f"import finished before {what}: {proc.communicate()}")
        time.sleep(0.002)
    pytest.fail(f"timed out waiting for {what}")


def _staging(root: Path, prefix: str) -> list[Path]:
    tmp = root / "tmp"
    return [p for p in tmp.iterdir() if p.name.startswith(prefix)] if tmp.exists() else []


def _mid_unpack(root: Path) -> bool:
    for stage in _staging(root, "layer-"):
        try:
            if len(os.listdir(stage / "diff")) > 5:
                return True
        except FileNotFoundError:
            pass
    return False


@pytest.mark.parametrize("phase", ["blob", "layer"])
def test_sigkill_mid_import_leaves_nothing_visible(tmp_path: Path, big_archive: Path,
                                                   phase: str) -> None:
    root = tmp_path / "store"
    proc = _import(root, big_archive)
    try:
        if phase == "blob":
            _wait_for(lambda: bool(_staging(root, "blob-")), proc, "the blob copy")
        else:
            _wait_for(lambda: _mid_unpack(root), proc, "the unpack")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # Nothing partial is visible: no layer dir, no image, no tag.
    assert os.listdir(root / "layers") == []
    assert os.listdir(root / "images") == []
    # The kill landed mid-import: a staging entry is left in tmp/, or (under load the kill
    # may land one phase later) the blob was complete and stored, and the unpack had not
    # staged anything yet. Never a layer, image or tag.
    blobs = root / "blobs" / "sha256"
    stored = os.listdir(blobs) if blobs.exists() else []
    assert _staging(root, "layer-") or _staging(root, "blob-") or stored
    store = open_store(str(root))  # opening cleans the dead writer's staging
    assert os.listdir(store.tmp_dir) == []
    assert store.fsck() == []
    [img] = store.import_path(str(big_archive))
    assert img.tags == ("big:1",)
    assert len(os.listdir(store.layer_dirs(img)[0])) == NFILES // 100
    assert store.fsck() == []


def test_two_processes_import_same_image(tmp_path: Path, big_archive: Path) -> None:
    root = tmp_path / "store"
    open_store(str(root))
    procs = [_import(root, big_archive) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert b"big:1" in out
    store = open_store(str(root))
    assert len(store.layers()) == 1
    assert len(os.listdir(store.layers_dir)) == 1
    assert [i.tags for i in store.images()] == [("big:1",)]
    assert store.fsck() == []
