"""Lossless image input and output: orientation, ICC/EXIF/XMP, alpha, grayscale and 16-bit handled.

Reading decodes with Pillow; colour sources with 16 bits per sample (16-bit RGB/RGBA/LA PNG and
TIFF) are decoded with OpenCV because Pillow reduces them to 8 bits. PNG and TIFF are encoded here
(so 16-bit colour, gray + alpha and all metadata chunks are written the same way at both depths);
JPEG and WebP are encoded with Pillow.

Choices made here:
- 32-bit float ("F") samples are used as they are when all lie in [0, 1] (read as 16-bit), else refused;
  32-bit integer ("I") samples are read as 16-bit when all lie in 0..65535, else refused.
- CMYK is converted to sRGB through its embedded ICC profile (Pillow's formula without one) and the
  CMYK profile is dropped. An ICC profile whose colour space does not match the pixels is dropped.
- A TIFF whose extra pages are all reduced-resolution previews, and an MPO (camera JPEG with preview
  frames), are read as their first image; any other multi-frame input is refused.
- EXIF is re-serialised with Orientation 1 and without its IFD1 thumbnail; pixel-dimension tags in
  EXIF and XMP are set to the output size when written. DPI is kept as it is (like ImageMagick).
- Writing to JPEG drops an alpha channel only when it is fully opaque; otherwise it is refused.
- 16-bit gray + alpha is written to TIFF as RGBA (neither Pillow nor OpenCV reads 16-bit gray+alpha
  TIFF, so such inputs are refused with a hint); PNG keeps it as gray + alpha.
- Reading switches off Pillow's own pixel limit (--max-pixels replaces it) and forces
  LOAD_TRUNCATED_IMAGES off, restoring both afterwards; not safe to call from several threads.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFile, TiffImagePlugin, UnidentifiedImageError

from resshift_cli.errors import ImageError, UsageError
from resshift_cli.fileio import atomic_write

DEFAULT_MAX_PIXELS: int = 256_000_000
"""Inputs with more pixels than this are refused before decoding (the CLI's --max-pixels default)."""

FORMATS: dict[str, str] = {
    "png": "png",
    "jpg": "jpg",
    "jpeg": "jpg",
    "webp": "webp",
    "tif": "tiff",
    "tiff": "tiff",
}
"""File suffix (or --format value), lower case without the dot -> output format name."""

_DEEP_FORMATS = frozenset({"png", "tiff"})
_GRAY_FORMATS = frozenset({"png", "tiff", "jpg"})
_MAX_SIDE = {"jpg": 65_535, "webp": 16_383}
_PILLOW_NAMES = {"jpg": "JPEG", "webp": "WEBP"}

_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_SUB_IFDS = (_EXIF_IFD, _GPS_IFD)
_SOFTWARE = 0x0131
_DESCRIPTION = 0x010E
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
_IMAGE_WIDTH, _IMAGE_LENGTH = 0x0100, 0x0101
# Tags that describe a TIFF's own pixel layout or carry ICC/XMP, never copied between files as EXIF.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 274, 277, 278, 279, 280, 281, 284, 290, 291}
    | {292, 293, 317, 320, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, 700, 34675}
    | set(range(512, 522))
    | {529, 530, 531, 532}
)
# orientation -> (transpose, flip rows, flip columns); applying them in this order shows the image upright.
_ORIENT_STEPS = {
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_ALPHA_SNAP = 1e-6
_VISIBLE = 1.0 / 512.0
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
_PNG_SKIPPED_TEXT = frozenset({"XML:com.adobe.xmp", "Raw profile type exif", "Raw profile type APP1"})
_PNG_BLOCK_BYTES = 1 << 22
_TIFF_STRIP_BYTES = 1 << 16


@dataclass(frozen=True, eq=False)
class Picture:
    """A decoded image and everything needed to write it back without loss.

    rgb: (H, W, 3) float32 in [0, 1], EXIF orientation applied; a grayscale picture holds its luma
        in all three channels.
    alpha: (H, W) float32 in [0, 1] (0 = transparent), or None.
    grayscale: the source had one colour channel (1, L, LA, I;16, ...); outputs keep one where they can.
    bit_depth: 8 or 16, bits per sample of the source (float and 32-bit integer sources count as 16).
    format: Pillow's name of the source format ("PNG", "JPEG", "WEBP", "TIFF", "BMP", ...).
    icc_profile: ICC profile matching the pixels' colour space, or None.
    exif: EXIF block ("Exif\\0\\0" + TIFF structure) with Orientation 1 and no thumbnail, or None.
    xmp: XMP packet with tiff:Orientation 1, or None.
    text: textual metadata of the source (PNG text chunks, JPEG comment as "Comment").
    dpi: (horizontal, vertical) dots per inch of the source, or None.
    colour_chunks: PNG colour-space chunks of the source (gAMA, cHRM, sRGB) as (type, payload).
    source: the file it was read from (None for stdin); write_picture refuses to overwrite it.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    grayscale: bool = False
    bit_depth: int = 8
    format: str = "PNG"
    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)
    dpi: tuple[float, float] | None = None
    colour_chunks: tuple[tuple[bytes, bytes], ...] = ()
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
class _Metadata:
    """Everything besides pixels that is read from a source, and written to an output."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    text: dict[str, str] = field(default_factory=dict)
    dpi: tuple[float, float] | None = None
    colour_chunks: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class _Samples:
    """Decoded samples before conversion: (H, W, C) uint8/uint16/float32, C = 1 gray, 2 gray+alpha,
    3 RGB, 4 RGBA, not yet oriented."""

    array: np.ndarray
    bit_depth: int
    icc_kind: bytes


# ---------------------------------------------------------------------------------------------- formats


def format_for(path: Path, fmt: str | None) -> str:
    """Output format name ("png", "jpg", "webp", "tiff") from `fmt`, else from the suffix of `path`."""
    key = (fmt if fmt is not None else path.suffix.lstrip(".")).lower()
    if key in FORMATS:
        return FORMATS[key]
    choices = ", ".join(sorted(set(FORMATS.values())))
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


# ---------------------------------------------------------------------------------------------- reading


def read_picture(
    source: Path | bytes, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Picture:
    """Decode a file (or bytes read from stdin) into a Picture; raise ImageError naming it on any problem."""
    path = None if isinstance(source, bytes) else Path(source)
    label = name or (str(path) if path is not None else "<stdin>")
    data = source if isinstance(source, bytes) else _read_bytes(Path(source), label)
    with _strict_pillow():
        image = _open_image(data, label)
        _refuse_multi_frame(image, label)
        _refuse_too_large(image.size, label, max_pixels)
        pixel_data = _tiff_with_orientation_1(data) if image.format == "TIFF" else data
        pixels = _open_image(pixel_data, label) if pixel_data is not data else image
        _load(pixels, label)
        orientation = _orientation(image)
        metadata = _read_metadata(image)
        samples = _samples(pixels, pixel_data, label)
    return _to_picture(samples, orientation, metadata, _format_name(image), path)


def _read_bytes(path: Path, label: str) -> bytes:
    """The whole file; missing, directory and unreadable files raise ImageError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ImageError(f"{label}: no such file") from err
    except IsADirectoryError as err:
        raise ImageError(f"{label}: is a directory, not an image file") from err
    except PermissionError as err:
        raise ImageError(f"{label}: permission denied") from err
    except OSError as err:
        raise ImageError(f"{label}: cannot read ({err.strerror or err})") from err
    return data


@contextlib.contextmanager
def _strict_pillow() -> Iterator[None]:
    """Within: truncated data is an error, and Pillow's own pixel limit is off (ours applies instead)."""
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _open_image(data: bytes, label: str) -> Image.Image:
    """Parse the header (the content decides the format, not the file name); empty data is refused."""
    if not data:
        raise ImageError(f"{label}: empty file")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        raise ImageError(f"{label}: {_unidentified_reason(data)}") from err
    except Image.DecompressionBombError as err:
        raise ImageError(f"{label}: {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise ImageError(f"{label}: truncated or corrupt image header ({err})") from err


def _unidentified_reason(data: bytes) -> str:
    """Why Pillow could not open the data, with a next step for formats we recognise but cannot read."""
    if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "unsupported TIFF layout (e.g. 16-bit gray with alpha); save it as PNG or RGB(A) TIFF first"
    if data[4:8] == b"ftyp":
        return "unsupported HEIF/HEIC image; convert it to JPEG or PNG first"
    return "not an image (content is not a supported image format)"


def _frame_count(image: Image.Image) -> int:
    """Frames that are separate pictures: MPO previews and reduced-resolution TIFF pages do not count."""
    frames = int(getattr(image, "n_frames", 1))
    if image.format == "MPO":
        return 1
    if image.format == "TIFF" and frames > 1:
        full = 0
        for index in range(frames):
            image.seek(index)
            full += not int(image.tag_v2.get(254, 0)) & 1
        image.seek(0)
        return full
    return frames


def _refuse_multi_frame(image: Image.Image, label: str) -> None:
    """Animated GIF/PNG/WebP and multi-page TIFF have no single picture to upscale."""
    frames = _frame_count(image)
    if frames > 1:
        raise ImageError(
            f"{label}: animated or multi-page image ({frames} frames) is not supported;"
            " extract one frame first"
        )


def _refuse_too_large(size: tuple[int, int], label: str, max_pixels: int) -> None:
    """Compare the header's dimensions with the limit before any pixel is decoded."""
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: {width}×{height} = {width * height} pixels exceeds --max-pixels {max_pixels}"
            " (raise --max-pixels to read it)"
        )


def _format_name(image: Image.Image) -> str:
    """Pillow's format name; an MPO is a JPEG with extra preview frames."""
    return "JPEG" if image.format == "MPO" else str(image.format)


def _orientation(image: Image.Image) -> int:
    """EXIF Orientation 1..8 (Pillow falls back to XMP tiff:Orientation); 1 when absent or invalid."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except (SyntaxError, ValueError, OSError, struct.error, KeyError, TypeError, IndexError):
        return 1
    return value if value in _ORIENT_STEPS else 1


# --------------------------------------------------------------------------------------- read metadata


def _read_metadata(image: Image.Image) -> _Metadata:
    """ICC, cleaned EXIF and XMP, text and dpi of an opened (not necessarily loaded) image."""
    icc = image.info.get("icc_profile") or None
    return _Metadata(
        icc_profile=bytes(icc) if icc else None,
        exif=_read_exif(image),
        xmp=_read_xmp(image),
        text=_read_text(image),
        dpi=_read_dpi(image),
        colour_chunks=_read_colour_chunks(image),
    )


def _read_colour_chunks(image: Image.Image) -> tuple[tuple[bytes, bytes], ...]:
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


def _read_exif(image: Image.Image) -> bytes | None:
    """The EXIF without TIFF layout tags and thumbnail, with Orientation 1; None if absent or unreadable."""
    try:
        source = image.getexif()
        cleaned = Image.Exif()
        for tag, value in source.items():
            if tag not in _TIFF_LAYOUT_TAGS:
                cleaned[tag] = source.get_ifd(tag) if tag in _SUB_IFDS else value
        if not len(cleaned):
            return None
        cleaned[_ORIENTATION] = 1
        return cleaned.tobytes()
    except (SyntaxError, ValueError, OSError, struct.error, KeyError, TypeError, IndexError):
        return None


def _read_xmp(image: Image.Image) -> bytes | None:
    """The raw XMP packet with tiff:Orientation set to 1, or None."""
    xmp = image.info.get("xmp")
    if not xmp:
        return None
    packet = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    return _set_xmp_property(packet, b"tiff:Orientation", 1)


def _set_xmp_property(xmp: bytes, name: bytes, value: int) -> bytes:
    """Replace the value of an existing simple XMP property, in attribute or element form."""
    attribute = re.compile(re.escape(name) + rb'="[^"]*"')
    element = re.compile(rb"<" + re.escape(name) + rb">[^<]*</" + re.escape(name) + rb">")
    xmp = attribute.sub(name + b'="%d"' % value, xmp)
    return element.sub(b"<%s>%d</%s>" % (name, value, name), xmp)


def _read_text(image: Image.Image) -> dict[str, str]:
    """PNG text chunks (XMP and EXIF dumps excluded) and a JPEG comment (as "Comment")."""
    if image.format == "PNG":
        chunks = getattr(image, "text", {})
        return {k: str(v) for k, v in chunks.items() if k not in _PNG_SKIPPED_TEXT}
    comment = image.info.get("comment")
    if isinstance(comment, bytes) and comment:
        return {"Comment": _decode_comment(comment)}
    return {}


def _decode_comment(raw: bytes) -> str:
    """UTF-8 when it is, else Latin-1 (the historical encoding of JPEG comments)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_dpi(image: Image.Image) -> tuple[float, float] | None:
    """(x, y) dots per inch when the source states a positive resolution."""
    dpi = image.info.get("dpi")
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 and np.isfinite([x, y]).all() else None


# ----------------------------------------------------------------------------------------------- decode


def _samples(image: Image.Image, data: bytes, label: str) -> _Samples:
    """Samples of a loaded image, taken from OpenCV where the file has 16-bit colour samples."""
    bits, gray = _stored_layout(image, data)
    if bits == 16 and not image.mode.startswith("I;16"):
        image.close()  # frees Pillow's 8-bit copy before OpenCV decodes the full samples
        return _decode_with_opencv(data, gray, label)
    return _pillow_samples(image, label)


def _load(image: Image.Image, label: str) -> None:
    """Decode every pixel; truncated or corrupt data raises ImageError."""
    try:
        image.load()
    except MemoryError as err:
        raise ImageError(f"{label}: not enough memory to decode {image.width}×{image.height} pixels") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as err:
        raise ImageError(f"{label}: truncated or corrupt image data ({err})") from err


def _stored_layout(image: Image.Image, data: bytes) -> tuple[int, bool]:
    """(bits per sample, one colour channel?) of a PNG or TIFF as stored in the file; (8, False) for
    other formats, which Pillow decodes at their full precision."""
    if image.format == "PNG":
        return data[24], data[25] in (0, 4)
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits), image.tag_v2.get(262) in (0, 1)
    return 8, False


def _tiff_with_orientation_1(data: bytes) -> bytes:
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
            if tag == _ORIENTATION and kind in (3, 4):
                struct.pack_into(order + ("H" if kind == 3 else "I"), patched, entry + value_at, 1)
    except struct.error:
        return data
    return bytes(patched)


def _decode_with_opencv(data: bytes, gray: bool, label: str) -> _Samples:
    """16-bit colour PNG/TIFF samples, which Pillow would reduce to 8 bits."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.dtype != np.uint16:
        raise ImageError(f"{label}: cannot decode its 16-bit samples")
    if decoded.ndim == 2:
        decoded = decoded[..., None]
    channels = decoded.shape[2]
    if gray:
        order = [0] if channels in (1, 3) else [0, channels - 1]
    else:
        order = [2, 1, 0] if channels == 3 else [2, 1, 0, 3]
    return _Samples(decoded[..., order], 16, b"GRAY" if gray else b"RGB ")


def _pillow_samples(image: Image.Image, label: str) -> _Samples:
    """Samples of a loaded Pillow image in a mode we keep (1/P/CMYK/... converted first)."""
    image = _convertible_mode(image)
    if image.mode == "F":
        return _Samples(_checked_float(np.asarray(image), label)[..., None], 16, b"GRAY")
    if image.mode == "I":
        return _Samples(_checked_int(np.asarray(image), label)[..., None], 16, b"GRAY")
    array = np.asarray(image)
    array = array[..., None] if array.ndim == 2 else array
    depth = 16 if array.dtype.itemsize == 2 else 8
    kind = b"GRAY" if array.shape[2] <= 2 else b"RGB "
    return _with_colour_key(_Samples(array, depth, kind), image.info.get("transparency"))


def _convertible_mode(image: Image.Image) -> Image.Image:
    """Convert modes we do not keep as they are: 1 -> L, P/PA -> RGB(A), CMYK -> RGB, others -> RGB(A)."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA", "I", "F") or mode.startswith("I;16"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode == "La":
        return image.convert("LA")
    with_alpha = mode in ("PA", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if with_alpha else "RGB")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK -> sRGB through the embedded profile when lcms accepts it, else Pillow's formula."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, profile, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            converted = None
        if converted is not None:
            return converted
    return image.convert("RGB")


def _checked_float(array: np.ndarray, label: str) -> np.ndarray:
    """32-bit float gray samples, kept only when all are finite and in [0, 1]."""
    finite = bool(np.isfinite(array).all())
    if not finite or array.min() < 0 or array.max() > 1:
        span = f"{np.nanmin(array):g}..{np.nanmax(array):g}" if finite else "non-finite values"
        raise ImageError(f"{label}: 32-bit float samples outside [0, 1] ({span}) are not supported")
    return array.astype(np.float32, copy=False)


def _checked_int(array: np.ndarray, label: str) -> np.ndarray:
    """32-bit integer gray samples, read as 16-bit when all lie in 0..65535."""
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 65535:
        raise ImageError(
            f"{label}: 32-bit integer samples ({low}..{high}) do not fit 16 bits; convert to 16-bit first"
        )
    return array.astype(np.uint16)


def _with_colour_key(samples: _Samples, key: object) -> _Samples:
    """Add alpha from a PNG tRNS colour key (transparent where every colour sample equals the key)."""
    array = samples.array
    if key is None or isinstance(key, bytes) or array.shape[2] in (2, 4):
        return samples
    key_values = np.asarray(key if isinstance(key, tuple) else (key,), dtype=np.int64)
    if key_values.size != array.shape[2]:
        return samples
    opaque = np.iinfo(array.dtype).max
    alpha = np.where((array == key_values).all(axis=2), 0, opaque).astype(array.dtype)
    return replace(samples, array=np.concatenate([array, alpha[..., None]], axis=2))


# --------------------------------------------------------------------------------------- to a Picture


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """View of an (H, W, ...) array shown upright for EXIF orientation 1..8 (no copy)."""
    steps = _ORIENT_STEPS.get(orientation)
    if steps is None:
        return array
    transpose, flip_rows, flip_columns = steps
    if transpose:
        array = array.swapaxes(0, 1)
    if flip_rows:
        array = array[::-1]
    if flip_columns:
        array = array[:, ::-1]
    return array


def _to_float(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) samples -> C-contiguous float32 in [0, 1] (integers divided by their maximum)."""
    result = array.astype(np.float32, order="C")
    if array.dtype.kind in "ui":
        result *= np.float32(1.0 / np.iinfo(array.dtype).max)
    return result


def _to_picture(
    samples: _Samples, orientation: int, metadata: _Metadata, fmt: str, source: Path | None
) -> Picture:
    """Orient and split samples into rgb/alpha; keep the metadata that still describes the pixels."""
    array = _orient(samples.array, orientation)
    colour_channels = 1 if samples.array.shape[2] in (1, 2) else 3
    colour = _to_float(array[..., :colour_channels])
    rgb = np.repeat(colour, 3, axis=2) if colour_channels == 1 else colour
    alpha = _to_float(array[..., colour_channels]) if array.shape[2] > colour_channels else None
    dpi = metadata.dpi
    if dpi is not None and _ORIENT_STEPS.get(orientation, (False,))[0]:
        dpi = (dpi[1], dpi[0])
    icc = metadata.icc_profile if _icc_space(metadata.icc_profile) == samples.icc_kind else None
    return Picture(
        rgb=rgb,
        alpha=alpha,
        grayscale=colour_channels == 1,
        bit_depth=samples.bit_depth,
        format=fmt,
        icc_profile=icc,
        exif=metadata.exif,
        xmp=metadata.xmp,
        text=dict(metadata.text),
        dpi=dpi,
        colour_chunks=metadata.colour_chunks,
        source=source,
    )


def _icc_space(icc: bytes | None) -> bytes | None:
    """The data colour space signature of an ICC profile (b"RGB ", b"GRAY", b"CMYK", ...)."""
    return icc[16:20] if icc is not None and len(icc) >= 20 else None


# --------------------------------------------------------------------------------------------- resizing


def _interpolation(size: tuple[int, int], height: int, width: int, upscale: int) -> int:
    """Area averaging when no side grows, else the given upscaling filter."""
    return cv2.INTER_AREA if height <= size[0] and width <= size[1] else upscale


def _resize(array: np.ndarray, height: int, width: int, upscale: int = cv2.INTER_LANCZOS4) -> np.ndarray:
    """(h, w[, C]) float32 -> (height, width[, C]) float32 (values may overshoot [0, 1])."""
    method = _interpolation(array.shape[:2], height, width, upscale)
    return cv2.resize(np.ascontiguousarray(array, dtype=np.float32), (width, height), interpolation=method)


def upscale_alpha(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) alpha in [0, 1] -> (height, width) in [0, 1]: bicubic up (no ringing into flat areas after
    clipping), area down; values within 1e-6 of 0 or 1 snap to exactly 0 or 1."""
    result = _resize(np.asarray(alpha, dtype=np.float32), height, width, cv2.INTER_CUBIC)
    np.clip(result, 0.0, 1.0, out=result)
    result[result < _ALPHA_SNAP] = 0.0
    result[result > 1.0 - _ALPHA_SNAP] = 1.0
    return result


def _resize_rgb(rgb: np.ndarray, alpha: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """(h, w, 3) -> (height, width, 3) in [0, 1]; with alpha, premultiplied so transparent colours
    do not bleed into visible edges (straight resize where the result is nearly transparent)."""
    straight = _resize(rgb, height, width)
    if alpha is not None:
        weight = _resize(alpha, height, width)[..., None]
        premultiplied = _resize(rgb * alpha[..., None], height, width)
        visible = weight > _VISIBLE
        straight = np.where(visible, premultiplied / np.maximum(weight, _VISIBLE), straight)
    return np.clip(straight, 0.0, 1.0, out=straight)


def resize_picture(p: Picture, height: int, width: int) -> Picture:
    """The picture resized to (height, width): Lanczos when growing, area averaging when shrinking;
    alpha through upscale_alpha; metadata kept."""
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {width}×{height}")
    rgb = _resize_rgb(p.rgb, p.alpha, height, width)
    if p.grayscale:
        rgb = np.repeat(_luma(rgb)[..., None], 3, axis=2)
    alpha = None if p.alpha is None else upscale_alpha(p.alpha, height, width)
    return replace(p, rgb=rgb, alpha=alpha)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) float32 ITU-R BT.601 luma (what Pillow's L conversion uses)."""
    return np.dot(rgb, _LUMA).astype(np.float32, copy=False)


def model_rgb(p: Picture) -> np.ndarray:
    """(H, W, 3) float32 colour to feed the model: under fully transparent pixels (alpha 0) the stored
    colour is arbitrary (often black), so it is replaced by that of the nearest visible pixel; otherwise
    the model would spread it into dark or light fringes along the visible edges. Semi-transparent
    pixels keep their colour; a picture without any visible pixel is left as it is."""
    if p.alpha is None:
        return p.rgb
    hidden = p.alpha <= 0.0
    if not hidden.any() or hidden.all():
        return p.rgb
    _, nearest = cv2.distanceTransformWithLabels(
        hidden.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE, labelType=cv2.DIST_LABEL_PIXEL
    )  # nearest[y, x] = k: the k-th visible pixel in raster order (1-based)
    filled = p.rgb.copy()
    filled[hidden] = p.rgb[~hidden][nearest[hidden] - 1]
    return filled


def with_pixels(original: Picture, rgb: np.ndarray) -> Picture:
    """The output picture for the model's (sH, sW, 3) result in [0, 1]: alpha of `original` upscaled and
    reattached, grayscale restored (luma in all channels), metadata and source carried over."""
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    if original.grayscale:
        rgb = np.repeat(_luma(rgb)[..., None], 3, axis=2)
    alpha = None if original.alpha is None else upscale_alpha(original.alpha, height, width)
    return replace(original, rgb=rgb, alpha=alpha)


# --------------------------------------------------------------------------------------------- writing


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
        return 16 if p.bit_depth == 16 and fmt in _DEEP_FORMATS else 8
    if bit_depth not in (8, 16):
        raise UsageError(f"bit depth must be 8 or 16, got {bit_depth}")
    if bit_depth == 16 and fmt not in _DEEP_FORMATS:
        raise UsageError(
            f"{label}: {fmt.upper()} holds 8 bits per channel; write png or tiff for 16-bit output"
        )
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
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(p.height, p.width) > limit:
        raise ImageError(
            f"{label}: {p.width}×{p.height} is too large for {fmt.upper()} (at most {limit} pixels a side);"
            " write png or tiff instead"
        )


def _writes_gray(p: Picture, fmt: str, depth: int, keep_alpha: bool) -> bool:
    """One colour channel for grayscale pictures, except in WebP (always colour) and 16-bit gray+alpha
    TIFF (written as RGBA because Pillow cannot read it back)."""
    if not p.grayscale or fmt not in _GRAY_FORMATS:
        return False
    return not (fmt == "tiff" and depth == 16 and keep_alpha)


def _quantise(values: np.ndarray, depth: int) -> np.ndarray:
    """float in [0, 1] -> uint8 round(x*255) or uint16 round(x*65535), clipped."""
    top = 65535.0 if depth == 16 else 255.0
    scaled = np.multiply(values, np.float32(top), dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0.0, top, out=scaled)
    return scaled.astype(np.uint16 if depth == 16 else np.uint8)


def _output_samples(p: Picture, depth: int, gray: bool, keep_alpha: bool) -> np.ndarray:
    """(H, W, C) uint8/uint16 with C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA."""
    colour = _luma(p.rgb)[..., None] if gray else p.rgb
    if colour.ndim != 3 or colour.shape[2] not in (1, 3):
        raise ValueError(f"rgb must have shape (H, W, 3), got {p.rgb.shape}")
    channels = colour.shape[2] + keep_alpha
    out = np.empty((*colour.shape[:2], channels), dtype=np.uint16 if depth == 16 else np.uint8)
    out[..., : colour.shape[2]] = _quantise(colour, depth)
    if keep_alpha and p.alpha is not None:
        out[..., -1] = _quantise(p.alpha, depth)
    return out


# ----------------------------------------------------------------------------------- output metadata


def _output_metadata(p: Picture, fmt: str, samples: np.ndarray, text: dict[str, str]) -> _Metadata:
    """Metadata for the written file: ICC if it matches, EXIF/XMP with the output size, merged text."""
    height, width, channels = samples.shape
    kind = b"GRAY" if channels <= 2 else b"RGB "
    exif = _output_exif(p.exif, width, height, text, create=fmt != "png")
    xmp = p.xmp
    if xmp is not None:
        xmp = _set_xmp_property(xmp, b"exif:PixelXDimension", width)
        xmp = _set_xmp_property(xmp, b"exif:PixelYDimension", height)
    return _Metadata(
        icc_profile=p.icc_profile if _icc_space(p.icc_profile) == kind else None,
        exif=exif,
        xmp=xmp,
        text={**p.text, **text},
        dpi=p.dpi,
        colour_chunks=p.colour_chunks,
    )


def _output_exif(
    exif: bytes | None, width: int, height: int, text: Mapping[str, str], create: bool
) -> bytes | None:
    """EXIF with Orientation 1, dimension tags set to the output size and provenance added."""
    software = next((v for k, v in text.items() if k.lower() == "software"), None)
    description = "; ".join(f"{k}={v}" for k, v in text.items() if k.lower() != "software")
    if exif is None and not (create and (software or description)):
        return None
    data = Image.Exif()
    if exif is not None:
        data.load(exif)
    data[_ORIENTATION] = 1
    for tag, value in ((_IMAGE_WIDTH, width), (_IMAGE_LENGTH, height)):
        if tag in data:
            data[tag] = value
    if _EXIF_IFD in data:
        sub = data.get_ifd(_EXIF_IFD)
        sub.update({tag: value for tag, value in ((_PIXEL_X, width), (_PIXEL_Y, height)) if tag in sub})
    if software:
        data[_SOFTWARE] = software
    if description and _DESCRIPTION not in data:
        data[_DESCRIPTION] = description
    return data.tobytes()


# ------------------------------------------------------------------------------------------------- PNG


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


def _png_metadata_chunks(metadata: _Metadata) -> Iterator[bytes]:
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


def _encode_png(samples: np.ndarray, metadata: _Metadata, quality: int) -> bytes:
    """A PNG of (H, W, C) uint8/uint16 samples with metadata; `quality` is unused (lossless)."""
    height, width, channels = samples.shape
    header = struct.pack(
        ">IIBBBBB", width, height, samples.dtype.itemsize * 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0
    )
    parts = [_PNG_SIGNATURE, _png_chunk(b"IHDR", header), *_png_metadata_chunks(metadata)]
    parts += [*_png_idat_chunks(samples), _png_chunk(b"IEND", b"")]
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------ TIFF


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
        if tag not in _TIFF_LAYOUT_TAGS:
            ifd[tag] = data.get_ifd(tag) if tag in _SUB_IFDS else value


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


def _encode_tiff(samples: np.ndarray, metadata: _Metadata, quality: int) -> bytes:
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


# ---------------------------------------------------------------------------------------- JPEG, WebP


def _encode_with_pillow(samples: np.ndarray, metadata: _Metadata, quality: int, fmt: str) -> bytes:
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


def _encode_jpeg(samples: np.ndarray, metadata: _Metadata, quality: int) -> bytes:
    """JPEG of (H, W, 1 or 3) uint8 samples."""
    return _encode_with_pillow(samples, metadata, quality, "jpg")


def _encode_webp(samples: np.ndarray, metadata: _Metadata, quality: int) -> bytes:
    """WebP of (H, W, 3 or 4) uint8 samples."""
    return _encode_with_pillow(samples, metadata, quality, "webp")


_ENCODERS = {"png": _encode_png, "tiff": _encode_tiff, "jpg": _encode_jpeg, "webp": _encode_webp}


# ----------------------------------------------------------------------------------------- file output


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
