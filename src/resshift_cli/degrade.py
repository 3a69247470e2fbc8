"""HR → LR degradations used to make training pairs: bicubic ×1/s and (to come) Real-ESRGAN's second order.

Every function takes one image (3, H, W) float32 in [0, 1] and a CPU `torch.Generator`, and returns
(3, H/s, W/s) float32 in [0, 1] rounded to 8-bit levels; the same generator state gives the same LR.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from resshift_cli.errors import UsageError

DEGRADATIONS = ("realesrgan", "bicubic")


def to_8bit_levels(image: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the nearest of the 256 8-bit levels."""
    return torch.round(image.clamp(0, 1) * 255) / 255


def bicubic(hr: Tensor, scale: int = 4) -> Tensor:
    """(3, H, W) → (3, H/scale, W/scale): antialiased bicubic downscale, 8-bit levels."""
    small = F.interpolate(hr[None], scale_factor=1 / scale, mode="bicubic", antialias=True)
    return to_8bit_levels(small[0])


def degrade(hr: Tensor, kind: str, generator: torch.Generator, scale: int = 4) -> Tensor:
    """(3, H, W) in [0, 1], H and W multiples of `scale` → (3, H/scale, W/scale) LR in [0, 1], 8-bit levels."""
    if kind == "bicubic":
        return bicubic(hr, scale)
    raise UsageError(f"unknown degradation {kind!r} (choose from {', '.join(DEGRADATIONS)})")
