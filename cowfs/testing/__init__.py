"""Public hypothesis toolkit that property-tests overlay implementations (SPEC §9).

``OverlayMachine`` applies random operations to an implementation (through an
``Adapter``) and to ``Model``, the executable specification of kernel overlayfs
semantics, comparing merged trees, errnos and the upper dir's on-disk format.
``strategies`` draws layer stacks; ``script`` renders a failing run as a shell
script. See docs/testing-toolkit.md.
"""

from __future__ import annotations

from .adapters import (
    Adapter as Adapter,
    CowfsFuseAdapter as CowfsFuseAdapter,
    DriverAdapter as DriverAdapter,
    Fs as Fs,
    KernelAdapter as KernelAdapter,
    MountedFs as MountedFs,
    ProgramAdapter as ProgramAdapter,
)
from .core import CoreAdapter as CoreAdapter
from .layers import check_upper as check_upper, write_layer as write_layer
from .machine import Divergence as Divergence, OverlayMachine as OverlayMachine
from .model import Model as Model
from .runner import CheckResult as CheckResult, replay as replay, run_check as run_check
from .strategies import Stack as Stack, layer as layer, stacks as stacks

__all__ = [
    "Adapter", "CheckResult", "CoreAdapter", "CowfsFuseAdapter", "Divergence",
    "DriverAdapter", "Fs", "KernelAdapter", "Model", "MountedFs", "OverlayMachine",
    "ProgramAdapter", "Stack", "check_upper", "layer", "replay", "run_check", "stacks",
    "write_layer",
]
