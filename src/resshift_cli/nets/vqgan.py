"""The VQ-f4 autoencoder (CompVis LDM first stage, `VQModelTorch`, docs/official-behaviour.md §5).

ResShift runs its diffusion in this autoencoder's latent space: encode without quantisation, decode with
quantisation to the nearest codebook entry.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resshift_cli.config import AutoencoderConfig, DDConfig
from resshift_cli.errors import ModelError
from resshift_cli.nets import winograd

QUANTIZE_CHUNK = 256
"""Latent positions per nearest-code search: its (chunk, n_embed) distance matrix stays in cache
(256 × 8192 floats = 8 MiB; 5.5× faster than 4096-row chunks on a 2-core Xeon)."""


StatisticsMode = Literal["own", "record", "shared"]


class GroupNorm(nn.GroupNorm):
    """GroupNorm whose per-group statistics can be recorded on one pass and shared by later ones.

    mode "own" (the default): ordinary GroupNorm over the input's own positions (`nn.GroupNorm`, bit for bit).
    "record": in float32 over the positions of all the batch's inputs together (crops of one image), keeping
    that per-group mean and variance. "shared": normalises with the recorded statistics instead of the
    input's, so tiles of one image are all normalised alike (`shared_statistics`).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.mode: StatisticsMode = "own"
        self.statistics: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H, W); float32 unless mode "own" (which keeps `nn.GroupNorm`'s dtype)."""
        if self.mode == "own":
            return super().forward(x)
        b, c = x.shape[:2]
        groups = x.float().reshape(b, self.num_groups, -1)
        if self.mode == "record":
            var, mean = torch.var_mean(groups, dim=(0, 2), unbiased=False, keepdim=True)
            self.statistics = (mean, var)
        if self.statistics is None:
            raise RuntimeError("shared GroupNorm statistics were never recorded")
        mean, var = self.statistics
        mean, var = mean.repeat(b // mean.shape[0], 1, 1), var.repeat(b // var.shape[0], 1, 1)
        y = ((groups - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


def normalize(channels: int) -> GroupNorm:
    """GroupNorm with 32 groups and eps 1e-6 (LDM `Normalize`)."""
    return GroupNorm(32, channels, eps=1e-6, affine=True)


@contextlib.contextmanager
def shared_statistics(network: nn.Module, estimate: Callable[[], object]) -> Iterator[None]:
    """Within the block, every `GroupNorm` of `network` normalises with the statistics recorded by
    `estimate()` (a pass of `network` over a batch of crops spread over the image, pooled) instead of each
    input's own, and every `AttnBlock` attends over the keys and values of all those crops.

    Tiles of one image then share one normalisation and one attention context: no tile-to-tile tone drift
    from per-tile statistics or from attention that sees only the tile. Afterwards the modules are
    ordinary again and what was recorded is dropped.
    """
    shared = [m for m in network.modules() if isinstance(m, (GroupNorm, AttnBlock))]
    try:
        for module in shared:
            module.mode = "record"
        estimate()
        for module in shared:
            module.mode = "shared"
        yield
    finally:
        for module in shared:
            module.mode = "own"
            if isinstance(module, GroupNorm):
                module.statistics = None
            else:
                module.keys_values = None


class ResnetBlock(nn.Module):
    """norm → swish → conv → norm → swish → conv, plus a 1×1 `nin_shortcut` when widths differ."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = normalize(c_in)
        self.conv1 = winograd.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = normalize(c_out)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = winograd.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) → (B, c_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x)


class AttnBlock(nn.Module):
    """Single-head self-attention over all H·W positions, with a residual (mid-block only).

    mode "own" (the default): queries, keys and values from the input. "record": every input of the batch
    (crops of one image) attends over the keys and values of all of them, which are kept. "shared": queries
    from the input, keys and values those recorded, so every tile attends over positions from the whole
    picture as the untiled network does (`shared_statistics`), at a cost linear in the tile's area.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.mode: StatisticsMode = "own"
        self.keys_values: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H, W); fused attention, so memory stays linear in H·W."""
        b, c, h, w = x.shape
        y = self.norm(x)
        q = _tokens(self.q(y))
        if self.mode == "shared":
            if self.keys_values is None:
                raise RuntimeError("shared attention keys and values were never recorded")
            k, v = (t.expand(b, -1, -1, -1) for t in self.keys_values)
        else:
            k, v = _tokens(self.k(y)), _tokens(self.v(y))
            if self.mode == "record":
                self.keys_values = (k.reshape(1, 1, -1, c), v.reshape(1, 1, -1, c))
                k, v = (t.expand(b, -1, -1, -1) for t in self.keys_values)
        out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))  # (B, 1, H·W, C)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, h, w))


def _tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, 1, H·W, C), contiguous: one attention head over all positions."""
    b, c, h, w = x.shape
    return x.reshape(b, 1, c, h * w).transpose(2, 3).contiguous()


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then a stride-2 3×3 convolution without padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest ×2 then a 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = winograd.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResnetBlocks (`block`), optional resampling (`downsample`/`upsample`)."""

    def __init__(self, widths: list[int], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(a, b) for a, b in itertools.pairwise(widths))
        if resample is not None:
            setattr(self, name, resample)
        self.resample_name = name

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        resample = getattr(self, self.resample_name, None)
        return x if resample is None else resample(x)


class Mid(nn.Module):
    """ResnetBlock → AttnBlock → ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """(B, 3, H, W) in [−1, 1] → (B, z_channels, H/f, W/f), f = 2^(levels−1)."""

    def __init__(self, c: DDConfig) -> None:
        super().__init__()
        if c.attn_resolutions:
            raise ModelError("autoencoders with attention inside their levels are not supported")
        widths = [c.ch * m for m in (1, *c.ch_mult)]
        self.conv_in = winograd.Conv2d(c.in_channels, c.ch, 3, padding=1)
        last = len(c.ch_mult) - 1
        self.down = nn.ModuleList(
            Level(
                [widths[i]] + [widths[i + 1]] * c.num_res_blocks,
                Downsample(widths[i + 1]) if i != last else None,
                "downsample",
            )
            for i in range(len(c.ch_mult))
        )
        self.mid = Mid(widths[-1])
        self.norm_out = normalize(widths[-1])
        self.conv_out = winograd.Conv2d(widths[-1], c.z_channels * (2 if c.double_z else 1), 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h)), inplace=True))


