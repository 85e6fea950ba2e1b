"""cowfs: copy-on-write storage for container root filesystems.

Public API only: explicit re-exports of the library's entry points.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (
    CowfsError as CowfsError,
)
