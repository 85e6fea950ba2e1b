"""Unit tests of the cowfs-overlay command line (no mount): fuse-overlayfs's grammar, and
its translation to mount(2) arguments."""

from __future__ import annotations

import os

import pytest

from cowfs.errors import UsageError
from cowfs.fuse.kmount import MS_NOATIME, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, mount_args
from cowfs.fuse.options import DEFAULT_TIMEOUT, parse_args, split_lowerdir, split_options


def test_podman_form_with_empty_option() -> None:
    o = parse_args(["-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w,,volatile", "/m"], euid=0)
    assert o.lowerdirs == ("/l1", "/l2")
    assert (o.upperdir, o.workdir, o.mountpoint) == ("/u", "/w", "/m")
    assert o.volatile and not o.fsync
    assert o.warnings == ()
    assert {"allow_other", "default_permissions"} <= o.fuse_options
    assert "ro" not in o.fuse_options and not o.read_only
    assert o.writeback and o.timeout == DEFAULT_TIMEOUT


def test_repeated_and_attached_o() -> None:
    o = parse_args(["-olowerdir=/a", "-o", "upperdir=/u", "-o", "workdir=/w", "-f", "/m"])
    assert o.lowerdirs == ("/a",) and o.upperdir == "/u" and o.foreground


def test_mount_fuse3_form() -> None:
    o = parse_args(["overlay", "/m", "-o", "rw,dev,suid,lowerdir=/a,upperdir=/u,workdir=/w"])
    assert o.source == "overlay" and o.mountpoint == "/m"
    assert {"dev", "suid", "rw", "fsname=overlay", "subtype=cowfs-overlay"} <= o.fuse_options


def test_lowerdir_escapes() -> None:
    assert split_lowerdir(r"/a\:b:/c\\d:/e") == ("/a:b", "/c\\d", "/e")
    o = parse_args(["-o", r"lowerdir=/x\:y:/z", "/m"])
    assert o.lowerdirs == ("/x:y", "/z")


def test_quoted_values_and_escaped_commas() -> None:
    assert split_options('context="system_u:object_r:a,b",lowerdir=/l') == [
        "context=system_u:object_r:a,b", "lowerdir=/l",
    ]
    assert split_options(r"a\,b,c") == ["a,b", "c"]
    o = parse_args(["-o", 'lowerdir=/l,context="a,b"', "/m"])
    assert o.warnings == ()


def test_unterminated_quote_is_an_error() -> None:
    with pytest.raises(UsageError, match="quote"):
        parse_args(["-o", 'lowerdir=/l,context="a', "/m"])


def test_every_fuse_overlayfs_option_is_accepted() -> None:
    opts = ("uidmapping=0:1000:1,gidmapping=0:1000:1,squash_to_root,squash_to_uid=5,"
            "squash_to_gid=6,static_nlink,noacl,xino=auto,timeout=5,fsync=0,volatile,"
            "writeback=0,redirect_dir=off,context=x,xattr_permissions=2,allow_other,"
            "default_permissions,suid,dev,noatime,threaded=1,fast_ino=1,index=off,metacopy=off")
    opts = opts.replace("threaded=1", "threaded").replace("fast_ino=1", "fast_ino")
    o = parse_args(["-o", f"lowerdir=/l,upperdir=/u,workdir=/w,{opts}", "/m"])
    assert o.squash_uid == 5 and o.squash_gid == 6 and o.static_nlink
    assert o.timeout == 5.0 and not o.writeback and not o.fsync
    assert o.uid_map == ((0, 1000, 1),) and o.gid_map == ((0, 1000, 1),)
    assert o.warnings == ()


def test_idmap_triples() -> None:
    o = parse_args(["-o", "lowerdir=/l,uidmapping=0:1000:1:1:110000:65536", "/m"])
    assert o.uid_map == ((0, 1000, 1), (1, 110000, 65536)) and o.gid_map == ()
    for bad in ("0:1000", "0:x:1", "0:1000:0"):
        with pytest.raises(UsageError, match="uidmapping"):
            parse_args(["-o", f"lowerdir=/l,uidmapping={bad}", "/m"])


