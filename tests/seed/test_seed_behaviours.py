"""One test per behaviour of the seed notes (seed-docker-internals.md), on both backends.

Each test is named after the behaviour it proves and drives the real ``cowfs`` CLI
against a temp store holding a 2-layer busybox image.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tarfile
from pathlib import Path

from helpers.containers import HELLO, IMAGE, Env, wait_for


def _ns(pid: int | str, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def _mount_daemons(mergeddir: str) -> list[int]:
    """Pids of FUSE daemons serving ``mergeddir`` (their command line names it)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.fsencode(mergeddir) in argv and any(b"cowfs" in a for a in argv[:3]):
            out.append(int(pid))
    return out


def _running(env: Env, name: str) -> int:
    st = wait_for(lambda: env.state(name)["Running"] and env.state(name), what=f"{name} runs")
    return int(st["Pid"])


def test_container_is_just_a_process(env: Env) -> None:
    """A container is a host process (host ps sees it) that is PID 1 inside."""
    env.cli("run", "-d", "--name", "p", IMAGE, "sleep", "300")
    pid = _running(env, "p")
    ps = subprocess.run(["ps", "-o", "pid=,comm=", "-p", str(pid)], capture_output=True,
                        text=True, check=True).stdout.split()
    assert ps == [str(pid), "sleep"]
    with open(f"/proc/{pid}/status") as f:
        nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
    assert nspid == [str(pid), "1"]
    inside = env.cli("exec", "p", "cat", "/proc/1/comm").stdout
    assert inside == "sleep\n"
    # shares the host kernel: same uname release inside and out
    assert env.cli("exec", "p", "uname", "-r").stdout.strip() == os.uname().release


def test_cow_read_from_image_layer_without_copy(env: Env) -> None:
    """Reading an image file uses the layer directly: the writable layer stays empty."""
    r = env.cli("run", "--name", "r", IMAGE, "sh", "-c", "cat /app/hello.txt /etc/motd")
    assert r.stdout.encode() == HELLO + b"layer 2 motd\n"
    c = env.container("r")
    assert os.listdir(c.upper) == []


def test_modify_copies_up_into_writable_layer(env: Env) -> None:
    """Modifying an image file copies it up into UpperDir; the image layer is untouched."""
    env.cli("run", "--name", "m", IMAGE, "sh", "-c", "echo more >> /app/hello.txt")
    c = env.container("m")
    with open(os.path.join(c.upper, "app/hello.txt"), "rb") as f:
        assert f.read() == HELLO + b"more\n"
    with open(os.path.join(c.lowerdirs[0], "app/hello.txt"), "rb") as f:
        assert f.read() == HELLO
    assert env.cli("diff", "m").stdout.splitlines() == ["C /app", "C /app/hello.txt"]


