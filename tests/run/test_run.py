"""The container runtime beyond the seed: setup errors, limits, /dev /proc /sys, config,
stop/kill/rm rules, logs/attach, ptys, restart on-failure, hostile inputs (kernel backend).
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.containers import IMAGE, Env, wait_for

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


def _running(env: Env, name: str) -> int:
    st = wait_for(lambda: env.state(name)["Running"] and env.state(name), what=f"{name} runs")
    return int(st["Pid"])


# --- setup errors come back through the handshake -----------------------------------

def test_missing_executable_is_reported(env: Env) -> None:
    r = env.cli("run", "--rm", IMAGE, "no-such-cmd", check=False)
    assert r.returncode == 7
    assert "exec no-such-cmd: executable file not found in $PATH" in r.stderr


def test_bad_workdir_is_reported(env: Env) -> None:
    r = env.cli("run", "--name", "bw", "-w", "/nope", IMAGE, "true", check=False)
    assert r.returncode == 7 and "chdir to workdir /nope: No such file" in r.stderr
    st = env.state("bw")
    assert st["Status"] == "exited" and "workdir" in st["Error"]


def test_unknown_user_is_reported(env: Env) -> None:
    r = env.cli("run", "--rm", "-u", "ghost", IMAGE, "true", check=False)
    assert r.returncode == 7 and "unable to find user ghost" in r.stderr


def test_exit_code_and_signal_propagate(env: Env) -> None:
    assert env.cli("run", "--rm", IMAGE, "sh", "-c", "exit 42", check=False).returncode == 42
    # PID 1 cannot SIGKILL itself from inside its namespace; the host can.
    env.cli("run", "-d", "--name", "sig", IMAGE, "sleep", "300")
    _running(env, "sig")
    env.cli("kill", "sig")
    wait_for(lambda: env.state("sig")["Status"] == "exited", what="killed")
    assert env.state("sig")["ExitCode"] == 137


# --- resource limits -----------------------------------------------------------------

def test_memory_limit_oom_kills(env: Env) -> None:
    r = env.cli("run", "--name", "oom", "--memory", "32m", IMAGE,
                "dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1", check=False)
    assert r.returncode == 137
    info = json.loads(env.cli("inspect", "oom").stdout)[0]
    assert info["State"]["OOMKilled"] is True
    assert info["HostConfig"]["Memory"] == 32 << 20
    ok = env.cli("run", "--rm", "--memory", "64m", IMAGE,
                 "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1", check=False)
    assert ok.returncode == 0


def test_pids_limit_stops_fork_loop(env: Env) -> None:
    r = env.cli("run", "--rm", "--pids-limit", "8", IMAGE, "sh", "-c",
                "i=0; while [ $i -lt 30 ]; do sleep 30 & i=$((i+1)); done; echo all-forked",
                check=False)
    assert "can't fork" in r.stderr
    assert "all-forked" not in r.stdout
    assert r.returncode != 0


def test_cpu_limit_sets_quota(env: Env) -> None:
    env.cli("run", "-d", "--name", "cpu", "--cpus", "0.5", IMAGE, "sleep", "300")
    pid = _running(env, "cpu")
    with open(f"/proc/{pid}/cgroup") as f:
        rel = next(line.split(":", 2)[2].strip() for line in f
                   if line.split(":")[1].split(",").count("cpu"))
    quota = Path(f"/sys/fs/cgroup/cpu{rel}/cpu.cfs_quota_us").read_text().strip()
    assert quota == "50000"


def test_clear_warning_when_no_cgroup_can_enforce_limits(env: Env) -> None:
    """With every cgroup hierarchy unmounted (a private mount namespace), --memory is
    not silently ignored: a warning says why, and the container still runs."""
    cli = " ".join([sys.executable, "-m", "cowfs.cli", "--root", env.root, "run", "--rm",
                    "--backend", "kernel", "--memory", "64m", IMAGE, "echo", "ran"])
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        f"umount -R -l /sys/fs/cgroup && exec {cli}"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert "WARNING: resource limits cannot be enforced: no cgroup v2" in r.stderr
    assert "memory controller" in r.stderr


def test_bad_limits_are_usage_errors(env: Env) -> None:
    for args in (["--memory", "lots"], ["--cpus", "-1"], ["--pids-limit", "0"],
                 ["--restart", "sometimes"], ["--rm", "--restart", "always"]):
        r = env.cli("run", *args, IMAGE, "true", check=False)
        assert r.returncode == 2, args


# --- the container's view ----------------------------------------------------------

def test_dev_proc_sys_hostname_and_loopback(env: Env) -> None:
    r = env.cli("run", "--rm", "--hostname", "h1", IMAGE, "sh", "-c",
                "ls /dev | tr '\\n' ' '; echo; ls /proc/[0-9]* -d | tr '\\n' ' '; echo;"
                "touch /sys/x 2>&1; hostname; ip -o link show lo | grep -c UP;"
                "head -c 4 /dev/urandom | wc -c; mount | grep -c ' /dev/pts type devpts'")
    lines = r.stdout.splitlines()
    assert set(lines[0].split()) >= {"null", "zero", "full", "random", "urandom", "tty",
                                     "pts", "shm", "ptmx", "fd", "stdin", "stdout", "stderr"}
    assert "/proc/1" in lines[1].split()
    assert "Read-only file system" in lines[2]
    assert lines[3:] == ["h1", "1", "4", "1"]


def test_image_config_and_overrides(env: Env) -> None:
    r = env.cli("run", "--rm", IMAGE)
    assert r.stdout == "default cmd\n"
    r = env.cli("run", "--rm", "-e", "MINE=1", IMAGE, "sh", "-c",
                "pwd; echo $IMAGE_VAR $MINE; id -u")
    assert r.stdout.split() == ["/app", "from-image", "1", "0"]
    r = env.cli("run", "--rm", "-w", "/tmp", "-u", "nobody", "-e", "IMAGE_VAR=x", IMAGE,
                "sh", "-c", "pwd; echo $IMAGE_VAR; id -u; id -g")
    assert r.stdout.split() == ["/tmp", "x", "65534", "65534"]
    r = env.cli("run", "--rm", "--entrypoint", "echo", IMAGE, "via", "entrypoint")
    assert r.stdout == "via entrypoint\n"


def test_rootfs_directory_as_image(env: Env, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "bin/busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (rootfs / "bin/busybox").chmod(0o755)
    os.symlink("busybox", rootfs / "bin/sh")
    r = env.cli("run", "--rm", str(rootfs), "/bin/sh", "-c", "echo from-dir > /f; cat /f")
    assert r.stdout == "from-dir\n"
    assert not (rootfs / "f").exists()  # the dir is a read-only lower layer


# --- lifecycle rules -------------------------------------------------------------------

def _super_options(mountpoint: str) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] == mountpoint:
                return set(right.split()[2].split(","))
    raise AssertionError(f"{mountpoint} is not mounted")


def test_rm_container_layer_is_volatile_and_a_leftover_cannot_start(env: Env) -> None:
    """--rm mounts the writable layer volatile (no syncs: it is deleted at exit; unmount
    then skips syncing the store's filesystem); a container without --rm is not. One a
    host crash left behind refuses to start with a clear error (and, being --rm, is
    removed)."""
    env.cli("run", "-d", "--rm", "--name", "vol", IMAGE, "sleep", "300")
    env.cli("run", "-d", "--name", "dur", IMAGE, "sleep", "300")
    _running(env, "vol")
    _running(env, "dur")
    volatile = {"volatile", "fsync=volatile"}  # the kernel shows the latter since 6.15
    assert volatile & _super_options(env.container("vol").merged)
    assert not volatile & _super_options(env.container("dur").merged)
    env.cli("rm", "-f", "vol", "dur")
    env.cli("create", "--rm", "--name", "left", IMAGE, "true")
    c = env.container("left")
    os.makedirs(os.path.join(c.work, "work", "incompat", "volatile"))  # what a crash leaves
    r = env.cli("start", "-a", "left", check=False)
    assert r.returncode == 7, r.stderr
    assert "mounted volatile (--rm) and the container was not removed" in r.stderr
    assert not os.path.exists(c.dir)  # --rm: removed after the failed start too


def test_stop_escalates_to_sigkill_and_rm_rules(env: Env) -> None:
    env.cli("run", "-d", "--name", "s", IMAGE, "sh", "-c",
            "trap '' TERM; while :; do sleep 1; done")
    _running(env, "s")
    r = env.cli("rm", "s", check=False)
    assert r.returncode == 4 and "running" in r.stderr
    t0 = time.monotonic()
    env.cli("stop", "-t", "1", "s")
    assert time.monotonic() - t0 >= 1.0
    assert env.state("s")["ExitCode"] == 137
    env.cli("start", "s")
    _running(env, "s")
    c = env.container("s")
    env.cli("rm", "-f", "s")
    assert not os.path.exists(c.dir)
    assert env.cli("ps", "-a", "-q").stdout == ""


def test_one_supervisor_per_container(env: Env) -> None:
    """The supervisor lock: while another supervisor holds it, `start` launches none
    (deterministic); concurrent starts end with exactly one supervisor and one mount."""
    import fcntl

    env.cli("create", "--name", "race", IMAGE, "sleep", "300")
    c = env.container("race")
    fd = os.open(os.path.join(c.dir, "supervisor.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        env.cli("start", "race")
        assert not env.state("race")["Running"]
        with open("/proc/self/mountinfo") as f:
            assert not any(line.split()[4] == c.merged for line in f)
    finally:
        os.close(fd)
    cmd = [sys.executable, "-m", "cowfs.cli", "--root", env.root, "start", "race"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(3)]
    codes = [p.wait(timeout=60) for p in procs]
    for p in procs:
        if p.stderr:
            p.stderr.close()
    assert codes == [0, 0, 0]
    _running(env, "race")
    with open("/proc/self/mountinfo") as f:
        assert sum(line.split()[4] == c.merged for line in f) == 1
    lock = os.path.join(c.dir, "supervisor.lock")
    holders = [pid for pid in filter(str.isdigit, os.listdir("/proc")) if lock in _fds(pid)]
    assert holders == [str(c.raw_state()["SupervisorPid"])]


def _fds(pid: str) -> set[str]:
    """Targets of a process's open fds."""
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue
    except OSError:
        pass
    return out


def test_kill_sends_signal(env: Env) -> None:
    env.cli("run", "-d", "--name", "k", IMAGE, "sh", "-c",
            "trap 'echo got-usr1; exit 3' USR1; while :; do sleep 0.1; done")
    _running(env, "k")
    env.cli("kill", "-s", "USR1", "k")
    wait_for(lambda: env.state("k")["Status"] == "exited", what="exit after USR1")
    assert env.state("k")["ExitCode"] == 3
    assert env.cli("logs", "k").stdout == "got-usr1\n"
    r = env.cli("kill", "k", check=False)
    assert r.returncode == 4


def test_on_failure_restarts_at_most_n_times(env: Env) -> None:
    env.cli("run", "-d", "--name", "of", "--restart", "on-failure:2", IMAGE,
            "sh", "-c", "echo try; exit 3")
    wait_for(lambda: env.state("of")["Status"] == "exited"
             and not env.container("of").supervisor_alive(), what="final exit")
    assert env.state("of")["RestartCount"] == 2
    assert env.cli("logs", "of").stdout == "try\n" * 3


def test_logs_follow_and_ps_json(env: Env) -> None:
    env.cli("run", "-d", "--name", "lf", IMAGE, "sh", "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo bye >&2")
    r = env.cli("logs", "-f", "lf")
    assert r.stdout == "line1\nline2\nline3\n" and r.stderr == "bye\n"
    rows = json.loads(env.cli("ps", "-a", "--json").stdout)
    assert rows[0]["Name"] == "lf" and rows[0]["State"] == "exited"
    assert json.loads(env.cli("ps", "--json").stdout) == []


def test_attach_and_interactive_stdin(env: Env) -> None:
    r = env.cli("run", "-i", "--rm", IMAGE, "sh", "-c", "read x; echo got:$x",
                input=b"hello\n")
    assert r.stdout == "got:hello\n"
    env.cli("run", "-d", "-i", "--name", "at", IMAGE, "sh", "-c",
            "while read x; do echo echo:$x; [ $x = quit ] && exit 9; done")
    _running(env, "at")
    r = env.cli("attach", "at", input=b"one\nquit\n", check=False)
    assert r.returncode == 9 and r.stdout == "echo:one\necho:quit\n"


def _pty_cli(env: Env, *args: str, send: bytes = b"", rows: int = 0,
             send_now: bytes = b"") -> tuple[int, bytes]:
    """Run the CLI on a real pty (like a terminal user); return (exit code, output).

    ``send`` is typed once the container printed ``ready`` (so the CLI's terminal is
    already in raw mode and ^C reaches the container as a byte)."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    if rows:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 77, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "cowfs.cli", "--root", env.root, *args],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    if send_now:
        os.write(master, send_now)  # buffered by the pty until the CLI reads it
    out = b""
    sent = not send
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    break
                out += data
                if not sent and b"ready" in out:
                    os.write(master, send)
                    sent = True
            elif p.poll() is not None:
                break
        code = p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return code, out


def test_run_it_gives_a_real_pty_with_window_size(env: Env) -> None:
    code, out = _pty_cli(env, "run", "-it", "--rm", IMAGE, "sh", "-c",
                         "tty; stty size; echo ready; read x; echo got:$x; exit 4",
                         send=b"typed\r", rows=33)
    assert code == 4
    text = out.decode(errors="replace")
    assert "/dev/pts/0" in text and "33 77" in text and "got:typed" in text


def test_run_it_follows_window_resizes(env: Env) -> None:
    """SIGWINCH on the CLI's side reaches the container's pty as a new size."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 40, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "cowfs.cli", "--root", env.root, "run", "-it",
                          "--rm", IMAGE, "sh", "-c",
                          "stty size; echo ready; i=0; while [ \"$(stty size)\" != '50 100' ]; "
                          "do i=$((i+1)); [ $i -gt 400 ] && exit 1; sleep 0.05; done; "
                          "echo resized; exit 0"],
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    try:
        while b"ready" not in out:
            out += os.read(master, 4096)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
        p.send_signal(signal.SIGWINCH)
        assert p.wait(timeout=60) == 0
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                break
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    assert b"20 40" in out and b"resized" in out


