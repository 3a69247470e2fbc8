"""Swin transformer layers of the ResShift denoiser, NCHW throughout (docs/official-behaviour.md §4.4).

Quirks of the released weights reproduced here: GroupNorm (not LayerNorm) inside the blocks, no residual
around a whole `BasicLayer`, unshifted blocks when the nominal resolution is not larger than the window, and
the attention mask of shifted blocks computed for the actual input size with the official row-only,
transposed labelling.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resshift_cli.nets import winograd
from resshift_cli.nets.layers import GroupNorm32

MASKED = -100.0
"""Logit offset between tokens of different shifted regions (as upstream)."""
CHUNK_ELEMENTS = 2**22
"""Attention and the MLP run on slices of the image (windows, rows) whose widest intermediate (qkv, the MLP's
hidden layer) holds about this many elements: per-window and per-pixel work gives the same values in any
slicing, and peak memory no longer grows with the tile (realsr-v3, 256² latent: the top level's MLP alone
held 2 × 256² × 768 values). 2²² (16 MiB in float32): as fast as 2²³, with ~30 MB less at the peak."""


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) → (B·nW, window², C), windows row-major over the grid, tokens row-major inside."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """(B·nW, window², C) → (B, H, W, C); the inverse of `window_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int) -> Tensor:
    """(window², window²) int64 CPU index into the (2·window−1)² bias table (standard Swin formula).

    Always built on the CPU: under a meta-device context `arange` would pull in torch's symbolic-shape
    machinery (≈ 0.9 s of imports at model load).
    """
    axis = torch.arange(window, device=torch.device("cpu"))
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def window_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """(nW, window², window²) float32 additive mask of a shifted block, as the released weights expect it.

    Upstream labels image *rows* only (columns are never separated) and reads the labels back with the
    in-window token order transposed: token k of window n (window-grid row r) gets the label of image row
    window·r + (k mod window). Labels: 0 for rows < H − window, 1 for rows < H − shift, else 2.
    Tokens with different labels get `MASKED` (−100) added to their logits.
    """
    rows = torch.arange(height, device=device)
    row_label = (rows >= height - window).long() + (rows >= height - shift).long()
    token = torch.arange(window * window, device=device) % window
    grid_rows = torch.arange(height // window, device=device)
    labels = row_label[window * grid_rows[:, None] + token[None, :]]  # (H/window, window²)
    labels = labels.repeat_interleave(width // window, dim=0)  # (nW, window²), windows row-major
    differs = labels[:, :, None] != labels[:, None, :]
    return differs.float() * MASKED


@functools.lru_cache(maxsize=64)
def shifted_window_mask(
    height: int, width: int, window: int, shift: int, device: torch.device | None = None
) -> Tensor:
    """`window_mask`, cached per size and device (built on the CPU, so a meta-device construction
    context never reaches the cache)."""
    return window_mask(height, width, window, shift, torch.device("cpu")).to(device)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside 8×8 windows with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window = window
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def rebuild_buffers(self, device: torch.device | str) -> None:
        """Recompute the (non-learned) relative-position index on `device`."""
        self.relative_position_index = relative_position_index(self.window).to(device)

    def position_bias(self) -> Tensor:
        """(heads, window², window²) bias gathered from the table."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x: (B·nW, N, C) window tokens, image-major; mask: (nW, N, N) additive or None → (B·nW, N, C).

        Runs in chunks of windows (`CHUNK_ELEMENTS`), each with its windows' slice of the mask."""
        bw, n, c = x.shape
        windows = bw if mask is None else mask.shape[0]
        chunk = max(1, min(windows, CHUNK_ELEMENTS // (n * 3 * c)))
        if chunk == windows == bw:  # one image whose windows fit one chunk: no copy into an output buffer
            return self._attend(x, mask)
        out: Tensor | None = None
        start = 0
        while start < bw:
            first = start % windows
            stop = min(start + chunk, bw, start - first + windows)  # a chunk never spans two images
            part = self._attend(x[start:stop], None if mask is None else mask[first : first + stop - start])
            if out is None:
                out = part.new_empty((bw, n, c))
            out[start:stop] = part
            start = stop
        assert out is not None
        return out

    def _attend(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """(k, N, C) window tokens, (k, N, N) additive mask or None → (k, N, C)."""
        k, n, c = x.shape
        q, key, v = self.qkv(x).view(k, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias().to(q.dtype).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            bias = bias + mask.to(q.dtype).unsqueeze(1)  # (k, heads, N, N)
        out = F.scaled_dot_product_attention(q, key, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(k, n, c))


class Mlp(nn.Module):
    """Conv1×1 → GELU (exact) → Conv1×1 on (B, C, H, W)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def residual(self, x: Tensor, normed: Tensor, in_place: bool = False) -> Tensor:
        """x + mlp(normed) for (B, C, H, W) inputs, in slices of rows (`CHUNK_ELEMENTS`); the same values as
        in one piece (the MLP is per pixel), with only a slice of its hidden layer alive at a time.
        `in_place`: the sums are written into `x` (the caller owns it; outside autograd only)."""
        h = x.shape[2]
        rows = self._slice_rows(x)
        if rows >= h:
            mlp = self(normed)
            return x.add_(mlp) if in_place and mlp.dtype == x.dtype else x + mlp
        out: Tensor | None = x if in_place else None
        for top in range(0, h, rows):
            band = slice(top, min(top + rows, h))
            part = x[:, :, band] + self(normed[:, :, band])
            if out is None or out.dtype != part.dtype:
                out = torch.empty_like(x, dtype=part.dtype)
            out[:, :, band] = part
        assert out is not None
        return out

    def normalised_residual(self, x: Tensor, norm: GroupNorm32) -> Tensor:
        """x += mlp(norm(x)) in place, (B, C, H, W), in slices of rows with the normalisation applied slice
        by slice (statistics over the whole of x first): no full-size temporary at all."""
        scale, shift = norm.scale_shift([x])
        rows = self._slice_rows(x)
        for top in range(0, x.shape[2], rows):
            band = x[:, :, top : top + rows]
            band.add_(self(band * scale + shift))
        return x

    def _slice_rows(self, x: Tensor) -> int:
        """Rows of x (B, C, H, W) per slice: the slice's hidden layer holds about `CHUNK_ELEMENTS` values."""
        return max(1, CHUNK_ELEMENTS // (x.shape[3] * self.fc1.out_channels * x.shape[0]))


class SwinTransformerBlock(nn.Module):
    """One (shifted-)window attention block with GroupNorm, on (B, C, H, W); H and W multiples of window."""

    def __init__(
        self, dim: int, heads: int, window: int, shift: int, nominal_size: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        if nominal_size <= window:
            window, shift = nominal_size, 0
        self.window = window
        self.shift = shift
        self.nominal_size = nominal_size
        self.norm1 = GroupNorm32(32, dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = GroupNorm32(32, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift > 0:
            self.register_buffer(
                "attn_mask", shifted_window_mask(nominal_size, nominal_size, window, shift).clone()
            )

    def rebuild_buffers(self, device: torch.device | str) -> None:
        """Recompute the stored nominal-size mask on `device` (`forward` never uses it, see module doc)."""
        if self.shift > 0:
            size = self.nominal_size
            self.attn_mask = shifted_window_mask(size, size, self.window, self.shift).to(device, copy=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H, W)."""
        return self.feed_forward(self.attend(x))

    def attend(self, x: Tensor) -> Tensor:
        """x + (shifted) window attention of norm1(x): (B, C, H, W) → a new (B, C, H, W)."""
        _, _, h, w = x.shape
        y = self._roll(self.norm1(x).permute(0, 2, 3, 1), -self.shift, (1, 2))  # B, H, W, C
        mask = self._mask(h, w, x.device)
        y = window_reverse(self.attn(window_partition(y, self.window), mask), self.window, h, w)
        return x + self._roll(y, self.shift, (1, 2)).permute(0, 3, 1, 2)

    def attend_in_place(self, x: Tensor) -> Tensor:
        """`attend` written into x (B, C, H, W) and returned, band by band of window rows: each band's rows
        (read where the shift moves them) are normalised (statistics over the whole of x first), attended
        and added back into the same rows, so no full-size temporary is formed. Outside autograd only."""
        b, c, h, w = x.shape
        scale, shift = self.norm1.scale_shift([x])
        mask = self._mask(h, w, x.device)
        per_row = w // self.window  # windows in a row of windows
        step = max(1, CHUNK_ELEMENTS // (b * per_row * self.window**2 * 3 * c))  # rows of windows a band
        for top in range(0, h // self.window, step):
            bottom = min(top + step, h // self.window)
            rows = torch.arange(top * self.window, bottom * self.window, device=x.device).add_(self.shift) % h
            y = self._roll(x.index_select(2, rows).mul_(scale).add_(shift), -self.shift, (3,))
            band_mask = None if mask is None else mask[top * per_row : bottom * per_row]
            windows = self.attn(window_partition(y.permute(0, 2, 3, 1), self.window), band_mask)
            y = window_reverse(windows, self.window, len(rows), w).permute(0, 3, 1, 2)
            x.index_add_(2, rows, self._roll(y, self.shift, (3,)))
        return x

    def _mask(self, height: int, width: int, device: torch.device) -> Tensor | None:
        """The (nW, N, N) additive mask of a shifted block for this input size, None unshifted."""
        if self.shift == 0:
            return None
        # torch.compile traces the mask into its graph; eager runs reuse the cached one
        masks = window_mask if torch.compiler.is_compiling() else shifted_window_mask
        return masks(height, width, self.window, self.shift, device)

    @staticmethod
    def _roll(x: Tensor, shift: int, dims: tuple[int, ...]) -> Tensor:
        """x rolled by `shift` along every one of `dims`; x itself when `shift` is 0."""
        return torch.roll(x, shifts=(shift,) * len(dims), dims=dims) if shift else x

    def feed_forward(self, x: Tensor) -> Tensor:
        """x + mlp(norm2(x)): (B, C, H, W) → (B, C, H, W); outside autograd written into `x` (which
        `attend` made: `BasicLayer` calls the halves apart, so the block's input is freed in between)."""
        return self.mlp.residual(x, self.norm2(x), in_place=not torch.is_grad_enabled())


class PatchProjection(nn.Module):
    """A 1×1 convolution between the UNet width and the Swin width (`patch_embed` / `patch_unembed`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class BasicLayer(nn.Module):
    """`patch_embed` → `depth` Swin blocks (alternately shifted) → `patch_unembed`; no outer residual."""

    def __init__(
        self,
        channels: int,
        embed_dim: int,
        heads: int,
        depth: int,
        window: int,
        nominal_size: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchProjection(channels, embed_dim)
        self.patch_unembed = PatchProjection(embed_dim, channels)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(embed_dim, heads, window, (i % 2) * (window // 2), nominal_size, mlp_ratio)
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, channels, H, W) → (B, channels, H, W)."""
        x = self.patch_embed(x)
        in_bands = winograd.in_bands(x)  # x is this layer's own: its blocks may write into it
        for block in self.blocks:
            if in_bands:
                x = block.mlp.normalised_residual(block.attend_in_place(x), block.norm2)
            else:
                x = block.feed_forward(block.attend(x))
        return self.patch_unembed(x)
