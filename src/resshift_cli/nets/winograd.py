"""3×3 convolutions through Winograd's minimal filtering on the CPU (NNPACK, shipped inside PyTorch).

A 3×3, stride-1 convolution computed tile by tile with Winograd's F(6×6, 3×3) (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", CVPR 2016) needs 64 multiplications per 36 outputs and
channel pair instead of 324. PyTorch's x86-64 (AVX2 + FMA) and ARM builds carry NNPACK's float32 kernels;
on this project's CPU (one thread) they ran the autoencoder's and denoiser's 3×3 layers 2.0–2.9× faster
than oneDNN's direct float32 convolution, with or without AVX-512 (the 3-channel input layer aside, a
negligible share), and up to 1.4× faster than its bfloat16 convolutions (`benchmarks/winograd.py`), at a
relative error of 3·10⁻⁶ instead of bfloat16's 10⁻².

The results are not bit-identical to the direct convolution's, so the exact float32 path never uses it:
`Conv2d` takes this route only inside `enabled(True)` (the pipeline enters it for `--precision auto` on
CPUs, `UpscaleOptions.winograd`) and only where it applies (`applies`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_PIXELS = 32 * 32
"""Outputs below this many positions per channel stay on the direct convolution: NNPACK transforms the
kernel at every call, which a 16×16 output no longer repays (640 channels: 107 against 105 GFLOP/s)."""

BAND_BYTES = 16 * 2**20
"""NNPACK transforms a call's whole input and output at once, in a workspace ATen keeps at its largest for
the thread's life (≈ 3.7× the input: 150 MB for a 128-channel 288² input); `convolve` works in bands of
rows of at most this many input bytes, which bounds it (≈ 30 MB), at 2 halo rows per band."""
TILE_ROWS = 6
"""Output rows of one F(6×6, 3×3) tile: bands are a multiple of it, so no tile is computed half empty."""

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("winograd", default=False)


@functools.cache
def available() -> bool:
    """Whether this PyTorch build has NNPACK and it initialised on this CPU (x86-64 needs AVX2 + FMA)."""
    return bool(torch.backends.nnpack.is_available())


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Inside the block, `Conv2d` layers use Winograd where it applies (a no-op when `on` is False or the
    build has no NNPACK)."""
    token = _ENABLED.set(on and available())
    try:
        yield
    finally:
        _ENABLED.reset(token)


def applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """Whether `conv` on `x` (B, C, H, W) can run through NNPACK: a 3×3, stride-1, undilated, ungrouped,
    zero-padded convolution of float32 CPU tensors outside autograd, with at least `MIN_PIXELS` outputs."""
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == conv.weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and x.shape[-2] * x.shape[-1] >= MIN_PIXELS
    )


def band_rows(channels: int, width: int) -> int:
    """Output rows per band for an input of `channels` × `width` floats a row: a multiple of `TILE_ROWS`
    whose input fits `BAND_BYTES`, at least one tile."""
    rows = BAND_BYTES // (4 * channels * width)
    return max(TILE_ROWS, rows // TILE_ROWS * TILE_ROWS)


def convolve(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """(B, C_in, H, W) * (C_out, C_in, 3, 3) + (C_out,) → (B, C_out, H', W'), float32, by NNPACK.

    One image and one band of rows (`band_rows`) per call, each band read with its halo: the workspace
    stays bounded (`BAND_BYTES`), and for a batch NNPACK would otherwise take its whole-batch algorithm,
    whose workspace holds all of it. Same values as one call on the whole input.
    """
    pad_h, pad_w = padding
    height = x.shape[-2] + 2 * pad_h - 2  # output rows
    rows = band_rows(x.shape[1], x.shape[-1])
    if x.shape[0] == 1 and rows >= height:  # one call, no copies
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, [pad_h, pad_w], [1, 1])
    out = x.new_empty(x.shape[0], weight.shape[0], height, x.shape[-1] + 2 * pad_w - 2)
    for i in range(x.shape[0]):
        for top in range(0, height, rows):
            band = _band_input(x[i : i + 1], top - pad_h, min(top + rows, height) + 2 - pad_h)
            args = ([0, pad_w], [1, 1])
            out[i : i + 1, :, top : top + rows] = torch._nnpack_spatial_convolution(band, weight, bias, *args)
    return out


def _band_input(x: Tensor, start: int, stop: int) -> Tensor:
    """Rows start … stop − 1 of (1, C, H, W) `x`, zero rows where they lie outside it, contiguous."""
    height = x.shape[-2]
    inside = x[..., max(start, 0) : min(stop, height), :]
    return F.pad(inside, (0, 0, max(-start, 0), max(stop - height, 0))).contiguous()


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters, state-dict keys and results outside `enabled`) that inside
    `enabled(True)` computes 3×3 stride-1 convolutions with Winograd's transform where `applies`."""

    def forward(self, x: Tensor) -> Tensor:
        if _ENABLED.get() and applies(self, x):
            return convolve(x, self.weight.contiguous(), self.bias, self.padding)  # type: ignore[arg-type]
        return super().forward(x)
