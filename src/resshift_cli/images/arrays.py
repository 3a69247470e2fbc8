"""NumPy arrays ↔ pictures: what `Upscaler` accepts from a notebook and gives back in the same form."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resshift_cli.errors import ImageError, UsageError
from resshift_cli.images.picture import Picture, luma
from resshift_cli.images.reading import to_float
from resshift_cli.images.writing import quantise

ARRAY_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
"""Sample types an array may hold: integers over their full range, floats in [0, 1]."""

_CHANNELS = {1: "gray", 2: "gray + alpha", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class ArrayLayout:
    """How an input array was laid out, so the result comes back alike: dtype, 2-D or (H, W, C), C."""

    dtype: np.dtype
    ndim: int
    channels: int


def _check_array(array: np.ndarray, label: str) -> None:
    """UsageError for a shape or dtype we do not take; ImageError for float samples outside [0, 1]."""
    if array.dtype.name not in ARRAY_DTYPES:
        raise UsageError(f"{label}: unsupported dtype {array.dtype}; use {', '.join(ARRAY_DTYPES)}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in _CHANNELS):
        raise UsageError(
            f"{label}: expected an (H, W) or (H, W, C) array with C = 1, 2, 3 or 4, got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{label}: empty image of shape {array.shape}")
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
        raise ImageError(f"{label}: float samples must be finite and lie in [0, 1]")


def picture_from_array(array: np.ndarray, label: str = "<array>") -> tuple[Picture, ArrayLayout]:
    """(H, W) or (H, W, C) samples (C: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) → a Picture and the layout.

    uint8 is an 8-bit source; uint16 and float (in [0, 1]) count as 16-bit, as they do when read from files.
    """
    array = np.asarray(array)
    _check_array(array, label)
    samples = array[..., None] if array.ndim == 2 else array
    colour_channels = 1 if samples.shape[2] in (1, 2) else 3
    colour = to_float(samples[..., :colour_channels])
    picture = Picture(
        rgb=np.repeat(colour, 3, axis=2) if colour_channels == 1 else colour,
        alpha=to_float(samples[..., colour_channels]) if samples.shape[2] > colour_channels else None,
        grayscale=colour_channels == 1,
        bit_depth=8 if array.dtype == np.uint8 else 16,
    )
    return picture, ArrayLayout(array.dtype, array.ndim, samples.shape[2])


def array_from_picture(picture: Picture, layout: ArrayLayout) -> np.ndarray:
    """The picture's samples laid out as `layout` says: integers rounded as files are written
    (round(x · max)), floats clipped to [0, 1]; gray as the luma of the result."""
    colour = luma(picture.rgb)[..., None] if layout.channels in (1, 2) else picture.rgb
    keeps_alpha = layout.channels in (2, 4) and picture.alpha is not None
    samples = np.concatenate([colour, picture.alpha[..., None]], axis=2) if keeps_alpha else colour
    if layout.dtype.kind == "u":
        out = quantise(samples, 16 if layout.dtype == np.uint16 else 8)
    else:
        out = np.clip(samples, 0.0, 1.0).astype(layout.dtype)
    return out[..., 0] if layout.ndim == 2 else out
