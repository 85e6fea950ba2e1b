"""``cowfs build``: execute a parsed Dockerfile into store images, with a layer cache.

Owns: stage state (config, layers), each instruction's effect, the cache, and the
step output. Every layer-producing step fills an empty *upper* dir against the current
lower stack (COPY/ADD write it directly; RUN runs a container whose writable layer it
is) and ``cowfs.run.commit.write_layer`` turns it into an OCI layer, so whiteouts and
opaque dirs come out exactly as ``cowfs commit`` writes them.

Cache: a step whose parent ChainID, expanded instruction text, run environment and
(for COPY/ADD) input content digest are unchanged reuses the recorded layer. Metadata
steps reuse the timestamp of the step before them, so a fully cached rebuild produces a
byte-identical config and therefore the same image ID.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from .. import format as fmt
from ..driver import mount as overlay_mount
from ..errors import BuildError, CowfsError
from ..run import container as containers, lifecycle
from ..run.commit import write_layer
from ..store import Image, Store
from ..store.lock import FileLock
from .context import Context
from .dockerfile import Instruction, Stage, expand, parse, parse_key_values, split_words
from .files import (
    copy_contents,
    copy_tree,
    download,
    ensure_parents,
    extract_archive,
    is_archive,
    lower_lstat,
    url_basename,
)

log = logging.getLogger(__name__)

CACHE_DIR = "build-cache"
_DEFAULT_SHELL = ["/bin/sh", "-c"]
_LAYER_STEPS = frozenset({"COPY", "ADD", "RUN"})


@dataclass
class StepResult:
    """One executed step, for ``--json`` output."""

    step: int
    instruction: str
    cached: bool
    layer: str | None
    stage: int


@dataclass
class BuildResult:
    image: Image
    steps: list[StepResult]
    ran: int  # RUN instructions actually executed (not served from cache)


@dataclass
class _State:
    """What a stage has built so far."""

    config: dict[str, Any]
    diff_ids: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    created: str = "1970-01-01T00:00:00Z"
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False

    @property
    def runtime(self) -> dict[str, Any]:
        rt: dict[str, Any] = self.config.setdefault("config", {})
        return rt

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.runtime.get("Env") or []:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out

    def set_env(self, key: str, value: str) -> None:
        env = self.env()
        env[key] = value
        self.runtime["Env"] = [f"{k}={v}" for k, v in env.items()]

    def chain(self) -> str:
        out = "scratch"
        for d in self.diff_ids:
            out = hashlib.sha256(f"{out} {d}".encode()).hexdigest()
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Builder:
    """Runs one build. ``out`` receives docker-like step lines and RUN output."""

    def __init__(self, store: Store, context_dir: str, dockerfile: str, *,
                 build_args: dict[str, str] | None = None, no_cache: bool = False,
                 backend: str = "auto", out: TextIO | None = None) -> None:
        self.store = store
        self.context = Context(context_dir)
        self.dockerfile_path = dockerfile
        self.build_args = dict(build_args or {})
        self.no_cache = no_cache
        self.backend = backend
        self.out = out or sys.stdout
        self.cache_dir = os.path.join(store.root, CACHE_DIR)
        os.makedirs(self.cache_dir, exist_ok=True)
        self.stages: list[_State] = []
        self.stage_names: dict[str, int] = {}
        self.steps: list[StepResult] = []
        self.ran = 0

    # --- driving ----------------------------------------------------------------------
    def build(self, tags: list[str]) -> BuildResult:
        try:
            with open(self.dockerfile_path, encoding="utf-8") as f:
                df = parse(f.read())
        except FileNotFoundError:
            raise BuildError(f"build: Dockerfile {self.dockerfile_path} not found") from None
        global_args: dict[str, str] = {}
        for ins in df.global_args:
            for k, v in parse_key_values(str(ins.args), ins.lineno, "ARG"):
                global_args[k] = self.build_args.get(k, expand(v, global_args, ins.lineno))
        total = sum(1 + len(s.instructions) for s in df.stages)
        n = 0
        state: _State | None = None
        for stage in df.stages:
            n += 1
            self._say(f"Step {n}/{total} : FROM {stage.base}"
                      + (f" AS {stage.name}" if stage.name else ""))
            state = self._from(stage, global_args)
            for ins in stage.instructions:
                n += 1
                self._say(f"Step {n}/{total} : {ins.original}")
                self._step(n, stage, state, ins)
            self.stages.append(state)
            if stage.name:
                self.stage_names[stage.name] = stage.index
        assert state is not None
        image = self._commit_image(state, tags)
        self._say(f"Successfully built {image.short_id}")
        for t in image.tags:
            self._say(f"Successfully tagged {t}")
        return BuildResult(image, self.steps, self.ran)

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _from(self, stage: Stage, global_args: dict[str, str]) -> _State:
        base = expand(stage.base, global_args, stage.lineno)
        if base.lower() in self.stage_names:
            prev = self.stages[self.stage_names[base.lower()]]
            st = _State(copy.deepcopy(prev.config), list(prev.diff_ids), list(prev.digests),
                        prev.created)
        elif base == "scratch":
            st = _State({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
        else:
            try:
                img = self.store.get_image(base)
            except CowfsError as exc:
                raise BuildError(f"Dockerfile line {stage.lineno}: FROM {base}: {exc}") from None
            if len(img.layer_digests) != len(img.diff_ids):
                raise BuildError(f"FROM {base}: the store has no layer blobs for it")
            cfg = copy.deepcopy(img.config)
            cfg.setdefault("history", [])
            st = _State(cfg, list(img.diff_ids), list(img.layer_digests),
                        str(cfg.get("created") or img.created or st_epoch()))
        st.args = dict(global_args)
        return st

    # --- instructions -----------------------------------------------------------------
    def _step(self, n: int, stage: Stage, st: _State, ins: Instruction) -> None:
        vars_ = {**st.args, **st.env()}
        if ins.cmd in _LAYER_STEPS:
            self._layer_step(n, stage, st, ins, vars_)
            return
        text = str(ins.args) if isinstance(ins.args, str) else ""
        rt = st.runtime
        if ins.cmd == "ENV":
            for k, v in parse_key_values(expand(text, vars_, ins.lineno), ins.lineno, "ENV"):
                st.set_env(k, v)
        elif ins.cmd == "ARG":
            for k, v in parse_key_values(text, ins.lineno, "ARG"):
                st.args[k] = self.build_args.get(k, expand(v, vars_, ins.lineno))
            return  # ARG leaves no history entry (docker records none either)
        elif ins.cmd == "WORKDIR":
            wd = expand(text, vars_, ins.lineno)
            cur = str(rt.get("WorkingDir") or "/")
            rt["WorkingDir"] = os.path.normpath(os.path.join(cur, wd))
            if lower_lstat(self._lowers(st), rt["WorkingDir"]) is None:
                self._layer_step(n, stage, st, ins, vars_)
                return
        elif ins.cmd == "USER":
            rt["User"] = expand(text, vars_, ins.lineno)
        elif ins.cmd == "LABEL":
            labels = rt.setdefault("Labels", {})
            for k, v in parse_key_values(expand(text, vars_, ins.lineno), ins.lineno, "LABEL"):
                labels[k] = v
        elif ins.cmd == "MAINTAINER":
            st.config["author"] = text
        elif ins.cmd == "EXPOSE":
            ports = rt.setdefault("ExposedPorts", {})
            for p in split_words(expand(text, vars_, ins.lineno), ins.lineno):
                ports[p if "/" in p else f"{p}/tcp"] = {}
        elif ins.cmd == "VOLUME":
            vols = rt.setdefault("Volumes", {})
            items = ins.args if isinstance(ins.args, list) else split_words(
                expand(text, vars_, ins.lineno), ins.lineno)
            for v in items:
                vols[v] = {}
        elif ins.cmd == "STOPSIGNAL":
            rt["StopSignal"] = expand(text, vars_, ins.lineno)
        elif ins.cmd in ("CMD", "ENTRYPOINT"):
            value = ins.args if isinstance(ins.args, list) else \
                [*(rt.get("Shell") or _DEFAULT_SHELL), text]
            rt["Cmd" if ins.cmd == "CMD" else "Entrypoint"] = value
            if ins.cmd == "CMD":
                st.cmd_set = True
            elif not st.cmd_set:
                rt.pop("Cmd", None)  # like docker: ENTRYPOINT resets an inherited CMD
        elif ins.cmd == "SHELL":
            rt["Shell"] = list(ins.args)
        self._history(st, ins, empty=True)

    def _history(self, st: _State, ins: Instruction, *, empty: bool,
                 created: str | None = None) -> None:
        entry: dict[str, Any] = {"created": created or st.created,
                                 "created_by": f"{ins.cmd} {ins.text}"}
        if empty:
            entry["empty_layer"] = True
        st.config.setdefault("history", []).append(entry)

    def _lowers(self, st: _State) -> list[str]:
        return [self.store.get_layer(d).path for d in reversed(st.diff_ids)]

    def _layer_step(self, n: int, stage: Stage, st: _State, ins: Instruction,
                    vars_: dict[str, str]) -> None:
        key_parts = [st.chain(), ins.cmd, ins.text, json.dumps(ins.flags, sort_keys=True),
                     json.dumps(st.runtime.get("Env") or []),
                     str(st.runtime.get("WorkingDir") or "/"), str(st.runtime.get("User") or "")]
        if ins.cmd == "RUN":
            key_parts.append(json.dumps({k: v for k, v in st.args.items()}, sort_keys=True))
        if ins.cmd in ("COPY", "ADD"):
            key_parts.append(self._inputs_digest(st, ins, vars_))
        key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()
        hit = None if self.no_cache else self._cache_get(key)
        if hit is not None:
            self._say(" ---> CACHED")
            layer = hit.get("diff_id")
            if layer:
                st.diff_ids.append(layer)
                st.digests.append(hit["digest"])
            st.created = hit["created"]
            self._history(st, ins, empty=not layer)
            self.steps.append(StepResult(n, ins.original, True, layer, stage.index))
            return
        created = _now()
        with self._staging() as upper:
            if ins.cmd == "RUN":
                self._run(st, ins, upper)
                self.ran += 1
            elif ins.cmd == "WORKDIR":
                ensure_parents(upper, self._lowers(st), str(st.runtime["WorkingDir"]))
            else:
                self._copy(st, ins, vars_, upper)
            diff_id, digest = self._store_layer(upper, self._lowers(st))
        st.created = created
        if diff_id is not None and digest is not None:
            st.diff_ids.append(diff_id)
            st.digests.append(digest)
        self._history(st, ins, empty=diff_id is None)
        self._cache_put(key, {"diff_id": diff_id, "digest": digest, "created": created})
        self._say(f" ---> {(diff_id or 'no changes').removeprefix('sha256:')[:12]}")
        self.steps.append(StepResult(n, ins.original, False, diff_id, stage.index))

    # --- COPY / ADD -------------------------------------------------------------------
    def _copy_args(self, ins: Instruction, vars_: dict[str, str]) -> tuple[list[str], str]:
        words = list(ins.args) if isinstance(ins.args, list) else split_words(
            str(ins.args), ins.lineno)
        words = [expand(w, vars_, ins.lineno) for w in words]
        if len(words) < 2:
            raise BuildError(f"Dockerfile line {ins.lineno}: {ins.cmd} needs a source and a "
                             "destination")
        return words[:-1], words[-1]

    def _inputs_digest(self, st: _State, ins: Instruction, vars_: dict[str, str]) -> str:
        srcs, _dest = self._copy_args(ins, vars_)
        if "from" in ins.flags:
            src_state = self._source_stage(ins)
            return "from:" + src_state.chain()
        urls = [s for s in srcs if "://" in s]
        local = [s for s in srcs if "://" not in s]
        digest = self.context.digest(self.context.resolve_sources(local, ins.lineno)) \
            if local else ""
        return digest + "|" + "|".join(urls)

    def _source_stage(self, ins: Instruction) -> _State:
        ref = ins.flags["from"].lower()
        if ref in self.stage_names:
            return self.stages[self.stage_names[ref]]
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        try:
            img = self.store.get_image(ins.flags["from"])
        except CowfsError as exc:
            raise BuildError(f"Dockerfile line {ins.lineno}: COPY --from={ref}: {exc}") from None
        return _State(img.config, list(img.diff_ids), list(img.layer_digests))

    def _copy(self, st: _State, ins: Instruction, vars_: dict[str, str], upper: str) -> None:
        srcs, dest = self._copy_args(ins, vars_)
        lowers = self._lowers(st)
        wd = str(st.runtime.get("WorkingDir") or "/")
        dest_abs = os.path.normpath(os.path.join(wd, dest))
        dest_is_dir = dest.endswith("/") or len(srcs) > 1 or (
            (below := lower_lstat(lowers, dest_abs)) is not None
            and below.st_mode & 0o170000 == 0o040000)
        owner = self._owner(ins, lowers)
        if "from" in ins.flags:
            src_state = self._source_stage(ins)
            src_lowers = [self.store.get_layer(d).path for d in reversed(src_state.diff_ids)]
            if not src_lowers:
                raise BuildError(f"Dockerfile line {ins.lineno}: --from stage is empty")
            with overlay_mount(src_lowers, backend=self.backend, register=False) as m:
                for s in srcs:
                    path = os.path.normpath(os.path.join(m.mergeddir, s.lstrip("/")))
                    if not (path + "/").startswith(m.mergeddir + "/") or \
                            not os.path.lexists(path):
                        raise BuildError(f"Dockerfile line {ins.lineno}: {s} not found in "
                                         f"stage {ins.flags['from']}")
                    self._place(path, upper, lowers, dest_abs, dest_is_dir, owner)
            return
        local = []
        for s in srcs:
            if "://" in s:
                if ins.cmd != "ADD":
                    raise BuildError(f"Dockerfile line {ins.lineno}: COPY does not take URLs; "
                                     "use ADD")
                target = os.path.join(dest_abs, url_basename(s)) if dest_is_dir else dest_abs
                ensure_parents(upper, lowers, os.path.dirname(target))
                download(s, upper + target)
                if owner:
                    os.chown(upper + target, *owner)
            else:
                local.append(s)
        for rel in self.context.resolve_sources(local, ins.lineno) if local else []:
            path = self.context.abspath(rel, ins.lineno)
            if ins.cmd == "ADD" and os.path.isfile(path) and not os.path.islink(path) \
                    and is_archive(path):
                with self._staging() as extracted:
                    extract_archive(path, extracted)
                    ensure_parents(upper, lowers, dest_abs)
                    copy_contents(extracted, upper + dest_abs, owner)
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                ensure_parents(upper, lowers, dest_abs)
                for child in sorted(os.listdir(path)):
                    crel = f"{rel}/{child}" if rel else child
                    if not self.context.ignored(crel):
                        self._copy_filtered(crel, upper + os.path.join(dest_abs, child), owner)
                continue
            self._place(path, upper, lowers, dest_abs, dest_is_dir, owner)

    def _copy_filtered(self, rel: str, dst: str, owner: tuple[int, int] | None) -> None:
        """Copy a context subtree honouring .dockerignore below it."""
        src = os.path.join(self.context.root, rel)
        if os.path.isdir(src) and not os.path.islink(src):
            st = os.lstat(src)
            if not os.path.isdir(dst):
                os.mkdir(dst, 0o755)
            for child in sorted(os.listdir(src)):
                crel = f"{rel}/{child}"
                if not self.context.ignored(crel):
                    self._copy_filtered(crel, os.path.join(dst, child), owner)
            os.chown(dst, *(owner or (0, 0)))
            os.chmod(dst, st.st_mode & 0o7777)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        else:
            copy_tree(src, dst, owner)

    def _place(self, src: str, upper: str, lowers: list[str], dest_abs: str, dest_is_dir: bool,
               owner: tuple[int, int] | None) -> None:
        if os.path.isdir(src) and not os.path.islink(src):
            ensure_parents(upper, lowers, dest_abs)
            copy_contents(src, upper + dest_abs, owner)
            return
        target = os.path.join(dest_abs, os.path.basename(src)) if dest_is_dir else dest_abs
        ensure_parents(upper, lowers, os.path.dirname(target))
        copy_tree(src, upper + target, owner)

    def _owner(self, ins: Instruction, lowers: list[str]) -> tuple[int, int] | None:
        spec = ins.flags.get("chown")
        if not spec:
            return None
        user, _, group = spec.partition(":")
        uid = _resolve_id(user, lowers, "/etc/passwd", ins.lineno)
        gid = _resolve_id(group, lowers, "/etc/group", ins.lineno) if group else uid
        return uid, gid

    # --- RUN --------------------------------------------------------------------------
    def _run(self, st: _State, ins: Instruction, upper: str) -> None:
        rt = st.runtime
        argv = list(ins.args) if isinstance(ins.args, list) else \
            [*(rt.get("Shell") or _DEFAULT_SHELL), str(ins.args)]
        env = {**{k: v for k, v in st.args.items()}, **st.env()}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        lowers = self._lowers(st)
        if not lowers:
            raise BuildError(f"Dockerfile line {ins.lineno}: RUN needs a base image (FROM "
                             "scratch has no shell)")
        c = containers.create(
            self.store.root, image=f"build-step-{ins.lineno}", image_id="", lowerdirs=lowers,
            argv=argv, env=[f"{k}={v}" for k, v in env.items()],
            workdir=str(rt.get("WorkingDir") or "/"), user=str(rt.get("User") or ""),
            name=f"cowfs-build-{os.getpid()}-{ins.lineno}-{int(time.time() * 1000) % 100000}",
            backend=self.backend)
        try:
            code = lifecycle.start(c, attached=True)
            if code != 0:
                raise BuildError(f"Dockerfile line {ins.lineno}: RUN {ins.text} returned a "
                                 f"non-zero code: {code}")
            _move_tree(c.upper, upper)
        finally:
            containers.remove(c, force=True)

    # --- layers, cache, image ---------------------------------------------------------
    @contextlib.contextmanager
    def _staging(self) -> Iterator[str]:
        os.makedirs(self.store.tmp_dir, exist_ok=True)
        path = tempfile.mkdtemp(prefix="build-", dir=self.store.tmp_dir)
        lock = FileLock(path)
        lock.acquire()
        try:
            os.chmod(path, 0o755)
            yield path
        finally:
            lock.release()
            shutil.rmtree(path, ignore_errors=True)

    def _store_layer(self, upper: str, lowers: list[str]) -> tuple[str | None, str | None]:
        if not os.listdir(upper):
            return None, None
        with tempfile.NamedTemporaryFile(dir=self.store.tmp_dir, prefix="build-layer-") as tmp:
            diff_id, _size = write_layer(upper, lowers, tmp)
            tmp.flush()
            with open(tmp.name, "rb") as f:
                digest = self.store.put_blob(f, diff_id)
            self.store.ensure_layer(self.store.blob_reader(digest), diff_id, digest=digest)
        return diff_id, digest

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.cache_dir, key + ".json"), "rb") as f:
                entry: dict[str, Any] = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        d = entry.get("diff_id")
        if d and not (self.store.has_layer(d) and self.store.has_blob(entry.get("digest", ""))):
            return None  # gc'd since: rebuild
        return entry

    def _cache_put(self, key: str, entry: dict[str, Any]) -> None:
        path = os.path.join(self.cache_dir, key + ".json")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)

    def _commit_image(self, st: _State, tags: list[str]) -> Image:
        cfg = st.config
        cfg["rootfs"] = {"type": "layers", "diff_ids": list(st.diff_ids)}
        cfg["created"] = st.created
        cfg.setdefault("architecture", "amd64")
        cfg.setdefault("os", "linux")
        blobs: list[Callable[[], Any]] = [self.store.blob_reader(d) for d in st.digests]
        return self.store.import_layers(blobs, json.dumps(cfg, sort_keys=True).encode(),
                                        None, tags=tags)


def st_epoch() -> str:
    return "1970-01-01T00:00:00Z"


def _move_tree(src: str, dst: str) -> None:
    """Move the container's upper dir contents into the staging upper (same fs)."""
    for name in os.listdir(src):
        os.rename(os.path.join(src, name), os.path.join(dst, name))
    # the upper root's own xattrs (e.g. an opaque root) are carried by write_layer's walk
    for xname in os.listxattr(src):
        if not fmt.is_hidden_xattr(xname.encode()):
            os.setxattr(dst, xname, os.getxattr(src, xname))


def _resolve_id(name: str, lowers: list[str], table: str, lineno: int) -> int:
    if name.isdigit():
        return int(name)
    for layer in lowers:
        path = os.path.join(layer, table.lstrip("/"))
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.strip().split(":")
                    if len(fields) > 2 and fields[0] == name:
                        return int(fields[2])
            break
    what = "user" if "passwd" in table else "group"
    raise BuildError(f"Dockerfile line {lineno}: --chown: unknown {what} {name!r}")
