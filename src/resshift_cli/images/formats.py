"""Which formats we write, what each can hold, and the output format of a path."""

from __future__ import annotations

import os
from pathlib import Path

from resshift_cli.errors import UsageError

FORMATS: dict[str, str] = {
    "png": "png",
    "jpg": "jpg",
    "jpeg": "jpg",
    "webp": "webp",
    "tif": "tiff",
    "tiff": "tiff",
}
"""File suffix (or --format value), lower case without the dot -> output format name."""

OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpg", "webp", "tiff")
"""The output format names we write (the values of `FORMATS`)."""

DEEP_FORMATS = frozenset({"png", "tiff"})
"""Output formats that hold 16 bits per sample; JPEG and WebP hold 8."""

GRAY_FORMATS = frozenset({"png", "tiff", "jpg"})
"""Output formats that store a single colour channel (WebP is always colour)."""

MAX_SIDE = {"jpg": 65_535, "webp": 16_383}
"""Largest side in pixels of the formats that have a limit."""


def holds_16_bit(fmt: str) -> bool:
    """Whether output format `fmt` can store 16 bits per sample (the "16-bit needs png or tiff" rule)."""
    return fmt in DEEP_FORMATS


def check_bit_depth(fmt: str, bit_depth: int | None, label: str, asked: str = "16-bit output") -> None:
    """UsageError naming `label` when 16 bits per sample (`asked`, as the caller spells the request) are
    asked of a format that holds 8 (`holds_16_bit`)."""
    if bit_depth == 16 and not holds_16_bit(fmt):
        raise UsageError(f"{label}: {fmt.upper()} holds 8 bits per channel; {asked} needs png or tiff")


def format_for(path: Path, fmt: str | None) -> str:
    """Output format name ("png", "jpg", "webp", "tiff") from `fmt`, else from the suffix of `path`."""
    key = (fmt if fmt is not None else path.suffix.lstrip(".")).lower()
    if key in FORMATS:
        return FORMATS[key]
    choices = ", ".join(sorted(OUTPUT_FORMATS))
    if fmt is not None:
        raise UsageError(f"unknown output format {fmt!r}; choose one of {choices}")
    if not key:
        raise UsageError(f"{path}: no file suffix to tell the output format; add one or pass --format")
    raise UsageError(f"{path}: cannot write .{key} files; choose one of {choices}")


def same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` name the same file (links and `..` resolved); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