class Decoder(nn.Module):
    """(B, z_channels, h, w) → (B, out_ch, f·h, f·w), no output non-linearity."""

    def __init__(self, c: DDConfig) -> None:
        super().__init__()
        top = c.ch * c.ch_mult[-1]
        self.conv_in = winograd.Conv2d(c.z_channels, top, 3, padding=1)
        self.mid = Mid(top)
        inputs = [c.ch * m for m in c.ch_mult[1:]] + [top]  # width entering each level (processed top-down)
        self.up = nn.ModuleList(
            Level(
                [inputs[i]] + [c.ch * c.ch_mult[i]] * (c.num_res_blocks + 1),
                Upsample(c.ch * c.ch_mult[i]) if i != 0 else None,
                "upsample",
            )
            for i in range(len(c.ch_mult))
        )
        self.norm_out = normalize(c.ch * c.ch_mult[0])
        self.conv_out = winograd.Conv2d(c.ch * c.ch_mult[0], c.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation with the straight-through expression z + (e − z)
    (docs/official-behaviour.md §5.3)."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        codes = torch.empty(n_embed, embed_dim)
        if not codes.is_meta:  # meta = shapes only; random init there would import torch's compiler stack
            nn.init.uniform_(codes, -1.0 / n_embed, 1.0 / n_embed)
        self.embedding = nn.Embedding.from_pretrained(codes)

    def indices(self, z: Tensor) -> Tensor:
        """(B, C, H, W) → (B·H·W,) int64 index of the nearest code, positions in b, h, w order.

        Always float32 (autocast off): distances ‖z‖² + ‖e‖² − 2·z·e as upstream computes them, in
        cache-sized chunks; the −2·z·e term is fused into one `addmm` (scaling by −2 is exact). Every
        chunk reuses one distance buffer and writes into one index tensor: a fresh (chunk, n_embed)
        matrix per chunk, freed between small kept results, fragmented the heap until a 512² latent held
        8 GiB (realsr and tiny codebooks of 8192 codes, glibc).
        """
        with torch.autocast(z.device.type, enabled=False):
            flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # indices: no gradient
            codes = self.embedding.weight.detach().float()
            code_norms, codes_t = torch.sum(codes**2, dim=1), codes.t().contiguous()
            found = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)
            distances = flat.new_empty(min(QUANTIZE_CHUNK, flat.shape[0]), codes.shape[0])
            for start in range(0, flat.shape[0], QUANTIZE_CHUNK):
                part = flat[start : start + QUANTIZE_CHUNK]
                chunk = distances[: part.shape[0]]
                torch.add(torch.sum(part**2, dim=1, keepdim=True), code_norms, out=chunk)
                chunk.addmm_(part, codes_t, alpha=-2)
                torch.argmin(chunk, dim=1, out=found[start : start + part.shape[0]])
            return found

    def forward(self, z: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H, W) snapped to the codebook."""
        b, c, h, w = z.shape
        e = self.embedding(self.indices(z)).view(b, h, w, c).permute(0, 3, 1, 2)
        return z + (e - z)


class VQModelTorch(nn.Module):
    """Encoder + quant_conv → latent; quantize + post_quant_conv + decoder → image."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        dd = config.ddconfig
        self.config = config
        self.encoder = Encoder(dd)
        self.decoder = Decoder(dd)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(dd.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, dd.z_channels, 1)

    @property
    def factor(self) -> int:
        """Spatial down-sampling factor of the latent (4 for f4)."""
        return 2 ** (len(self.config.ddconfig.ch_mult) - 1)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [−1, 1] → (B, embed_dim, H/f, W/f) latent, not quantised."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """(B, embed_dim, h, w) latent → (B, 3, f·h, f·w), roughly in [−1, 1] (not clamped)."""
        return self.decoder(self.post_quant_conv(self.quantize(z)))

    def decode_without_quantization(self, z: Tensor) -> Tensor:
        """Decode without the codebook snap: for latents already quantised (tiled decoding) or tests."""
        return self.decoder(self.post_quant_conv(z))
