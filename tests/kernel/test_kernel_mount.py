"""Real kernel overlay mounts: both mount methods, escaping, big stacks, limits, unmount."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import cowfs
from cowfs.errors import MountError
from cowfs.kernel.mount import mount_overlay, unmount, with_empty_bottom
from cowfs.kernel.options import OVL_MAX_STACK, Method, make_options

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo", "rb") as f:
        return any(line.split()[4].decode("unicode_escape") == str(path) for line in f)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    d = {n: tmp_path / n for n in ("l1", "l2", "upper", "work", "merged")}
    for p in d.values():
        p.mkdir()
    (d["l1"] / "top").write_text("top")
    (d["l2"] / "bottom").write_text("bottom")
    (d["l2"] / "shadowed").write_text("lower")
    (d["l1"] / "shadowed").write_text("upper-layer")
    yield d
    if _mounted(d["merged"]):
        unmount(str(d["merged"]))


@pytest.mark.parametrize("method", list(Method))
def test_both_methods_mount_and_write(dirs: dict[str, Path], method: Method) -> None:
    opts = make_options([str(dirs["l1"]), str(dirs["l2"])], str(dirs["upper"]),
                        str(dirs["work"]))
    assert mount_overlay(opts, str(dirs["merged"]), method=method) is method
    m = dirs["merged"]
    assert sorted(os.listdir(m)) == ["bottom", "shadowed", "top"]
    assert (m / "shadowed").read_text() == "upper-layer"
    (m / "new").write_text("x")
    (m / "bottom").unlink()
    unmount(str(m))
    assert not _mounted(m)
    assert (dirs["upper"] / "new").read_text() == "x"
    wh = os.lstat(dirs["upper"] / "bottom")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0


@pytest.mark.parametrize("method", list(Method))
def test_hostile_names_in_paths(tmp_path: Path, method: Method) -> None:
    """Colons, commas and backslashes in every path must not split or inject options."""
    names = {"l": "lo:w,er\\x", "l2": "a,upperdir=evil", "u": "up:per", "w": "wo,rk\\"}
    p = {k: tmp_path / v for k, v in names.items()}
    for d in p.values():
        d.mkdir()
    (tmp_path / "evil").mkdir()
    (p["l"] / "f").write_text("1")
    (p["l2"] / "g").write_text("2")
    merged = tmp_path / "m"
    merged.mkdir()
    opts = make_options([str(p["l"]), str(p["l2"])], str(p["u"]), str(p["w"]))
    mount_overlay(opts, str(merged), method=method)
    try:
        assert sorted(os.listdir(merged)) == ["f", "g"]
        (merged / "h").write_text("3")
    finally:
        unmount(str(merged))
    assert os.listdir(p["u"]) == ["h"]
    assert os.listdir(tmp_path / "evil") == []


def test_300_layers_kernel_backend(tmp_path: Path) -> None:
    layers = []
    for i in range(300):
        d = tmp_path / "layers" / f"layer-with-a-longish-name-{i:04d}"
        d.mkdir(parents=True)
        (d / f"only-in-{i}").write_text(str(i))
        (d / "common").write_text(str(i))
        layers.append(str(d))
    top_first = layers[::-1]  # layer 299 is the top
    with cowfs.mount(top_first, tmp_path / "u", tmp_path / "w", backend="kernel",
                     run_dir=str(tmp_path / "run")) as m:
        assert m.record.method == Method.FSCONFIG.value
        merged = Path(m.mergeddir)
        assert (merged / "only-in-0").read_text() == "0"
        assert (merged / "only-in-299").read_text() == "299"
        assert (merged / "common").read_text() == "299"
        assert len(os.listdir(merged)) == 301
        (merged / "common").write_text("new")
    assert (tmp_path / "u" / "common").read_text() == "new"


def test_limit_is_named(tmp_path: Path) -> None:
    layers = []
    for i in range(OVL_MAX_STACK + 1):
        d = tmp_path / f"{i}"
        d.mkdir()
        layers.append(str(d))
    with pytest.raises(MountError, match=r"limit of 500 \(OVL_MAX_STACK\)"):
        cowfs.mount(layers, backend="kernel", run_dir=str(tmp_path / "run"))
    # exactly the limit mounts
    with cowfs.mount(layers[:OVL_MAX_STACK], backend="kernel",
                     run_dir=str(tmp_path / "run")) as m:
        assert os.listdir(m.mergeddir) == []


def test_long_paths_go_by_fd(tmp_path: Path) -> None:
    """fsconfig strings stop at 256 bytes; longer layer/upper paths are passed as fds."""
    deep = tmp_path.joinpath(*(["d" * 100] * 3))
    for sub in ("l1", "l2", "u", "w"):
        (deep / sub).mkdir(parents=True)
    (deep / "l2" / "f").write_text("deep")
    merged = tmp_path / "m"
    merged.mkdir()
    opts = make_options([str(deep / "l1"), str(deep / "l2")], str(deep / "u"), str(deep / "w"))
    mount_overlay(opts, str(merged), method=Method.FSCONFIG)
    try:
        assert (merged / "f").read_text() == "deep"
        (merged / "g").write_text("x")
    finally:
        unmount(str(merged))
    assert (deep / "u" / "g").exists()


def test_volatile_leaves_incompat_marker(dirs: dict[str, Path]) -> None:
    with cowfs.mount([dirs["l1"], dirs["l2"]], dirs["upper"], dirs["work"], backend="kernel",
                     volatile=True, run_dir=str(dirs["work"].parent / "run")) as m:
        (Path(m.mergeddir) / "f").write_text("x")
        assert (dirs["work"] / "work" / "incompat" / "volatile").is_dir()


def test_userxattr_writes_user_opaque(dirs: dict[str, Path]) -> None:
    run = str(dirs["work"].parent / "run")
    (dirs["l2"] / "dir").mkdir()
    (dirs["l2"] / "dir" / "old").write_text("x")
    with cowfs.mount([dirs["l1"], dirs["l2"]], dirs["upper"], dirs["work"], backend="kernel",
                     userxattr=True, run_dir=run) as m:
        assert m.record.userxattr
        merged = Path(m.mergeddir)
        (merged / "dir" / "old").unlink()
        (merged / "dir").rmdir()
        (merged / "dir").mkdir()
    assert os.getxattr(dirs["upper"] / "dir", "user.overlay.opaque") == b"y"


def test_read_only_single_layer_hides_its_whiteouts(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "f").write_text("x")
    os.mknod(layer / "gone", stat.S_IFCHR, os.makedev(0, 0))
    with cowfs.mount(layer, backend="kernel", run_dir=str(tmp_path / "run")) as m:
        assert os.listdir(m.mergeddir) == ["f"]
        with pytest.raises(OSError) as exc:
            (Path(m.mergeddir) / "new").write_text("x")
        assert exc.value.errno == errno.EROFS
    assert m.upperdir is None and m.workdir is None


def test_single_layer_without_empty_dir_is_refused() -> None:
    opts = make_options(["/a"])
    with pytest.raises(cowfs.CowfsError, match="needs an empty dir"):
        with_empty_bottom(opts, None)


def test_kernel_refusal_is_readable(dirs: dict[str, Path]) -> None:
    # workdir inside upperdir: the kernel refuses; the error says where and why.
    inner = dirs["upper"] / "inner"
    inner.mkdir()
    opts = make_options([str(dirs["l1"])], str(dirs["upper"]), str(inner))
    with pytest.raises(MountError, match=r"mount overlay at .*merged \(1 layer\): "):
        mount_overlay(opts, str(dirs["merged"]))
    assert not _mounted(dirs["merged"])


def test_busy_unmount_detaches_lazily(dirs: dict[str, Path],
                                      caplog: pytest.LogCaptureFixture) -> None:
    opts = make_options([str(dirs["l1"]), str(dirs["l2"])])
    mount_overlay(opts, str(dirs["merged"]))
    cwd = os.getcwd()
    os.chdir(dirs["merged"])
    try:
        with caplog.at_level(logging.WARNING, logger="cowfs.kernel.mount"):
            unmount(str(dirs["merged"]))
    finally:
        os.chdir(cwd)
    assert not _mounted(dirs["merged"])
    assert "detaching lazily" in caplog.text


def test_unmount_of_a_non_mount_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MountError, match=r"unmount .*: Invalid argument"):
        unmount(str(tmp_path))


@pytest.mark.parametrize("userxattr", [False, True])
def test_feature_subset_lower_dir_rename_is_exdev(dirs: dict[str, Path], userxattr: bool) -> None:
    """SPEC §3: redirect_dir=off — renaming a dir with lower parts fails with EXDEV."""
    (dirs["l2"] / "ldir").mkdir()
    with cowfs.mount([dirs["l1"], dirs["l2"]], dirs["upper"], dirs["work"], backend="kernel",
                     userxattr=userxattr, run_dir=str(dirs["work"].parent / "run")) as m:
        merged = Path(m.mergeddir)
        with pytest.raises(OSError) as exc:
            os.rename(merged / "ldir", merged / "moved")
        assert exc.value.errno == errno.EXDEV
        (merged / "updir").mkdir()
        os.rename(merged / "updir", merged / "moved")  # upper-only dirs rename freely
        with open("/proc/self/mountinfo") as f:
            line = next(ln for ln in f if f" {m.mergeddir} " in ln)
        assert "redirect_dir=" not in line or "redirect_dir=nofollow" in line


def test_legacy_refuses_more_than_one_page(tmp_path: Path) -> None:
    layers = []
    for i in range(120):
        d = tmp_path / f"a-rather-long-layer-directory-name-{i:04d}"
        d.mkdir()
        layers.append(str(d))
    merged = tmp_path / "m"
    merged.mkdir()
    opts = make_options(layers)
    with pytest.raises(MountError, match=r"does not fit one page \(4096 bytes\) for mount\(2\)"):
        mount_overlay(opts, str(merged), method=Method.LEGACY)
    assert mount_overlay(opts, str(merged)) is Method.FSCONFIG
    unmount(str(merged))


def test_overlapping_layers_are_explained(dirs: dict[str, Path]) -> None:
    inner = dirs["l1"] / "nested"
    inner.mkdir()
    opts = make_options([str(dirs["l1"]), str(inner)], str(dirs["upper"]), str(dirs["work"]))
    with pytest.raises(MountError, match="the layers overlap"):
        mount_overlay(opts, str(dirs["merged"]))

