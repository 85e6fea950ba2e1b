"""Build image archives and layouts by hand for the store's tests.

Hand-built on purpose (beside the real peer tools in test_interop.py): they let a
test plant exactly one defect (a wrong digest, a bad JSON file, a hostile name).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.layers import LayerTar

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {"none": "application/vnd.oci.image.layer.v1.tar",
            "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
            "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def base_layer(tag: str = "base") -> LayerTar:
    return (LayerTar().dir("etc").file("etc/os-release", f"ID={tag}\n".encode())
            .dir("bin").file("bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755)
            .symlink("bin/sh", "tool"))


@dataclass
class Img:
    """An image: layers (uncompressed LayerTar + compression) and a config."""

    layers: list[tuple[LayerTar, str]]
    arch: str = "amd64"
    tags: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=lambda: ["PATH=/bin"])

    def blobs(self) -> list[bytes]:
        return [lt.compressed(kind) for lt, kind in self.layers]

    def config(self) -> bytes:
        cfg = {"architecture": self.arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
               "config": {"Env": self.env},
               "rootfs": {"type": "layers", "diff_ids": [lt.diff_id() for lt, _ in self.layers]}}
        return json.dumps(cfg).encode()

    def manifest(self) -> bytes:
        cfg = self.config()
        doc = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
               "config": {"mediaType": MT_OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)},
               "layers": [{"mediaType": MT_LAYER[kind], "digest": sha(b), "size": len(b)}
                          for b, (_, kind) in zip(self.blobs(), self.layers, strict=True)]}
        return json.dumps(doc).encode()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    tf.addfile(ti, io.BytesIO(data))


def docker_archive(path: Path, images: list[Img], *, legacy: bool = False,
                   override: dict[str, bytes] | None = None) -> Path:
    """``docker save`` shape: config json + layer tars + manifest.json (+ repositories)."""
    files: dict[str, bytes] = {}
    manifest = []
    for img in images:
        cfg = img.config()
        cfg_name = f"{sha(cfg)[7:]}.json"
        files[cfg_name] = cfg
        names = []
        for i, blob in enumerate(img.blobs()):
            name = f"layer{i}-{sha(blob)[7:19]}/layer.tar" if legacy else \
                f"blobs/sha256/{sha(blob)[7:]}"
            files[name] = blob
            names.append(name)
        manifest.append({"Config": cfg_name, "RepoTags": img.tags or None, "Layers": names})
    files["manifest.json"] = json.dumps(manifest).encode()
    files.update(override or {})
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            _add(tf, name, data)
    return path


def oci_files(images: list[Img], *, ref_names: list[list[str]] | None = None,
              nested: bool = False) -> dict[str, bytes]:
    """Files of an OCI layout holding ``images`` (optionally behind one nested index)."""
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
    descs = []
    for i, img in enumerate(images):
        for blob in [img.config(), img.manifest(), *img.blobs()]:
            files[f"blobs/sha256/{sha(blob)[7:]}"] = blob
        man = img.manifest()
        desc: dict[str, Any] = {"mediaType": MT_OCI_MANIFEST, "digest": sha(man),
                                "size": len(man),
                                "platform": {"os": "linux", "architecture": img.arch}}
        names = ref_names[i] if ref_names and i < len(ref_names) else []
        if nested:
            descs.append(desc)
        elif names:
            descs.extend(dict(desc, annotations={"org.opencontainers.image.ref.name": n})
                         for n in names)
        else:
            descs.append(desc)
    if nested:
        idx = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
                          "manifests": descs}).encode()
        files[f"blobs/sha256/{sha(idx)[7:]}"] = idx
        names = ref_names[0] if ref_names else []
        top: dict[str, Any] = {"mediaType": MT_OCI_INDEX, "digest": sha(idx), "size": len(idx)}
        if names:
            top["annotations"] = {"org.opencontainers.image.ref.name": names[0]}
        descs = [top]
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": descs}).encode()
    return files


def write_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            _add(tf, name, data)
    return path


def du(path: str) -> int:
    """Bytes allocated under ``path`` (hardlinks counted once), like ``du -s``."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
