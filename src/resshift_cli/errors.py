"""User-facing exceptions: each carries a one-line message and the process exit code."""

from __future__ import annotations


def first_line(err: BaseException, text: str | None = None) -> str:
    """The first non-blank line of `text` (default: the error's message), stripped; the error's type name
    when there is none. Library errors often span several lines; ours are one."""
    lines = (line.strip() for line in (str(err) if text is None else text).splitlines())
    return next((line for line in lines if line), type(err).__name__)


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines included) folded into one space."""
    return " ".join(message.split())


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
