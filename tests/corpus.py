"""Generated test images: every kind of input the CLI must read, written into a folder on demand.

Nothing here uses resshift_cli: PNGs are assembled chunk by chunk, TIFFs through Pillow's IFD
serialiser, other formats with Pillow itself, so tests compare our reader and writer against an
independent source. Pixel values come from `sample_pixels`, so a test can rebuild what a file holds.
"""

from __future__ import annotations

import functools
import io
import itertools
import struct
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, TiffImagePlugin

HEIGHT, WIDTH = 12, 17
"""Default size of generated images: small, and not square so that rotations are visible."""

_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}


# ------------------------------------------------------------------------------------ values and metadata


def sample_pixels(
    channels: int = 3, depth: int = 8, height: int = HEIGHT, width: int = WIDTH, seed: int = 0
) -> np.ndarray:
    """(height, width, channels) uint8 (depth 8) or uint16 (depth 16) of random values that include
    0 and the maximum in every channel; the last channel of a 2- or 4-channel array is alpha and has
    fully transparent and fully opaque pixels."""
    top = 255 if depth == 8 else 65535
    array = np.random.default_rng(seed).integers(0, top + 1, (height, width, channels))
    array[0, 0], array[-1, -1] = 0, top
    if channels in (2, 4):
        array[1, :4, -1], array[2, :4, -1] = 0, top
    return array.astype(np.uint8 if depth == 8 else np.uint16)


@functools.cache
def srgb_icc() -> bytes:
    """A real sRGB ICC profile made by LittleCMS (made once: it embeds its creation time)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _s15(value: float) -> bytes:
    """ICC s15Fixed16Number."""
    return struct.pack(">i", round(value * 65536))


def _icc_tag_table(tags: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """(tag table, tag data) for an ICC profile whose header is 128 bytes."""
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    return table, body


def _cmyk_lut() -> bytes:
    """lut8 (mft1) CMYK -> Lab: a gray whose lightness falls with K and with the strongest ink."""
    head = b"mft1" + b"\0" * 4 + bytes([4, 3, 2, 0])
    matrix = b"".join(_s15(1.0 if i % 4 == 0 else 0.0) for i in range(9))
    identity = bytes(range(256))
    grid = bytearray()
    for c, m, y, k in itertools.product((0, 1), repeat=4):
        grid += bytes([round(255 * (1 - k) * (1 - 0.5 * max(c, m, y))), 128, 128])
    return head + matrix + identity * 4 + bytes(grid) + identity * 3


def cmyk_icc() -> bytes:
    """A small valid CMYK input profile (LittleCMS accepts it) that maps every ink mix to a gray,
    so a conversion through it is easy to tell from Pillow's plain CMYK formula."""
    text = b"test CMYK\0"
    description = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 11 + b"\0" * 67
    white = b"XYZ " + b"\0" * 4 + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    table, body = _icc_tag_table([(b"desc", description), (b"wtpt", white), (b"A2B0", _cmyk_lut())])
    size = 128 + len(table) + len(body)
    header = struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"scnrCMYKLab " + b"\0" * 12
    header += b"acsp" + b"\0" * 28 + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48
    return header + table + body


def sample_exif_tags() -> dict[str, object]:
    """The tag values that `sample_exif` writes, by name, for comparison after a round trip."""
    return {
        "Make": "Canon",
        "Model": "EOS Test",
        "Artist": "Ada",
        "DateTimeOriginal": "2024:05:06 07:08:09",
        "ExposureTime": 1 / 250,
        "FNumber": 2.8,
        "ISOSpeedRatings": 400,
        "GPSLatitude": (52.0, 30.0, 15.0),
    }


def _exif_with_thumbnail(data: bytes) -> bytes:
    """Append an IFD1 with a JPEG thumbnail to EXIF bytes ("Exif\\0\\0" + TIFF, either byte order)."""
    tiff = bytearray(data[6:])
    order = "<" if tiff[:2] == b"II" else ">"
    first = struct.unpack_from(order + "I", tiff, 4)[0]
    entries = struct.unpack_from(order + "H", tiff, first)[0]
    struct.pack_into(order + "I", tiff, first + 2 + 12 * entries, len(tiff))
    thumbnail = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(thumbnail, "JPEG")
    ifd1 = TiffImagePlugin.ImageFileDirectory_v2(prefix=bytes(tiff[:2]))
    ifd1[0x0103] = 6
    ifd1[0x0201] = len(tiff) + 2 + 12 * 3 + 4
    ifd1[0x0202] = len(thumbnail.getvalue())
    return data[:6] + bytes(tiff) + ifd1.tobytes(len(tiff)) + thumbnail.getvalue()


