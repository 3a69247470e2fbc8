"""User-facing exceptions: each carries a one-line message and the process exit code."""

from __future__ import annotations


class ResshiftError(Exception):
    """An error the user can act on; `str(err)` is the one-line message shown by the CLI."""

    exit_code: int = 1


class UsageError(ResshiftError):
    """Wrong options or arguments (exit code 2, like Typer's own usage errors)."""

    exit_code = 2


class ModelError(ResshiftError):
    """A model folder or weight file that cannot be used (missing, corrupt, wrong architecture)."""


class DownloadError(ResshiftError):
    """Weights could not be fetched (no network, offline mode, not found, disk full)."""


class ImageError(ResshiftError):
    """An input image that cannot be read, or an output that cannot be written."""


class DeviceError(ResshiftError):
    """The requested device or precision is not available, or ran out of memory for good."""
