"""Lossless image input and output: orientation, ICC/EXIF/XMP, alpha, grayscale and 16-bit handled.

Modules: `picture` (Picture and its Metadata), `formats` (what each output format holds), `reading`,
`arrays` (NumPy arrays in and out), `exif` (EXIF/XMP), `png` and `tiff` (chunks and encoders), `writing`,
`resizing` (and the model adapters).

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

from resshift_cli.images.arrays import ARRAY_DTYPES, ArrayLayout, array_from_picture, picture_from_array
from resshift_cli.images.formats import (
    DEEP_FORMATS,
    FORMATS,
    OUTPUT_FORMATS,
    check_bit_depth,
    format_for,
    holds_16_bit,
    same_file,
)
from resshift_cli.images.picture import Metadata, Picture
from resshift_cli.images.reading import DEFAULT_MAX_PIXELS, read_picture
from resshift_cli.images.resizing import model_rgb, resize_picture, upscale_alpha, with_pixels
from resshift_cli.images.writing import write_picture

__all__ = [
    "ARRAY_DTYPES",
    "DEEP_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "OUTPUT_FORMATS",
    "ArrayLayout",
    "Metadata",
    "Picture",
    "array_from_picture",
    "check_bit_depth",
    "format_for",
    "holds_16_bit",
    "model_rgb",
    "picture_from_array",
    "read_picture",
    "resize_picture",
    "same_file",
    "upscale_alpha",
    "with_pixels",
    "write_picture",
]
