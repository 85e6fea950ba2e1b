"""Build images from a Dockerfile subset with a layer cache (``cowfs build``).

Public surface: `build` (run a build into a store) and `BuildResult`.
"""

from __future__ import annotations

from .builder import Builder as Builder, BuildResult as BuildResult, StepResult as StepResult

__all__ = ["Builder", "BuildResult", "StepResult"]
