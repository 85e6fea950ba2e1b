"""The FUSE-free overlay core: kernel overlayfs semantics on real directories.

Synchronous and single-threaded; speaks errno (``OSError``). Must not import
trio, pyfuse3, or any other cowfs part above ``format``/``errors``/``_sys``.
See docs/CONTRACTS.md §1 for the API and docs/overlay-semantics.md for decisions.
"""

from __future__ import annotations

from cowfs.overlay.modify import Overlay as Overlay
from cowfs.overlay.node import ROOT_INO as ROOT_INO
from cowfs.overlay.ops import Caller as Caller

__all__ = ["ROOT_INO", "Caller", "Overlay"]
