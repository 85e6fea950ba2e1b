"""cowfs benchmarks: cowfs (FUSE and kernel backends) beside kernel overlayfs and fuse-overlayfs.

Run with ``make bench`` or ``python -m benchmarks --help``. See ``benchmarks/README.md`` and
``docs/performance.md`` for the method.
"""
