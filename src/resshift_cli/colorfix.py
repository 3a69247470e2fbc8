"""Colour correction of a super-resolved image towards its bicubic-upscaled input (`--color-fix`).

A diffusion upscaler can drift in colour: the mean tint or the contrast of whole regions moves away from
the input's. Both corrections keep the result's detail and take the colour from the input:
- wavelet (StableSR's `wavelet_color_fix`): the result's high-frequency bands plus the low-frequency band of
  the bicubic-upscaled input; the low band is `levels` à-trous levels of a dilated 3×3 binomial blur.
- adain: per-channel mean and standard deviation of the result matched to the bicubic-upscaled input's
  (adaptive instance normalisation, StableSR's `adain_color_fix`).

Images are (B, 3, H, W) in [0, 1]; the low-resolution input is (B, 3, H/s, W/s) and `upsample` turns it
(or a window of it) into the (B, 3, H, W) bicubic reference. The tiled drivers never hold more than one
full-size tensor (their output) beyond the inputs: the wavelet runs on `FIX_TILE`-pixel LR tiles with
enough context to be exact, AdaIN collects its statistics in one streaming pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from resshift_cli.tiling import Tile, context_window

ColorFix = Literal["none", "wavelet", "adain"]
COLOR_FIXES: tuple[str, ...] = get_args(ColorFix)

WAVELET_LEVELS = 5
FIX_TILE = 128
"""LR pixels per side of the tiles the corrections run on (512 output pixels at ×4)."""
BICUBIC_REACH = 2
"""LR pixels on each side that a bicubic output pixel reads."""
ADAIN_EPS = 1e-5
"""Added to the variance before the square root, as StableSR does."""

Upsample = Callable[[Tensor], Tensor]
"""(B, 3, h, w) → (B, 3, s·h, s·w): the bicubic ×s of an LR window."""

_BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16


# 1. Pure tensor functions -----------------------------------------------------------------------------------


def wavelet_blur(x: Tensor, radius: int) -> Tensor:
    """One à-trous level: the 3×3 binomial kernel dilated by `radius`, borders replicated; shape kept."""
    kernel = _BLUR.to(x.device, x.dtype).expand(x.shape[1], 1, 3, 3)
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=x.shape[1], dilation=radius)


def low_frequency(x: Tensor, levels: int = WAVELET_LEVELS) -> Tensor:
    """The wavelet decomposition's last low band: blurs of radius 1, 2, 4, …, 2^(levels−1) in turn.

    Each output pixel reads `wavelet_reach(levels)` pixels on each side (31 for 5 levels).
    """
    for level in range(levels):
        x = wavelet_blur(x, 2**level)
    return x


def wavelet_reach(levels: int = WAVELET_LEVELS) -> int:
    """Pixels on each side that `low_frequency` reads: 1 + 2 + … + 2^(levels−1)."""
    return 2**levels - 1


def wavelet_fix(result: Tensor, reference: Tensor, levels: int = WAVELET_LEVELS) -> Tensor:
    """result − low(result) + low(reference), as result + low(reference − result) (the blur is linear).

    result, reference: (B, C, H, W) in [0, 1]; returns (B, C, H, W), not clamped.
    """
    return result + low_frequency(reference - result, levels)


def channel_moments(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-channel Σx and Σx² in float64, (C,) each, and the pixel count, of (B, C, H, W)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return flat.sum(1), flat.square().sum(1), flat.shape[1]


def mean_std(total: Tensor, squares: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """(mean, std) per channel from `channel_moments` sums: std = √(unbiased variance + `ADAIN_EPS`)."""
    mean = total / count
    variance = (squares - total * mean) / max(count - 1, 1)
    return mean, (variance.clamp(min=0) + ADAIN_EPS).sqrt()


def adain_fix(result: Tensor, reference: Tensor) -> Tensor:
    """(result − μ_result) / σ_result · σ_reference + μ_reference per channel, over the whole tensors.

    result, reference: (B, C, H, W) in [0, 1]; returns (B, C, H, W), not clamped.
    """
    moments = mean_std(*channel_moments(result)), mean_std(*channel_moments(reference))
    gain, shift = _adain_coefficients(*moments)
    return _affine(result, gain, shift)


def _adain_coefficients(
    result: tuple[Tensor, Tensor], reference: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """(gain, shift), (C,) float64 each, so that gain·x + shift maps result's moments onto reference's."""
    gain = reference[1] / result[1]
    return gain, reference[0] - result[0] * gain


def _affine(x: Tensor, gain: Tensor, shift: Tensor) -> Tensor:
    """gain·x + shift per channel on (B, C, H, W), allocating only the output."""
    shape = (1, x.shape[1], 1, 1)
    return torch.addcmul(shift.to(x).view(shape), x, gain.to(x).view(shape))


# 2. Tiled drivers on images of any size ---------------------------------------------------------------------


def _windows(lr: Tensor, context: int) -> Iterator[tuple[Tile, Tile]]:
    """(tile, window) pairs on the LR canvas: a partition into tiles of at most `FIX_TILE` pixels (every
    pixel in exactly one), each window the tile plus up to `context` pixels per side."""
    height, width = lr.shape[-2:]
    for top in range(0, height, FIX_TILE):
        for left in range(0, width, FIX_TILE):
            tile = Tile(top, left, min(FIX_TILE, height - top), min(FIX_TILE, width - left))
            yield tile, context_window(tile, context, height, width)


def _inner(tile: Tile, window: Tile) -> Tile:
    """`tile` in the coordinates of its `window`."""
    return Tile(tile.top - window.top, tile.left - window.left, tile.height, tile.width)


def tiled_wavelet_fix(
    result: Tensor, lr: Tensor, upsample: Upsample, scale: int, levels: int = WAVELET_LEVELS
) -> Tensor:
    """`wavelet_fix(result, upsample(lr))` computed tile by tile, the same up to float rounding.

    result: (B, 3, s·h, s·w) in [0, 1]; lr: (B, 3, h, w) in [0, 1]. Each LR tile reads enough context for the
    blur (`wavelet_reach` output pixels) and the bicubic kernel, so no seam can appear. Returns a new tensor
    like `result`, clamped to [0, 1].
    """
    context = -(-wavelet_reach(levels) // scale) + BICUBIC_REACH
    out = torch.empty_like(result)
    for tile, window in _windows(lr, context):
        reference = upsample(lr[(..., *window.slices())])
        fixed = wavelet_fix(result[(..., *window.slices(scale))], reference, levels)
        out[(..., *tile.slices(scale))] = fixed[(..., *_inner(tile, window).slices(scale))]
    return out.clamp_(0, 1)


def tiled_adain_fix(result: Tensor, lr: Tensor, upsample: Upsample, scale: int) -> Tensor:
    """`adain_fix(result, upsample(lr))` with the reference's statistics gathered tile by tile.

    result: (B, 3, s·h, s·w) in [0, 1]; lr: (B, 3, h, w) in [0, 1]. Returns a new tensor like `result`,
    clamped to [0, 1].
    """
    channels = lr.shape[1]
    total = torch.zeros(channels, dtype=torch.float64, device=lr.device)
    squares, count = total.clone(), 0
    for tile, window in _windows(lr, BICUBIC_REACH):
        reference = upsample(lr[(..., *window.slices())])[(..., *_inner(tile, window).slices(scale))]
        tile_total, tile_squares, tile_count = channel_moments(reference)
        total, squares, count = total + tile_total, squares + tile_squares, count + tile_count
    gain, shift = _adain_coefficients(_streamed_mean_std(result), mean_std(total, squares, count))
    return _affine(result, gain, shift).clamp_(0, 1)


def _streamed_mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """`mean_std` of (B, C, H, W) summed over bands of rows, so no full-size float64 copy is made."""
    band = max(1, FIX_TILE * FIX_TILE * 4 // x.shape[-1])
    moments = [channel_moments(x[..., top : top + band, :]) for top in range(0, x.shape[-2], band)]
    total = torch.stack([m[0] for m in moments]).sum(0)
    squares = torch.stack([m[1] for m in moments]).sum(0)
    return mean_std(total, squares, sum(m[2] for m in moments))


def fix_colors(result: Tensor, lr: Tensor, mode: str, upsample: Upsample, scale: int) -> Tensor:
    """Apply colour fix `mode` ("none" returns `result` itself); shapes and ranges as the tiled drivers."""
    if mode == "none":
        return result
    if mode == "wavelet":
        return tiled_wavelet_fix(result, lr, upsample, scale)
    if mode == "adain":
        return tiled_adain_fix(result, lr, upsample, scale)
    raise ValueError(f"colour fix must be one of {', '.join(COLOR_FIXES)}, not {mode!r}")
