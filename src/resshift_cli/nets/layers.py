"""Small building blocks shared by the denoiser's UNet and Swin layers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm (eps 1e-5) computed in float32 and cast back to the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer steps: (B,) → (B, dim) float32, laid out as [cos, sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
