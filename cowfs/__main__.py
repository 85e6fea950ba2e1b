"""``python -m cowfs``: the same as the ``cowfs`` console script."""

from __future__ import annotations

from .cli import entry

entry()
