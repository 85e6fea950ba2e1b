"""cowfs-overlay as a process: daemonizing, readiness, exit on unmount/signals, errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers.mounting import (
    FUSERMOUNT,
    PROGRAM,
    make_dirs,
    mount_fstype,
    overlay_mount,
    pid_alive,
    wait_for,
)

pytestmark = pytest.mark.needs_fuse


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    low, up, work, mnt = make_dirs(tmp_path, "lower", "upper", "work", "merged")
    (low / "hello").write_text("from lower\n")
    (low / "dir").mkdir()
    (low / "dir" / "f").write_text("f\n")
    return low, up, work, mnt


def test_version() -> None:
    r = subprocess.run([PROGRAM, "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("cowfs-overlay: version ")


def test_returns_only_when_live_and_exits_on_fusermount(layers: tuple[Path, ...]) -> None:
    low, up, work, mnt = layers
    with overlay_mount(mnt, [low], up, work) as m:
        # No polling: the program returned, so the mount must already answer.
        assert (mnt / "hello").read_text() == "from lower\n"
        assert mount_fstype(mnt) == "fuse.cowfs-overlay"
        assert pid_alive(m.pid)
        (mnt / "new").write_text("new\n")
        m.unmount()
        assert not pid_alive(m.pid)
        assert mount_fstype(mnt) is None
    assert (up / "new").read_text() == "new\n"
    assert "unmounted" in m.log.read_text()


def test_sigterm_unmounts_and_exits(layers: tuple[Path, ...]) -> None:
    low, up, work, mnt = layers
    with overlay_mount(mnt, [low], up, work) as m:
        os.kill(m.pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(m.pid), 20, "daemon exit after SIGTERM")
        assert mount_fstype(mnt) is None


def _mountinfo_options(mnt: Path) -> tuple[str, str, str]:
    """(mount flags, fs type, super options) of the mount at ``mnt``."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(mnt):
                tail = fields[fields.index("-") + 1 :]
                return fields[5], tail[0], tail[2]
    raise AssertionError(f"{mnt} not mounted")


def test_own_mount_and_libfuse_mount_look_alike(layers: tuple[Path, ...]) -> None:
    # As root the program mounts /dev/fuse itself and reports before importing pyfuse3;
    # allow_root makes it leave the mount to libfuse (the non-root path). Both must give
    # the same mount, serve it, and unmount it on SIGTERM.
    low, up, work, mnt = layers
    seen = []
    for extra in ((), ("allow_root",)):
        with overlay_mount(mnt, [low], up, work, options=extra) as m:
            assert (mnt / "hello").read_text() == "from lower\n"
            seen.append(_mountinfo_options(mnt))
            os.kill(m.pid, signal.SIGTERM)
            wait_for(lambda: not pid_alive(m.pid), 20, "daemon exit after SIGTERM")
            assert mount_fstype(mnt) is None
    assert seen[0] == ("rw,nodev,noatime", "fuse.cowfs-overlay",
                       "rw,user_id=0,group_id=0,default_permissions,allow_other")
    assert seen[1] == seen[0]


def test_sigterm_right_after_return(layers: tuple[Path, ...], tmp_path: Path) -> None:
    # The program returns before the daemon has imported pyfuse3/trio; a SIGTERM in that
    # window must still unmount cleanly (not kill the daemon and leave a dead mount).
    low, up, work, mnt = layers
    log = tmp_path / "early.log"
    r = subprocess.run([PROGRAM, "-o", f"lowerdir={low},upperdir={up},workdir={work},"
                        f"log={log}", str(mnt)], capture_output=True, text=True, check=False)
    try:
        assert r.returncode == 0, r.stderr
        pid = int(log.read_text().split()[2])
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not pid_alive(pid), 20, "daemon exit after an early SIGTERM")
        assert mount_fstype(mnt) is None
        assert "unmounted" in log.read_text()
    finally:
        if mount_fstype(mnt) is not None:
            subprocess.run([FUSERMOUNT, "-u", "-z", str(mnt)], check=False)


