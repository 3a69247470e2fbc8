"""The Swin-UNet denoiser f_θ(x_t, t, y₀) of ResShift (`UNetModelSwin`, docs/official-behaviour.md §4).

It predicts x₀ directly (paper Eq. 8 with the x₀-parameterisation). Parameter names follow the released
checkpoints, so their state dicts load without renaming.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resshift_cli.config import UNetConfig
from resshift_cli.errors import ModelError
from resshift_cli.nets import winograd
from resshift_cli.nets.layers import GroupNorm32, timestep_embedding
from resshift_cli.nets.swin import BasicLayer

LQ_CHANNELS = 3
"""Channels of the LR conditioning concatenated to the latent (`base_chn` upstream, no mask)."""


class ResBlock(nn.Module):
    """Residual block with scale-shift conditioning on the step embedding (improved-diffusion style)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(32, c_in), nn.SiLU(), winograd.Conv2d(c_in, c_out, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * c_out))
        self.out_layers = nn.Sequential(
            GroupNorm32(32, c_out), nn.SiLU(), nn.Dropout(0.0), winograd.Conv2d(c_out, c_out, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor | list[Tensor], emb: Tensor) -> Tensor:
        """x: (B, c_in, H, W), or a list of its channel blocks in order (the output path's h and skip),
        which the block takes over: it empties the list once it has read it, so that the blocks can be
        freed early. emb: (B, emb_dim) → (B, c_out, H, W).

        Outside autograd the activation, the scale-shift and the residual sum work in place on tensors this
        block made (same values, fewer full-size temporaries: realsr-v3's UNet on a 256² latent peaks
        lower). Where the convolutions run by Winograd, the concatenation of the blocks and the normalised
        inputs are never formed whole: they are made band by band of rows (`_activated_rows`).
        """
        parts = x if isinstance(x, list) else [x]
        shape = (*parts[0].shape[:1], sum(p.shape[1] for p in parts), *parts[0].shape[2:])
        norm, _, conv = self.in_layers
        if conv.takes_rows(parts[0], shape):
            h = conv.forward_rows(_activated_rows(parts, *norm.scale_shift(parts)), shape)
            h = self._add_skip_by_rows(self._out(h, emb), parts)
            parts.clear()
            return h
        whole = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        parts.clear()
        h = self._out(conv(F.silu(norm(whole), inplace=not torch.is_grad_enabled())), emb)
        skip = self.skip_connection(whole)
        return h.add_(skip) if not torch.is_grad_enabled() else skip + h

    def _out(self, h: Tensor, emb: Tensor) -> Tensor:
        """The scale-shift conditioned second half on the first convolution's output h (B, c_out, H, W); by
        rows where its convolution runs by Winograd (norm, scale-shift and SiLU applied band by band), the
        result written into h."""
        in_place = not torch.is_grad_enabled()
        scale, shift = self.emb_layers(emb).type(h.dtype)[:, :, None, None].chunk(2, dim=1)
        norm, _, dropout, conv = self.out_layers
        if conv.takes_rows(h):
            norm_scale, norm_shift = norm.scale_shift([h])
            rows = _activated_rows([h], norm_scale * (1 + scale), norm_shift * (1 + scale) + shift)
            return conv.forward_rows(lambda start, stop: dropout(rows(start, stop)), h.shape, out=h)
        h = norm(h)
        h = h.mul_(1 + scale).add_(shift) if in_place else h * (1 + scale) + shift
        return conv(dropout(F.silu(h, inplace=in_place)))

    def _add_skip_by_rows(self, h: Tensor, parts: list[Tensor]) -> Tensor:
        """h + skip_connection(x), x the channel concatenation of `parts`, added into h band by band of
        rows."""
        if isinstance(self.skip_connection, nn.Identity):
            return h.add_(parts[0])
        step = winograd.band_rows(h.shape[0] * self.skip_connection.in_channels, h.shape[-1])
        for top in range(0, h.shape[-2], step):
            band = _concatenated_rows(parts, top, top + step)
            h[:, :, top : top + step].add_(self.skip_connection(band))
            del band  # before the next band is read
        return h


def _activated_rows(parts: list[Tensor], scale: Tensor, shift: Tensor) -> winograd.RowSource:
    """Rows of SiLU(x · scale + shift), x (B, C, H, W) the channel concatenation of `parts`, scale and shift
    (B, C, 1, 1) (a GroupNorm's, `GroupNorm32.scale_shift`, possibly composed with a scale-shift)."""

    def rows(start: int, stop: int) -> Tensor:
        band = _concatenated_rows(parts, start, stop)
        return F.silu(band.mul_(scale).add_(shift), inplace=True)

    return rows


def _concatenated_rows(parts: list[Tensor], start: int, stop: int) -> Tensor:
    """Rows start … stop − 1 of the channel concatenation of `parts` ((B, C_k, H, W) each), a new tensor."""
    return torch.cat([p[:, :, start:stop] for p in parts], dim=1)


class Downsample(nn.Module):
    """Stride-2 3×3 convolution (`.op`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2 then a 3×3 convolution (`.conv`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = winograd.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, 2H, 2W); by rows where the convolution runs by Winograd (the upsampled
        input is never formed whole)."""
        shape = (*x.shape[:2], 2 * x.shape[2], 2 * x.shape[3])
        if self.conv.takes_rows(x, shape):
            return self.conv.forward_rows(functools.partial(_upsampled_rows, x), shape)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _upsampled_rows(x: Tensor, start: int, stop: int) -> Tensor:
    """Rows start … stop − 1 of x (B, C, H, W) upsampled ×2 by nearest neighbour (row r is x's row r // 2)."""
    up = F.interpolate(x[:, :, start // 2 : (stop + 1) // 2], scale_factor=2, mode="nearest")
    return up[:, :, start % 2 : start % 2 + stop - start]


class TimestepEmbedSequential(nn.Sequential):
    """A sequence of layers where ResBlocks also receive the step embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModelSwin(nn.Module):
    """x₀-predicting Swin-UNet: (B, C, H, W) scaled latent + (B, 3, H, W) LR in [−1, 1] → (B, C, H, W).

    C = `in_channels` = `out_channels` (3 for the VQ-f4 latent, 48 for space-to-depth ×4). H and W must be
    multiples of 64 (three halvings and 8×8 windows at the lowest level).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.lq_size != config.image_size or config.cond_mask or not config.cond_lq:
            raise ModelError(
                "only LR-conditioned super-resolution UNets (lq_size == image_size) are supported"
            )
        self.config = config
        mc = config.model_channels
        emb_dim = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input_blocks, skips = self._input_blocks(config, emb_dim)
        width = mc * config.channel_mult[-1]
        lowest = config.image_size // 2 ** (len(config.channel_mult) - 1)
        self.middle_block = TimestepEmbedSequential(
            ResBlock(width, width, emb_dim), self._swin(width, lowest), ResBlock(width, width, emb_dim)
        )
        self.output_blocks = self._output_blocks(config, emb_dim, skips)
        self.out = nn.Sequential(
            GroupNorm32(32, mc), nn.SiLU(), winograd.Conv2d(mc, config.out_channels, 3, padding=1)
        )

    def _swin(self, channels: int, nominal_size: int) -> BasicLayer:
        c = self.config
        heads = c.swin_embed_dim // c.num_head_channels
        return BasicLayer(
            channels, c.swin_embed_dim, heads, c.swin_depth, c.window_size, nominal_size, c.mlp_ratio
        )

    def _with_swin(self, layers: list[nn.Module], channels: int, ds: int) -> list[nn.Module]:
        size = self.config.image_size // ds
        return [*layers, self._swin(channels, size)] if size in self.config.attention_resolutions else layers

    def _input_blocks(self, c: UNetConfig, emb_dim: int) -> tuple[nn.ModuleList, list[int]]:
        """Encoder half; returns the blocks and the channel count of every skip they push."""
        ch = c.model_channels
        blocks = [TimestepEmbedSequential(winograd.Conv2d(c.in_channels + LQ_CHANNELS, ch, 3, padding=1))]
        skips, ds = [ch], 1
        for level, mult in enumerate(c.channel_mult):
            for i in range(c.num_res_blocks[level]):
                layers: list[nn.Module] = [ResBlock(ch, mult * c.model_channels, emb_dim)]
                ch = mult * c.model_channels
                blocks.append(
                    TimestepEmbedSequential(*(self._with_swin(layers, ch, ds) if i == 0 else layers))
                )
                skips.append(ch)
            if level != len(c.channel_mult) - 1:
                blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skips.append(ch)
                ds *= 2
        return nn.ModuleList(blocks), skips

    def _output_blocks(self, c: UNetConfig, emb_dim: int, skips: list[int]) -> nn.ModuleList:
        """Decoder half, consuming the skips in reverse."""
        ch = c.model_channels * c.channel_mult[-1]
        ds = 2 ** (len(c.channel_mult) - 1)
        blocks = []
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks[level] + 1):
                layers: list[nn.Module] = [ResBlock(ch + skips.pop(), mult * c.model_channels, emb_dim)]
                ch = mult * c.model_channels
                if i == 0:
                    layers = self._with_swin(layers, ch, ds)
                if level and i == c.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    ds //= 2
                blocks.append(TimestepEmbedSequential(*layers))
        return nn.ModuleList(blocks)

    def forward(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        """x: (B, C, H, W) scaled x_t; t: (B,) int64 step index; lq: (B, 3, H, W) LR in [−1, 1] → x̂₀."""
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        h = torch.cat([x, lq], dim=1).float()
        stack: list[Tensor] = []
        for block in self.input_blocks:
            h = block(h, emb)
            stack.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            resblock, *rest = block  # not `block(…, emb)`: the call would keep its input alive
            parts = [h, stack.pop()]
            del h  # the block takes `parts` over and frees them once read
            h = resblock(parts, emb)
            for layer in rest:
                h = layer(h)
        return self.out(h.type(x.dtype))
