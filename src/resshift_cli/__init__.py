"""resshift-cli: a command-line image upscaler built on ResShift (Yue et al., NeurIPS 2023).

From Python: `from resshift_cli import Upscaler` (see `resshift_cli.api`). The public names are imported
on first use, so `import resshift_cli` stays cheap (no torch) for tools that only read `__version__`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("resshift-cli")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from resshift_cli.api import Provenance, Result, Upscaler

__all__ = ["Provenance", "Result", "Upscaler", "__version__"]

_PUBLIC = frozenset({"Provenance", "Result", "Upscaler"})


def __getattr__(name: str) -> object:
    """The public classes of `resshift_cli.api`, imported when first asked for."""
    if name in _PUBLIC:
        from resshift_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'resshift_cli' has no attribute {name!r}")
