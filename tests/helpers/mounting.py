"""Run real ``cowfs-overlay`` mounts in tests, and always clean them up.

`overlay_mount` starts the mount program (daemon mode, as podman does, or ``-f``),
waits until the mount is live (failing if the daemon died), yields a `Mounted`, and on
exit unmounts (``fusermount3 -u``, then ``-z`` as a last resort), waits for the daemon
it started, and fails the test if the daemon logged a WARNING/ERROR that the test did
not allow (STYLE habit 11).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROGRAM = str(Path(sys.executable).with_name("cowfs-overlay"))
"""The console script (absolute interpreter path in its shebang, like pip writes it)."""

FUSERMOUNT = shutil.which("fusermount3") or "/usr/bin/fusermount3"
_LOG_LINE = re.compile(r"^\S+ \S+ (\d+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def mount_fstype(path: str | os.PathLike[str]) -> str | None:
    """The fs type mounted exactly at ``path`` (topmost), or None."""
    target = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].encode().decode("unicode_escape")
            if mp == target:
                found = fields[fields.index("-") + 1]
    return found


def wait_for(pred: object, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``pred()`` until true; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass
class Mounted:
    """A live cowfs-overlay mount started by `overlay_mount`."""

    mountpoint: Path
    lowers: list[Path]
    upper: Path | None
    work: Path | None
    log: Path
    pid: int
    proc: subprocess.Popen[bytes] | None = None
    allowed: list[str] = field(default_factory=list)

    def unmount(self, timeout: float = 20.0) -> None:
        """``fusermount3 -u`` and wait for the daemon to exit (asserts both)."""
        r = subprocess.run([FUSERMOUNT, "-u", str(self.mountpoint)], capture_output=True,
                           text=True, check=False)
        assert r.returncode == 0, f"fusermount3 -u failed: {r.stderr.strip()}"
        self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)
        else:
            wait_for(lambda: not pid_alive(self.pid), timeout, f"daemon {self.pid} to exit")

    def log_problems(self) -> list[str]:
        """WARNING/ERROR/CRITICAL lines of the daemon log not matched by ``allowed``."""
        if not self.log.exists():
            return []
        bad = []
        lines = self.log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            m = _LOG_LINE.match(line)
            noisy = m is not None and m.group(2) in ("WARNING", "ERROR", "CRITICAL")
            noisy = noisy or (m is None and "Traceback" in line)
            if noisy and not any(re.search(a, line) for a in self.allowed):
                bad.append("\n".join(lines[i : i + 15]))
        return bad


def _daemon_pid(log: Path) -> int | None:
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_LINE.match(line)
        if m and " mounted " in line:
            return int(m.group(1))
    return None


def _force_unmount(mnt: Path) -> None:
    if mount_fstype(mnt) is None:
        return
    r = subprocess.run([FUSERMOUNT, "-u", str(mnt)], capture_output=True, check=False)
    if r.returncode != 0 and mount_fstype(mnt) is not None:
        subprocess.run([FUSERMOUNT, "-u", "-z", str(mnt)], capture_output=True, check=False)


@contextlib.contextmanager
def overlay_mount(
    mountpoint: Path,
    lowers: Sequence[Path],
    upper: Path | None = None,
    work: Path | None = None,
    *,
    options: Sequence[str] = (),
    foreground: bool = False,
    allowed: Sequence[str] = (),
    log: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Iterator[Mounted]:
    """Mount ``lowers`` (top first) with optional ``upper``/``work`` on ``mountpoint``.

    ``allowed`` are regexes of daemon log lines at WARNING or above that this test
    expects; any other such line fails the test at exit.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    log = log or mountpoint.parent / f"{mountpoint.name}.cowfs-overlay.log"
    if log.exists():
        log.unlink()
    opts = ["lowerdir=" + ":".join(str(p).replace(":", "\\:") for p in lowers)]
    if upper is not None and work is not None:
        opts += [f"upperdir={upper}", f"workdir={work}"]
    opts += [f"log={log}", *options]
    argv = [PROGRAM, "-o", ",".join(opts), str(mountpoint)]
    proc: subprocess.Popen[bytes] | None = None
    mounted: Mounted | None = None
    try:
        if foreground:
            proc = subprocess.Popen([*argv, "-f"], stdin=subprocess.DEVNULL, env=env)

            def live() -> bool:
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"cowfs-overlay -f exited with {proc.returncode}")
                return mount_fstype(mountpoint) is not None and _daemon_pid(log) is not None

            wait_for(live, timeout, f"mount on {mountpoint}")
            pid = proc.pid
        else:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout, env=env, check=False)
            assert r.returncode == 0, f"cowfs-overlay failed ({r.returncode}): {r.stderr}"
            assert mount_fstype(mountpoint) == "fuse.cowfs-overlay", "not mounted on return"
            found = _daemon_pid(log)
            assert found is not None, "daemon did not log its 'mounted' line"
            pid = found
        mounted = Mounted(mountpoint, list(lowers), upper, work, log, pid, proc, list(allowed))
        yield mounted
    finally:
        _force_unmount(mountpoint)
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif mounted is not None:
            try:
                mounted.wait_exit(timeout)
            except AssertionError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(mounted.pid, signal.SIGKILL)
                raise
    if mounted is not None:
        problems = mounted.log_problems()
        assert not problems, "cowfs-overlay logged problems:\n" + "\n---\n".join(problems)


def make_dirs(base: Path, *names: str) -> list[Path]:
    """Create ``base/name`` for each name and return them."""
    out = []
    for n in names:
        p = base / n
        p.mkdir(parents=True, exist_ok=True)
        out.append(p)
    return out


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """The visible tree under ``root``: path -> (type, perms, uid, gid, size, content).

    Content is the file bytes' hash, the symlink target, or the device number. Directory
    sizes and times are left out (they legitimately differ between implementations).
    """
    import hashlib
    import stat as st_

    out: dict[str, tuple[object, ...]] = {}

    def walk(d: Path, rel: str) -> None:
        for name in sorted(os.listdir(d)):
            p = d / name
            r = f"{rel}/{name}" if rel else name
            s = os.lstat(p)
            kind = st_.S_IFMT(s.st_mode)
            if st_.S_ISREG(s.st_mode):
                content: object = hashlib.sha256(p.read_bytes()).hexdigest()
                size = s.st_size
            elif st_.S_ISLNK(s.st_mode):
                content, size = os.readlink(p), s.st_size
            elif st_.S_ISCHR(s.st_mode) or st_.S_ISBLK(s.st_mode):
                content, size = s.st_rdev, 0
            else:
                content, size = None, 0
            out[r] = (kind, st_.S_IMODE(s.st_mode), s.st_uid, s.st_gid, size, content)
            if st_.S_ISDIR(s.st_mode):
                walk(p, r)

    walk(root, "")
    return out
