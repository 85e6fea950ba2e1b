"""The README's library example runs as written (paths swapped for temp ones)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.layers import LayerTar

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_overlay]


def _example() -> str:
    text = README.read_text()
    section = text.split("## Library", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README has no python block under '## Library'"
    return m.group(1)


def test_readme_library_example_runs(tmp_path: Path) -> None:
    layer = LayerTar().dir("etc").file("etc/motd", b"welcome\n")
    (tmp_path / "busybox.tar").write_bytes(bytes(layer))
    for d in ("up", "work"):
        (tmp_path / d).mkdir()
    code = (_example().replace("/var/lib/cowfs", str(tmp_path / "store"))
            .replace('"busybox.tar"', repr(str(tmp_path / "busybox.tar")))
            .replace("/srv/up", str(tmp_path / "up")).replace("/srv/work", str(tmp_path / "work")))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] in ("kernel", "fuse")
    # the append was copied up into the upper dir, the layer is untouched
    assert (tmp_path / "up" / "etc" / "motd").read_text() == "welcome\nhello\n"
    store_layers = list((tmp_path / "store" / "layers").glob("*/diff/etc/motd"))
    assert [p.read_text() for p in store_layers] == ["welcome\n"]