def test_foreground_sigterm_exit_status(layers: tuple[Path, ...]) -> None:
    low, up, work, mnt = layers
    with overlay_mount(mnt, [low], up, work, foreground=True) as m:
        assert m.proc is not None
        assert (mnt / "dir" / "f").read_text() == "f\n"
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(20) == 0
        assert mount_fstype(mnt) is None


def test_remount_same_upper_at_once(layers: tuple[Path, ...]) -> None:
    low, up, work, mnt = layers
    for i in range(3):
        with overlay_mount(mnt, [low], up, work) as m:
            assert sorted(os.listdir(mnt)) == sorted(["hello", "dir", *[f"n{j}" for j in range(i)]])
            (mnt / f"n{i}").write_text(str(i))
            m.unmount()


def test_remount_without_waiting_for_the_old_daemon(layers: tuple[Path, ...]) -> None:
    # podman: fusermount3 -u, then the next mount of the same upper/work at once.
    # The old daemon is frozen so it cannot let go of the workdir until 0.5 s later.
    low, up, work, mnt = layers
    with overlay_mount(mnt, [low], up, work) as first:
        (mnt / "one").write_text("1")
        os.kill(first.pid, signal.SIGSTOP)
        try:
            subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=True)
            timer = threading.Timer(0.5, os.kill, (first.pid, signal.SIGCONT))
            timer.start()
            with overlay_mount(mnt, [low], up, work, log=mnt.parent / "second.log"):
                assert (mnt / "one").read_text() == "1"
        finally:
            os.kill(first.pid, signal.SIGCONT)
        first.wait_exit()


def test_empty_path_and_cwd_elsewhere(layers: tuple[Path, ...], tmp_path: Path) -> None:
    low, up, work, mnt = layers
    # podman runs the program from its storage dir with relative-looking state and may
    # drop PATH entirely; the console script has an absolute interpreter path.
    log = tmp_path / "log"
    r = subprocess.run(
        [PROGRAM, "-o", f"lowerdir={low.name},upperdir={up.name},workdir={work.name},log={log}",
         mnt.name], cwd=tmp_path, env={}, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=30, check=False)
    try:
        assert r.returncode == 0, r.stderr
        assert (mnt / "hello").read_text() == "from lower\n"
    finally:
        subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=False)
    pid = int(log.read_text().split()[2])
    wait_for(lambda: not pid_alive(pid), 20, "daemon exit")


