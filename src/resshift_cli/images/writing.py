"""Writing: Picture → file bytes (PNG, TIFF here; JPEG, WebP through Pillow), atomically or to a stream."""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from resshift_cli.errors import ImageError, UsageError
from resshift_cli.fileio import atomic_write
from resshift_cli.images.exif import output_exif, set_xmp_property
from resshift_cli.images.formats import (
    GRAY_FORMATS,
    MAX_SIDE,
    check_bit_depth,
    format_for,
    holds_16_bit,
    same_file,
)
from resshift_cli.images.picture import Metadata, Picture, icc_space, luma
from resshift_cli.images.png import encode_png
from resshift_cli.images.tiff import encode_tiff

_PILLOW_NAMES = {"jpg": "JPEG", "webp": "WEBP"}


def write_picture(
    p: Picture,
    target: Path | BinaryIO,
    fmt: str | None = None,
    quality: int = 95,
    bit_depth: int | None = None,
    text: Mapping[str, str] | None = None,
) -> None:
    """Encode `p` and write it atomically to a path (or to a binary stream such as stdout).

    fmt: "png" | "jpg" | "webp" | "tiff"; None: from the path's suffix, "png" for a stream.
    quality: 1..100 for jpg/webp (webp 100 is lossless); png and tiff are always lossless.
    bit_depth: 8 or 16; None keeps the source's depth where the format holds it (png, tiff).
    text: provenance written as PNG text chunks, and as EXIF Software (key "software") and
        ImageDescription ("key=value; ...", only when the source has none) in every format.
    """
    is_path = isinstance(target, (str, os.PathLike))
    name = format_for(Path(target), fmt) if is_path else format_for(Path("-"), fmt or "png")
    label = str(target) if is_path else "<stdout>"
    if is_path and p.source is not None and same_file(p.source, Path(target)):
        raise ImageError(f"{label}: is the input file; choose another output path")
    data = _encode_picture(p, name, quality=quality, bit_depth=bit_depth, text=text, label=label)
    if is_path:
        _write_atomically(Path(target), data, label)
    else:
        _write_stream(target, data, label)


def _encode_picture(
    p: Picture,
    fmt: str,
    quality: int = 95,
    bit_depth: int | None = None,
    text: Mapping[str, str] | None = None,
    label: str = "<output>",
) -> bytes:
    """The encoded file contents of `p` in output format `fmt` (see write_picture for the options)."""
    if not 1 <= quality <= 100:
        raise UsageError(f"quality must be between 1 and 100, got {quality}")
    depth = _output_depth(p, fmt, bit_depth, label)
    keep_alpha = _keep_alpha(p, fmt, label)
    _refuse_oversize(p, fmt, label)
    samples = _output_samples(p, depth, _writes_gray(p, fmt, depth, keep_alpha), keep_alpha)
    metadata = _output_metadata(p, fmt, samples, dict(text or {}))
    try:
        return _ENCODERS[fmt](samples, metadata, quality)
    except (OSError, ValueError, struct.error, zlib.error) as err:
        raise ImageError(f"{label}: cannot encode as {fmt.upper()} ({err})") from err


def _output_depth(p: Picture, fmt: str, bit_depth: int | None, label: str) -> int:
    """Requested depth, else the source's where the format holds it; 16-bit jpg/webp is refused."""
    if bit_depth is None:
        return 16 if p.bit_depth == 16 and holds_16_bit(fmt) else 8
    if bit_depth not in (8, 16):
        raise UsageError(f"bit depth must be 8 or 16, got {bit_depth}")
    check_bit_depth(fmt, bit_depth, label)
    return bit_depth


def _keep_alpha(p: Picture, fmt: str, label: str) -> bool:
    """Whether to write the alpha channel; JPEG accepts only an alpha that is opaque everywhere."""
    if p.alpha is None:
        return False
    if fmt != "jpg":
        return True
    if np.rint(p.alpha.min() * 255) >= 255:
        return False
    raise ImageError(f"{label}: JPEG cannot store transparency; write png, webp or tiff instead")


def _refuse_oversize(p: Picture, fmt: str, label: str) -> None:
    """JPEG and WebP have a maximum side length."""
    limit = MAX_SIDE.get(fmt)
    if limit is not None and max(p.height, p.width) > limit:
        raise ImageError(
            f"{label}: {p.width}×{p.height} is too large for {fmt.upper()} (at most {limit} pixels a side);"
            " write png or tiff instead"
        )


