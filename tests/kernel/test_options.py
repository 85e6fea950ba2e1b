"""Pure option building: escaping, page-size check, limits, validation (no privileges)."""

from __future__ import annotations

import pytest

from cowfs.errors import MountError, UsageError
from cowfs.kernel.options import (
    OVL_MAX_STACK,
    Method,
    choose_method,
    escape_path,
    fits_one_page,
    fsconfig_steps,
    make_options,
    option_string,
)


def test_escape_specials() -> None:
    assert escape_path(b"/a:b,c\\d") == b"/a\\:b\\,c\\\\d"
    assert escape_path(b"/plain/dir") == b"/plain/dir"


def test_option_string_order_and_flags() -> None:
    o = make_options(["/top", "/bottom"], "/u", "/w", userxattr=True, volatile=True,
                     extra=["xino=off"])
    assert option_string(o) == (
        b"lowerdir=/top:/bottom,upperdir=/u,workdir=/w,userxattr,volatile,index=off,"
        b"metacopy=off,xino=off")
    assert not o.read_only


def test_option_string_escapes_every_path() -> None:
    o = make_options(["/l:1", "/l,2"], "/u\\x", "/w:y")
    assert option_string(o) == (b"lowerdir=/l\\:1:/l\\,2,upperdir=/u\\\\x,workdir=/w\\:y,"
                                b"redirect_dir=off,index=off,metacopy=off")


def test_read_only_has_no_upper() -> None:
    o = make_options(["/a", "/b"])
    assert o.read_only
    assert option_string(o) == b"lowerdir=/a:/b,redirect_dir=off,index=off,metacopy=off"


def test_page_size_check_boundary() -> None:
    assert fits_one_page(b"x" * 4095, 4096)
    assert not fits_one_page(b"x" * 4096, 4096)


def test_choose_method_by_page() -> None:
    few = make_options([f"/layers/{i:03d}" for i in range(10)])
    many = make_options([f"/layers/{'x' * 40}{i:03d}" for i in range(300)])
    assert choose_method(few) is Method.LEGACY
    assert choose_method(many) is Method.FSCONFIG
    # A tiny page forces the new API even for a short string.
    assert choose_method(few, page_size=16) is Method.FSCONFIG


def test_fsconfig_steps_raw_lowers_escaped_upper() -> None:
    o = make_options(["/a:b", "/c"], "/u:1", "/w", userxattr=True, extra=["xino=off"])
    assert fsconfig_steps(o) == [
        ("lowerdir+", b"/a:b"), ("lowerdir+", b"/c"), ("upperdir", b"/u\\:1"),
        ("workdir", b"/w"), ("userxattr", None), ("index", b"off"), ("metacopy", b"off"),
        ("xino", b"off"),
    ]


def test_limit_named_in_error() -> None:
    make_options([f"/l{i}" for i in range(OVL_MAX_STACK)])
    with pytest.raises(MountError, match="501 lower layers exceed the kernel limit of 500"):
        make_options([f"/l{i}" for i in range(OVL_MAX_STACK + 1)])


@pytest.mark.parametrize(
    ("lowers", "upper", "work", "kw", "match"),
    [
        ([], None, None, {}, "at least one lower"),
        (["relative"], None, None, {}, "not an absolute path"),
        (["/a\0b"], None, None, {}, "NUL"),
        (["/a"], "/u", None, {}, "together"),
        (["/a"], None, "/w", {}, "together"),
        (["/a"], None, None, {"volatile": True}, "volatile needs an upper"),
        (["/a"], None, None, {"extra": ["upperdir=/x"]}, "not allowed"),
        (["/a"], None, None, {"extra": ["a=1,lowerdir=/evil"]}, "not allowed"),
    ],
)
def test_hostile_or_bad_requests(lowers: list[str], upper: str | None, work: str | None,
                                 kw: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        make_options(lowers, upper, work, **kw)  # type: ignore[arg-type]


def test_paths_are_normalised() -> None:
    o = make_options(["/a//b/../c/"])
    assert o.lowerdirs == (b"/a/c",)
