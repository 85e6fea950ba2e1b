"""cowfs: copy-on-write storage for container root filesystems.

Public API only: explicit re-exports of the library's entry points.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from .errors import (
    CowfsError as CowfsError,
)

if TYPE_CHECKING:
    from .driver import (
        Mount as Mount,
        mount as mount,
    )
    from .overlay import Overlay as Overlay
    from .store import open_store as open_store

_LAZY = {"Mount": "driver", "mount": "driver", "open_store": "store", "Overlay": "overlay"}
"""Re-exports loaded on first use: cowfs.fuse (a layer below the driver) imports this
package for ``__version__``, so a static import here would make it import the driver
(and the store, with its decompressors, for every ``import cowfs``)."""


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cowfs' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
