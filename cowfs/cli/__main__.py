"""``python -m cowfs.cli``."""

from __future__ import annotations

from . import entry

entry()
