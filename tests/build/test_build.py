"""``cowfs build``: Dockerfile → store image, COPY vs ADD, the layer cache, peers read it."""

from __future__ import annotations

import bz2
import gzip
import http.server
import json
import lzma
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from helpers.containers import cleanup_store, import_busybox
from helpers.layers import LayerTar
from helpers.peers import peer

from cowfs.build.dockerfile import parse

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www`` (ADD URL source)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "remote.tar.gz").write_bytes(gzip.compress(bytes(LayerTar().file("x", b"x"))))
    (www / "note.txt").write_text("from the web\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(www), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


@pytest.fixture
def root(tmp_path: Path) -> Iterator[str]:
    r = str(tmp_path / "store")
    import_busybox(r, "busybox:test")
    try:
        yield r
    finally:
        cleanup_store(r)


def cowfs(root: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "cowfs", "--root", root, *args],
                       capture_output=True, text=True, check=False, timeout=240)
    if check and r.returncode != 0:
        raise AssertionError(f"cowfs {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def build(root: str, ctx: Path, *extra: str) -> dict[str, object]:
    r = cowfs(root, "build", "--json", *extra, str(ctx))
    out: dict[str, object] = json.loads(r.stdout)
    return out


def make_context(tmp: Path, url: str) -> Path:
    ctx = tmp / "ctx"
    (ctx / "tree" / "sub").mkdir(parents=True)
    (ctx / "tree" / "a.txt").write_text("tree a\n")
    (ctx / "tree" / "sub" / "b.txt").write_text("tree b\n")
    (ctx / "tree" / "debug.log").write_text("never copied\n")
    (ctx / ".dockerignore").write_text("**/*.log\nsecret*\n")
    (ctx / "secret.key").write_text("never copied\n")
    arch = LayerTar().dir("pkg").file("pkg/inside.txt", b"from the archive\n")
    (ctx / "pkg.tar.gz").write_bytes(arch.compressed("gzip"))
    (ctx / "Dockerfile").write_text(f"""\
# a multi-stage build on busybox
ARG BASE=busybox:test
FROM $BASE AS builder
RUN echo compiled > /artifact && \\
    echo more > /other
FROM ${{BASE}}
ENV GREETING="hello world" \\
    MODE=prod
WORKDIR /srv/app
COPY tree/ ./tree/
ADD pkg.tar.gz /opt/
ADD {url}/remote.tar.gz /downloads/
ADD {url}/note.txt /downloads/
COPY --from=builder /artifact /srv/app/
RUN rm /etc/motd && rm -r /etc/conf.d && echo "$GREETING $MODE" > /srv/app/run.txt
LABEL org.example.k=v
EXPOSE 8080
CMD ["/bin/sh", "-c", "cat run.txt; ls /etc/motd /etc/conf.d 2>&1 | wc -l; cat artifact"]
""")
    return ctx


def test_multi_stage_build_runs_and_shows_everything(root: str, tmp_path: Path,
                                                     served: str) -> None:
    ctx = make_context(tmp_path, served)
    res = build(root, ctx, "-t", "app:1")
    assert res["tags"] == ["app:1"]
    run = cowfs(root, "run", "--rm", "app:1")
    assert run.stdout == "hello world prod\n2\ncompiled\n"  # 2 lines: both "not found"
    assert "No such file" in cowfs(root, "run", "--rm", "app:1", "ls", "/etc/motd",
                                   check=False).stderr
    files = cowfs(root, "run", "--rm", "app:1", "/bin/sh", "-c",
                  "cd /srv/app && find . /opt /downloads | sort; pwd; "
                  "cat /downloads/note.txt; stat -c '%a' /downloads/note.txt").stdout
    for path in ("./tree/a.txt", "./tree/sub/b.txt", "/opt/pkg/inside.txt",
                 "/downloads/remote.tar.gz", "/downloads/note.txt", "./artifact"):
        assert path in files, files
    assert "debug.log" not in files  # .dockerignore
    assert "/downloads/x" not in files  # a URL is downloaded, never extracted
    assert "/srv/app\nfrom the web\n600" in files
    image = _store(root).get_image("app:1")
    cfg = image.config["config"]
    assert cfg["WorkingDir"] == "/srv/app"
    assert "GREETING=hello world" in cfg["Env"]
    assert cfg["Labels"] == {"org.example.k": "v"}
    assert cfg["ExposedPorts"] == {"8080/tcp": {}}
    history = image.config["history"]
    assert any(h.get("empty_layer") for h in history)  # ENV/LABEL/CMD: metadata only
    assert len([h for h in history if not h.get("empty_layer")]) == len(image.diff_ids)
    # the RUN layer carries whiteouts for what it deleted (kernel format in the store,
    # OCI .wh. entries in the layer blob)
    run_layer = _store(root).layer_dirs(image)[0]
    st = os.lstat(os.path.join(run_layer, "etc", "motd"))
    assert (st.st_mode & 0o170000, st.st_rdev) == (0o020000, 0)
    with tarfile.open(_store(root).blob_path(image.layer_digests[-1])) as tf:
        names = tf.getnames()
    assert "etc/.wh.motd" in names
    assert "etc/.wh.conf.d" in names
    diff = cowfs(root, "run", "--rm", "app:1", "true")
    assert diff.returncode == 0


def test_rebuild_reuses_every_layer_and_touching_an_input_rebuilds_from_there(
        root: str, tmp_path: Path, served: str) -> None:
    ctx = make_context(tmp_path, served)
    first = build(root, ctx, "-t", "app:1")
    assert first["run_executed"] == 2
    layers_before = set(os.listdir(os.path.join(root, "layers")))
    second = build(root, ctx, "-t", "app:1")
    assert second["id"] == first["id"]
    assert second["run_executed"] == 0
    assert all(s["cached"] for s in second["steps"])  # type: ignore[index, union-attr]
    assert set(os.listdir(os.path.join(root, "layers"))) == layers_before
    text = cowfs(root, "build", "-t", "app:1", str(ctx)).stdout
    assert text.count("---> CACHED") == 8
    (ctx / "tree" / "a.txt").write_text("changed\n")
    third = build(root, ctx, "-t", "app:1")
    assert third["id"] != first["id"]
    cached = {s["instruction"].split()[0] + " " + s["instruction"].split()[1]: s["cached"]
              for s in third["steps"]}  # type: ignore[union-attr]
    assert cached["RUN echo"] is True  # builder stage untouched
    assert cached["COPY tree/"] is False
    assert cached["ADD pkg.tar.gz"] is False  # every step after the change is rebuilt
    assert third["run_executed"] == 1
    assert "changed" in cowfs(root, "run", "--rm", "app:1", "cat", "/srv/app/tree/a.txt").stdout
    fourth = build(root, ctx, "--no-cache", "-t", "app:1")
    assert fourth["run_executed"] == 2


@pytest.mark.parametrize("kind", ["none", "gzip", "bzip2", "xz", "zstd"])
def test_add_extracts_local_archives_of_every_compression(root: str, tmp_path: Path,
                                                          kind: str) -> None:
    raw = bytes(LayerTar().dir("d").file("d/f.txt", b"payload\n", mode=0o640))
    data = {"none": raw, "gzip": gzip.compress(raw), "bzip2": bz2.compress(raw),
            "xz": lzma.compress(raw), "zstd": zstandard.ZstdCompressor().compress(raw)}[kind]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.tar.any").write_bytes(data)
    (ctx / "Dockerfile").write_text("FROM busybox:test\nADD a.tar.any /x/\n"
                                    "COPY a.tar.any /copied/\n")
    build(root, ctx, "-t", f"add:{kind}")
    out = cowfs(root, "run", "--rm", f"add:{kind}", "sh", "-c",
                "cat /x/d/f.txt; stat -c %a /x/d/f.txt; ls /copied").stdout
    assert out == "payload\n640\na.tar.any\n"  # COPY never extracts


@pytest.mark.parametrize("hostile", ["traversal", "symlink-then-write"])
def test_add_of_a_hostile_archive_is_refused(root: str, tmp_path: Path, hostile: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    sentinel = victim / "keep.txt"
    sentinel.write_text("untouched\n")
    t = LayerTar()
    if hostile == "traversal":
        t.file(f"../../../../../../..{victim}/keep.txt", b"pwned\n")
    else:
        t.symlink("link", str(victim)).file("link/keep.txt", b"pwned\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(bytes(t))
    (ctx / "Dockerfile").write_text("FROM busybox:test\nADD evil.tar /dst/\n")
    r = cowfs(root, "build", "-t", "evil:1", str(ctx), check=False)
    assert r.returncode != 0
    assert r.stderr.startswith("cowfs: ")
    assert sentinel.read_text() == "untouched\n"
    assert sorted(os.listdir(victim)) == ["keep.txt"]
    assert cowfs(root, "images", "--json").stdout.count("evil") == 0


def test_bad_dockerfiles_fail_with_the_line(root: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    cases = {
        "FROM busybox:test\nRUN true\nFROBNICATE x\n": "line 3: unknown instruction 'FROBNICATE'",
        "FROM busybox:test\nCOPY missing.txt /\n":
            "line 2: COPY/ADD source 'missing.txt' not found",
        "RUN true\n": "line 1: RUN before the first FROM",
        "FROM busybox:test\nRUN exit 3\n": "line 2: RUN exit 3 returned a non-zero code: 3",
        "FROM nosuch:image\n": "line 1: FROM nosuch:image",
        "FROM busybox:test\nCOPY ../etc/passwd /\n": "outside the build context",
    }
    for text, message in cases.items():
        (ctx / "Dockerfile").write_text(text)
        r = cowfs(root, "build", str(ctx), check=False)
        assert r.returncode == 9, r.stderr
        assert message in r.stderr
        assert r.stderr.count("\n") == 1


def test_parser_handles_continuations_escapes_and_exec_forms() -> None:
    df = parse("# escape=`\nFROM a AS b\nRUN echo 1 `\n  && echo 2\n"
               'CMD ["x", "y"]\nENTRYPOINT echo hi\n')
    ins = df.stages[0].instructions
    assert df.stages[0].name == "b"
    assert ins[0].args == "echo 1 && echo 2"
    assert ins[1].args == ["x", "y"]
    assert ins[1].json
    assert ins[2].args == "echo hi"
    assert not ins[2].json


@pytest.mark.needs_tool("podman", "runc")
def test_built_image_runs_under_podman_with_the_same_output(root: str, tmp_path: Path,
                                                            served: str) -> None:
    ctx = make_context(tmp_path, served)
    build(root, ctx, "-t", "app:1")
    ours = cowfs(root, "run", "--rm", "app:1").stdout
    archive = tmp_path / "app.tar"
    cowfs(root, "export", "app:1", "--format", "docker-archive", "-o", str(archive))
    work = tmp_path / "podman"
    work.mkdir()
    r = peer(f"$P load -i {archive} >/dev/null\n$P run --rm $PRUN localhost/app:1\n", work)
    assert r.stdout == ours


def _store(root: str) -> object:
    from cowfs.store import open_store

    return open_store(root)