def test_caller_reading_stdout_does_not_hang(layers: tuple[Path, ...], tmp_path: Path) -> None:
    low, up, work, mnt = layers
    log = tmp_path / "log"
    proc = subprocess.Popen(
        [PROGRAM, "-o", f"lowerdir={low},upperdir={up},workdir={work},log={log}", str(mnt)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=30)  # EOF on both pipes, although the daemon runs
        assert proc.returncode == 0, err
        assert out == b""
        assert mount_fstype(mnt) == "fuse.cowfs-overlay"
    finally:
        proc.kill() if proc.poll() is None else None
        subprocess.run([FUSERMOUNT, "-u", str(mnt)], check=False)
    pid = int(log.read_text().split()[2])
    wait_for(lambda: not pid_alive(pid), 20, "daemon exit")


def test_read_only_mount(layers: tuple[Path, ...]) -> None:
    low, _up, _work, mnt = layers
    with overlay_mount(mnt, [low]):
        assert (mnt / "hello").read_text() == "from lower\n"
        for action in (lambda: (mnt / "x").write_text("x"), lambda: (mnt / "hello").unlink(),
                       lambda: (mnt / "d").mkdir(), lambda: os.open(mnt / "hello", os.O_WRONLY)):
            with pytest.raises(OSError) as exc:
                action()
            assert exc.value.errno == errno.EROFS


def test_sigusr1_dumps_stacks(layers: tuple[Path, ...]) -> None:
    low, up, work, mnt = layers
    with overlay_mount(mnt, [low], up, work, allowed=[]) as m:
        os.kill(m.pid, signal.SIGUSR1)
        wait_for(lambda: "most recent call first" in m.log.read_text(), 10, "stack dump")


@pytest.mark.needs_root
def test_mount_fuse3_form(layers: tuple[Path, ...], tmp_path: Path) -> None:
    low, up, work, mnt = layers
    log = tmp_path / "log"
    # mount(8) -> mount.fuse3 -> `/bin/sh -c 'PROG overlay MNT -o OPTS'`. The `PROG#SOURCE`
    # spelling names the program by absolute path (fuse.cowfs-overlay needs it on PATH).
    r = subprocess.run(
        ["mount", "-t", "fuse", f"{PROGRAM}#overlay", str(mnt), "-o",
         f"lowerdir={low},upperdir={up},workdir={work},log={log}"],
        capture_output=True, text=True, timeout=30, check=False)
    try:
        assert r.returncode == 0, r.stderr
        assert mount_fstype(mnt) == "fuse.cowfs-overlay"
        assert (mnt / "hello").read_text() == "from lower\n"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    pid = int(log.read_text().split()[2])
    wait_for(lambda: not pid_alive(pid), 20, "daemon exit after umount")
    assert mount_fstype(mnt) is None


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def _one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("cowfs-overlay: ")]
    assert lines, r.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_missing_lowerdir_is_a_clear_error(layers: tuple[Path, ...], tmp_path: Path) -> None:
    _low, up, work, mnt = layers
    r = _run([PROGRAM, "-o", f"lowerdir={tmp_path}/nope,upperdir={up},workdir={work}", str(mnt)])
    _one_line_error(r, "lowerdir", "nope", "No such file")
    assert mount_fstype(mnt) is None


def test_file_as_mountpoint_is_a_clear_error(layers: tuple[Path, ...]) -> None:
    low, up, work, _mnt = layers
    r = _run([PROGRAM, "-o", f"lowerdir={low},upperdir={up},workdir={work}", str(low / "hello")])
    _one_line_error(r, "mountpoint", "not a directory")


@pytest.mark.needs_root
def test_workdir_on_another_fs_is_a_clear_error(layers: tuple[Path, ...], tmp_path: Path) -> None:
    low, up, _work, mnt = layers
    other = tmp_path / "tmpfs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(other)], check=True)
    try:
        r = _run([PROGRAM, "-o", f"lowerdir={low},upperdir={up},workdir={other}", str(mnt)])
    finally:
        subprocess.run(["umount", str(other)], check=True)
    _one_line_error(r, "workdir", "same filesystem")


@pytest.mark.needs_root
def test_missing_dev_fuse_is_a_clear_error(layers: tuple[Path, ...]) -> None:
    low, up, work, mnt = layers
    script = (f'mount -t tmpfs none /dev && exec "$0" -o lowerdir={low},upperdir={up},'
              f"workdir={work} {mnt}")
    r = _run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, PROGRAM])
    _one_line_error(r, "/dev/fuse")


def test_bad_option_value_is_a_usage_error(layers: tuple[Path, ...]) -> None:
    low, _up, _work, mnt = layers
    r = _run([PROGRAM, "-o", f"lowerdir={low},timeout=soon", str(mnt)])
    assert r.returncode == 2
    _one_line_error(r, "timeout")


def test_unknown_option_warns_but_mounts(layers: tuple[Path, ...]) -> None:
    low, up, work, mnt = layers
    t0 = time.monotonic()
    with overlay_mount(mnt, [low], up, work, options=["frobnicate=1"],
                       allowed=["unknown option 'frobnicate=1'"]):
        assert (mnt / "hello").exists()
    assert time.monotonic() - t0 < 20
