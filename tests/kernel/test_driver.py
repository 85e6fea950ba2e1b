"""The Python mount API: context manager, plain call, cleanup on error, registry, dialects."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import cowfs
from cowfs import driver
from cowfs.errors import BackendUnavailable, Conflict, NotFound, StoreError, UsageError
from cowfs.format import WhiteoutDialect
from cowfs.kernel import probe

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    top, bottom = tmp_path / "top", tmp_path / "bottom"
    top.mkdir()
    bottom.mkdir()
    (top / "a").write_text("top")
    (bottom / "a").write_text("bottom")
    (bottom / "b").write_text("b")
    return [top, bottom]


@pytest.fixture
def run_dir(tmp_path: Path) -> str:
    return str(tmp_path / "run")


def test_context_manager_with_temp_target(layers: list[Path], tmp_path: Path,
                                          run_dir: str) -> None:
    with cowfs.mount(layers, tmp_path / "u", tmp_path / "w", run_dir=run_dir) as m:
        assert isinstance(m, cowfs.Mount)
        assert m.backend == "kernel"
        assert m.lowerdirs == [str(p) for p in layers]
        assert m.upperdir == str(tmp_path / "u") and m.workdir == str(tmp_path / "w")
        merged = Path(m.mergeddir)
        assert (merged / "a").read_text() == "top"
        (merged / "c").write_text("c")
    assert not m.mounted
    assert not merged.exists()
    assert (tmp_path / "u" / "c").read_text() == "c"


def test_plain_call_and_given_target(layers: list[Path], tmp_path: Path,
                                     run_dir: str) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    m = cowfs.mount(layers, target=target, backend="kernel", run_dir=run_dir)
    try:
        assert m.mergeddir == str(target)
        assert sorted(os.listdir(target)) == ["a", "b"]
    finally:
        m.unmount()
    m.unmount()  # idempotent
    assert target.is_dir() and os.listdir(target) == []


def test_body_raising_leaves_no_mount(layers: list[Path], run_dir: str) -> None:
    seen: list[str] = []

    def body() -> None:
        with cowfs.mount(layers, run_dir=run_dir) as m:
            seen.append(m.mergeddir)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        body()
    (merged,) = seen
    assert merged not in driver.mountinfo()
    assert not os.path.exists(merged)
    assert driver.list_mounts(run_dir) == []


def test_busy_mount_after_body_error_is_still_removed(layers: list[Path], run_dir: str) -> None:
    cwd = os.getcwd()
    try:
        with cowfs.mount(layers, run_dir=run_dir) as m:
            os.chdir(m.mergeddir)
            raise RuntimeError("busy and failing")
    except RuntimeError:
        pass
    finally:
        os.chdir(cwd)
    assert m.mergeddir not in driver.mountinfo()


def test_registry_lists_and_forgets(layers: list[Path], run_dir: str) -> None:
    with cowfs.mount(layers, run_dir=run_dir, backend="kernel") as m:
        (rec,) = driver.list_mounts(run_dir)
        assert rec.mergeddir == m.mergeddir and rec.backend == "kernel" and rec.live
        assert rec.lowerdirs == m.lowerdirs
    assert driver.list_mounts(run_dir) == []


def test_registry_prunes_stale_entries(layers: list[Path], run_dir: str) -> None:
    m = cowfs.mount(layers, run_dir=run_dir)
    # Unmount behind cowfs's back: the entry is stale and gets dropped.
    from cowfs.kernel.mount import unmount

    unmount(m.mergeddir)
    assert driver.list_mounts(run_dir) == []
    assert os.listdir(os.path.join(run_dir, driver.MOUNTS_DIR)) == []
    os.rmdir(m.mergeddir)


def test_unmount_path(layers: list[Path], run_dir: str, tmp_path: Path) -> None:
    m = cowfs.mount(layers, run_dir=run_dir)
    rec = driver.unmount_path(m.mergeddir, run_dir)
    assert rec is not None and rec.id == m.record.id
    assert not os.path.exists(m.mergeddir)
    with pytest.raises(NotFound, match="nothing is mounted"):
        driver.unmount_path(str(tmp_path), run_dir)


def test_bad_arguments(layers: list[Path], tmp_path: Path, run_dir: str) -> None:
    with pytest.raises(UsageError, match="unknown backend"):
        cowfs.mount(layers, backend="zfs", run_dir=run_dir)
    with pytest.raises(UsageError, match="together"):
        cowfs.mount(layers, upper=tmp_path / "u", run_dir=run_dir)
    with pytest.raises(NotFound, match=r"lower dir .* is not an existing directory"):
        cowfs.mount([tmp_path / "missing"], run_dir=run_dir)
    with pytest.raises(NotFound, match="target"):
        cowfs.mount(layers, target=tmp_path / "nope", run_dir=run_dir)
    with pytest.raises(UsageError, match="same filesystem"):
        cowfs.mount(layers, tmp_path / "u", "/dev/shm/cowfs-test-work", run_dir=run_dir)
    os.rmdir("/dev/shm/cowfs-test-work")


def test_explicit_kernel_never_probes(layers: list[Path], run_dir: str) -> None:
    """The fast path costs no probe: the benchmark compares it to a raw mount."""
    with cowfs.mount(layers, backend="kernel", run_dir=run_dir):
        pass
    assert not [n for n in os.listdir(run_dir) if n.endswith(("-true", "-false"))]


def test_auto_logs_why_and_caches(layers: list[Path], run_dir: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    probe.forget()
    with caplog.at_level(logging.INFO, logger="cowfs.driver"), \
            cowfs.mount(layers, run_dir=run_dir) as m:
        assert m.backend == "kernel"
    assert "backend auto: chose kernel: kernel overlayfs works here" in caplog.text
    cached = Path(run_dir, "overlay-true").read_text()
    assert "scratch overlay mount as euid 0 works" in cached
    assert "context: euid=0" in cached


def test_cached_probe_is_trusted(run_dir: str) -> None:
    """A cached false for this context is used as is (no re-probe), and says why."""
    probe.forget()
    os.makedirs(run_dir)
    Path(run_dir, "overlay-false").write_text(f"pretend reason\ncontext: {probe.context()}\n")
    assert driver.choose_backend(run_dir) == (
        "fuse", "kernel overlayfs is unavailable: pretend reason")
    # another context (e.g. a different kernel) probes again
    Path(run_dir, "overlay-false").write_text("pretend reason\ncontext: euid=0 other\n")
    probe.forget()
    assert driver.choose_backend(run_dir)[0] == "kernel"
    assert not Path(run_dir, "overlay-false").exists()
    probe.forget()


def test_probe_all_as_root(run_dir: str) -> None:
    probe.forget()
    results = probe.probe_all(run_dir)
    assert {f: r.ok for f, r in results.items()} == dict.fromkeys(probe.FEATURES, True)
    names = sorted(n for n in os.listdir(run_dir) if not n.startswith("."))
    assert names == sorted(f"{f}-true" for f in probe.FEATURES)
    assert probe.probe(probe.OVERLAY, run_dir).cached


# --- whiteout dialects -------------------------------------------------------------------
def test_kernel_refuses_wh_files_dialect(layers: list[Path], run_dir: str) -> None:
    with pytest.raises(BackendUnavailable, match=r"'wh-files'.*use the fuse backend"):
        cowfs.mount(layers, backend="kernel", dialect=WhiteoutDialect.WH_FILES, run_dir=run_dir)
    backend, reason = driver.choose_backend(run_dir, dialect=WhiteoutDialect.WH_FILES)
    assert backend == "fuse" and "wh-files" in reason


def test_userxattr_dialect_forces_userxattr(layers: list[Path], run_dir: str,
                                            tmp_path: Path) -> None:
    with cowfs.mount(layers, tmp_path / "u", tmp_path / "w", backend="kernel",
                     dialect=WhiteoutDialect.CHARDEV_USERXATTR, run_dir=run_dir) as m:
        assert m.record.userxattr
    with pytest.raises(BackendUnavailable, match="needs the userxattr mount option"):
        cowfs.mount(layers, backend="kernel", userxattr=False,
                    dialect=WhiteoutDialect.CHARDEV_USERXATTR, run_dir=run_dir)


def test_read_store_dialect(tmp_path: Path) -> None:
    assert driver.read_store_dialect(str(tmp_path)) is None
    (tmp_path / "store.json").write_text(json.dumps({"version": 1,
                                                     "whiteout_dialect": "wh-files"}))
    assert driver.read_store_dialect(str(tmp_path)) is WhiteoutDialect.WH_FILES
    (tmp_path / "store.json").write_text(json.dumps({"whiteout_dialect": "aufs??"}))
    with pytest.raises(StoreError, match="unknown whiteout_dialect"):
        driver.read_store_dialect(str(tmp_path))
    (tmp_path / "store.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"store.json"):
        driver.read_store_dialect(str(tmp_path))


def test_mount_image_honours_the_store_dialect(tmp_path: Path) -> None:
    import io

    from helpers.layers import LayerTar

    from cowfs.store import open_store

    root = tmp_path / "store"
    root.mkdir()
    (root / "store.json").write_text(json.dumps({"version": 1, "whiteout_dialect": "wh-files"}))
    store = open_store(str(root))
    layer = LayerTar().file("f", b"x")
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id()]}}
    store.import_layers([lambda: io.BytesIO(bytes(layer))], config, tags=["wh:1"])
    with pytest.raises(BackendUnavailable, match=r"kernel backend: the store's whiteout dialect"):
        driver.mount_image(store, "wh:1", backend="kernel")
    assert driver.list_mounts(store.run_dir) == []
    (root / "store.json").write_text(json.dumps({"version": 1, "whiteout_dialect": "chardev"}))
    with driver.mount_image(open_store(str(root)), "wh:1", backend="kernel") as m:
        assert os.listdir(m.mergeddir) == ["f"]
        assert driver.list_mounts(store.run_dir)[0].mergeddir == m.mergeddir


def test_second_mount_on_a_cowfs_mount_is_refused(layers: list[Path], tmp_path: Path,
                                                  run_dir: str) -> None:
    target = tmp_path / "t"
    target.mkdir()
    with cowfs.mount(layers, target=target, run_dir=run_dir):
        with pytest.raises(Conflict, match="cowfs already has a mount there"):
            cowfs.mount(layers, target=target, run_dir=run_dir)
        assert len(driver.list_mounts(run_dir)) == 1
    # once unmounted, the target is free again
    with cowfs.mount(layers, target=target, run_dir=run_dir) as m:
        assert m.mounted


def test_probe_in_an_unusable_run_dir_says_why(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    bad = str(tmp_path / "file" / "run")
    probe.forget()
    with caplog.at_level(logging.WARNING, logger="cowfs.kernel.probe"):
        result = probe.probe(probe.OVERLAY, bad)
    assert not result.ok and "cannot make a scratch dir" in result.reason
    assert "cannot cache probe overlay" in caplog.text
    probe.forget()


def test_registry_across_mount_namespaces(layers: list[Path], tmp_path: Path,
                                          run_dir: str) -> None:
    """A mount made in another mount namespace is listed while that namespace lives, then
    pruned; it never blocks a new mount on the same target here."""
    import subprocess
    import sys

    target = tmp_path / "t"
    target.mkdir()
    code = ("import sys, cowfs; m = cowfs.mount(sys.argv[1:3], target=sys.argv[3], "
            "backend='kernel', run_dir=sys.argv[4]); print('up', flush=True); sys.stdin.read()")
    child = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", code,
         str(layers[0]), str(layers[1]), str(target), run_dir],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        (rec,) = driver.list_mounts(run_dir)
        assert rec.live is None and rec.mergeddir == str(target)
        assert len(os.listdir(os.path.join(run_dir, driver.MOUNTS_DIR))) == 1
    finally:
        child.communicate("", timeout=30)
    assert child.returncode == 0
    # the namespace died with the child (and its mount with it): the entry is pruned
    assert driver.list_mounts(run_dir) == []
    assert os.listdir(os.path.join(run_dir, driver.MOUNTS_DIR)) == []
    with cowfs.mount(layers, target=target, run_dir=run_dir) as m:
        assert m.mounted


def test_garbage_in_the_registry_is_skipped(layers: list[Path], run_dir: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    reg = Path(run_dir, driver.MOUNTS_DIR)
    reg.mkdir(parents=True)
    (reg / "bad.json").write_text("{broken")
    (reg / "odd.json").write_text(json.dumps({"mergeddir": "/x", "unexpected": 1}))
    with caplog.at_level(logging.WARNING, logger="cowfs.driver"), \
            cowfs.mount(layers, run_dir=run_dir) as m:
        assert [r.mergeddir for r in driver.list_mounts(run_dir)] == [m.mergeddir]
    assert caplog.text.count("skipping unreadable") >= 2


def test_an_upper_in_use_is_refused(layers: list[Path], tmp_path: Path, run_dir: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel (index=off) only warns about a shared upper; the driver refuses it
    (and leaves no temp mount point behind)."""
    import tempfile

    temp = tmp_path / "tmpdir"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with cowfs.mount(layers, tmp_path / "u", tmp_path / "w", run_dir=run_dir) as m:
        with pytest.raises(Conflict, match=f"in use by the cowfs mount at {m.mergeddir}"):
            cowfs.mount(layers, tmp_path / "u", tmp_path / "w2", run_dir=run_dir)
        with pytest.raises(Conflict, match="in use"):
            cowfs.mount(layers, tmp_path / "u2", tmp_path / "w", run_dir=run_dir)
        assert os.listdir(temp) == [os.path.basename(m.mergeddir)]
    with cowfs.mount(layers, tmp_path / "u", tmp_path / "w", run_dir=run_dir) as m2:
        assert m2.mounted
    assert os.listdir(temp) == []


def test_unwritable_run_dir_still_mounts(layers: list[Path], tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    bad = str(tmp_path / "file" / "run")
    with caplog.at_level(logging.WARNING, logger="cowfs.driver"), \
            cowfs.mount(layers, backend="kernel", run_dir=bad) as m:
        assert sorted(os.listdir(m.mergeddir)) == ["a", "b"]
    assert "cannot record it in" in caplog.text
    assert not m.mounted
    with pytest.raises(cowfs.CowfsError, match="needs the empty dir"):
        cowfs.mount(layers[0], backend="kernel", run_dir=bad)
