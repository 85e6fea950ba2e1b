"""Separate sections run by the same command: layer unpack and ``run --rm true`` latency.

Owns finding and calling the functions other engineers expose in ``benchmarks.unpack`` and
``benchmarks.run_latency`` (when those modules exist) and catching their failures, so the
overlay benchmark never depends on them. It must not implement those benchmarks itself.

Calling convention: the first of ``SECTION_FUNCS`` the module defines is called with the
keyword arguments its signature accepts among ``work`` (a scratch dir, Path), ``rounds``,
``scale``, ``backing`` (``"tmpfs"``/``"disk"``) and ``log`` (a ``print``-like callable). It
returns something JSON-serializable; a dict with ``rows`` (a list of dicts) or
``markdown`` (a string) is rendered as a table or as-is in RESULTS.md.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTIONS = {"unpack": "benchmarks.unpack", "run": "benchmarks.run_latency"}
SECTION_FUNCS = ("run", "bench", "benchmark", "run_benchmark", "main")


def _find(mod: Any) -> Callable[..., Any] | None:
    for name in SECTION_FUNCS:
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def run_section(name: str, work: Path, *, rounds: int, scale: float, backing: str,
                log: Callable[[str], None]) -> dict[str, Any]:
    modname = SECTIONS[name]
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            return {"unavailable": f"{modname} does not exist yet"}
        return {"unavailable": f"{modname} does not import: {exc}"}
    except Exception as exc:
        return {"unavailable": f"{modname} does not import: {type(exc).__name__}: {exc}"}
    fn = _find(mod)
    if fn is None:
        return {"unavailable": f"{modname} defines none of {SECTION_FUNCS}"}
    offered: dict[str, Any] = {"work": work, "rounds": rounds, "scale": scale,
                               "backing": backing, "log": log}
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in params}
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = fn(**kwargs)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(traceback.format_exc(), file=sys.stderr)
        return {"unavailable": f"{modname}.{fn.__name__} failed: {type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        json.dumps(result)
    except TypeError:
        result = json.loads(json.dumps(result, default=str))
    return {"function": f"{modname}.{fn.__name__}", "result": result,
            "seconds": time.perf_counter() - t0}
