"""The scenario table: every rule of SPEC §4, each run on a backend and on the kernel.

Each row names its layers (top lower first), the ops, and optionally ``expect``: checks of
the kernel's own behaviour, so a reference that drifts (other kernel, other options) fails
loudly instead of silently redefining "correct".
"""

from __future__ import annotations

import os
from typing import Any

from conformance.runner import Outcome, Scenario
from cowfs._sys.linux import RENAME_EXCHANGE, RENAME_NOREPLACE

W, A, T = os.O_WRONLY, os.O_APPEND, os.O_TRUNC
C, X, RW = os.O_CREAT, os.O_EXCL, os.O_RDWR
GIB = 1 << 30


def _wh(path: str) -> Any:
    def check(o: Outcome) -> None:
        assert o.upper.get(path) == {"kind": "whiteout"}, (path, o.upper.get(path))
    return check


def _opaque(path: str, value: bool = True) -> Any:
    def check(o: Outcome) -> None:
        assert (o.upper[path]["opaque"] == [b"y"]) is value, (path, o.upper[path])
    return check


def _all(*checks: Any) -> Any:
    def check(o: Outcome) -> None:
        for c in checks:
            c(o)
    return check


def _that(pred: Any) -> Any:
    def check(o: Outcome) -> None:
        assert pred(o), o
    return check


def _errs(*names: str) -> Any:
    def check(o: Outcome) -> None:
        got = [r[1] for r in o.results if r[0] == "err"]
        assert got == list(names), got
    return check


BASE: dict[str, Any] = {
    "etc/passwd": ("file", "root:x:0:0\n", {"mode": 0o644}),
    "etc/shadow": ("file", "secret\n", {"mode": 0o640, "uid": 0, "gid": 42,
                                        "xattrs": {"user.note": b"keep"}}),
    "bin/sh": ("file", b"\x7fELF" + b"x" * 5000, {"mode": 0o755}),
    "bin/ls": ("link", "sh"),
    "d/a": "a", "d/sub/x": "x", "empty": None,
    "own": ("file", "o", {"uid": 1000, "gid": 1000, "mode": 0o600}),
}
TOP: dict[str, Any] = {"d/b": "b", "d/a": "a-top", "top": "t", "tdir/f": "f"}

