"""The FUSE-free overlay core: kernel overlayfs semantics on real directories.

Synchronous and single-threaded; speaks errno (``OSError``). Must not import
trio, pyfuse3, or any other cowfs part above ``format``/``errors``/``_sys``.
"""
