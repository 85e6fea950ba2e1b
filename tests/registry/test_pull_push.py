"""Pull and push against a real docker-registry, with images made by peer tools.

Every image here is built by umoci and moved by skopeo; cowfs's result is compared
with what those tools see (umoci unpack of the same image, skopeo inspect digests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers.registry import Registry, TokenServer, skopeo, umoci_layout
from helpers.unpacktree import diff, snapshot

from cowfs.errors import DigestMismatch, RegistryError
from cowfs.registry.pull import TransferEvent, downloads_dir, pull
from cowfs.registry.push import push
from cowfs.store import Store, open_store

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay,
              pytest.mark.needs_tool("docker-registry", "skopeo", "umoci")]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return umoci_layout(tmp_path_factory.mktemp("img"), tag="v1", layers=3)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(str(tmp_path / "store"))


def _push_layout(registry: Registry, layout: Path, name: str, *extra: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", *extra, f"oci:{layout}:v1",
           f"docker://{registry.host}/{name}")


def _mounted_tree(store: Store, image_ref: str, tmp: Path) -> dict[str, tuple[object, ...]]:
    lowers = store.layer_dirs(store.get_image(image_ref))
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    mnt = tmp / "merged"
    mnt.mkdir(exist_ok=True)
    opts = "lowerdir=" + ":".join([*lowers, str(empty)])
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(mnt)], check=True)
    try:
        return _comparable(snapshot(str(mnt)))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _comparable(snap: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """Drop the root entry and directory mtimes (the merge root is not a layer entry)."""
    out = {}
    for k, v in snap.items():
        if k == ".":
            continue
        if v[0] == 0o040000:
            v = (*v[:7], None, *v[8:])
        out[k] = v
    return out


def _umoci_tree(layout: Path, tmp: Path) -> dict[str, tuple[object, ...]]:
    bundle = tmp / "umoci-bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True,
                   capture_output=True)
    return _comparable(snapshot(str(bundle / "rootfs")))


def test_pull_gives_the_tree_umoci_unpacks(registry: Registry, layout: Path, store: Store,
                                           tmp_path: Path) -> None:
    _push_layout(registry, layout, "peer/busybox:v1")
    events: list[TransferEvent] = []
    image = pull(store, f"{registry.host}/peer/busybox:v1", insecure=True,
                 progress=events.append)
    assert len(image.diff_ids) == 3
    assert {e.status for e in events} >= {"downloading", "done"}
    assert diff(_mounted_tree(store, image.id, tmp_path), _umoci_tree(layout, tmp_path)) == []
    assert store.fsck() == []


def test_pull_equals_import_of_the_same_image(registry: Registry, layout: Path, store: Store,
                                              tmp_path: Path) -> None:
    _push_layout(registry, layout, "peer/same:v1")
    copied = tmp_path / "copied"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/peer/same:v1",
           f"oci:{copied}:v1")
    imported = store.import_path(str(copied))[0]
    layers_before = sorted(os.listdir(store.layers_dir))
    pulled = pull(store, f"{registry.host}/peer/same:v1", insecure=True)
    assert pulled.id == imported.id
    assert pulled.diff_ids == imported.diff_ids
    assert pulled.layer_digests == imported.layer_digests
    assert sorted(os.listdir(store.layers_dir)) == layers_before  # dedup: nothing new


def test_zstd_image_pulls_to_the_same_layers(registry: Registry, layout: Path, store: Store,
                                             tmp_path: Path) -> None:
    _push_layout(registry, layout, "peer/gz:v1")
    zlayout = tmp_path / "zstd-layout"
    skopeo("copy", "--dest-compress-format", "zstd", f"oci:{layout}:v1", f"oci:{zlayout}:v1")
    _push_layout(registry, zlayout, "peer/zst:v1")
    zst = pull(store, f"{registry.host}/peer/zst:v1", insecure=True)
    assert all(m.endswith("+zstd") for m in zst.layer_media_types)
    # push the zstd image back and read it with skopeo: same digests
    digest = push(store, zst.id, f"{registry.host}/cowfs/zst:v2", insecure=True)
    info = json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://{registry.host}/cowfs/zst:v2").stdout)
    assert info["Digest"] == digest == zst.manifest_digest
    assert info["Layers"] == list(zst.layer_digests)
    # the gzip form of the same image has the same config, DiffIDs and layers: the store
    # only tags it, so nothing is downloaded, and nothing is left running or half-written
    gz = pull(store, f"{registry.host}/peer/gz:v1", insecure=True)
    assert [t.name for t in threading.enumerate() if t.name.startswith("pull")] == []
    assert os.listdir(downloads_dir(store)) == []
    assert gz.id == zst.id
    assert gz.diff_ids == zst.diff_ids
    assert len(os.listdir(store.layers_dir)) == 3
    assert store.fsck() == []


def test_push_reads_back_with_skopeo(registry: Registry, layout: Path, store: Store,
                                     tmp_path: Path) -> None:
    image = store.import_path(str(layout), tag="local/bb:v1")[0]
    digest = push(store, "local/bb:v1", f"{registry.host}/cowfs/bb:v1", insecure=True)
    assert digest == image.manifest_digest
    info = json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://{registry.host}/cowfs/bb:v1").stdout)
    assert info["Digest"] == image.manifest_digest
    assert info["Layers"] == list(image.layer_digests)
    out = tmp_path / "readback"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/cowfs/bb:v1",
           f"oci:{out}:v1")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest
    # a second push transfers nothing: every blob is already there (HEAD checks)
    events: list[TransferEvent] = []
    push(store, "local/bb:v1", f"{registry.host}/cowfs/bb:v1", insecure=True,
         progress=events.append)
    assert events
    assert {e.status for e in events} == {"exists"}
    # pushing to another repository cross-mounts instead of uploading
    events.clear()
    push(store, "local/bb:v1", f"{registry.host}/cowfs/other:v1", insecure=True,
         mount_from=["cowfs/bb"], progress=events.append)
    assert {e.status for e in events} == {"mounted"}


def _index_layout(layout: Path, tmp: Path) -> Path:
    """Turn a single-image OCI layout into a two-platform index (amd64 + arm64)."""
    out = tmp / "multi"
    subprocess.run(["cp", "-a", str(layout), str(out)], check=True)
    blobs = out / "blobs" / "sha256"
    index = json.loads((out / "index.json").read_text())
    man_desc = next(m for m in index["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "v1")
    manifest = json.loads((blobs / man_desc["digest"][7:]).read_bytes())
    descs = []
    for arch in ("amd64", "arm64"):
        config = json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())
        config["architecture"] = arch
        craw = json.dumps(config).encode()
        cd = _put(blobs, craw)
        m2 = dict(manifest, config=dict(manifest["config"], digest=cd, size=len(craw)))
        mraw = json.dumps(m2).encode()
        descs.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "digest": _put(blobs, mraw), "size": len(mraw),
                      "platform": {"os": "linux", "architecture": arch}})
    iraw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": descs}).encode()
    idx_digest = _put(blobs, iraw)
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idx_digest,
         "size": len(iraw), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    return out


def _put(blobs: Path, data: bytes) -> str:
    import hashlib

    h = hashlib.sha256(data).hexdigest()
    (blobs / h).write_bytes(data)
    return f"sha256:{h}"


def test_multi_platform_index_selects_the_platform(registry: Registry, layout: Path,
                                                   store: Store, tmp_path: Path) -> None:
    multi = _index_layout(layout, tmp_path)
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{multi}:v1",
           f"docker://{registry.host}/peer/multi:v1")
    amd = pull(store, f"{registry.host}/peer/multi:v1", insecure=True)
    arm = pull(store, f"{registry.host}/peer/multi:v1", insecure=True,
               platform="linux/arm64", tag="multi:arm64")
    assert amd.config["architecture"] == "amd64"
    assert arm.config["architecture"] == "arm64"
    assert amd.id != arm.id
    assert amd.diff_ids == arm.diff_ids
    with pytest.raises(RegistryError, match="no manifest for platform linux/s390x"):
        pull(store, f"{registry.host}/peer/multi:v1", insecure=True, platform="linux/s390x")


def test_basic_auth(auth_registry: Registry, layout: Path, store: Store, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    creds = f"{auth_registry.user}:{auth_registry.password}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:v1",
           f"docker://{auth_registry.host}/priv/bb:v1")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    ref = f"{auth_registry.host}/priv/bb:v1"
    with pytest.raises(RegistryError, match="requires a login"):
        pull(store, ref, insecure=True)
    with pytest.raises(RegistryError, match="authentication failed"):
        pull(store, ref, insecure=True, creds="cowfs:wrong")
    image = pull(store, ref, insecure=True, creds=creds)
    import base64

    (tmp_path / "auth.json").write_text(json.dumps({"auths": {auth_registry.host: {
        "auth": base64.b64encode(creds.encode()).decode()}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    assert push(store, image.id, f"{auth_registry.host}/priv/copy:v1", insecure=True)


@pytest.fixture
def big_layout(tmp_path: Path) -> Path:
    """An image whose second layer is ~24 MiB of incompressible data."""
    layout = umoci_layout(tmp_path / "big", tag="v1", layers=1)
    bundle = tmp_path / "big" / "bundle"
    with open(bundle / "rootfs" / "blob.bin", "wb") as f:
        f.write(os.urandom(24 << 20))
    subprocess.run(["umoci", "repack", "--refresh-bundle", "--image", f"{layout}:v1",
                    str(bundle)], check=True, capture_output=True)
    return layout


def test_registry_killed_mid_pull_resumes(registry: Registry, big_layout: Path, store: Store,
                                          tmp_path: Path) -> None:
    _push_layout(registry, big_layout, "peer/big:v1")
    killed = threading.Event()
    restarted = threading.Event()
    seen: dict[str, int] = {}

    def progress(ev: TransferEvent) -> None:
        if ev.status == "downloading":
            seen[ev.digest] = ev.done
            if ev.done > (4 << 20) and not killed.is_set():
                killed.set()
                registry.kill()

                def restart() -> None:
                    registry.start()
                    restarted.set()
                threading.Timer(0.3, restart).start()

    image = pull(store, f"{registry.host}/peer/big:v1", insecure=True, progress=progress,
                 jobs=1)
    assert restarted.wait(10)
    assert killed.is_set()
    big = max(range(len(image.layer_sizes)),
              key=lambda i: os.path.getsize(store.blob_path(image.layer_digests[i])))
    digest = image.layer_digests[big]
    # resumed, not restarted: bytes received add up to the blob size exactly
    assert seen[digest] == os.path.getsize(store.blob_path(digest))
    assert store.fsck() == []
    lowers = store.layer_dirs(image)
    assert any(os.path.getsize(os.path.join(d, "blob.bin")) == 24 << 20
               for d in lowers if os.path.exists(os.path.join(d, "blob.bin")))


def test_wrong_digest_from_registry_stores_nothing(registry: Registry, layout: Path,
                                                   store: Store) -> None:
    _push_layout(registry, layout, "peer/corrupt:v1")
    man = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                            f"docker://{registry.host}/peer/corrupt:v1").stdout)
    victim = man["layers"][-1]["digest"][7:]
    data = registry.data / "docker/registry/v2/blobs/sha256" / victim[:2] / victim / "data"
    original = data.read_bytes()
    try:
        data.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        with pytest.raises(DigestMismatch, match=victim):
            pull(store, f"{registry.host}/peer/corrupt:v1", insecure=True)
    finally:
        data.write_bytes(original)
    assert store.images() == []
    assert not store.has_blob("sha256:" + victim)
    assert os.listdir(store.layers_dir) == []
    assert store.fsck() == []


def test_cli_pull_push_json_and_errors(registry: Registry, layout: Path,
                                       tmp_path: Path) -> None:
    _push_layout(registry, layout, "peer/cli:v1")
    env = dict(os.environ, COWFS_ROOT=str(tmp_path / "clistore"))

    def cowfs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cowfs", *args], env=env,
                              capture_output=True, text=True, check=False)

    r = cowfs("pull", "--insecure", "--json", f"{registry.host}/peer/cli:v1")
    assert r.returncode == 0, r.stderr
    pulled = json.loads(r.stdout)
    assert len(pulled["diff_ids"]) == 3
    r = cowfs("push", "--insecure", "--json", f"{registry.host}/peer/cli:v1",
              f"{registry.host}/cli/again:v1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == pulled["manifest_digest"]
    r = cowfs("pull", "--insecure", f"{registry.host}/peer/missing:v1")
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1
    assert "HTTP 404" in r.stderr
    r = cowfs("pull", f"{registry.host}/peer/cli:v1")  # https to a plain-HTTP registry
    assert r.returncode != 0
    assert r.stderr.startswith("cowfs: ")


def test_bearer_token_auth(token_registry: tuple[Registry, TokenServer], layout: Path,
                           store: Store, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-registry in token mode: challenge → token server (basic creds) → JWT."""
    reg, tokens = token_registry
    creds = f"{tokens.user}:{tokens.password}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:v1",
           f"docker://{reg.host}/tok/bb:v1")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(RegistryError, match="token request failed with HTTP 401"):
        pull(store, f"{reg.host}/tok/bb:v1", insecure=True)
    before = tokens.issued
    image = pull(store, f"{reg.host}/tok/bb:v1", insecure=True, creds=creds)
    assert len(image.diff_ids) == 3
    assert tokens.issued == before + 1  # one token for the repository scope, then cached
    digest = push(store, image.id, f"{reg.host}/tok/copy:v1", insecure=True, creds=creds,
                  mount_from=["tok/bb"])
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds,
                             f"docker://{reg.host}/tok/copy:v1").stdout)
    assert info["Digest"] == digest
