"""The store's CLI: import/images/layers/tag/rmi/gc/export, --json, errors, progress."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "store"))

from helpers.layers import LayerTar
from store_helpers import Img, base_layer, docker_archive

from cowfs.store import open_store


def cowfs(root: Path, *args: str, stderr: Any = subprocess.PIPE,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "cowfs.cli", "--root", str(root), *args],
                       stdout=subprocess.PIPE, stderr=stderr, text=True, check=False)
    if check and r.returncode != 0:
        pytest.fail(f"cowfs {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    img = Img([(base_layer(), "gzip"), (LayerTar().file("etc/motd", b"hi\n"), "zstd")],
              tags=["demo:1"])
    return docker_archive(tmp_path / "demo.tar", [img])


def test_import_images_layers_tag_rmi_gc(tmp_path: Path, archive: Path) -> None:
    root = tmp_path / "store"
    out = cowfs(root, "import", str(archive)).stdout
    assert out.splitlines()[0].split() == ["IMAGE", "ID", "TAGS", "LAYERS", "SIZE"]
    assert "demo:1" in out
    [img] = json.loads(cowfs(root, "images", "--json").stdout)
    assert img["tags"] == ["demo:1"] and len(img["diff_ids"]) == 2
    assert "demo" in cowfs(root, "images").stdout
    layers = json.loads(cowfs(root, "layers", "--json").stdout)
    assert sorted(x["diff_id"] for x in layers) == sorted(img["diff_ids"])
    assert all(x["images"] == 1 and os.path.isdir(x["path"]) for x in layers)
    cowfs(root, "tag", "demo:1", "other")
    assert json.loads(cowfs(root, "images", "--json").stdout)[0]["tags"] == ["demo:1",
                                                                           "other:latest"]
    # a container using the image blocks rmi (exit 4, one line) until -f
    cdir = root / "containers" / "abc"
    cdir.mkdir()
    (cdir / "config.json").write_text(json.dumps({"image": img["id"]}))
    cowfs(root, "rmi", "other")  # just an untag
    r = cowfs(root, "rmi", "demo:1", check=False)
    assert r.returncode == 4 and r.stderr.count("\n") == 1 and "abc" in r.stderr
    (cdir / "config.json").unlink()
    cdir.rmdir()
    assert json.loads(cowfs(root, "rmi", "--no-prune", "--json", "demo:1").stdout) == [
        "Untagged: demo:1", f"Deleted: {img['id']}"]
    removed = json.loads(cowfs(root, "gc", "--json").stdout)["removed"]
    assert set(img["diff_ids"]) <= set(removed)
    assert json.loads(cowfs(root, "layers", "--json").stdout) == []
    assert open_store(str(root)).fsck() == []


def test_export_and_reimport(tmp_path: Path, archive: Path) -> None:
    root = tmp_path / "store"
    cowfs(root, "import", str(archive))
    out = tmp_path / "out.tar"
    got = json.loads(cowfs(root, "export", "demo:1", "--format", "oci-archive", "-o", str(out),
                           "--json").stdout)
    again = json.loads(cowfs(tmp_path / "s2", "import", "--json", str(out)).stdout)
    assert again[0]["id"] == got["id"]
    r = cowfs(root, "export", "demo:1", "-o", str(out), check=False)
    assert r.returncode == 4 and "exists" in r.stderr


@pytest.mark.parametrize(("args", "code", "words"), [
    (["import", "/nonexistent/x.tar"], 3, "no such file"),
    (["import", "--tag", "Bad Tag", "{junk}"], 2, "invalid"),
    (["import", "{junk}"], 5, "not a tar"),
    (["import", "{badjson}"], 5, "manifest.json"),
    (["rmi", "nosuch"], 3, "not in the store"),
    (["tag", "nosuch", "x"], 3, "not in the store"),
    (["export", "nosuch", "-o", "{tmp}/x"], 3, "not in the store"),
    (["export", "x", "--format", "zip", "-o", "y"], 2, "invalid choice"),
])
def test_errors_are_one_line_with_exit_codes(tmp_path: Path, args: list[str], code: int,
                                             words: str) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"junk" * 200)
    badjson = docker_archive(tmp_path / "bad.tar", [Img([(base_layer(), "none")])],
                             override={"manifest.json": b"{oops"})
    args = [a.format(junk=junk, badjson=badjson, tmp=tmp_path) for a in args]
    r = cowfs(tmp_path / "store", *args, check=False)
    assert r.returncode == code
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert words in r.stderr


def _import_with_stderr_tty(root: Path, archive: Path, tty: bool) -> str:
    if not tty:
        return cowfs(root, "import", str(archive)).stderr
    master, slave = pty.openpty()
    try:
        r = cowfs(root, "import", str(archive), stderr=slave)
        assert r.returncode == 0
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_progress_only_on_a_tty(tmp_path: Path, archive: Path) -> None:
    shown = _import_with_stderr_tty(tmp_path / "a", archive, tty=True)
    assert "layer 1/2" in shown and "layer 2/2" in shown
    assert _import_with_stderr_tty(tmp_path / "b", archive, tty=False) == ""
