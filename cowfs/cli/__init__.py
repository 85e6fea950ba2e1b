"""The `cowfs` command line: parse, call the library, map errors to exit codes.

Owns: argument parsing and output. Nothing imports this package. Subcommands
live one per module in this package; every public module (no leading ``_``)
exposes ``register(subparsers)`` which adds its parser(s) with
``set_defaults(func=...)``; ``func(args)`` returns the exit code. A command may also set
``fast_exit=True`` (see ``entry``).
"""

from __future__ import annotations

import argparse
import atexit
import gc as _gc  # as _gc: the "gc" subcommand module would replace a plain "gc" here
import importlib
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn

from ..errors import CowfsError

log = logging.getLogger("cowfs")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one clean line (``cowfs: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        prog = self.prog
        sys.stderr.write(f"{prog}: {message} (see '{prog} --help')\n")
        raise SystemExit(2)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the full parser with every discovered subcommand.

    With ``only``, first try just the module named like that command (``cmd`` or
    ``cmd_``): importing every subcommand costs ~0.4 s of start-up, which dominates
    short commands such as ``run --rm IMAGE true``. Falls back to full discovery.
    """
    if only is not None:
        fast = _base_parser()
        subs = fast.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
        for name in (only, only + "_"):
            if not name.isidentifier() or name.startswith("_"):
                continue
            try:
                module = importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
                continue
            register = getattr(module, "register", None)
            if register is not None:
                register(subs)
                if only in subs.choices:
                    return fast
    import pkgutil  # lazy: the fast path above needs no discovery

    parser = _base_parser()
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subs)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The subcommand word in ``argv`` (skipping global options), if any."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--root":
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg
    return None


def _base_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cowfs",
        description="Copy-on-write storage for container root filesystems.",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="store root (default: $COWFS_ROOT, /var/lib/cowfs as root, "
        "$XDG_DATA_HOME/cowfs otherwise)",
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cowfs`` console script."""
    return _main(argv)[0]


def _main(argv: Sequence[str] | None, *, process_start: bool = False) -> tuple[int, bool]:
    """Run the command; return its exit code and whether it allows ``_fast_exit``.

    With ``process_start`` (a fresh ``cowfs`` process), the cyclic GC is off while the
    subcommand's modules load (it would scan the growing heap several times, ~2 ms) and
    what they made is then frozen (``gc.freeze``): never collected, and never touched
    by a collection in forked children (the supervisor), so their pages stay shared.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    if process_start:
        _gc.disable()
    try:
        parser = build_parser(only=_command_word(words))
    finally:
        if process_start:
            _gc.freeze()
            _gc.enable()
    args = parser.parse_args(words)
    level = logging.DEBUG if args.debug else logging.ERROR if args.quiet else logging.WARNING
    if os.environ.get("COWFS_LOG_LEVEL"):
        level = getattr(logging, os.environ["COWFS_LOG_LEVEL"].upper(), level)
    logging.basicConfig(level=level, format="cowfs: %(levelname)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return (0 if args.command is None else 2), False
    fast = bool(getattr(args, "fast_exit", False))
    try:
        return int(func(args) or 0), fast
    except CowfsError as exc:
        if args.debug:
            log.exception("command failed")
        sys.stderr.write(f"cowfs: {exc}\n")
        return exc.exit_code, fast
    except KeyboardInterrupt:
        sys.stderr.write("cowfs: interrupted\n")
        return 130, False
    except BrokenPipeError:
        return 141, False
    except OSError as exc:
        if args.debug:
            log.exception("command failed")
        where = f": {exc.filename!s}" if exc.filename else ""
        sys.stderr.write(f"cowfs: {exc.strerror or exc}{where}\n")
        return 1, False


def entry() -> NoReturn:
    """Run main() and exit with its code (``python -m cowfs.cli``, ``python -m cowfs``)."""
    code, fast = _main(None, process_start=True)
    if fast:
        _fast_exit(code)
    raise SystemExit(code)


def _fast_exit(code: int) -> None:
    """Exit without the interpreter's teardown of every module (~8-10 ms once the run
    path's ~150 modules are loaded: a tenth of ``cowfs run --rm IMAGE true``).

    Only when safe, else it returns and the normal exit follows: the main thread is the
    only one (no thread is joined at exit), stdout and stderr flush cleanly, and the
    atexit handlers (``logging.shutdown``, ``weakref.finalize``) have run. What is skipped
    is module teardown and the ``__del__`` of objects still alive; commands that set
    ``fast_exit`` close what they open.
    """
    if threading.active_count() != 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # the normal exit reports it as before
    atexit._run_exitfuncs()
    os._exit(code)
