"""Choose a backend (kernel or FUSE) and mount; the `Mount` protocol."""

from __future__ import annotations
