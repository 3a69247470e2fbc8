"""PNG chunks: the colour-space chunks we read, and the encoder (16-bit, gray + alpha, metadata)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from resshift_cli.images.picture import Metadata

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
PNG_SKIPPED_TEXT = frozenset({"XML:com.adobe.xmp", "Raw profile type exif", "Raw profile type APP1"})
_PNG_BLOCK_BYTES = 1 << 22


def read_colour_chunks(image: Image.Image) -> tuple[tuple[bytes, bytes], ...]:
    """A PNG's gAMA, cHRM and sRGB chunks, rebuilt from what Pillow parsed (values in 1/100000)."""
    info, chunks = image.info, []
    if isinstance(info.get("gamma"), (int, float)):
        chunks.append((b"gAMA", struct.pack(">I", round(info["gamma"] * 100000))))
    chromaticity = info.get("chromaticity")
    if isinstance(chromaticity, tuple) and len(chromaticity) == 8:
        chunks.append((b"cHRM", struct.pack(">8I", *(round(v * 100000) for v in chromaticity))))
    if isinstance(info.get("srgb"), int):
        chunks.append((b"sRGB", bytes([info["srgb"]])))
    return tuple(chunks)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """length, type, data, CRC-32 of type + data."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_text_chunk(key: str, value: str) -> bytes:
    """tEXt when the value is Latin-1, else iTXt (UTF-8); the keyword is Latin-1, at most 79 bytes."""
    keyword = key.encode("latin-1", "replace")[:79]
    try:
        return _png_chunk(b"tEXt", keyword + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        return _png_chunk(b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8"))


def _png_metadata_chunks(metadata: Metadata) -> Iterator[bytes]:
    """gAMA/cHRM/sRGB, iCCP, pHYs, eXIf, XMP iTXt and text chunks, all placed before IDAT (an sRGB chunk
    is left out when an ICC profile is written: the PNG specification allows only one of them)."""
    for kind, payload in metadata.colour_chunks:
        if not (kind == b"sRGB" and metadata.icc_profile):
            yield _png_chunk(kind, payload)
    if metadata.icc_profile:
        yield _png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(metadata.icc_profile))
    if metadata.dpi is not None:
        per_metre = [round(v / 0.0254) for v in metadata.dpi]
        yield _png_chunk(b"pHYs", struct.pack(">IIB", *per_metre, 1))
    if metadata.exif:
        yield _png_chunk(b"eXIf", metadata.exif.removeprefix(b"Exif\0\0"))
    if metadata.xmp:
        yield _png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + metadata.xmp)
    for key, value in metadata.text.items():
        yield _png_text_chunk(key, value)


def _paeth_filtered(rows: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """(n, stride) uint8 scanlines -> (n, 1 + stride) with filter type 4 (Paeth) applied."""
    x = rows.astype(np.int16)
    b = np.vstack([above.astype(np.int16)[None], x[:-1]])
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)
    c[:, bpp:] = b[:, :-bpp]
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    predictor = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    filtered = ((x - predictor) & 0xFF).astype(np.uint8)
    return np.hstack([np.full((len(rows), 1), 4, np.uint8), filtered])


def _png_idat_chunks(samples: np.ndarray) -> Iterator[bytes]:
    """IDAT chunks of (H, W, C) samples, filtered and compressed a block of rows at a time."""
    height, _, channels = samples.shape
    rows = samples.astype(samples.dtype.newbyteorder(">"), copy=False).reshape(height, -1).view(np.uint8)
    bpp = channels * samples.dtype.itemsize
    step = max(1, _PNG_BLOCK_BYTES // rows.shape[1])
    compressor = zlib.compressobj(6)
    above = np.zeros(rows.shape[1], np.uint8)
    for top in range(0, height, step):
        block = rows[top : top + step]
        compressed = compressor.compress(_paeth_filtered(block, above, bpp).tobytes())
        above = block[-1]
        if compressed:
            yield _png_chunk(b"IDAT", compressed)
    yield _png_chunk(b"IDAT", compressor.flush())


def encode_png(samples: np.ndarray, metadata: Metadata, quality: int) -> bytes:
    """A PNG of (H, W, C) uint8/uint16 samples with metadata; `quality` is unused (lossless)."""
    height, width, channels = samples.shape
    header = struct.pack(
        ">IIBBBBB", width, height, samples.dtype.itemsize * 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0
    )
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", header), *_png_metadata_chunks(metadata)]
    parts += [*_png_idat_chunks(samples), _png_chunk(b"IEND", b"")]
    return b"".join(parts)
