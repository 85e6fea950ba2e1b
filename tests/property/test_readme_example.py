"""The README's "Property-test your overlay" example is real: extracted and run by pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_fuse, pytest.mark.needs_overlay]


def _example() -> str:
    text = README.read_text()
    section = text.split("## Property-test your overlay", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python example in its property-test section"
    return match.group(1)


def test_readme_example_is_short() -> None:
    assert len(_example().strip().splitlines()) < 15


def test_readme_example_runs_and_passes(tmp_path: Path) -> None:
    (tmp_path / "test_my_overlay.py").write_text(_example())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "test_my_overlay.py"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=280, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout
