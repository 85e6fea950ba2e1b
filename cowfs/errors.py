"""Exception types of cowfs and the exit codes the CLI maps them to.

Owns: the `CowfsError` hierarchy. Must not import anything from cowfs.
Every class docstring says who raises it and when; the CLI prints
``cowfs: <message>`` on one line and exits with ``exit_code``.
"""

from __future__ import annotations


class CowfsError(Exception):
    """Base of every error cowfs reports to a user (one line, no traceback)."""

    exit_code: int = 1
    traceback: bool = False


class UsageError(CowfsError):
    """Raised by the CLI and the API for a bad argument or option."""

    exit_code = 2


class NotFound(CowfsError):
    """Raised when a named image, layer, container, volume or mount does not exist."""

    exit_code = 3


class Conflict(CowfsError):
    """Raised when an operation conflicts with existing state (image in use, name taken)."""

    exit_code = 4


class StoreError(CowfsError):
    """Raised by the layer store for an invalid or unreadable store."""

    exit_code = 5


class CorruptLayer(StoreError):
    """Raised when a layer's content or metadata is invalid (bad tar, hostile path)."""


class HostileInput(CorruptLayer):
    """Raised when an archive tries to escape its root (traversal, link escape, bomb)."""


class DigestMismatch(StoreError):
    """Raised when content does not hash to the digest that names it."""


class BadImage(StoreError):
    """Raised when an image archive, layout, manifest or config is malformed."""


class MountError(CowfsError):
    """Raised by the backends when a mount or unmount fails."""

    exit_code = 6


class BackendUnavailable(MountError):
    """Raised when the requested backend cannot run here (with the reason)."""


class RunError(CowfsError):
    """Raised by the run module when a container cannot be set up or started."""

    exit_code = 7


class RegistryError(CowfsError):
    """Raised by the registry client for protocol, auth or transfer failures."""

    exit_code = 8


class BuildError(CowfsError):
    """Raised by `cowfs build` for a bad Dockerfile or a failing step."""

    exit_code = 9
