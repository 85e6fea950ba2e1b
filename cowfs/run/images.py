"""Resolve an IMAGE argument to what a container needs: lower dirs and the run config.

Owns: the bridge from the layer store (``cowfs.store``) to containers, plus the
``/abs/rootfs/dir`` form (one plain directory as the only, read-only lower layer, like
``podman run --rootfs``); and turning the image config's Entrypoint/Cmd/Env/WorkingDir/
User plus command-line overrides into a process spec. Must not mount anything.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, UsageError


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What ``create`` records about an image."""

    ref: str
    id: str
    lowerdirs: list[str]
    config: dict[str, Any]
    """The runtime part of the OCI image config (``Env``, ``Cmd``, ``Entrypoint``...)."""


def open_store(root: str) -> Any:
    """Open the layer store at ``root`` (lazy: a rootfs-dir container needs no store)."""
    mod = importlib.import_module("cowfs.store")
    opener = getattr(mod, "open_store", None)
    if opener is None:  # pragma: no cover - store package without its re-export
        opener = importlib.import_module("cowfs.store.store").open_store
    return opener(root)


def resolve(root: str, ref: str) -> ImageInfo:
    """Find ``ref`` (name:tag, id, id prefix, or an absolute rootfs dir)."""
    if ref.startswith("/"):
        if not os.path.isdir(ref):
            raise NotFound(f"find image {ref}: no such rootfs directory")
        return ImageInfo(ref=ref, id="", lowerdirs=[os.path.realpath(ref)], config={})
    store = open_store(root)
    image = store.get_image(ref)
    cfg = image.config if isinstance(image.config, dict) else {}
    runtime = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    return ImageInfo(ref=ref, id=str(image.id), lowerdirs=list(store.layer_dirs(image)),
                     config=dict(runtime or {}))


def process_args(info: ImageInfo, cmd: Sequence[str], *, entrypoint: str | None = None,
                 env: Sequence[str] = (), workdir: str | None = None,
                 user: str | None = None) -> tuple[list[str], list[str], str, str]:
    """Combine image config and overrides like docker: (argv, env, workdir, user)."""
    cfg = info.config
    ep = [entrypoint] if entrypoint else list(cfg.get("Entrypoint") or [])
    if entrypoint == "":
        ep = []
    args = list(cmd) if cmd else list(cfg.get("Cmd") or [])
    if entrypoint is not None and not cmd:
        args = []
    argv = ep + args
    merged: dict[str, str] = {}
    for item in list(cfg.get("Env") or []) + list(env):
        if "=" not in item:
            value = os.environ.get(item)
            if value is None:
                continue
            item = f"{item}={value}"
        k, _, v = item.partition("=")
        if not k:
            raise UsageError(f"parse env {item!r}: empty name")
        merged[k] = v
    wd = workdir or str(cfg.get("WorkingDir") or "/")
    if not wd.startswith("/"):
        raise UsageError(f"workdir {wd!r}: must be an absolute path")
    return argv, [f"{k}={v}" for k, v in merged.items()], wd, user or str(cfg.get("User") or "")
