"""TIFF: the encoder (deflate with predictor; ICC, EXIF, XMP, dpi) and the orientation patch for decoding."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image, TiffImagePlugin

from resshift_cli.images.exif import ORIENTATION, SUB_IFDS, TIFF_LAYOUT_TAGS
from resshift_cli.images.picture import Metadata

_TIFF_STRIP_BYTES = 1 << 16


def tiff_with_orientation_1(data: bytes) -> bytes:
    """A copy of a TIFF whose first IFD says Orientation 1, so decoders leave the pixels as stored
    (Pillow and OpenCV rotate TIFFs themselves; we orient every format the same way afterwards)."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        big = struct.unpack_from(order + "H", data, 2)[0] == 43
        count_format, entry_size, value_at = ("Q", 20, 12) if big else ("H", 12, 8)
        first = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
        count = struct.unpack_from(order + count_format, data, first)[0]
        start = first + struct.calcsize(count_format)
        patched = bytearray(data)
        for entry in range(start, start + count * entry_size, entry_size):
            tag, kind = struct.unpack_from(order + "HH", data, entry)
            if tag == ORIENTATION and kind in (3, 4):
                struct.pack_into(order + ("H" if kind == 3 else "I"), patched, entry + value_at, 1)
    except struct.error:
        return data
    return bytes(patched)


def _tiff_strips(samples: np.ndarray) -> tuple[list[bytes], int]:
    """Deflate-compressed strips of horizontally differenced samples (TIFF predictor 2), rows per strip."""
    height, width, channels = samples.shape
    little = samples.astype(samples.dtype.newbyteorder("<"), copy=False)
    rows = max(1, _TIFF_STRIP_BYTES // (width * channels * samples.dtype.itemsize))
    strips = []
    for top in range(0, height, rows):
        block = little[top : top + rows].copy()
        block[:, 1:] -= little[top : top + rows, :-1]
        strips.append(zlib.compress(block.tobytes(), 6))
    return strips, rows


def _tiff_exif_tags(ifd: TiffImagePlugin.ImageFileDirectory_v2, exif: bytes | None) -> None:
    """Copy EXIF IFD0 tags (except layout tags) and the Exif/GPS sub-IFDs into a TIFF IFD."""
    if not exif:
        return
    data = Image.Exif()
    data.load(exif)
    for tag, value in data.items():
        if tag not in TIFF_LAYOUT_TAGS:
            ifd[tag] = data.get_ifd(tag) if tag in SUB_IFDS else value


def _tiff_layout_tags(
    ifd: TiffImagePlugin.ImageFileDirectory_v2, samples: np.ndarray, strips: list[bytes], rows: int
) -> None:
    """Baseline tags for interleaved unsigned samples, deflate with predictor, unassociated alpha."""
    height, width, channels = samples.shape
    offsets = np.cumsum([0] + [len(s) for s in strips[:-1]])
    ifd[256], ifd[257] = width, height
    ifd[258] = (samples.dtype.itemsize * 8,) * channels
    ifd[259], ifd[262], ifd[277], ifd[278] = 8, 1 if channels <= 2 else 2, channels, rows
    ifd[273] = tuple(int(o) for o in offsets)  # relative: tobytes() adds the position after the IFD
    ifd[279] = tuple(len(s) for s in strips)
    ifd[284], ifd[317], ifd[339] = 1, 2, (1,) * channels
    if channels in (2, 4):
        ifd[338] = 2


def encode_tiff(samples: np.ndarray, metadata: Metadata, quality: int) -> bytes:
    """A little-endian TIFF of (H, W, C) uint8/uint16 samples with ICC, EXIF, XMP and dpi."""
    strips, rows = _tiff_strips(samples)
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    _tiff_exif_tags(ifd, metadata.exif)
    _tiff_layout_tags(ifd, samples, strips, rows)
    if metadata.icc_profile:
        ifd[34675] = metadata.icc_profile
    if metadata.xmp:
        ifd[700] = metadata.xmp
    if metadata.dpi is not None:
        ifd[282], ifd[283], ifd[296] = float(metadata.dpi[0]), float(metadata.dpi[1]), 2
    return b"II*\0" + struct.pack("<I", 8) + ifd.tobytes(8) + b"".join(strips)
