"""The foundation: errors carry exit codes, the CLI gives one-line errors, format is sane."""

from __future__ import annotations

import stat
import subprocess
import sys

from cowfs import errors, format as fmt


def _cowfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cowfs", *args], capture_output=True,
                          text=True, check=False)


def test_every_error_has_distinct_meaningful_exit_code() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.CowfsError)]
    assert len(classes) > 8
    for cls in classes:
        assert cls.exit_code != 0
        assert cls.__doc__, f"{cls.__name__} has no docstring"


def test_cli_help_lists_commands() -> None:
    r = _cowfs("--help")
    assert r.returncode == 0
    assert "version" in r.stdout


def test_cli_unknown_command_is_one_clean_line() -> None:
    r = _cowfs("frobnicate")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cowfs: ") and "frobnicate" in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_version_json() -> None:
    r = _cowfs("version", "--json")
    assert r.returncode == 0
    assert '"cowfs"' in r.stdout


def test_whiteout_predicates() -> None:
    assert fmt.is_whiteout_stat(stat.S_IFCHR, 0)
    assert not fmt.is_whiteout_stat(stat.S_IFCHR, 1)
    assert not fmt.is_whiteout_stat(stat.S_IFREG, 0)
    assert fmt.is_wh_name(b".wh.foo") and not fmt.is_wh_name(b"foo.wh.")
    assert fmt.is_hidden_xattr(b"trusted.overlay.opaque")
    assert fmt.is_hidden_xattr(b"user.overlay.redirect")
    assert not fmt.is_hidden_xattr(b"user.mime_type")
    assert fmt.opaque_xattr(True) == b"user.overlay.opaque"
    assert fmt.opaque_xattr(False) == b"trusted.overlay.opaque"