def test_run_it_forwards_ctrl_c_as_sigint(env: Env) -> None:
    code, out = _pty_cli(env, "run", "-it", "--rm", IMAGE, "sh", "-c",
                         "trap 'echo interrupted; exit 7' INT; echo ready; "
                         "while :; do sleep 0.1; done", send=b"\x03")
    assert code == 7, out
    assert b"interrupted" in out


def test_exec_and_attached_run_forward_signals(env: Env) -> None:
    """Without a tty, SIGINT to the CLI reaches the process (exec: directly; run: via
    the supervisor), which decides what to do with it."""
    env.cli("run", "-d", "--name", "sig", IMAGE, "sleep", "300")
    _running(env, "sig")
    script = "trap 'echo got-int; exit 4' INT; echo ready; while :; do sleep 0.1; done"
    for args in (["exec", "sig", "sh", "-c", script], ["run", "--rm", IMAGE, "sh", "-c", script]):
        p = subprocess.Popen([sys.executable, "-m", "cowfs.cli", "--root", env.root, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 4, args
        assert p.stdout.read() == b"got-int\n"
        p.stdout.close()


def test_detached_tty_container_attach(env: Env) -> None:
    """run -dit keeps a shell on a pty in the background; attach types into it and
    returns its exit code."""
    env.cli("run", "-dit", "--name", "dit", IMAGE, "sh", "-c",
            "while read -r line; do echo got:$line; [ $line = quit ] && exit 5; done")
    _running(env, "dit")
    code, out = _pty_cli(env, "attach", "dit", send_now=b"hello\rquit\r")
    assert code == 5, out
    assert b"got:hello" in out and b"got:quit" in out
    assert env.state("dit")["ExitCode"] == 5


def test_exec_it_gives_a_pty(env: Env) -> None:
    env.cli("run", "-d", "--name", "ex", IMAGE, "sleep", "300")
    _running(env, "ex")
    code, out = _pty_cli(env, "exec", "-it", "ex", "sh", "-c", "tty; exit 6")
    assert code == 6 and b"/dev/pts/" in out
    r = env.cli("exec", "ex", "nope", check=False)
    assert r.returncode == 7 and "executable file not found" in r.stderr
    r = env.cli("exec", "-w", "/missing", "ex", "true", check=False)
    assert r.returncode == 7 and "workdir" in r.stderr


# --- volumes and hostile inputs -------------------------------------------------------

def test_bind_mounts_and_readonly(env: Env, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "in").write_text("from host\n")
    r = env.cli("run", "--rm", "-v", f"{host}:/mnt/h", "-v", f"{host}:/ro:ro", IMAGE,
                "sh", "-c", "cat /mnt/h/in; echo back > /mnt/h/out; touch /ro/x 2>&1; true")
    assert r.stdout.startswith("from host\n") and "Read-only file system" in r.stdout
    assert (host / "out").read_text() == "back\n"
    r = env.cli("run", "--rm", "-v", "/does/not/exist:/x", IMAGE, "true", check=False)
    assert r.returncode == 3


def test_volume_target_through_symlink_stays_in_rootfs(env: Env) -> None:
    """/app/escape -> /etc in the image: the volume lands on the container's /etc, never
    on the host's."""
    before = sorted(os.listdir("/etc"))
    env.cli("run", "--rm", "-v", "evil:/app/escape/owned", IMAGE, "sh", "-c",
            "echo pwned > /etc/owned/f")
    assert sorted(os.listdir("/etc")) == before
    assert not os.path.exists("/etc/owned")


def test_hostile_names_and_specs(env: Env) -> None:
    for spec in ("../x:/data", "a:relative", "a:/", "a:/x:rw:extra", "a:/x:bogus"):
        r = env.cli("run", "--rm", "-v", spec, IMAGE, "true", check=False)
        assert r.returncode == 2, spec
    for name in ("../up", "a/b", "", "-x"):
        r = env.cli("create", "--name", name, IMAGE, "true", check=False)
        assert r.returncode == 2, name
    for host in ("a" * 70, "bad host", "-lead", "x\ny"):
        r = env.cli("create", f"--hostname={host}", IMAGE, "true", check=False)
        assert r.returncode == 2 and "invalid hostname" in r.stderr, host
    env.cli("create", "--name", "dup", IMAGE, "true")
    r = env.cli("create", "--name", "dup", IMAGE, "true", check=False)
    assert r.returncode == 4
    r = env.cli("volume", "create", "../../etc", check=False)
    assert r.returncode == 2
    assert env.cli("start", "nosuch", check=False).returncode == 3
    assert env.cli("run", "--rm", "nosuch:img", "true", check=False).returncode == 3


def test_volume_commands(env: Env) -> None:
    env.cli("volume", "create", "v1")
    info = json.loads(env.cli("volume", "inspect", "v1").stdout)[0]
    assert info["Name"] == "v1" and info["Mountpoint"].endswith("/volumes/v1/_data")
    assert env.cli("volume", "ls", "-q").stdout.split() == ["v1"]
    env.cli("create", "--name", "user", "-v", "v1:/d", IMAGE, "true")
    assert env.cli("volume", "rm", "v1", check=False).returncode == 4
    env.cli("rm", "user")
    env.cli("volume", "rm", "v1")
    assert env.cli("volume", "inspect", "v1", check=False).returncode == 3


def test_inspect_graphdriver_and_mounts(env: Env) -> None:
    env.cli("run", "-d", "--name", "in", "-v", "iv:/data", IMAGE, "sleep", "300")
    pid = _running(env, "in")
    info = json.loads(env.cli("inspect", "in").stdout)[0]
    data = info["GraphDriver"]["Data"]
    assert data["Mounted"] is True
    lowers = data["LowerDir"].split(":")
    assert len(lowers) == 2 and all(os.path.isdir(x) for x in lowers)
    assert os.path.isdir(data["UpperDir"]) and os.path.isdir(data["WorkDir"])
    with open("/proc/self/mountinfo") as f:
        assert any(line.split()[4] == data["MergedDir"] for line in f)
    assert info["State"]["Pid"] == pid and info["State"]["Running"] is True
    assert info["Mounts"][0]["Name"] == "iv" and info["Mounts"][0]["Destination"] == "/data"
    assert env.cli("inspect", "-f", "State.Status", "in").stdout == "running\n"
    env.cli("stop", "-t", "1", "in")
    data = json.loads(env.cli("inspect", "in").stdout)[0]["GraphDriver"]["Data"]
    assert data["Mounted"] is False
    img = json.loads(env.cli("inspect", IMAGE).stdout)[0]
    assert img["GraphDriver"]["Data"]["UpperDir"] == lowers[0]


def test_killed_attached_cli_does_not_stall_the_container(env: Env) -> None:
    """An attached `run` whose CLI dies (SIGKILL) leaves a running container whose
    output keeps flowing into its log (the supervisor drops the dead client)."""
    cmd = [sys.executable, "-m", "cowfs.cli", "--root", env.root, "run", "--name", "chatty",
           IMAGE, "sh", "-c",
           "i=0; while [ $i -lt 20000 ]; do echo line-$i-padding-padding-padding; "
           "i=$((i+1)); done; touch /tmp/done; exec sleep 300"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    p.stdout.read(100)  # the container is up and talking
    p.kill()
    p.wait()
    p.stdout.close()
    wait_for(lambda: env.cli("exec", "chatty", "test", "-e", "/tmp/done",
                             check=False).returncode == 0, timeout=60, what="all output done")
    logs = env.cli("logs", "chatty").stdout.splitlines()
    assert logs[-1] == "line-19999-padding-padding-padding" and len(logs) == 20000


def test_supervisor_death_keeps_container_data(env: Env) -> None:
    env.cli("run", "-d", "--name", "sd", IMAGE, "sh", "-c", "echo d > /root/d; exec sleep 300")
    pid = _running(env, "sd")
    c = env.container("sd")
    wait_for(lambda: os.path.exists(os.path.join(c.upper, "root/d")))
    os.kill(int(c.raw_state()["SupervisorPid"]), signal.SIGKILL)
    wait_for(lambda: not c.supervisor_alive(), what="supervisor gone")
    assert c.pid_alive() and env.state("sd")["Pid"] == pid  # the container lives on
    assert Path(c.upper, "root/d").read_text() == "d\n"
    env.cli("rm", "-f", "sd")
