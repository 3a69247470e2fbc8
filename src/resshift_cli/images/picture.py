"""A decoded picture and its metadata: the record every reader fills and every writer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights (what Pillow's L conversion uses)."""


@dataclass(frozen=True)
class Metadata:
    """Everything besides pixels that is read from a source and written to an output.

    icc_profile: ICC profile matching the pixels' colour space, or None.
    exif: EXIF block ("Exif\\0\\0" + TIFF structure) with Orientation 1 and no thumbnail, or None.
    xmp: XMP packet with tiff:Orientation 1, or None.
    text: textual metadata of the source (PNG text chunks, JPEG comment as "Comment").
    dpi: (horizontal, vertical) dots per inch of the source, or None.
    colour_chunks: PNG colour-space chunks of the source (gAMA, cHRM, sRGB) as (type, payload).
    """

    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)
    dpi: tuple[float, float] | None = None
    colour_chunks: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, eq=False)
class Picture:
    """A decoded image and everything needed to write it back without loss.

    rgb: (H, W, 3) float32 in [0, 1], EXIF orientation applied; a grayscale picture holds its luma
        in all three channels.
    alpha: (H, W) float32 in [0, 1] (0 = transparent), or None.
    grayscale: the source had one colour channel (1, L, LA, I;16, ...); outputs keep one where they can.
    bit_depth: 8 or 16, bits per sample of the source (float and 32-bit integer sources count as 16).
    format: Pillow's name of the source format ("PNG", "JPEG", "WEBP", "TIFF", "BMP", ...).
    metadata: ICC, EXIF, XMP, text, dpi and PNG colour chunks that still describe the pixels.
    source: the file it was read from (None for stdin); write_picture refuses to overwrite it.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool = False
    bit_depth: int = 8
    format: str = "PNG"
    metadata: Metadata = field(default_factory=Metadata)
    source: Path | None = None

    @property
    def height(self) -> int:
        """Rows of pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Columns of pixels."""
        return int(self.rgb.shape[1])


@dataclass(frozen=True)
class Samples:
    """Decoded samples before conversion: (H, W, C) uint8/uint16/float32, C = 1 gray, 2 gray+alpha,
    3 RGB, 4 RGBA, not yet oriented."""

    array: np.ndarray
    bit_depth: int
    icc_kind: bytes


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) float32 ITU-R BT.601 luma (what Pillow's L conversion uses)."""
    return np.dot(rgb, LUMA).astype(np.float32, copy=False)


def icc_space(icc: bytes | None) -> bytes | None:
    """The data colour space signature of an ICC profile (b"RGB ", b"GRAY", b"CMYK", ...)."""
    return icc[16:20] if icc is not None and len(icc) >= 20 else None