def test_unknown_option_warns() -> None:
    o = parse_args(["-o", "lowerdir=/l,frobnicate=3,zap", "/m"])
    assert [w for w in o.warnings if "frobnicate" in w] and [w for w in o.warnings if "zap" in w]
    assert not any("frobnicate" in f for f in o.fuse_options)


def test_read_only_without_upper() -> None:
    o = parse_args(["-o", "lowerdir=/l", "/m"], euid=1000)
    assert o.read_only and "ro" in o.fuse_options and not o.writeback
    assert "allow_other" not in o.fuse_options  # rootless: fusermount3 would refuse it


def test_relative_paths_are_taken_from_cwd() -> None:
    o = parse_args(["-o", "lowerdir=l,upperdir=u,workdir=w", "m"])
    cwd = os.getcwd()
    assert o.lowerdirs == (f"{cwd}/l",) and o.upperdir == f"{cwd}/u"
    assert o.mountpoint == f"{cwd}/m"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["/m"], "lowerdir= is required"),
        (["-o", "lowerdir=/l,upperdir=/u", "/m"], "go together"),
        (["-o", "lowerdir=/l"], "positional"),
        (["-o", "lowerdir=/l", "a", "b", "c"], "positional"),
        (["-o", "lowerdir=/l::/k", "/m"], "empty layer"),
        (["-o", "lowerdir=/l,timeout=soon", "/m"], "not a number"),
        (["-o", "lowerdir=/l,squash_to_uid=-1", "/m"], "negative"),
        (["-o", "lowerdir=/l,writeback=maybe", "/m"], "expected 0 or 1"),
        (["-o"], "needs a value"),
        (["-x", "-o", "lowerdir=/l", "/m"], "unknown flag"),
    ],
)
def test_bad_command_lines(argv: list[str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        parse_args(argv)


def test_kernel_mount_arguments() -> None:
    # cowfs's own mount(2) must give what libfuse gives for the same options.
    o = parse_args(["-o", "lowerdir=/a,upperdir=/u,workdir=/w", "/m"], euid=0)
    source, fstype, flags, data = mount_args(o.fuse_options, 7, 0, 0) or (b"", b"", 0, b"")
    assert (source, fstype) == (b"cowfs-overlay", b"fuse.cowfs-overlay")
    assert flags == MS_NODEV | MS_NOATIME  # suid clears libfuse's default nosuid
    assert data.split(b",")[:4] == [b"fd=7", b"rootmode=40000", b"user_id=0", b"group_id=0"]
    assert set(data.split(b",")[4:]) == {b"allow_other", b"default_permissions"}
    ro = parse_args(["src", "/m", "-o", "lowerdir=/a,nosuid,noexec,max_read=4096"], euid=1000)
    source, fstype, flags, data = mount_args(ro.fuse_options, 3, 1000, 100) or (b"", b"", 0,
                                                                               b"")
    assert source == b"src"
    assert flags == MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    assert b"max_read=4096" in data.split(b",") and b"allow_other" not in data
    # Options only libfuse handles send the mount back to it.
    for odd in ("allow_root", "blkdev", "blksize=4096"):
        o = parse_args(["-o", f"lowerdir=/a,{odd}", "/m"], euid=0)
        assert mount_args(o.fuse_options, 3, 0, 0) is None, odd


def test_spin_option() -> None:
    assert parse_args(["-o", "lowerdir=/l", "/m"]).spin_us == 50
    assert parse_args(["-o", "lowerdir=/l,spin=0", "/m"]).spin_us == 0
    assert parse_args(["-o", "lowerdir=/l,spin=200", "/m"]).spin_us == 200
    for bad in ("spin=-1", "spin=fast", "spin=10001"):
        with pytest.raises(UsageError, match="spin="):
            parse_args(["-o", f"lowerdir=/l,{bad}", "/m"])
