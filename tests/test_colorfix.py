"""Colour fix: a known tint is undone, detail is kept, tiles are seamless and memory stays bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from resshift_cli.api import upscale_picture
from resshift_cli.colorfix import (
    COLOR_FIXES,
    FIX_TILE,
    adain_fix,
    fix_colors,
    low_frequency,
    tiled_adain_fix,
    tiled_wavelet_fix,
    wavelet_fix,
)
from resshift_cli.images import Picture
from resshift_cli.pipeline import UpscaleOptions, bicubic_upsample
from tiny import tiny_model

GAIN = torch.tensor([1.15, 0.9, 0.8]).view(1, 3, 1, 1)
OFFSET = torch.tensor([0.04, -0.03, 0.06]).view(1, 3, 1, 1)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return bicubic_upsample(x, 4)


def photo_like(height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR (1, 3, h, w), a 'model output' (1, 3, 4h, 4w)): smooth colour fields plus fine texture, in [0, 1].

    The output is the bicubic ×4 of the LR plus zero-mean detail, i.e. what a colour-faithful model gives.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 8, 2), max(width // 8, 2), generator=g)
    lr = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear").clamp(0.15, 0.85)
    detail = 0.05 * torch.randn(1, 1, 4 * height, 4 * width, generator=g)
    return lr, (upsample(lr) + detail).clamp(0, 1)


def channel_means(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(0, 2, 3))


@pytest.mark.parametrize("mode", ["wavelet", "adain"])
def test_a_known_tint_comes_back_to_the_input_colour(mode: str) -> None:
    lr, faithful = photo_like(40, 56)
    tinted = (faithful * GAIN + OFFSET).clamp(0, 1)
    reference = channel_means(upsample(lr))
    assert (channel_means(tinted) - reference).abs().max() > 0.04
    fixed = fix_colors(tinted, lr, mode, upsample, 4)
    assert fixed.shape == tinted.shape and fixed.min() >= 0 and fixed.max() <= 1
    assert (channel_means(fixed) - reference).abs().max() < 0.006
    # per-channel contrast mostly restored too (the gain scaled it by 0.8 … 1.15; wavelet keeps the
    # tinted detail's amplitude, so only the contrast of its low band comes back)
    spread = lambda x: (x.std(dim=(0, 2, 3)) / faithful.std(dim=(0, 2, 3)) - 1).abs().max()  # noqa: E731
    assert spread(fixed) < 0.4 * spread(tinted)


def stablesr_wavelet_color_fix(content: torch.Tensor, style: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """StableSR's `wavelet_reconstruction`, written out as it is there: per level, blur with radius 2^i
    (replicate padding, dilated binomial kernel), add image − blur to the high band, continue on the blur."""
    kernel = torch.tensor([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]])
    kernel = kernel[None, None].repeat(3, 1, 1, 1)

    def decompose(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        high = torch.zeros_like(image)
        for i in range(levels):
            padded = torch.nn.functional.pad(image, (2**i,) * 4, mode="replicate")
            low = torch.nn.functional.conv2d(padded, kernel, groups=3, dilation=2**i)
            high += image - low
            image = low
        return high, low

    return decompose(content)[0] + decompose(style)[1]


def test_wavelet_is_stablesr_wavelet_color_fix_and_keeps_a_faithful_output() -> None:
    lr, faithful = photo_like(40, 56, seed=1)
    tinted = faithful * GAIN + OFFSET
    fixed = wavelet_fix(tinted, upsample(lr))
    torch.testing.assert_close(fixed, stablesr_wavelet_color_fix(tinted, upsample(lr)), atol=1e-5, rtol=0)
    # the change is smooth: blurring it once more moves it little
    change = fixed - tinted
    assert (change - low_frequency(change, 2)).abs().max() < 0.1 * change.abs().max()
    # a colour-faithful output is changed far less than the tint moved it
    unchanged = wavelet_fix(faithful, upsample(lr))
    assert (unchanged - faithful).abs().mean() < 0.1 * (tinted - faithful).abs().mean()


def test_adain_matches_mean_and_std_of_the_reference_exactly() -> None:
    lr, faithful = photo_like(24, 30, seed=2)
    reference = upsample(lr)
    fixed = adain_fix(faithful * GAIN + OFFSET, reference)
    torch.testing.assert_close(channel_means(fixed), channel_means(reference), atol=1e-5, rtol=0)
    torch.testing.assert_close(fixed.std(dim=(0, 2, 3)), reference.std(dim=(0, 2, 3)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("height", [150, 37])
def test_tiles_give_the_whole_image_result(height: int) -> None:
    """Several 128-pixel LR tiles with context: no seam, the same values as one pass over the image."""
    lr, faithful = photo_like(height, 300, seed=3)
    tinted = (faithful * GAIN + OFFSET).clamp(0, 1)
    whole = wavelet_fix(tinted, upsample(lr)).clamp(0, 1)
    torch.testing.assert_close(tiled_wavelet_fix(tinted, lr, upsample, 4), whole, atol=2e-6, rtol=0)
    whole = adain_fix(tinted, upsample(lr)).clamp(0, 1)
    torch.testing.assert_close(tiled_adain_fix(tinted, lr, upsample, 4), whole, atol=2e-6, rtol=0)


def test_none_returns_the_result_itself_and_unknown_modes_are_refused() -> None:
    lr, faithful = photo_like(8, 8)
    assert COLOR_FIXES == ("none", "wavelet", "adain")
    assert fix_colors(faithful, lr, "none", upsample, 4) is faithful
    with pytest.raises(ValueError, match="none, wavelet, adain"):
        fix_colors(faithful, lr, "sepia", upsample, 4)


class Allocations(TorchDispatchMode):
    """Sizes in bytes of every new storage an operator returns (views and in-place results excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)
        }
        for tensor in tree_flatten(out)[0]:
            if torch.is_tensor(tensor) and tensor.untyped_storage().data_ptr() not in given:
                self.sizes.append(tensor.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("mode", ["wavelet", "adain"])
def test_a_4096_wide_image_needs_one_output_and_tile_sized_temporaries(mode: str) -> None:
    """Memory of the step itself on a 4096 × 512 output: exactly one allocation of the image's size (the
    result); every other one fits a tile window (FIX_TILE LR pixels plus at most 16 of context per side, ×4),
    so it does not grow with the image. A one-pass wavelet over the image needs several image-sized ones."""
    lr = torch.rand(1, 3, 128, 1024, generator=torch.Generator().manual_seed(0))
    result = upsample(lr).clamp(0, 1)
    image = result.untyped_storage().nbytes()
    with torch.inference_mode(), Allocations() as log:
        fixed = fix_colors(result, lr, mode, upsample, 4)
    assert fixed.shape == (1, 3, 512, 4096)
    window = 3 * (4 * (FIX_TILE + 2 * 16)) ** 2 * 8  # float64 at most
    assert image > 2 * window
    assert [size for size in log.sizes if size > window] == [image]
    with torch.inference_mode(), Allocations() as whole:
        wavelet_fix(result[..., :256, :], upsample(lr[..., :64, :]))
    assert sum(size >= image // 4 for size in whole.sizes) >= 3  # the log sees whole-image temporaries


def test_the_pipeline_fixes_only_the_rgb_and_keeps_alpha_and_depth() -> None:
    model = tiny_model("v3")
    g = torch.Generator().manual_seed(6)
    rgb = torch.rand(12, 16, 3, generator=g).numpy()
    alpha = (torch.rand(12, 16, generator=g) > 0.3).float().numpy()
    picture = Picture(rgb, alpha, bit_depth=16)
    plain = upscale_picture(model, picture, UpscaleOptions(steps=1))
    fixed = upscale_picture(model, picture, UpscaleOptions(steps=1, color_fix="adain"))
    assert np.array_equal(fixed.alpha, plain.alpha) and fixed.bit_depth == plain.bit_depth == 16
    assert not np.array_equal(fixed.rgb, plain.rgb)
    reference = upsample(torch.from_numpy(rgb).permute(2, 0, 1)[None]).mean(dim=(0, 2, 3))
    fixed_means = torch.from_numpy(fixed.rgb).mean(dim=(0, 1))
    plain_means = torch.from_numpy(plain.rgb).mean(dim=(0, 1))
    assert (fixed_means - reference).abs().max() < (plain_means - reference).abs().max()