def test_delete_creates_whiteout(env: Env) -> None:
    """Deleting an image file leaves a whiteout (char 0/0) in UpperDir that hides it."""
    env.cli("run", "--name", "d", IMAGE, "rm", "/app/delete-me")
    c = env.container("d")
    st = os.lstat(os.path.join(c.upper, "app/delete-me"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.path.exists(os.path.join(c.lowerdirs[0], "app/delete-me"))
    r = env.cli("start", "-a", "d", check=False)  # rm again: the file is gone in the view
    assert r.returncode == 1 and "can't remove" in r.stderr
    assert "D /app/delete-me" in env.cli("diff", "d").stdout.splitlines()


def test_writable_layer_exists_as_long_as_the_container(env: Env) -> None:
    """UpperDir is created with the container, survives stop/start, and goes with rm."""
    env.cli("create", "--name", "w", IMAGE, "sh", "-c", "echo kept > /root/note")
    info = json.loads(env.cli("inspect", "w").stdout)[0]
    upper = info["GraphDriver"]["Data"]["UpperDir"]
    assert os.path.isdir(upper) and os.listdir(upper) == []
    env.cli("start", "-a", "w")
    env.cli("start", "-a", "w")
    assert Path(os.path.join(upper, "root/note")).read_text() == "kept\n"
    env.cli("rm", "w")
    assert not os.path.exists(upper)
    assert not os.path.exists(os.path.dirname(upper))


def test_changes_not_in_image_until_commit(env: Env) -> None:
    """A container's change is invisible to new containers of the same image."""
    env.cli("run", "--name", "a", IMAGE, "sh", "-c", "echo new > /app/new.txt")
    r = env.cli("run", "--rm", IMAGE, "cat", "/app/new.txt", check=False)
    assert r.returncode == 1 and "No such file" in r.stderr
    images = json.loads(env.cli("inspect", "--type", "image", IMAGE).stdout)
    assert len(images[0]["RootFS"]["Layers"]) == 2


def test_commit_creates_image_with_the_change(env: Env) -> None:
    """commit turns UpperDir into a new top layer (with OCI whiteouts) of a new image."""
    env.cli("run", "--name", "c", IMAGE, "sh", "-c",
            "echo committed > /app/new.txt && rm /app/delete-me && rm -r /etc/conf.d "
            "&& mkdir /etc/conf.d && echo c > /etc/conf.d/c.conf && mkdir /fresh "
            "&& echo f > /fresh/f")
    env.cli("commit", "c", "mine:v1")
    new = json.loads(env.cli("inspect", "--type", "image", "mine:v1").stdout)[0]
    assert len(new["RootFS"]["Layers"]) == 3
    r = env.cli("run", "--rm", "mine:v1", "sh", "-c",
                "cat /app/new.txt; ls /app; ls /etc/conf.d; cat /fresh/f")
    assert r.stdout.split() == ["committed", "escape", "hello.txt", "new.txt", "c.conf", "f"]
    # the layer itself: .wh.NAME for the delete, .wh..wh..opq only for the dir that
    # exists below (/etc/conf.d), none for the new /fresh
    from cowfs.store import open_store

    store = open_store(env.root)
    image = store.get_image("mine:v1")
    with store.blobs.open(image.layer_digests[-1]) as f, tarfile.open(fileobj=f) as tf:
        names = tf.getnames()
    assert "app/.wh.delete-me" in names
    assert "etc/conf.d/.wh..wh..opq" in names
    assert not any(n.startswith("fresh/.wh.") for n in names)
    assert env.cli("run", "--rm", IMAGE, "cat", "/app/delete-me").stdout == "doomed\n"


def test_volumes_outside_writable_layer_survive_rm(env: Env) -> None:
    """A named volume is created on first use, lives outside UpperDir, and survives rm."""
    env.cli("run", "--name", "v1", "-v", "appdata:/app/data", IMAGE, "sh", "-c",
            "echo persisted > /app/data/f")
    c = env.container("v1")
    assert not os.path.exists(os.path.join(c.upper, "app/data/f"))
    r = env.cli("volume", "rm", "appdata", check=False)
    assert r.returncode == 4 and "in use" in r.stderr
    env.cli("rm", "v1")
    assert "appdata" in env.cli("volume", "ls", "-q").stdout.split()
    r = env.cli("run", "--rm", "-v", "appdata:/elsewhere", IMAGE, "cat", "/elsewhere/f")
    assert r.stdout == "persisted\n"
    env.cli("volume", "rm", "appdata")
    assert env.cli("volume", "ls", "-q").stdout == ""


def test_attached_vs_detached(env: Env) -> None:
    """Attached: output and exit code come back, the container stops when its process
    ends. Detached: the CLI exits at once, the container keeps running, exec reaches it."""
    r = env.cli("run", "--name", "att", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 5",
                check=False)
    assert (r.returncode, r.stdout, r.stderr) == (5, "out\n", "err\n")
    assert env.state("att")["Status"] == "exited"
    r = env.cli("run", "-d", "--name", "det", IMAGE, "sh", "-c",
                "echo ready > /tmp/ready; exec sleep 300")
    assert len(r.stdout.strip()) == 64
    pid = _running(env, "det")
    wait_for(lambda: env.cli("exec", "det", "cat", "/tmp/ready", check=False).stdout == "ready\n")
    assert env.cli("exec", "det", "sh", "-c", "echo $$").stdout.strip() != "1"
    assert env.state("det")["Pid"] == pid  # still the same process after the CLI left
    env.cli("stop", "-t", "1", "det")
    assert env.state("det")["Status"] == "exited"


def test_restart_always(env: Env) -> None:
    """--restart always brings a dying container back (with backoff) until stopped."""
    env.cli("run", "-d", "--name", "ra", "--restart", "always", "-v", "ra:/data", IMAGE,
            "sh", "-c", "echo x >> /data/runs; exit 1")
    wait_for(lambda: env.state("ra").get("RestartCount", 0) >= 2, what="two restarts")
    # the seed's "check restart policy": docker ps --format "table {{.Names}}\t{{.Status}}"
    table = env.cli("ps", "-a", "--format", "table {{.Names}}\t{{.RestartPolicy}}").stdout
    assert table.splitlines()[1].split() == ["ra", "always"]
    env.cli("stop", "-t", "1", "ra")
    runs = env.state("ra")["RestartCount"]
    st = env.state("ra")
    assert st["Status"] == "exited" and not st["Running"]
    assert env.state("ra")["RestartCount"] == runs  # a stop is final


def test_host_crash_keeps_image_layers_writable_layer_and_volumes(env: Env) -> None:
    """After every process of a container is SIGKILLed and its rootfs lazily unmounted,
    ps -a shows it exited; image layers, writable layer and volumes are intact; start
    brings it back with its changes, and start --all restarts --restart always ones."""
    env.cli("run", "-d", "--name", "hc", "--restart", "always", "-v", "hcvol:/data", IMAGE,
            "sh", "-c", "echo w > /root/w; echo v > /data/v; exec sleep 300")
    pid = _running(env, "hc")
    wait_for(lambda: env.cli("exec", "hc", "cat", "/root/w", check=False).stdout == "w\n")
    c = env.container("hc")
    st = c.raw_state()
    victims = [int(st["SupervisorPid"]), pid, *_mount_daemons(c.merged)]
    assert len(victims) == (3 if env.backend == "fuse" else 2)
    for p in victims:
        os.kill(p, signal.SIGKILL)
    wait_for(lambda: not c.pid_alive() and not c.supervisor_alive(), what="everything dead")
    subprocess.run(["umount", "-l", c.merged], check=False, capture_output=True)
    ps = json.loads(env.cli("ps", "-a", "--json").stdout)
    assert [(x["Name"], x["State"]) for x in ps] == [("hc", "exited")]
    assert Path(os.path.join(c.upper, "root/w")).read_text() == "w\n"
    from cowfs.run import volumes
    from cowfs.store import open_store

    assert Path(volumes.volume_path(env.root, "hcvol"), "v").read_text() == "v\n"
    assert open_store(env.root).fsck() == []
    assert env.cli("start", "--all").stdout.split() == ["hc"]
    _running(env, "hc")
    assert env.cli("exec", "hc", "cat", "/root/w", "/data/v").stdout == "w\nv\n"
    from cowfs.run import cgroups

    env.cli("rm", "-f", "hc")
    assert cgroups.paths_of(c.id) == []
    assert open_store(env.root).fsck() == []


def test_processes_spawned_by_fork_exec_in_namespaces_and_cgroups(env: Env) -> None:
    """PID 1 is forked by the container's supervisor and exec'd in its own mount, PID,
    UTS, IPC and network namespaces, inside a per-container cgroup."""
    env.cli("run", "-d", "--name", "ns", "--hostname", "box", "--pids-limit", "50", IMAGE,
            "sleep", "300")
    pid = _running(env, "ns")
    c = env.container("ns")
    for name in ("mnt", "pid", "uts", "ipc", "net"):
        assert _ns(pid, name) != _ns("self", name), name
    assert os.readlink(f"/proc/{pid}/exe").endswith("/bin/busybox")  # exec'd, not a fork copy
    with open(f"/proc/{pid}/status") as f:
        ppid = int(next(line for line in f if line.startswith("PPid:")).split()[1])
    assert ppid == int(c.raw_state()["SupervisorPid"])
    with open(f"/proc/{pid}/cgroup") as f:
        cg = f.read()
    assert f"/cowfs/{c.id}" in cg
    assert env.cli("exec", "ns", "hostname").stdout == "box\n"
    out = env.cli("exec", "ns", "sh", "-c", "cat /proc/self/cgroup").stdout
    assert f"/cowfs/{c.id}" in out  # exec joins the container's cgroups
