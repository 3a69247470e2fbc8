"""Small building blocks shared by the denoiser's UNet and Swin layers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (eps 1e-5) computed in float32 and cast back to the input dtype.

    Outside autograd, a bfloat16 input on the CPU goes through ATen's mixed-precision kernel instead, which
    accumulates the statistics in float32 too and rounds once: the same values but for one rounding step
    in a few elements per million, without the two full-size float32 copies (realsr-v3's UNet on a 256²
    latent in bf16 peaks lower).
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.bfloat16 and x.device.type == "cpu" and not torch.is_grad_enabled():
            return super().forward(x)
        return super().forward(x.float()).type(x.dtype)

    def scale_shift(self, parts: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Per image and channel (scale, shift), (B, C, 1, 1) float32 each, such that x · scale + shift is
        this GroupNorm of x, the channel concatenation of `parts` ((B, C_k, H, W) each), which need not be
        formed: each group's variance is the mean of its channels' variances plus the variance of their
        means (the law of total variance), from every channel's statistics over H × W.
        """
        stats = [_channel_stats(p.float()) for p in parts]
        mean = torch.cat([m for m, _ in stats], dim=1)  # (B, C)
        var = torch.cat([v for _, v in stats], dim=1)
        batch, channels = mean.shape
        grouped = (batch, self.num_groups, channels // self.num_groups)
        group_mean = mean.view(grouped).mean(-1, keepdim=True)
        group_var = (var.view(grouped) + (mean.view(grouped) - group_mean).square()).mean(-1, keepdim=True)
        scale = torch.rsqrt(group_var + self.eps).expand(grouped).reshape(batch, channels)
        shift = -group_mean.expand(grouped).reshape(batch, channels) * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return scale[..., None, None], shift[..., None, None]


STATS_BAND_ELEMENTS = 2**22
"""Elements of x per band of rows in `_channel_stats`'s second pass (its only temporary: 16 MiB)."""


def _channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per image and channel (mean, variance) over H × W of x (B, C, H, W) float32, as (B, C) each.

    Two passes, the centred squares summed in bands of rows (`STATS_BAND_ELEMENTS`): no full-size
    temporary, and ~6× faster than `torch.var_mean` (Welford, scalar) on the CPU.
    """
    b, c, h, w = x.shape
    mean = x.mean(dim=(2, 3), keepdim=True)
    squares = x.new_zeros(b, c)
    rows = max(1, STATS_BAND_ELEMENTS // (b * c * w))
    for top in range(0, h, rows):
        squares += (x[:, :, top : top + rows] - mean).square_().sum(dim=(2, 3))
    return mean.view(b, c), squares / (h * w)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer steps: (B,) → (B, dim) float32, laid out as [cos, sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
