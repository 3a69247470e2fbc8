"""EXIF and XMP: orientation, the cleaned EXIF block we carry over, and the tags rewritten on output."""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping

import numpy as np
from PIL import Image

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
GPS_IFD = 0x8825
SUB_IFDS = (EXIF_IFD, GPS_IFD)
_SOFTWARE = 0x0131
_DESCRIPTION = 0x010E
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
_IMAGE_WIDTH, _IMAGE_LENGTH = 0x0100, 0x0101

# Tags that describe a TIFF's own pixel layout or carry ICC/XMP, never copied between files as EXIF.
TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 274, 277, 278, 279, 280, 281, 284, 290, 291}
    | {292, 293, 317, 320, 322, 323, 324, 325, 330, 332, 338, 339, 340, 341, 347, 700, 34675}
    | set(range(512, 522))
    | {529, 530, 531, 532}
)

# orientation -> (transpose, flip rows, flip columns); applying them in this order shows the image upright.
ORIENT_STEPS = {
    2: (False, False, True),
    3: (False, True, True),
    4: (False, True, False),
    5: (True, False, False),
    6: (True, False, True),
    7: (True, True, True),
    8: (True, True, False),
}


def read_orientation(image: Image.Image) -> int:
    """EXIF Orientation 1..8 (Pillow falls back to XMP tiff:Orientation); 1 when absent or invalid."""
    try:
        value = image.getexif().get(ORIENTATION, 1)
    except (SyntaxError, ValueError, OSError, struct.error, KeyError, TypeError, IndexError):
        return 1
    return value if value in ORIENT_STEPS else 1


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """View of an (H, W, ...) array shown upright for EXIF orientation 1..8 (no copy)."""
    steps = ORIENT_STEPS.get(orientation)
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


def read_exif(image: Image.Image) -> bytes | None:
    """The EXIF without TIFF layout tags and thumbnail, with Orientation 1; None if absent or unreadable."""
    try:
        source = image.getexif()
        cleaned = Image.Exif()
        for tag, value in source.items():
            if tag not in TIFF_LAYOUT_TAGS:
                cleaned[tag] = source.get_ifd(tag) if tag in SUB_IFDS else value
        if not len(cleaned):
            return None
        cleaned[ORIENTATION] = 1
        return cleaned.tobytes()
    except (SyntaxError, ValueError, OSError, struct.error, KeyError, TypeError, IndexError):
        return None


def read_xmp(image: Image.Image) -> bytes | None:
    """The raw XMP packet with tiff:Orientation set to 1, or None."""
    xmp = image.info.get("xmp")
    if not xmp:
        return None
    packet = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)
    return set_xmp_property(packet, b"tiff:Orientation", 1)


def set_xmp_property(xmp: bytes, name: bytes, value: int) -> bytes:
    """Replace the value of an existing simple XMP property, in attribute or element form."""
    attribute = re.compile(re.escape(name) + rb'="[^"]*"')
    element = re.compile(rb"<" + re.escape(name) + rb">[^<]*</" + re.escape(name) + rb">")
    xmp = attribute.sub(name + b'="%d"' % value, xmp)
    return element.sub(b"<%s>%d</%s>" % (name, value, name), xmp)


def output_exif(
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
    data[ORIENTATION] = 1
    for tag, value in ((_IMAGE_WIDTH, width), (_IMAGE_LENGTH, height)):
        if tag in data:
            data[tag] = value
    if EXIF_IFD in data:
        sub = data.get_ifd(EXIF_IFD)
        sub.update({tag: value for tag, value in ((_PIXEL_X, width), (_PIXEL_Y, height)) if tag in sub})
    if software:
        data[_SOFTWARE] = software
    if description and _DESCRIPTION not in data:
        data[_DESCRIPTION] = description
    return data.tobytes()
