"""commit: the upper-dir path and the naive tree-diff fallback give the same image."""

from __future__ import annotations

import os
import tarfile

import pytest
from helpers.containers import IMAGE, Env

from cowfs.run import commit
from cowfs.store import open_store

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]

CHANGE = ("echo c >> /app/hello.txt && rm /app/delete-me && rm -r /etc/conf.d && "
          "mkdir /etc/conf.d && echo n > /etc/conf.d/n.conf && ln -s hello.txt /app/link && "
          "mkfifo /app/fifo && echo x > /root/a && ln /root/a /root/b")
LISTING = "ls /app /etc/conf.d /root; cat /app/hello.txt /app/link; stat -c %h /root/a"


def _names(env: Env, ref: str) -> list[str]:
    store = open_store(env.root)
    with store.blobs.open(store.get_image(ref).layer_digests[-1]) as f, \
            tarfile.open(fileobj=f) as tf:
        return tf.getnames()


def test_naive_commit_matches_upper_commit(env: Env) -> None:
    env.cli("run", "--name", "c", IMAGE, "sh", "-c", CHANGE)
    env.cli("commit", "c", "up:1")
    env.cli("commit", "--naive", "c", "naive:1")
    a = env.cli("run", "--rm", "up:1", "sh", "-c", LISTING).stdout
    b = env.cli("run", "--rm", "naive:1", "sh", "-c", LISTING).stdout
    assert a == b
    assert "delete-me" not in a and "n.conf" in a and "a.conf" not in a
    assert a.rstrip().endswith("2")  # the hardlink survives as a hardlink
    naive = _names(env, "naive:1")
    assert "app/.wh.delete-me" in naive and "etc/conf.d/.wh.a.conf" in naive
    assert "etc/conf.d/.wh..wh..opq" in _names(env, "up:1")


def test_foreign_upper_falls_back_to_naive(env: Env) -> None:
    """An upper with AUFS-style ``.wh.`` files (written by some other tool) is not
    trusted: commit diffs the mounted trees, so the deletion still lands in the image."""
    env.cli("create", "--name", "f", IMAGE, "true")
    c = env.container("f")
    os.makedirs(os.path.join(c.upper, "app"))
    with open(os.path.join(c.upper, "app", ".wh.hello.txt"), "w"):
        pass
    assert not commit.is_trusted_upper(c.upper)
    env.cli("commit", "f", "foreign:1")
    names = _names(env, "foreign:1")
    assert "app/.wh.hello.txt" in names
    assert not any(n.endswith(".wh..wh..opq") for n in names)
    r = env.cli("run", "--rm", "foreign:1", "ls", "/app")
    assert r.stdout.split() == ["delete-me", "escape"]
