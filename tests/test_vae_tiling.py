"""Autoencoder tiling with shared GroupNorm statistics and attention keys: tiles agree with the whole image.

Measured on a real photo (tests/photos) with the tiny model's VQ autoencoder (random weights, whose
decoder output spans about −5 … 9 before clamping). Tone drift = the largest change of a 64×64 output
block's mean colour against the untiled output, in 8-bit levels; a viewer sees about 2–3 levels on flat
patches (ΔE ≈ 2.3). Measured: per-tile statistics 47 levels, shared statistics 4.7 levels. The test holds
the shared drift under `TONE_LEVELS` and a tenth of the per-tile drift; below what a viewer can see
(≤ 2 levels) is not reached on this model yet.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resshift_cli import cost, pipeline
from resshift_cli.nets.vqgan import shared_statistics
from tiny import tiny_model

PHOTO = "tests/photos/evening_glow_gt.png"
TONE_LEVELS = 6.0


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    """A 64×96 crop of the photo in [−1, 1], as the pipeline's padded LR canvas."""
    pixels = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.float32) / 255
    crop = torch.from_numpy(pixels).permute(2, 0, 1)[None, :, 100:164, 40:136]
    return pipeline.to_signed(crop.contiguous())


def psnr_over_range(out: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR with the reference's value range as the peak (latents and unclamped images alike)."""
    mse = torch.mean((out.double() - ref.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10((ref.max() - ref.min()).item() ** 2 / mse)


def tone_drift(out: torch.Tensor, ref: torch.Tensor, block: int = 64) -> float:
    """The largest change of a block's mean colour, in 8-bit levels of the clamped [0, 1] image."""
    a, b = pipeline.to_unit(out), pipeline.to_unit(ref)
    return (F.avg_pool2d(a, block) - F.avg_pool2d(b, block)).abs().max().item() * 255


def tilings() -> dict[str, cost.VaeTiling]:
    return {"shared": cost.shared_tiling(32, 64, 96), "own": cost.with_tile(32)}


@torch.inference_mode()
def test_recorded_statistics_of_the_whole_input_reproduce_the_untiled_network(model, lr) -> None:
    ae = model.autoencoder
    image = pipeline.bicubic_upsample(lr, 4)
    own = ae.encode(image)
    with shared_statistics(ae.encoder, lambda: ae.encode(image)):
        shared = ae.encode(image)
    torch.testing.assert_close(shared, own, rtol=0, atol=1e-4)
    assert torch.equal(ae.encode(image), own)  # ordinary again afterwards


@torch.inference_mode()
def test_shared_statistics_keep_tiled_encoding_close_to_untiled(model, lr) -> None:
    untiled = pipeline.encode_canvas(model, lr)
    results = {name: pipeline.encode_canvas(model, lr, t) for name, t in tilings().items()}
    shared, own = (psnr_over_range(results[k], untiled) for k in ("shared", "own"))
    assert shared > 40 and shared > own + 6, (shared, own)


@torch.inference_mode()
def test_shared_statistics_keep_tiled_decoding_in_tone(model, lr) -> None:
    z = pipeline.encode_canvas(model, lr)
    untiled = pipeline.decode_latent(model, z)
    results = {name: pipeline.decode_latent(model, z, t) for name, t in tilings().items()}
    drift = {name: tone_drift(out, untiled) for name, out in results.items()}
    assert drift["shared"] <= TONE_LEVELS and drift["own"] >= 8 * drift["shared"], drift


def test_explicit_options_are_honoured_and_small_canvases_stay_exact(model) -> None:
    choose = pipeline.vae_tiling
    assert choose(model, pipeline.UpscaleOptions(vae_tile=48), 512, 512) == cost.with_tile(48)
    assert choose(model, pipeline.UpscaleOptions(vae_tile=0), 512, 512) == cost.UNTILED
    assert choose(model, pipeline.UpscaleOptions(tile=0), 512, 512) == cost.UNTILED  # the exact path
    assert choose(model, pipeline.UpscaleOptions(), 128, 128) == cost.UNTILED  # golden sizes: whole
    chosen = choose(model, pipeline.UpscaleOptions(), 512, 512)
    assert chosen.tiled and chosen.overlap == cost.VAE_OVERLAP and not chosen.stats_side
