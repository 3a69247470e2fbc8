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
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_PIXELS = 32 * 32
"""Outputs below this many positions per channel stay on the direct convolution: NNPACK transforms the
kernel at every call, which a 16×16 output no longer repays (640 channels: 107 against 105 GFLOP/s)."""

BAND_BYTES = 16 * 2**20
"""NNPACK transforms a call's whole input and output at once (64 values per 6×6 tile and channel), in a
workspace ATen keeps at its largest for the thread's life (150 MB for a 128-channel 288² input, 115 MB for
the denoiser's 6 → 160-channel first layer on a 256² latent); `convolve` works in bands of rows whose input
and output rows each hold at most this many bytes, which bounds it (≈ 60 MB), at 2 halo rows per band.
8 MiB bands saved another ~50 MB but made the decoder 5 % slower (its 512-channel layers transform their
kernel once per band)."""
TILE_ROWS = 6
"""Output rows of one F(6×6, 3×3) tile: bands are a multiple of it, so no tile is computed half empty."""

RowSource = Callable[[int, int], Tensor]
"""(start, stop) → rows start … stop − 1 of a convolution's input, (B, C, stop − start, W) float32, for
0 ≤ start < stop ≤ H: lets a layer hand over an input it never forms whole (normalised, upsampled)."""

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


def in_bands(x: Tensor) -> bool:
    """Whether layers may take `x` (float32, CPU, outside autograd) in bands of rows inside `enabled(True)`,
    with normalisation statistics computed apart (`GroupNorm32.scale_shift`) and sums written in place:
    values equal to the whole-tensor path up to float32 rounding, fewer full-size temporaries. Like
    Winograd itself, never on the exact path."""
    return _ENABLED.get() and _float32_cpu_inference(x)


def _float32_cpu_inference(x: Tensor) -> bool:
    """Whether `x` is a float32 CPU tensor and autograd is off: what NNPACK and the banded layers need."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled()


def applies(conv: nn.Conv2d, x: Tensor, shape: Sequence[int] | None = None) -> bool:
    """Whether `conv` on `x` (B, C, H, W) can run through NNPACK: a 3×3, stride-1, undilated, ungrouped,
    zero-padded convolution of float32 CPU tensors outside autograd, with at least `MIN_PIXELS` outputs.
    `shape`: the input's shape where it differs from `x`'s (an input given by rows, `convolve_rows`)."""
    height, width = (shape or x.shape)[-2:]
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
        and x.dim() == 4
        and _float32_cpu_inference(x)
        and conv.weight.dtype == torch.float32
        and height * width >= MIN_PIXELS
    )


def band_rows(channels: int, width: int) -> int:
    """Output rows per band for `channels` × `width` floats a row (the wider of the input and the output,
    all images of a batch): a multiple of `TILE_ROWS` whose rows fit `BAND_BYTES`, at least one tile."""
    rows = BAND_BYTES // (4 * channels * width)
    return max(TILE_ROWS, rows // TILE_ROWS * TILE_ROWS)


def convolve(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """(B, C_in, H, W) * (C_out, C_in, 3, 3) + (C_out,) → (B, C_out, H', W'), float32, by NNPACK.

    In bands of rows (`convolve_rows`) unless the input is one image that fits one band: one call then.
    """
    height = x.shape[-2] + 2 * padding[0] - 2
    if x.shape[0] == 1 and band_rows(max(x.shape[1], weight.shape[0]), x.shape[-1]) >= height:  # one call
        return torch._nnpack_spatial_convolution(x.contiguous(), weight, bias, list(padding), [1, 1])
    return convolve_rows(lambda start, stop: x[:, :, start:stop], x.shape, weight, bias, padding)


def convolve_rows(
    rows: RowSource,
    shape: Sequence[int],
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    out: Tensor | None = None,
) -> Tensor:
    """The convolution of `convolve` on an input of `shape` (B, C_in, H, W) read band by band from `rows`.

    Each band of output rows (`band_rows`) reads its input rows with their halo and calls NNPACK once per
    image: the workspace stays bounded (`BAND_BYTES`), and for a batch NNPACK would otherwise take its
    whole-batch algorithm, whose workspace holds all of it. Same values as one call on the whole input.
    `out`: where the result goes, (B, C_out, H', W') (new if None). It may be the tensor `rows` reads (same
    shape, padding ≤ 1): a band's result is written only once the next band has been computed, and no
    band reads rows above the one before it.
    """
    batch, channels, height, width = shape
    pad_h, pad_w = padding
    out_height = height + 2 * pad_h - 2
    step = band_rows(batch * max(channels, weight.shape[0]), width)
    if out is None:
        out = weight.new_empty(batch, weight.shape[0], out_height, width + 2 * pad_w - 2)
    pending: tuple[int, Tensor] | None = None  # the band before's result, not yet written
    for top in range(0, out_height, step):
        band = _band_input(rows, top - pad_h, min(top + step, out_height) + 2 - pad_h, height)
        result = _convolve_band(band, weight, bias, pad_w)
        del band  # before the next band is read
        if pending is not None:
            out[:, :, pending[0] : top] = pending[1]
        pending = top, result
    if pending is not None:
        out[:, :, pending[0] :] = pending[1]
    return out


def _band_input(rows: RowSource, start: int, stop: int, height: int) -> Tensor:
    """Input rows start … stop − 1 from `rows` (an input `height` rows high), zero rows where they lie
    outside it, contiguous."""
    inside = rows(max(start, 0), min(stop, height))
    if start >= 0 and stop <= height:
        return inside.contiguous()
    return F.pad(inside, (0, 0, max(-start, 0), max(stop - height, 0))).contiguous()


def _convolve_band(band: Tensor, weight: Tensor, bias: Tensor | None, pad_w: int) -> Tensor:
    """The convolution of `band` (B, C_in, rows + 2, W), padded `pad_w` columns each side, → (B, C_out, rows,
    W'), one image per NNPACK call."""
    images = [band[i : i + 1] for i in range(band.shape[0])]
    results = [torch._nnpack_spatial_convolution(x, weight, bias, [0, pad_w], [1, 1]) for x in images]
    return results[0] if len(results) == 1 else torch.cat(results)


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters, state-dict keys and results outside `enabled`) that inside
    `enabled(True)` computes 3×3 stride-1 convolutions with Winograd's transform where `applies`."""

    def forward(self, x: Tensor) -> Tensor:
        if self.takes_rows(x):
            return convolve(x, self.weight.contiguous(), self.bias, self.padding)  # type: ignore[arg-type]
        return super().forward(x)

    def takes_rows(self, x: Tensor, shape: Sequence[int] | None = None) -> bool:
        """Whether this layer runs by Winograd here, so that `forward_rows` can take its input by rows: on
        `x`, or on an input of `shape` with `x`'s dtype and device."""
        return _ENABLED.get() and applies(self, x, shape)

    def forward_rows(self, rows: RowSource, shape: Sequence[int], out: Tensor | None = None) -> Tensor:
        """This layer on an input of `shape` (B, C_in, H, W) given by `rows`, where `takes_rows` holds;
        into `out` if given (which may be the tensor `rows` reads, `convolve_rows`)."""
        weight = self.weight.contiguous()
        return convolve_rows(rows, shape, weight, self.bias, self.padding, out)  # type: ignore[arg-type]
