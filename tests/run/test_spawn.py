"""spawn() directly (no store, no supervisor): the handshake, the user-namespace path,
and errors from inside the child reaching the caller."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.containers import Env

from cowfs import driver
from cowfs.errors import RunError
from cowfs.run import cgroups, rootfs, spawn
from cowfs.store import open_store

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


@pytest.fixture
def merged(env: Env, tmp_path: Path) -> Iterator[str]:
    store = open_store(env.root)
    lowers = store.layer_dirs(store.get_image("busybox:test"))
    for d in ("u", "w", "m"):
        (tmp_path / d).mkdir()
    with driver.mount(lowers, upper=str(tmp_path / "u"), work=str(tmp_path / "w"),
                      target=str(tmp_path / "m"), backend="kernel",
                      run_dir=os.path.join(env.root, "run")) as m:
        yield m.mergeddir


def _run(merged: str, argv: list[str], *, userns: bool = False,
         binds: tuple[rootfs.BindMount, ...] = (),
         enter: Callable[[], None] | None = None) -> tuple[int, str]:
    r, w = os.pipe()
    try:
        proc = spawn.Process(argv=argv, env={"PATH": "/bin"}, stdio=(0, w, w))
        iso = spawn.Isolation(rootfs=rootfs.RootfsPlan(merged, binds), hostname="t",
                              userns=userns)
        started = spawn.spawn(proc, isolate=iso, enter=enter)
    finally:
        os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    return spawn.wait_exit_code(started.pid), out


def test_user_namespace_path(merged: str) -> None:
    """The rootless code path (new user ns, id maps written by the parent while the
    child waits, devices bind-mounted because mknod is refused)."""
    code, out = _run(merged, ["sh", "-c", "cat /proc/self/uid_map; cat /proc/self/gid_map; "
                                          "echo x > /dev/null && echo devnull-ok; "
                                          "readlink /proc/1/ns/user"], userns=True)
    assert code == 0, out
    lines = out.split("\n")
    assert lines[0].split() == ["0", str(os.geteuid()), "1"]
    assert lines[1].split() == ["0", str(os.getegid()), "1"]
    assert lines[2] == "devnull-ok"
    assert lines[3] != os.readlink("/proc/self/ns/user")


def test_handshake_reports_child_errors(merged: str, tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"set up rootfs: .*No such file"):
        _run(merged, ["true"], binds=(rootfs.BindMount(str(tmp_path / "nope"), "/x"),))
    with pytest.raises(RunError, match="exec /bin/nothing: no such file"):
        _run(merged, ["/bin/nothing"])
    with pytest.raises(RunError, match="exec /etc/motd: Permission denied"):
        _run(merged, ["/etc/motd"])
    code, out = _run(merged, ["sh", "-c", "echo $$; exit 3"])
    assert (code, out) == (3, "1\n")


def test_pid1_enters_every_cgroup_itself_before_exec(merged: str) -> None:
    """``enter`` (Cgroup.enter: the child writes 0 to v1 ``tasks``, skipping the ~10 ms
    lock a move by the parent costs) puts PID 1 in the group of every controller before
    its command runs; a failed entry is a setup error, and nothing runs."""
    cg = cgroups.create("spawntest-" + os.urandom(4).hex(), cgroups.Limits(pids=50))
    assert cg is not None
    try:
        code, out = _run(merged, ["cat", "/proc/self/cgroup"], enter=cg.enter)
        assert code == 0, out
        lines = {ln.split(":")[1]: ln.split(":")[2] for ln in out.splitlines() if ln}
        for ctrl, path in cg.paths.items():
            key = "" if cg.version == 2 else next(k for k in lines if ctrl in k.split(","))
            assert path.endswith(lines[key]), (ctrl, out)
        gone = cgroups.Cgroup(cg.version, {c: p + "-missing" for c, p in cg.paths.items()})
        with pytest.raises(RunError, match="join cgroup: No such file"):
            _run(merged, ["true"], enter=gone.enter)
    finally:
        cg.remove()


def test_resolve_in_root_never_leaves_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../..", root / "up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    assert rootfs.resolve_in_root(str(root), "/abs/x", create_dir=True) == str(root / "etc/x")
    assert rootfs.resolve_in_root(str(root), "/up/etc", create_dir=True) == str(root / "etc")
    assert rootfs.resolve_in_root(str(root), "/../../tmp/y", create_dir=True) == \
        str(root / "tmp/y")
    with pytest.raises(OSError, match="too many symlinks"):
        rootfs.resolve_in_root(str(root), "/loop1/x", create_dir=True)
    (root / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        rootfs.resolve_in_root(str(root), "/file/x", create_dir=True)
    assert not os.path.exists("/etc/x")
