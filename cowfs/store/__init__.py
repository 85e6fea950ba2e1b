"""The content-addressed layer store: import, unpack, export, gc (SPEC §2).

Public surface (docs/CONTRACTS.md §3): `open_store`, `Store`, `Image`, `Layer`,
`ProgressEvent`. The extractor lives in `cowfs.store.unpack` (CONTRACTS §2).
"""

from __future__ import annotations

from .refs import normalize_ref as normalize_ref
from .store import (
    Image as Image,
    Layer as Layer,
    ProgressEvent as ProgressEvent,
    Store as Store,
    open_store as open_store,
)