def _writes_gray(p: Picture, fmt: str, depth: int, keep_alpha: bool) -> bool:
    """One colour channel for grayscale pictures, except in WebP (always colour) and 16-bit gray+alpha
    TIFF (written as RGBA because Pillow cannot read it back)."""
    if not p.grayscale or fmt not in GRAY_FORMATS:
        return False
    return not (fmt == "tiff" and depth == 16 and keep_alpha)


def quantise(values: np.ndarray, depth: int) -> np.ndarray:
    """float in [0, 1] -> uint8 round(x*255) or uint16 round(x*65535), clipped."""
    top = 65535.0 if depth == 16 else 255.0
    scaled = np.multiply(values, np.float32(top), dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0.0, top, out=scaled)
    return scaled.astype(np.uint16 if depth == 16 else np.uint8)


def _output_samples(p: Picture, depth: int, gray: bool, keep_alpha: bool) -> np.ndarray:
    """(H, W, C) uint8/uint16 with C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA."""
    colour = luma(p.rgb)[..., None] if gray else p.rgb
    if colour.ndim != 3 or colour.shape[2] not in (1, 3):
        raise ValueError(f"rgb must have shape (H, W, 3), got {p.rgb.shape}")
    channels = colour.shape[2] + keep_alpha
    out = np.empty((*colour.shape[:2], channels), dtype=np.uint16 if depth == 16 else np.uint8)
    out[..., : colour.shape[2]] = quantise(colour, depth)
    if keep_alpha and p.alpha is not None:
        out[..., -1] = quantise(p.alpha, depth)
    return out


def _output_metadata(p: Picture, fmt: str, samples: np.ndarray, text: dict[str, str]) -> Metadata:
    """Metadata for the written file: ICC if it matches, EXIF/XMP with the output size, merged text."""
    height, width, channels = samples.shape
    kind = b"GRAY" if channels <= 2 else b"RGB "
    source = p.metadata
    exif = output_exif(source.exif, width, height, text, create=fmt != "png")
    xmp = source.xmp
    if xmp is not None:
        xmp = set_xmp_property(xmp, b"exif:PixelXDimension", width)
        xmp = set_xmp_property(xmp, b"exif:PixelYDimension", height)
    return replace(
        source,
        icc_profile=source.icc_profile if icc_space(source.icc_profile) == kind else None,
        exif=exif,
        xmp=xmp,
        text={**source.text, **text},
    )


def _encode_with_pillow(samples: np.ndarray, metadata: Metadata, quality: int, fmt: str) -> bytes:
    """JPEG (4:4:4, optimised) or WebP (lossless at quality 100; colours under transparent pixels
    kept) of 8-bit samples with metadata."""
    image = Image.fromarray(samples[..., 0] if samples.shape[2] == 1 else samples)
    options: dict[str, object] = {"quality": quality}
    if metadata.icc_profile:
        options["icc_profile"] = metadata.icc_profile
    if metadata.exif:
        options["exif"] = metadata.exif
    if metadata.xmp:
        options["xmp"] = metadata.xmp
    if fmt == "jpg":
        options.update(subsampling=0, optimize=True)
        if metadata.dpi is not None:
            options["dpi"] = metadata.dpi
        if "Comment" in metadata.text:
            options["comment"] = metadata.text["Comment"]
    else:
        options.update(lossless=quality >= 100, exact=True)
    buffer = io.BytesIO()
    image.save(buffer, _PILLOW_NAMES[fmt], **options)
    return buffer.getvalue()


def _encode_jpeg(samples: np.ndarray, metadata: Metadata, quality: int) -> bytes:
    """JPEG of (H, W, 1 or 3) uint8 samples."""
    return _encode_with_pillow(samples, metadata, quality, "jpg")


def _encode_webp(samples: np.ndarray, metadata: Metadata, quality: int) -> bytes:
    """WebP of (H, W, 3 or 4) uint8 samples."""
    return _encode_with_pillow(samples, metadata, quality, "webp")


_ENCODERS = {"png": encode_png, "tiff": encode_tiff, "jpg": _encode_jpeg, "webp": _encode_webp}


def _write_atomically(target: Path, data: bytes, label: str) -> None:
    """Write `data` through `fileio.atomic_write`: on any failure `target` is left as it was."""
    try:
        with atomic_write(target) as temporary:
            temporary.write_bytes(data)
    except OSError as err:
        raise ImageError(f"{label}: cannot write ({err.strerror or err})") from err


def _write_stream(stream: BinaryIO, data: bytes, label: str) -> None:
    """Write to an open binary stream (stdout); a closed pipe is left to the caller."""
    try:
        stream.write(data)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        raise ImageError(f"{label}: cannot write ({err.strerror or err})") from err
