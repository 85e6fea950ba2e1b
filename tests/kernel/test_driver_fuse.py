"""The driver's FUSE path: `cowfs.mount(..., backend="fuse")` runs `cowfs-overlay` like a
mount_program; uppers move between the FUSE and kernel backends; dialect-driven choice."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import cowfs
from cowfs import driver
from cowfs.driver import _backends
from cowfs.format import WH_PREFIX_STR, WhiteoutDialect

pytestmark = [pytest.mark.needs_fuse]


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = "dir" if p.is_dir() else p.read_text()
    return out


@pytest.fixture
def stack(tmp_path: Path) -> dict[str, Path]:
    d = {n: tmp_path / n for n in ("top", "bottom", "upper", "work")}
    for p in d.values():
        p.mkdir()
    (d["top"] / "a").write_text("top")
    (d["bottom"] / "a").write_text("bottom")
    (d["bottom"] / "gone").write_text("g")
    (d["bottom"] / "dir").mkdir()
    (d["bottom"] / "dir" / "old").write_text("o")
    return d


def test_fuse_backend_mounts_writes_and_unmounts(stack: dict[str, Path],
                                                 tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    with cowfs.mount([stack["top"], stack["bottom"]], stack["upper"], stack["work"],
                     backend="fuse", run_dir=run_dir) as m:
        assert m.backend == "fuse"
        assert driver.mountinfo()[m.mergeddir].startswith("fuse")
        (rec,) = driver.list_mounts(run_dir)
        assert rec.backend == "fuse" and rec.method == driver.FUSE_PROGRAM
        merged = Path(m.mergeddir)
        assert (merged / "a").read_text() == "top"
        (merged / "gone").unlink()
        (merged / "new").write_text("n")
    assert m.mergeddir not in driver.mountinfo()
    assert not os.path.exists(m.mergeddir)
    assert driver.list_mounts(run_dir) == []
    wh = os.lstat(stack["upper"] / "gone")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0


def test_fuse_body_raising_leaves_no_mount(stack: dict[str, Path], tmp_path: Path) -> None:
    seen: list[str] = []

    def body() -> None:
        with cowfs.mount([stack["top"], stack["bottom"]], backend="fuse",
                         run_dir=str(tmp_path / "run")) as m:
            seen.append(m.mergeddir)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        body()
    assert seen[0] not in driver.mountinfo()


def test_fuse_hostile_path_names(tmp_path: Path) -> None:
    lower = tmp_path / 'lo:w,er\\x"q'
    upper, work = tmp_path / "up,per:1", tmp_path / 'wo"rk'
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "f").write_text("1")
    with cowfs.mount(lower, upper, work, backend="fuse", run_dir=str(tmp_path / "run")) as m:
        assert os.listdir(m.mergeddir) == ["f"]
        (Path(m.mergeddir) / "g").write_text("2")
    assert os.listdir(upper) == ["g"]


@pytest.mark.needs_root
@pytest.mark.needs_overlay
@pytest.mark.parametrize(("first", "second"), [("fuse", "kernel"), ("kernel", "fuse")])
def test_upper_moves_between_backends(stack: dict[str, Path], tmp_path: Path,
                                      first: str, second: str) -> None:
    """SPEC §3: an upper written through one backend mounts with the other, same tree."""
    lowers = [stack["top"], stack["bottom"]]
    run_dir = str(tmp_path / "run")
    with cowfs.mount(lowers, stack["upper"], stack["work"], backend=first,
                     run_dir=run_dir) as m:
        merged = Path(m.mergeddir)
        (merged / "gone").unlink()
        (merged / "a").write_text("changed")
        (merged / "dir" / "old").unlink()
        (merged / "dir").rmdir()
        (merged / "dir").mkdir()  # opaque: the lower dir/old must stay hidden
        (merged / "dir" / "fresh").write_text("f")
        expected = _tree(merged)
    with cowfs.mount(lowers, stack["upper"], stack["work"], backend=second,
                     run_dir=run_dir) as m:
        assert _tree(Path(m.mergeddir)) == expected
    assert expected == {"a": "changed", "dir": "dir", "dir/fresh": "f"}


def test_auto_reads_wh_files_store_with_fuse(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    base = tmp_path / "base"
    for d in (layer, base):
        d.mkdir()
    (base / "hidden").write_text("h")
    (base / "kept").write_text("k")
    (layer / f"{WH_PREFIX_STR}hidden").write_text("")
    backend, reason = driver.choose_backend(str(tmp_path / "run"),
                                            dialect=WhiteoutDialect.WH_FILES)
    assert backend == "fuse" and "wh-files" in reason
    with cowfs.mount([layer, base], dialect=WhiteoutDialect.WH_FILES,
                     run_dir=str(tmp_path / "run")) as m:
        assert m.backend == "fuse"
        assert os.listdir(m.mergeddir) == ["kept"]


def test_fuse_program_is_found() -> None:
    cmd = driver.fuse_program()
    assert cmd[0].endswith(driver.FUSE_PROGRAM) or cmd[1:] == ["-m", "cowfs.fuse.program"]


def test_fuse_option_string_escapes() -> None:
    assert driver.fuse_option_string(["/a:b", '/c,"d'], "/u\\", "/w", volatile=True) == (
        'lowerdir=/a\\:b:/c\\,\\"d,upperdir=/u\\\\,workdir=/w,volatile')


def test_fuse_failure_message_keeps_the_cause() -> None:
    err = ("fuse: failed to open /dev/fuse: Permission denied\nTraceback (most recent call "
           "last):\n  noise\ncowfs-overlay: mount /m: fuse_session_mount failed\n")
    assert _backends.fuse_failure(err) == (
        "fuse: failed to open /dev/fuse: Permission denied; "
        "cowfs-overlay: mount /m: fuse_session_mount failed")


def test_fuse_mount_failure_is_one_clear_error(tmp_path: Path) -> None:
    lower = tmp_path / "l"
    lower.mkdir()
    # upper and work given but work is a file: the program refuses, the driver says why
    (tmp_path / "work").write_text("")
    with pytest.raises(cowfs.CowfsError, match=r"mount .* with cowfs-overlay: .+"):
        _backends.mount_fuse([str(lower)], str(tmp_path / "u"), str(tmp_path / "work"),
                           str(tmp_path), False, ())
    assert str(tmp_path) not in driver.mountinfo()


@pytest.mark.needs_root
@pytest.mark.needs_overlay
@pytest.mark.parametrize("backend", ["kernel", "fuse"])
async def test_plain_calls_work_inside_a_trio_program(stack: dict[str, Path], tmp_path: Path,
                                                      backend: str) -> None:
    """The API is synchronous and needs no event loop, yet is usable from async code."""
    with cowfs.mount([stack["top"], stack["bottom"]], backend=backend,
                     run_dir=str(tmp_path / "run")) as m:
        assert (Path(m.mergeddir) / "a").read_text() == "top"
    assert not m.mounted