def sample_exif(orientation: int = 1, thumbnail: bool = False, description: str | None = None) -> bytes:
    """EXIF ("Exif\\0\\0" + TIFF structure) with the `sample_exif_tags` values in IFD0, the Exif
    IFD (with PixelX/YDimension 3 × 2, deliberately stale) and the GPS IFD; optionally an IFD1 JPEG
    thumbnail and an ImageDescription."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x013B], exif[0x0112] = "Canon", "EOS Test", "Ada", orientation
    if description is not None:
        exif[0x010E] = description
    details = exif.get_ifd(0x8769)
    rational = TiffImagePlugin.IFDRational
    details.update({0x9003: "2024:05:06 07:08:09", 0x829A: rational(1, 250), 0x829D: rational(28, 10)})
    details[0x8827] = 400
    details.update({0xA002: 3, 0xA003: 2})
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (rational(52, 1), rational(30, 1), rational(15, 1))})
    data = exif.tobytes()
    return _exif_with_thumbnail(data) if thumbnail else data


def sample_xmp(orientation: int = 1) -> bytes:
    """An XMP packet with tiff:Orientation, a stale exif:PixelXDimension and a dc:creator."""
    return (
        b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
        b' xmlns:dc="http://purl.org/dc/elements/1.1/" tiff:Orientation="%d" exif:PixelXDimension="3">'
        b"<dc:creator><rdf:Seq><rdf:li>Ada</rdf:li></rdf:Seq></dc:creator>"
        b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>' % orientation
    )


# ------------------------------------------------------------------------------------------ encoders


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(samples: np.ndarray, chunks: Iterable[bytes] = ()) -> bytes:
    """A PNG of (H, W, C) uint8/uint16 samples (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA), unfiltered,
    with `chunks` (made by png_chunk) placed between IHDR and IDAT."""
    height, width, channels = samples.shape
    depth = samples.dtype.itemsize * 8
    header = struct.pack(">IIBBBBB", width, height, depth, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    rows = samples.astype(samples.dtype.newbyteorder(">")).reshape(height, -1).view(np.uint8)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()
    parts = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", header), *chunks]
    return b"".join([*parts, png_chunk(b"IDAT", zlib.compress(raw)), png_chunk(b"IEND", b"")])


def tiff_bytes(
    samples: np.ndarray, tags: Mapping[int, object] | None = None, big_endian: bool = False
) -> bytes:
    """An uncompressed TIFF of (H, W, C) uint8/uint16/int32/float32 samples; 2 and 4 channels carry
    unassociated alpha; `tags` (e.g. {274: 6}) are added to the IFD."""
    height, width, channels = samples.shape
    order = ">" if big_endian else "<"
    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"MM" if big_endian else b"II")
    ifd[256], ifd[257], ifd[277], ifd[278] = width, height, channels, height
    ifd[258] = (samples.dtype.itemsize * 8,) * channels
    ifd[259], ifd[262], ifd[284] = 1, 1 if channels <= 2 else 2, 1
    ifd[339] = ({"u": 1, "i": 2, "f": 3}[samples.dtype.kind],) * channels
    if channels in (2, 4):
        ifd[338] = 2
    data = samples.astype(samples.dtype.newbyteorder(order)).tobytes()
    ifd[273], ifd[279] = 0, len(data)
    for tag, value in (tags or {}).items():
        ifd[tag] = value
    header = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(order + "I", 8)
    return header + ifd.tobytes(8) + data


def _save(folder: Path, name: str, data: bytes) -> Path:
    """Write bytes to folder/name and return the path."""
    path = folder / name
    path.write_bytes(data)
    return path


# -------------------------------------------------------------------------------------- valid inputs


def write_png(
    folder: Path,
    name: str,
    samples: np.ndarray,
    exif: bytes | None = None,
    icc: bytes | None = None,
    xmp: bytes | None = None,
    text: Mapping[str, str] | None = None,
) -> Path:
    """A PNG of `samples` (see png_bytes) with optional eXIf, iCCP, XMP iTXt and tEXt chunks."""
    chunks = []
    if icc is not None:
        chunks.append(png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
    if exif is not None:
        chunks.append(png_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0")))
    if xmp is not None:
        chunks.append(png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp))
    for key, value in (text or {}).items():
        chunks.append(png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
    return _save(folder, name, png_bytes(samples, chunks))


def write_tiff(
    folder: Path, name: str, samples: np.ndarray, tags: Mapping[int, object] | None = None
) -> Path:
    """A TIFF of `samples` (see tiff_bytes)."""
    return _save(folder, name, tiff_bytes(samples, tags))


def write_jpeg(
    folder: Path,
    name: str,
    samples: np.ndarray,
    exif: bytes | None = None,
    icc: bytes | None = None,
    xmp: bytes | None = None,
    comment: str | None = None,
) -> Path:
    """A quality-95 JPEG (Pillow) of (H, W, 1 or 3) uint8 samples with optional metadata."""
    options: dict[str, object] = {"quality": 95}
    for key, value in (("exif", exif), ("icc_profile", icc), ("xmp", xmp), ("comment", comment)):
        if value is not None:
            options[key] = value
    image = Image.fromarray(samples[..., 0] if samples.shape[2] == 1 else samples)
    image.save(folder / name, "JPEG", **options)
    return folder / name


def palette_image() -> Image.Image:
    """A "P" image of four colours; index 3 (pure blue) is the transparent one once saved with tRNS."""
    indices = (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) % 4).astype(np.uint8)
    image = Image.fromarray(indices, mode="L").convert("P")
    image.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30, 0, 0, 255])
    return image


def write_palette_png(folder: Path) -> Path:
    """A palette PNG with a tRNS chunk making palette index 3 fully transparent."""
    palette_image().save(folder / "palette.png", transparency=3)
    return folder / "palette.png"


def write_palette_gif(folder: Path) -> Path:
    """A single-frame GIF with a transparent palette index 3."""
    palette_image().save(folder / "palette.gif", transparency=3)
    return folder / "palette.gif"


def write_colour_key_png(folder: Path, channels: int, depth: int) -> tuple[Path, tuple[int, ...]]:
    """A gray (channels 1) or RGB (3) PNG with a tRNS colour key equal to pixel (0, 1); returns the key."""
    samples = sample_pixels(channels, depth)
    key = tuple(int(v) for v in samples[0, 1])
    payload = struct.pack(">" + "H" * channels, *key)
    path = _save(folder, f"key{channels}_{depth}.png", png_bytes(samples, [png_chunk(b"tRNS", payload)]))
    return path, key


def write_bilevel_png(folder: Path) -> Path:
    """A 1-bit ("1" mode) PNG of a checkerboard."""
    board = (np.indices((HEIGHT, WIDTH)).sum(axis=0) % 2).astype(bool)
    Image.fromarray(board).save(folder / "bilevel.png")
    return folder / "bilevel.png"


def write_cmyk_jpeg(folder: Path, icc: bytes | None = None) -> Path:
    """A CMYK JPEG (Adobe, inverted as Photoshop writes it) of four ink patches, with `icc` embedded."""
    patches = np.array([[0, 255, 255, 0], [0, 0, 0, 0], [0, 0, 0, 255], [128, 0, 0, 0]], np.uint8)
    samples = np.repeat(np.repeat(patches[None], HEIGHT, axis=0), WIDTH // 4 + 1, axis=1)[:, :WIDTH]
    options = {} if icc is None else {"icc_profile": icc}
    Image.fromarray(samples, mode="CMYK").save(folder / "cmyk.jpg", quality=100, **options)
    return folder / "cmyk.jpg"


def write_oriented_png(folder: Path, orientation: int, depth: int = 8) -> Path:
    """An RGB PNG whose eXIf says `orientation` (pixels stored as sample_pixels(3, depth))."""
    return write_png(
        folder, f"orient{orientation}_{depth}.png", sample_pixels(3, depth), sample_exif(orientation)
    )


def write_oriented_tiff(folder: Path, orientation: int, depth: int = 8) -> Path:
    """An RGB TIFF whose IFD0 Orientation tag says `orientation`."""
    return write_tiff(folder, f"orient{orientation}_{depth}.tif", sample_pixels(3, depth), {274: orientation})


def write_mpo(folder: Path) -> Path:
    """An MPO (camera JPEG with a second, preview frame): it must read as its first frame."""
    first = Image.fromarray(sample_pixels(3, 8))
    second = Image.new("RGB", (WIDTH, HEIGHT), (9, 9, 9))
    first.save(folder / "camera.mpo", "MPO", save_all=True, append_images=[second])
    return folder / "camera.mpo"


def write_tiff_with_preview(folder: Path) -> Path:
    """A TIFF whose second page is a reduced-resolution preview (NewSubfileType 1): one picture."""
    first = Image.fromarray(sample_pixels(3, 8))
    preview = Image.new("RGB", (4, 3), (9, 9, 9))
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[254] = 1
    preview.encoderinfo = {"tiffinfo": info}
    first.save(folder / "preview.tif", save_all=True, append_images=[preview])
    return folder / "preview.tif"


def write_float_tiff(folder: Path, low: float = 0.0, high: float = 1.0) -> Path:
    """A 32-bit float ("F") TIFF with values from `low` to `high`."""
    values = np.linspace(low, high, HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH, 1)
    return write_tiff(folder, f"float_{low}_{high}.tif", values)


def write_int32_tiff(folder: Path, high: int = 65535) -> Path:
    """A 32-bit signed integer ("I") TIFF with values from 0 to `high`."""
    values = np.linspace(0, high, HEIGHT * WIDTH).astype(np.int32).reshape(HEIGHT, WIDTH, 1)
    return write_tiff(folder, f"int32_{high}.tif", values)


# ------------------------------------------------------------------------------------ multi-frame inputs


def _frames() -> list[Image.Image]:
    """Three differently coloured RGB frames."""
    return [Image.new("RGB", (WIDTH, HEIGHT), (60 * i, 0, 0)) for i in range(3)]


def write_animated_gif(folder: Path) -> Path:
    """An animated GIF of three frames."""
    first, *rest = _frames()
    first.save(folder / "animated.gif", save_all=True, append_images=rest, duration=50)
    return folder / "animated.gif"


def write_apng(folder: Path) -> Path:
    """An animated PNG of three frames."""
    first, *rest = _frames()
    first.save(folder / "animated.png", save_all=True, append_images=rest, duration=50)
    return folder / "animated.png"


def write_animated_webp(folder: Path) -> Path:
    """An animated WebP of three frames."""
    first, *rest = _frames()
    first.save(folder / "animated.webp", save_all=True, append_images=rest, duration=50, lossless=True)
    return folder / "animated.webp"


def write_multipage_tiff(folder: Path) -> Path:
    """A TIFF with three full-size pages."""
    first, *rest = _frames()
    first.save(folder / "pages.tif", save_all=True, append_images=rest)
    return folder / "pages.tif"


# ------------------------------------------------------------------------------------------ bad inputs


def write_empty(folder: Path, name: str = "empty.png") -> Path:
    """A zero-byte file."""
    return _save(folder, name, b"")


def write_truncated(folder: Path, source: Path, keep: float = 0.6) -> Path:
    """A copy of `source` cut to the first `keep` fraction of its bytes."""
    data = source.read_bytes()
    return _save(folder, f"truncated_{source.name}", data[: int(len(data) * keep)])


def write_text_file(folder: Path, name: str = "notes.png") -> Path:
    """A text file with an image file name."""
    return _save(folder, name, b"this is not an image\n" * 4)


def write_bomb_png(folder: Path, width: int = 40_000, height: int = 30_000) -> Path:
    """A tiny PNG whose header claims width × height 8-bit gray pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\0" * (width + 1)
    compressor = zlib.compressobj(9)
    idat = compressor.compress(row * 64) + compressor.flush()
    chunks = [png_chunk(b"IHDR", header), png_chunk(b"IDAT", idat), png_chunk(b"IEND", b"")]
    return _save(folder, "bomb.png", b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