SCENARIOS: list[Scenario] = [
    Scenario("readdir_merge_many_layers",
             [{f"d/f{i}": str(i), "d/shadow": f"s{i}", f"only{i}": None,
               **({f"d/f{i + 1}": ("wh",)} if i % 3 == 0 else {}),
               **({"o": ("opaque", b"y")} if i == 5 else {f"o/n{i}": "n"})}
              for i in range(12)],
             [("listdir", ""), ("listdir", "d"), ("listdir", "o"), ("read", "d/shadow")]),
    Scenario("copyup_open_write", [TOP, BASE],
             [("write", "etc/shadow", b"SEC", W), ("read", "etc/shadow"), ("stat", "etc/shadow"),
              ("getxattr", "etc/shadow", "user.note")],
             expect=_that(lambda o: o.upper["etc/shadow"]["xattrs"] == {"user.note": b"keep"})),
    Scenario("copyup_append", [TOP, BASE],
             [("append", "etc/passwd", b"new:x\n"), ("append", "etc/passwd", b"n2\n"),
              ("read", "etc/passwd")]),
    Scenario("copyup_otrunc", [TOP, BASE],
             [("open_close", "bin/sh", W | T), ("stat", "bin/sh"), ("read", "bin/sh")]),
    Scenario("copyup_truncate", [TOP, BASE],
             [("truncate", "bin/sh", 10), ("read", "bin/sh"), ("truncate", "d/a", 100),
              ("stat", "d/a")]),
    Scenario("copyup_chmod_chown_utime", [TOP, BASE],
             [("chmod", "etc/passwd", 0o600), ("chown", "own", 7, 8),
              ("utime", "d/sub/x", 1_000_000_000_123_456_789, 1_100_000_000_000_000_007),
              ("mtime", "d/sub/x"), ("chmod", "d", 0o700), ("stat", "d")]),
    Scenario("copyup_xattrs", [TOP, BASE],
             [("setxattr", "d/a", "user.k", b"v"), ("listxattr", "d/a"),
              ("getxattr", "etc/passwd", "user.none"), ("removexattr", "etc/shadow", "user.note"),
              ("listxattr", "etc/shadow"), ("removexattr", "bin/sh", "user.none"),
              ("setxattr", "d", "user.dir", b"1"), ("getxattr", "d", "user.dir")],
             expect=_errs("ENODATA", "ENODATA")),
    Scenario("copyup_link_lower", [TOP, BASE],
             [("link", "etc/passwd", "etc/passwd2"), ("stat", "etc/passwd"),
              ("append", "etc/passwd2", b"via2\n"), ("read", "etc/passwd"),
              ("link", "d", "d2"), ("link", "etc/passwd", "top")],
             expect=_errs("EPERM", "EEXIST")),
    Scenario("copyup_parents_deep",
             [{"/".join(f"d{i}" for i in range(40)) + "/leaf": "deep"}],
             [("append", "/".join(f"d{i}" for i in range(40)) + "/leaf", b"+"),
              ("mkdir", "/".join(f"d{i}" for i in range(20)) + "/new"),
              ("read", "/".join(f"d{i}" for i in range(40)) + "/leaf")]),
    Scenario("unlink_whiteouts", [TOP, BASE],
             [("unlink", "etc/passwd"), ("unlink", "d/a"), ("write", "newf", b"n"),
              ("unlink", "newf"), ("write", "top", b"changed"), ("unlink", "top"),
              ("unlink", "d"), ("unlink", "nope"), ("exists", "etc/passwd")],
             expect=_all(_wh("etc/passwd"), _wh("d/a"), _wh("top"),
                         _errs("EISDIR", "ENOENT"),
                         lambda o: "newf" not in o.upper)),
    Scenario("rmdir_rules", [TOP, BASE],
             [("rmdir", "empty"), ("rmdir", "d"), ("unlink", "d/a"), ("unlink", "d/b"),
              ("rmdir", "d/sub"), ("unlink", "d/sub/x"), ("rmdir", "d/sub"), ("rmdir", "d"),
              ("rmdir", "etc/passwd"), ("mkdir", "nd"), ("write", "nd/f", b"1"),
              ("unlink", "nd/f"), ("rmdir", "nd"), ("exists", "d")],
             expect=_all(_wh("empty"), _wh("d"), _errs("ENOTEMPTY", "ENOTEMPTY", "ENOTDIR"),
                         lambda o: "nd" not in o.upper)),
    Scenario("mkdir_opaque", [TOP, BASE],
             [("rmdir", "empty"), ("mkdir", "empty"), ("listdir", "empty"),
              ("unlink", "d/a"), ("mkdir", "d/a", 0o700), ("mkdir", "brandnew"),
              ("mkdir", "brandnew/inner"), ("rmdir", "tdir/f"), ("unlink", "tdir/f"),
              ("rmdir", "tdir"), ("mkdir", "tdir"), ("listdir", "tdir"), ("mkdir", "d")],
             expect=_all(_opaque("empty"), _opaque("d/a"), _opaque("tdir"),
                         _opaque("brandnew", False), _opaque("brandnew/inner", False),
                         _errs("ENOTDIR", "EEXIST"))),
    Scenario("create_over_whiteout", [TOP, BASE],
             [("unlink", "etc/passwd"), ("write", "etc/passwd", b"again", W | C | X),
              ("read", "etc/passwd"), ("unlink", "bin/ls"), ("symlink", "sh", "bin/ls"),
              ("readlink", "bin/ls"), ("rmdir", "empty"), ("write", "empty", b"now a file")],
             expect=_that(lambda o: o.upper["etc/passwd"]["kind"] == "file")),
    Scenario("oexcl_otrunc", [TOP, BASE],
             [("open_close", "etc/passwd", W | C | X), ("open_close", "newx", W | C | X),
              ("open_close", "newx", W | C | X), ("write", "d/a", b"zz", W | T),
              ("read", "d/a"), ("open_close", "missing", W), ("open_close", "d", W)],
             expect=_errs("EEXIST", "EEXIST", "ENOENT", "EISDIR")),
    Scenario("rename_files_across_layers", [TOP, BASE],
             [("rename", "etc/passwd", "etc/passwd.new"), ("rename", "d/a", "top"),
              ("rename", "bin/ls", "d/ls"), ("write", "u1", b"u"), ("rename", "u1", "u2"),
              ("rename", "own", "d/sub/x"), ("read", "top"), ("readlink", "d/ls"),
              ("rename", "nope", "x")],
             expect=_all(_wh("etc/passwd"), _wh("d/a"), _wh("bin/ls"), _wh("own"),
                         _errs("ENOENT"))),
    Scenario("rename_dirs_exdev", [TOP, BASE],
             [("rename", "d", "d2"), ("rename", "empty", "e2"), ("rename", "d/sub", "sub"),
              ("mkdir", "nd"), ("write", "nd/f", b"1"), ("rename", "nd", "nd2"),
              ("rename", "nd2", "d/nd3"), ("rename", "nd2", "nd4"), ("listdir", "d/nd3"),
              ("mkdir", "p"), ("rename", "p", "empty")],
             expect=_errs("EXDEV", "EXDEV", "EXDEV", "ENOENT")),
    Scenario("rename_dir_over_empty_lower_dir", [TOP, BASE],
             [("mkdir", "nd"), ("write", "nd/f", b"1"), ("rename", "nd", "empty"),
              ("listdir", "empty"), ("unlink", "d/a"), ("unlink", "d/b"),
              ("unlink", "d/sub/x"), ("rmdir", "d/sub"), ("mkdir", "n2"),
              ("rename", "n2", "d"), ("listdir", "d")]),
    Scenario("rename_noreplace_exchange", [TOP, BASE],
             [("rename", "etc/passwd", "etc/shadow", RENAME_NOREPLACE),
              ("rename", "etc/passwd", "etc/pw", RENAME_NOREPLACE),
              ("rename", "etc/pw", "etc/shadow", RENAME_EXCHANGE),
              ("read", "etc/pw"), ("read", "etc/shadow"),
              ("rename", "etc/pw", "etc/absent", RENAME_EXCHANGE),
              ("rename", "d", "tdir", RENAME_EXCHANGE),
              ("mkdir", "m1"), ("mkdir", "m2"), ("write", "m1/a", b"a"),
              ("rename", "m1", "m2", RENAME_EXCHANGE), ("listdir", "m2"),
              ("rename", "top", "m1", RENAME_EXCHANGE), ("stat", "top"),
              ("rename", "a", "b", RENAME_EXCHANGE | RENAME_NOREPLACE)],
             expect=_errs("EEXIST", "ENOENT", "EXDEV", "EINVAL")),
    Scenario("rename_errors", [TOP, BASE],
             [("mkdir", "nd"), ("mkdir", "nd/in"), ("rename", "nd", "nd/in/deeper"),
              ("rename", "nd/in", "etc/passwd"), ("rename", "etc/passwd", "nd"),
              ("write", "nd/in/f", b"1"), ("mkdir", "nd2"), ("rename", "nd2", "nd"),
              ("rename", "nd", "nd"), ("rename", "etc/passwd", "etc/passwd"),
              ("rename", "etc/passwd", "nope/x")],
             expect=_errs("EINVAL", "ENOTDIR", "EISDIR", "ENOTEMPTY", "ENOENT")),
    Scenario("hardlinks_lower", [{"h/a": "shared", "h/b": ("hardlink", "h/a"),
                                  "h/c": ("hardlink", "h/a"), "solo": "s"}],
             [("stat", "h/a"), ("append", "h/a", b"+a"), ("read", "h/b"), ("stat", "h/a"),
              ("stat", "h/b"), ("link", "h/b", "h/d"), ("stat", "h/d"), ("unlink", "h/c")]),
    Scenario("special_files", [TOP, {**BASE, "dev/null": ("chr", 1, 3), "fifo": ("fifo",)}],
             [("mknod", "p", 0o010640), ("mknod", "dev/zero", 0o020666, os.makedev(1, 5)),
              ("symlink", "/etc/passwd", "abs"), ("readlink", "abs"), ("chmod", "fifo", 0o600),
              ("chown", "bin/ls", 5, 6), ("unlink", "dev/null"), ("stat", "p"),
              ("stat", "dev/zero")]),
    Scenario("mmap_write", [TOP, BASE],
             [("mmap_write", "bin/sh", 100, b"MMAP"), ("read", "bin/sh", 96, 12)]),
    Scenario("sparse_large", [{"big": ("sparse", 5 * GIB, {0: b"head", 4 * GIB + 7: b"mid"})}],
             [("pwrite", "big", 5 * GIB - 3, b"END"), ("read", "big", 4 * GIB + 5, 8),
              ("stat", "big")],
             expect=_that(lambda o: o.upper["big"]["sparse"] is True)),
    Scenario("inode_stability", [TOP, BASE],
             [("remember_ino", "etc/passwd", "pw"), ("remember_ino", "d", "d"),
              ("remember_ino", "d/sub/x", "x"), ("append", "etc/passwd", b"+"),
              ("same_ino", "etc/passwd", "pw"), ("write", "d/new", b"n"),
              ("same_ino", "d", "d"), ("rename", "d/sub/x", "moved"),
              ("same_ino", "moved", "x"), ("remount",), ("same_ino", "etc/passwd", "pw"),
              ("same_ino", "d", "d"), ("same_ino", "moved", "x")],
             expect=_that(lambda o: [r for r in o.results if isinstance(r[1], bool)]
                          == [("ok", True)] * 6)),
    Scenario("setgid_and_owner",
             [{"g": ("dir", {"mode": 0o2775, "gid": 100}), "plain": None}],
             [("write", "g/f", b"1"), ("mkdir", "g/sub"), ("stat", "g/f"), ("stat", "g/sub"),
              ("write", "plain/f", b"2", W | C, 0o4755), ("stat", "plain/f")]),
    Scenario("readonly_no_upper", [TOP, BASE],
             [("listdir", ""), ("read", "d/a"), ("write", "d/a", b"x", W),
              ("unlink", "d/a"), ("mkdir", "z"), ("rename", "top", "t2"),
              ("setxattr", "top", "user.x", b"1"), ("chmod", "top", 0o600),
              ("statfs",)],
             upper=None, expect=_errs(*["EROFS"] * 6)),
    Scenario("internal_xattrs_hidden", [TOP, BASE],
             [("getxattr", "d", "trusted.overlay.opaque"), ("listxattr", "d"),
              ("rmdir", "empty"), ("mkdir", "empty"), ("listxattr", "empty"),
              ("getxattr", "empty", "trusted.overlay.opaque"),
              ("setxattr", "d/a", "trusted.overlay.foo", b"v"),
              ("getxattr", "d/a", "trusted.overlay.foo"), ("listxattr", "d/a"),
              ("setxattr", "d/a", "trusted.plain", b"p"), ("listxattr", "d/a"),
              ("setxattr", "bin/ls", "user.onlink", b"1"),
              ("setxattr", "etc/passwd", "trusted.overlay.opaque", b"y"),
              ("setxattr", "empty", "trusted.overlay.whiteout", b"y"),
              ("listdir", "empty"), ("listxattr", "empty")]),
    Scenario("rename_and_link_over_whiteouts", [TOP, BASE],
             [("unlink", "etc/passwd"), ("write", "etc/new", b"n"),
              ("rename", "etc/new", "etc/passwd"), ("unlink", "d/a"),
              ("link", "etc/shadow", "d/a"), ("rmdir", "empty"), ("mkdir", "nd"),
              ("rename", "nd", "empty"), ("unlink", "top"), ("rename", "d/b", "top"),
              ("read", "top"), ("stat", "d/a")]),
    Scenario("recreate_over_lower_whiteouts",
             [{"k/c": ("wh",), "k/dd": ("wh",), "k/e": ("wh",), "k/keep": "k"},
              {"k/c": "c", "k/dd/inner": "i", "k/e": None}],
             [("listdir", "k"), ("mkdir", "k/c"), ("mkdir", "k/dd"), ("write", "k/e", b"e"),
              ("listdir", "k/c"), ("listdir", "k/dd"), ("rmdir", "k/c"), ("unlink", "k/e"),
              ("listdir", "k")]),
    Scenario("existing_upper",
             [TOP, BASE],
             [("listdir", ""), ("listdir", "d"), ("listdir", "etc"), ("read", "top"),
              ("rmdir", "d/sub"), ("mkdir", "etc/passwd"), ("unlink", "bin/sh"),
              ("write", "d/sub", b"file now"), ("rename", "udir", "d/udir"),
              ("listdir", "d")],
             upper={"d": ("opaque", b"y"), "d/sub": None, "d/own": "mine",
                    "etc/passwd": ("wh",), "top": "upper top", "udir/x": "x",
                    "bin/sh": ("file", "upper sh", {"mode": 0o700})}),
    Scenario("dir_metadata_copy_up", [TOP, {**BASE, "m": ("dir", {"mode": 0o750, "uid": 3,
                                                                  "gid": 4,
                                                                  "xattrs": {"user.m": b"1"}}),
                                            "m/f": "f"}],
             [("chown", "m", 5, -1), ("stat", "m"), ("getxattr", "m", "user.m"),
              ("utime", "m", 10**18, 2 * 10**18), ("mtime", "m"), ("chmod", "", 0o711),
              ("stat", "")]),
    Scenario("statfs_and_nlink", [TOP, BASE],
             [("statfs",), ("stat", "d"), ("stat", "d/sub"), ("stat", ""), ("mkdir", "x"),
              ("mkdir", "x/y"), ("stat", "x"), ("stat", "empty")]),
    Scenario("dialects_in_lowers",
             [{"w/del": ("whfile",), "o": ("opqfile",), "o/new": "n",
               "f": ("fof_opaque",), "f/new": "n", "u": ("opaque", b"y", "user"),
               "u/new": "n", "x/a": ("xwh",), "x/b": "b2", "k/c": ("wh",)},
              {"w/del": "d", "w/keep": "k", "o/old": "o", "f/old": "o", "u/old": "o",
               "x/a": "a", "x/c": "c", "k/c": "c", "k/d": "d"}],
             [("listdir", "w"), ("listdir", "o"), ("listdir", "f"), ("listdir", "u"),
              ("listdir", "x"), ("listdir", "k"), ("write", "w/del", b"again"),
              ("unlink", "x/c"), ("mkdir", "o/old"), ("rmdir", "f/old")],
             kernel_lowers=[{"w/del": ("wh",), "o": ("opaque", b"y"), "o/new": "n",
                             "f": ("opaque", b"y"), "f/new": "n", "u": ("opaque", b"y"),
                             "u/new": "n", "x/a": ("wh",), "x/b": "b2", "k/c": ("wh",)},
                            {"w/del": "d", "w/keep": "k", "o/old": "o", "f/old": "o",
                             "u/old": "o", "x/a": "a", "x/c": "c", "k/c": "c", "k/d": "d"}],
             expect=_errs("ENOENT")),
    Scenario("wh_names_invisible", [{".wh.secret": "", "d/.wh..wh..opq": "", "d/x": "x"},
                                    {"secret": "s", "d/y": "y"}],
             [("listdir", ""), ("listdir", "d"), ("exists", ".wh.secret"), ("exists", "secret")],
             kernel_lowers=[{"secret": ("wh",), "d": ("opaque", b"y"), "d/x": "x"},
                            {"secret": "s", "d/y": "y"}]),
]

BY_NAME = {sc.name: sc for sc in SCENARIOS}
