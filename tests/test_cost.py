"""The cost model: FLOP counts against torch's FLOP counter, and the autoencoder tiling it chooses."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from resshift_cli import cost
from resshift_cli.config import SpaceToDepthConfig, vq_f4
from resshift_cli.loading import _meta_networks
from tiny import tiny_config


def counted(fn) -> int:
    """FLOPs torch counts for `fn()` on meta tensors (shapes only), attention through the math backend (plain
    matmuls the counter sees)."""
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, device="meta")


@pytest.fixture(scope="module")
def tiny_networks():
    config = tiny_config()
    return config, *_meta_networks(config)


@pytest.mark.parametrize(("height", "width"), [(16, 16), (16, 32)])
def test_autoencoder_flops_match_torchs_counter(tiny_networks, height: int, width: int) -> None:
    config, _, ae = tiny_networks
    dd, embed = config.autoencoder.ddconfig, config.autoencoder.embed_dim
    image, latent = zeros(1, 3, 4 * height, 4 * width), zeros(1, embed, height, width)
    assert counted(lambda: ae.encode(image)) == cost.encoder_flops(dd, embed, 4 * height, 4 * width).total
    assert (
        counted(lambda: ae.decode_without_quantization(latent))
        == cost.decoder_flops(dd, embed, height, width).total
    )


@pytest.mark.parametrize(("height", "width", "batch"), [(64, 64, 1), (64, 128, 2)])
def test_unet_flops_match_torchs_counter(tiny_networks, height: int, width: int, batch: int) -> None:
    config, unet, _ = tiny_networks
    x, lq, t = (
        zeros(batch, 3, height, width),
        zeros(batch, 3, height, width),
        torch.ones(batch, dtype=torch.long, device="meta"),
    )
    assert counted(lambda: unet(x, t, lq)) == cost.unet_flops(config.unet, height, width, batch).total


def test_the_autoencoder_attention_is_4_n_squared_c_and_the_rest_is_linear() -> None:
    dd = vq_f4().ddconfig
    small, large = cost.decoder_flops(dd, 3, 64, 64), cost.decoder_flops(dd, 3, 128, 128)
    assert small.attention == 4 * 4096**2 * 512  # 34 GFLOP for a 64×64 latent tile
    assert large.attention == 16 * small.attention and large.conv == 4 * small.conv


def test_unet_cost_is_linear_in_the_area() -> None:
    unet = tiny_config().unet
    one, four = cost.unet_flops(unet, 64, 64), cost.unet_flops(unet, 128, 128)
    assert four.attention == 4 * one.attention  # 8×8 windows: no quadratic term
    assert 4 * one.conv > four.conv > 0.999 * 4 * one.conv  # only the step embedding does not grow


def test_tiled_flops_add_up_the_windows_and_the_statistics_pass() -> None:
    config = vq_f4()
    tiling = cost.VaeTiling(tile=128, context=8, overlap=0, stats_side=64, stats_crops=4)
    encode, decode = cost.autoencoder_flops(config, 256, 256, tiling)
    windows = cost.windows(256, 256, tiling)
    assert [(w.height, w.width) for w in windows] == [(144, 144)] * 4  # slid inside the canvas, same size
    crops = cost.sample_crops(256, 256, tiling)
    assert [(c.top, c.left, c.height) for c in crops] == [
        (0, 0, 64),
        (0, 192, 64),
        (192, 0, 64),
        (192, 192, 64),
    ]
    dd, shared, mid = config.ddconfig, 4 * 64 * 64, 512
    per_window = cost.decoder_flops(dd, 3, 144, 144, shared)
    per_crop = cost.decoder_flops(dd, 3, 64, 64, shared) + cost.conv(mid, mid, 2 * 64 * 64)
    assert decode.total == pytest.approx(4 * per_window.total + 4 * per_crop.total, rel=1e-12)
    assert per_window.attention == 4 * 144 * 144 * shared * mid  # linear in the window's area
    assert encode.total > 0


def test_space_to_depth_costs_nothing_and_stays_untiled() -> None:
    rates = cost.RATES["avx512-bf16", "bf16"]
    assert cost.autoencoder_flops(SpaceToDepthConfig(4), 512, 512, cost.with_tile(64)) == (
        cost.Flops(),
        cost.Flops(),
    )
    assert cost.choose_vae_tiling(SpaceToDepthConfig(4), 512, 512, rates) == cost.UNTILED


def test_small_canvases_run_the_autoencoder_whole_where_it_fits_memory() -> None:
    rates = cost.RATES["avx512-bf16", "fp32"]
    assert cost.choose_vae_tiling(vq_f4(), 64, 64, rates) == cost.UNTILED
    assert cost.choose_vae_tiling(tiny_config().autoencoder, 128, 128, rates) == cost.UNTILED  # goldens
    big = cost.choose_vae_tiling(vq_f4(), 128, 128, rates)  # 1.3 GiB of decoder activations whole
    assert big.tiled and cost.window_bytes(vq_f4(), big.tile, big.tile) <= cost.VAE_MEMORY


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_chosen_tiling_is_the_cheapest_that_fits_memory(precision: str) -> None:
    config, rates = vq_f4(), cost.RATES["avx512-bf16", precision]
    chosen = cost.choose_vae_tiling(config, 512, 512, rates)
    assert chosen.tiled and chosen.context == cost.VAE_CONTEXT
    best = cost.predicted_seconds(config, 512, 512, chosen, rates)
    for tile in (0, 32, 64, 96, 128, 192, 256):
        other = cost.with_tile(tile)
        fits = all(
            cost.window_bytes(config, w.height, w.width) <= cost.VAE_MEMORY
            for w in cost.windows(512, 512, other)
        )
        assert not fits or cost.predicted_seconds(config, 512, 512, other, rates) >= best
    assert cost.predicted_seconds(config, 512, 512, cost.UNTILED, rates) > 2.5 * best  # the quadratic term


def test_rates_for_falls_back_for_unknown_devices() -> None:
    assert cost.rates_for(torch.device("meta"), torch.float32) == cost.RATES[cost.FALLBACK_CLASS, "fp32"]
