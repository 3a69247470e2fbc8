"""Reading: bytes → Picture, orientation applied, metadata kept, every failure a one-line ImageError."""

from __future__ import annotations

import contextlib
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from resshift_cli.errors import ImageError
from resshift_cli.images.exif import ORIENT_STEPS, orient, read_exif, read_orientation, read_xmp
from resshift_cli.images.picture import Metadata, Picture, Samples, icc_space
from resshift_cli.images.png import PNG_SKIPPED_TEXT, read_colour_chunks
from resshift_cli.images.tiff import tiff_with_orientation_1

DEFAULT_MAX_PIXELS: int = 256_000_000
"""Inputs with more pixels than this are refused before decoding (the CLI's --max-pixels default)."""


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
        pixel_data = tiff_with_orientation_1(data) if image.format == "TIFF" else data
        pixels = _open_image(pixel_data, label) if pixel_data is not data else image
        _load(pixels, label)
        orientation = read_orientation(image)
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


def _read_metadata(image: Image.Image) -> Metadata:
    """ICC, cleaned EXIF and XMP, text and dpi of an opened (not necessarily loaded) image."""
    icc = image.info.get("icc_profile") or None
    return Metadata(
        icc_profile=bytes(icc) if icc else None,
        exif=read_exif(image),
        xmp=read_xmp(image),
        text=_read_text(image),
        dpi=_read_dpi(image),
        colour_chunks=read_colour_chunks(image),
    )


def _read_text(image: Image.Image) -> dict[str, str]:
    """PNG text chunks (XMP and EXIF dumps excluded) and a JPEG comment (as "Comment")."""
    if image.format == "PNG":
        chunks = getattr(image, "text", {})
        return {k: str(v) for k, v in chunks.items() if k not in PNG_SKIPPED_TEXT}
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


def _samples(image: Image.Image, data: bytes, label: str) -> Samples:
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


def _decode_with_opencv(data: bytes, gray: bool, label: str) -> Samples:
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
    return Samples(decoded[..., order], 16, b"GRAY" if gray else b"RGB ")


def _pillow_samples(image: Image.Image, label: str) -> Samples:
    """Samples of a loaded Pillow image in a mode we keep (1/P/CMYK/... converted first)."""
    image = _convertible_mode(image)
    if image.mode == "F":
        return Samples(_checked_float(np.asarray(image), label)[..., None], 16, b"GRAY")
    if image.mode == "I":
        return Samples(_checked_int(np.asarray(image), label)[..., None], 16, b"GRAY")
    array = np.asarray(image)
    array = array[..., None] if array.ndim == 2 else array
    depth = 16 if array.dtype.itemsize == 2 else 8
    kind = b"GRAY" if array.shape[2] <= 2 else b"RGB "
    return _with_colour_key(Samples(array, depth, kind), image.info.get("transparency"))


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


def _with_colour_key(samples: Samples, key: object) -> Samples:
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


def to_float(array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) samples -> C-contiguous float32 in [0, 1] (integers divided by their maximum)."""
    result = array.astype(np.float32, order="C")
    if array.dtype.kind in "ui":
        result *= np.float32(1.0 / np.iinfo(array.dtype).max)
    return result


def _to_picture(
    samples: Samples, orientation: int, metadata: Metadata, fmt: str, source: Path | None
) -> Picture:
    """Orient and split samples into rgb/alpha; keep the metadata that still describes the pixels."""
    array = orient(samples.array, orientation)
    colour_channels = 1 if samples.array.shape[2] in (1, 2) else 3
    colour = to_float(array[..., :colour_channels])
    rgb = np.repeat(colour, 3, axis=2) if colour_channels == 1 else colour
    alpha = to_float(array[..., colour_channels]) if array.shape[2] > colour_channels else None
    dpi = metadata.dpi
    if dpi is not None and ORIENT_STEPS.get(orientation, (False,))[0]:
        dpi = (dpi[1], dpi[0])
    icc = metadata.icc_profile if icc_space(metadata.icc_profile) == samples.icc_kind else None
    return Picture(
        rgb=rgb,
        alpha=alpha,
        grayscale=colour_channels == 1,
        bit_depth=samples.bit_depth,
        format=fmt,
        metadata=replace(metadata, icc_profile=icc, text=dict(metadata.text), dpi=dpi),
        source=source,
    )
