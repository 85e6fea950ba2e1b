"""``OverlayMachine``: a hypothesis state machine comparing an overlay with the model.

Owns: the rules (random operations on random layer stacks), the invariants
(merged tree and errnos equal the model's; after unmount the upper dir is valid
kernel format and survives a remount), and the record of what ran, from which
``script.py`` renders a reproducer. Must not know how an implementation mounts:
that is the adapter's job.

Use it from pytest::

    TestMine = OverlayMachine.bind(ProgramAdapter("/usr/bin/my-overlay")).TestCase
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ..errors import UsageError
from . import strategies as strat
from .adapters import Adapter, Fs, KernelAdapter
from .layers import check_upper, write_layer
from .model import Dir, Entry, Inode, Model, OpError, Snapshot, join

Arg = bytes | int


REMOUNT_EVERY = 6
"""Operations between remounts at least (mounting a FUSE daemon costs ~0.4 s)."""


class Divergence(AssertionError):
    """Raised by the machine when the implementation differs from the model."""


@dataclass
class Record:
    """What one run did: the stack, its mounts and every operation with both results."""

    stack: strat.Stack | None = None
    steps: list[tuple[str, tuple[Arg, ...]]] = field(default_factory=list)
    failure: str = ""


def result_of(fn: Any, *args: Any) -> tuple[str, bytes | None]:
    """Call ``fn``; ``("ok", value)`` or ``(errno name, None)`` for an ``OpError``."""
    try:
        return "ok", fn(*args)
    except OpError as exc:
        import errno

        return errno.errorcode.get(exc.errno, str(exc.errno)), None


IGNORABLE = frozenset({"dir_nlink", "nlink", "xattrs", "mode"})
"""Entry fields a run may leave out of the comparison (``OverlayMachine.ignore``)."""


def _masked(e: Entry, ignore: frozenset[str]) -> Entry:
    """``e`` with the ignored fields blanked out."""
    nlink = 0 if "nlink" in ignore or ("dir_nlink" in ignore and e.kind == "dir") else e.nlink
    return dataclasses.replace(
        e, nlink=nlink, mode=0 if "mode" in ignore else e.mode,
        xattrs=() if "xattrs" in ignore else e.xattrs)


def diff_snapshots(want: Snapshot, got: dict[bytes, Entry | str],
                   ignore: frozenset[str] = frozenset()) -> list[str]:
    """Human-readable differences between the model's tree and an implementation's."""
    out: list[str] = []
    if ignore:
        want = {p: _masked(e, ignore) for p, e in want.items()}
        got = {p: e if isinstance(e, str) else _masked(e, ignore) for p, e in got.items()}
    for path in sorted(set(want) | set(got)):
        w, g = want.get(path), got.get(path)
        shown = path.decode(errors="backslashreplace") or "/"
        if w is None:
            out.append(f"{shown!r}: unexpected {g}")
        elif g is None:
            out.append(f"{shown!r}: missing (model: {w})")
        elif isinstance(g, str):
            out.append(f"{shown!r}: {g} (model: {w})")
        elif w != g:
            fields = [f"{k}: model {getattr(w, k)!r}, got {getattr(g, k)!r}"
                      for k in Entry.__dataclass_fields__ if getattr(w, k) != getattr(g, k)]
            out.append(f"{shown!r}: " + "; ".join(fields))
    return out


class OverlayMachine(RuleBasedStateMachine):
    """Random operations on an implementation and on the model, compared at every step.

    Bind an adapter with :meth:`bind`; the class attribute ``TestCase`` of the result
    is a ``unittest.TestCase`` for pytest. Class attributes tune the stacks.
    """

    adapter: ClassVar[Adapter] = KernelAdapter()
    max_layers: ClassVar[int] = 3
    max_names: ClassVar[int] = 4
    max_depth: ClassVar[int] = 2
    kernel_crosscheck: ClassVar[bool] = False
    """After the run, mount the upper with kernel overlayfs and compare it too."""
    ignore: ClassVar[frozenset[str]] = frozenset()
    """Entry fields not compared (from ``IGNORABLE``), e.g. a known divergence."""
    disabled: ClassVar[frozenset[str]] = frozenset()
    """Operations to skip (e.g. a known divergence, to look for others), and these cases:
    ``rename_lower_hardlinks`` (rename of one name of a lower hardlinked file over another;
    the kernel really renames: they are two overlay inodes); and kinds of lower objects
    not to generate: ``symlinks``, ``fifos``, ``hardlinks``, ``whiteouts``; ``upper_format``
    skips the upper dir's format check after unmount."""
    counter: ClassVar[dict[str, int] | None] = None
    """If set, counts ``examples`` and ``steps`` run."""
    last: ClassVar[Record | None] = None
    """The record of the most recent run (after a failure: the shrunk one)."""

    @classmethod
    def bind(cls, adapter: Adapter, **attrs: Any) -> type[OverlayMachine]:
        """A subclass testing ``adapter``; ``attrs`` override class attributes."""
        name = "OverlayMachine_" + "".join(c if c.isalnum() else "_" for c in adapter.name)
        return type(name, (cls,), {"adapter": adapter, **attrs})

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="cowfs-machine-")
        self.record = Record()
        type(self).last = self.record
        if self.counter is not None:
            self.counter["examples"] += 1
        self.fs: Fs | None = None
        self.model = Model([])
        self.names: list[bytes] = [b"a", b"b"]
        self.lowers: list[str] = []
        self.since_mount = 0

    # --- setup and teardown ------------------------------------------------------------
    def _dir(self, name: str) -> str:
        path = os.path.join(self.tmp, name)
        os.makedirs(path, exist_ok=True)
        return path

    def _mount(self) -> None:
        for d in ("work", "merged"):
            self._dir(d)
        self.fs = self.adapter.open(self.lowers, self._dir("upper"), self._dir("work"),
                                    self._dir("merged"))
        self.since_mount = 0

    def _unmount(self) -> None:
        fs, self.fs = self.fs, None
        if fs is not None:
            fs.close()

    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        cls = type(self)
        exclude = frozenset(k for k in ("symlink", "fifo", "hardlink", "whiteout")
                            if k + "s" in cls.disabled)
        stack = data.draw(strat.stacks(cls.max_layers, cls.max_names, cls.max_depth,
                                       exclude), label="stack")
        self.record.stack = stack
        self.names = stack.names
        self.model = Model(stack.lowers)
        self.lowers = []
        for i, tree in enumerate(stack.lowers):
            path = self._dir(f"l{i}")
            write_layer(tree, path, userxattr=self.adapter.userxattr)
            self.lowers.append(path)
        self._mount()

    def teardown(self) -> None:
        try:
            if self.fs is not None:
                self._unmount()
                self._check_upper()
                if self.kernel_crosscheck:
                    self._crosscheck()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- comparing ------------------------------------------------------------------------
    def _fail(self, msg: str) -> None:
        self.record.failure = msg
        raise Divergence(msg)

    def _step(self, op: str, *args: Arg) -> None:
        """Run one operation on both sides; results (errno or value) must be equal."""
        if op in self.disabled or op in self.adapter.skip_ops:
            return
        if self.counter is not None:
            self.counter["steps"] += 1
        self.record.steps.append((op, args))
        self.since_mount += 1
        assert self.fs is not None
        want = result_of(getattr(self.model, op), *[a for a in args])
        got = result_of(self.fs.apply, op, args)
        if want != got:
            self._fail(f"{op}{_fmt_args(args)}: model says {_fmt_res(want)}, "
                       f"{self.adapter.name} says {_fmt_res(got)}")

    @invariant()
    def merged_tree_matches(self) -> None:
        if self.fs is None:
            return
        diffs = diff_snapshots(self.model.snapshot(), self.fs.snapshot(), self.ignore)
        if diffs:
            self._fail(f"merged tree differs from the model ({self.adapter.name}):\n  "
                       + "\n  ".join(diffs))

    def _check_upper(self) -> None:
        if "upper_format" in self.disabled:
            return
        problems = check_upper(os.path.join(self.tmp, "upper"),
                               userxattr=self.adapter.userxattr)
        if problems:
            self._fail(f"upper dir is not valid kernel overlay format after unmount "
                       f"({self.adapter.name}):\n  " + "\n  ".join(problems))

    def _crosscheck(self) -> None:
        """The upper written by the implementation shows the model's tree under the kernel."""
        shutil.rmtree(os.path.join(self.tmp, "work"))
        kfs = KernelAdapter().open(self.lowers, self._dir("upper"), self._dir("work"),
                                   self._dir("merged"))
        try:
            diffs = diff_snapshots(self.model.snapshot(), kfs.snapshot(), self.ignore)
        finally:
            kfs.close()
        if diffs:
            self._fail(f"kernel overlayfs mounting the upper written by {self.adapter.name} "
                       "shows a different tree:\n  " + "\n  ".join(diffs))

    # --- drawing arguments ----------------------------------------------------------------
    def _existing(self, data: st.DataObject, kind: str | None = None) -> bytes:
        paths = [p for p, m in self.model.walk() if p and
                 (kind is None or _kind_of(m.top) == kind)]
        return data.draw(st.sampled_from(paths) if paths else st.just(b"a"), label="path")

    def _target(self, data: st.DataObject) -> bytes:
        """An existing path, or a pool name under any existing path (may not be a dir)."""
        walked = [(p, m) for p, m in self.model.walk() if p]
        paths = [p for p, _ in walked]
        dirs = [b"", *(p for p, m in walked if m.is_dir)]
        # Mostly under a dir (the interesting case), sometimes under a non-dir (ENOTDIR).
        parent = st.one_of(st.sampled_from(dirs), st.sampled_from([b"", *paths]))
        fresh = st.builds(join, parent, st.sampled_from(self.names))
        if not paths:
            return data.draw(fresh, label="path")
        return data.draw(st.one_of(st.sampled_from(paths), fresh), label="path")

    # --- rules ----------------------------------------------------------------------------
    @rule(data=st.data(), content=strat.contents())
    def create(self, data: st.DataObject, content: bytes) -> None:
        self._step("create", self._target(data), content)

    @rule(data=st.data(), offset=st.integers(0, 80), content=strat.contents(16))
    def write(self, data: st.DataObject, offset: int, content: bytes) -> None:
        self._step("write", self._target(data), offset, content)

    @rule(data=st.data(), content=strat.contents(16))
    def append(self, data: st.DataObject, content: bytes) -> None:
        self._step("append", self._target(data), content)

    @rule(data=st.data(), size=st.integers(0, 100))
    def truncate(self, data: st.DataObject, size: int) -> None:
        self._step("truncate", self._target(data), size)

    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        self._step("unlink", self._target(data))

    @rule(data=st.data(), mode=st.sampled_from([0o755, 0o700, 0o750, 0o711]))
    def mkdir(self, data: st.DataObject, mode: int) -> None:
        self._step("mkdir", self._target(data), mode)

    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        self._step("rmdir", self._target(data))

    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        src, dst = self._existing(data), self._target(data)
        if "rename_lower_hardlinks" in self.disabled and src != dst:
            s, d = self.model.lookup(src), self.model.lookup(dst)
            if s is not None and d is not None and s.top is d.top and s.parts[0][0] > 0:
                return  # a known divergence the caller chose to skip
        self._step("rename", src, dst)

    @rule(data=st.data())
    def link(self, data: st.DataObject) -> None:
        self._step("link", self._existing(data), self._target(data))

    @rule(data=st.data(), dest=st.sampled_from(strat.SYMLINK_TARGETS))
    def symlink(self, data: st.DataObject, dest: bytes) -> None:
        self._step("symlink", dest, self._target(data))

    @rule(data=st.data(), mode=st.sampled_from([0o600, 0o640, 0o755, 0o4755, 0o1777, 0o000]))
    def chmod(self, data: st.DataObject, mode: int) -> None:
        self._step("chmod", self._existing(data), mode)

    @rule(data=st.data(), name=st.sampled_from(strat.XATTR_NAMES), value=st.binary(max_size=8))
    def setxattr(self, data: st.DataObject, name: bytes, value: bytes) -> None:
        self._step("setxattr", self._existing(data), name, value)

    @rule(data=st.data(), name=st.sampled_from(strat.XATTR_NAMES))
    def removexattr(self, data: st.DataObject, name: bytes) -> None:
        self._step("removexattr", self._existing(data), name)

    @precondition(lambda self: any(_kind_of(m.top) == "file" for _, m in self.model.walk()))
    @rule(data=st.data(), content=strat.contents(16))
    def fd_copyup(self, data: st.DataObject, content: bytes) -> None:
        """Read-only fd on a (lower) file, write via another fd: what does the first read?"""
        self._step("fd_copyup", self._existing(data, "file"), content)

    @precondition(lambda self: self.since_mount >= REMOUNT_EVERY)
    @rule()
    def remount(self) -> None:
        """Unmount (upper must be valid kernel format), mount again: state must survive."""
        if "remount" in self.disabled:
            return
        self.record.steps.append(("remount", ()))
        self._unmount()
        self._check_upper()
        shutil.rmtree(os.path.join(self.tmp, "work"))
        self._mount()


def _kind_of(node: Inode | Dir) -> str:
    return "dir" if isinstance(node, Dir) else node.kind


def _fmt_args(args: Sequence[Arg]) -> str:
    return "(" + ", ".join(oct(a) if isinstance(a, int) and a > 0o77 else repr(a)
                           for a in args) + ")"


def _fmt_res(res: tuple[str, bytes | None]) -> str:
    return res[0] if res[1] is None else f"{res[0]} {res[1]!r}"


def check_available(adapter: Adapter) -> None:
    """Raise ``UsageError`` if ``adapter`` cannot run on this machine."""
    why = adapter.unavailable()
    if why:
        raise UsageError(f"cannot test {adapter.name}: {why}")
