"""The training objective against the official `training_losses` (golden data), and its helpers."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from resshift_cli import metrics
from resshift_cli.schedule import make_schedule
from resshift_cli.train.loop import TrainOptions, learning_rate
from resshift_cli.train.objective import decode_for_loss, diffusion_loss
from resshift_cli.train.validate import psnr_y
from tiny import GOLDEN, tiny_model
from train_helpers import one_thread  # noqa: F401 (an autouse fixture)

LATENT_TOLERANCE = 2e-6
OUTPUT_TOLERANCE = 6e-6
GRADIENT_TOLERANCE = 1e-5
"""Measured official-vs-official (1 vs 2 threads): 1.2e-6, 4e-6 and 4e-6 of the largest |gradient|."""


@pytest.mark.parametrize("version", ["v3", "v1"])
def test_loss_and_gradients_match_the_official_trainer(version: str) -> None:
    path = GOLDEN / f"train_loss_{version}.safetensors"
    golden = load_file(path)
    with safe_open(path, "pt") as handle:
        assert handle.metadata()["model_mode"] == "train"
    model = tiny_model(version)
    model.unet.train().requires_grad_(True)
    schedule = make_schedule(model.config.diffusion)
    terms = diffusion_loss(
        model.unet, model, schedule, golden["hr"], golden["lr"], golden["t"], golden["noise"]
    )
    terms.loss.mean().backward()
    for name in ("z_start", "z_y", "z_t", "model_input"):
        torch.testing.assert_close(getattr(terms, name), golden[name], atol=LATENT_TOLERANCE, rtol=0)
    torch.testing.assert_close(terms.model_output, golden["model_output"], atol=OUTPUT_TOLERANCE, rtol=0)
    torch.testing.assert_close(terms.loss, golden["loss"], atol=0, rtol=1e-6)
    parameters = dict(model.unet.named_parameters())
    names = [key.removeprefix("grad.") for key in golden if key.startswith("grad.")]
    assert len(names) == 7
    for name in names:
        expected = golden[f"grad.{name}"]
        error = (parameters[name].grad - expected).abs().max() / expected.abs().max()
        assert error < GRADIENT_TOLERANCE, name


def test_decoded_prediction_passes_gradients_straight_through_quantisation() -> None:
    model = tiny_model("v3")
    x0 = torch.randn(1, 3, 16, 16, requires_grad=True)
    image = decode_for_loss(model, x0)
    assert image.shape == (1, 3, 64, 64) and image.abs().max() <= 1
    image.sum().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0


def test_learning_rate_warms_up_then_holds_or_anneals() -> None:
    constant = TrainOptions(iterations=100, batch_size=1, learning_rate=1e-4, warmup=10)
    assert learning_rate(1, constant) == pytest.approx(1e-5)
    assert learning_rate(10, constant) == pytest.approx(1e-4)
    assert learning_rate(100, constant) == pytest.approx(1e-4)
    cosine = TrainOptions(
        iterations=100, batch_size=1, learning_rate=1e-4, warmup=10, lr_schedule="cosine", lr_floor=2e-5
    )
    assert learning_rate(10, cosine) == pytest.approx(1e-4)
    assert learning_rate(55, cosine) == pytest.approx(6e-5)
    assert learning_rate(100, cosine) == pytest.approx(2e-5)


def test_validation_psnr_is_the_metrics_protocol() -> None:
    """Validation reports the same PSNR(Y) as `resshift eval` (`metrics.psnr_y`), on (3, H, W) tensors."""
    sr, hr = torch.rand((3, 24, 20), generator=torch.Generator().manual_seed(1)), torch.rand((3, 24, 20))
    to_hwc = lambda x: x.permute(1, 2, 0).numpy()  # noqa: E731
    assert psnr_y(sr, hr, 4) == metrics.psnr_y(to_hwc(sr), to_hwc(hr), crop=4)


def test_psnr_y_follows_the_sr_convention() -> None:
    hr = torch.full((3, 12, 12), 100 / 255)
    assert psnr_y(hr, hr, 4) == float("inf")
    sr = hr.clone()
    sr[:, 4:8, 4:8] += 1 / 255  # one 8-bit level in every channel, inside the border crop
    y_step = (65.481 + 128.553 + 24.966) / 255
    assert psnr_y(sr, hr, 4) == pytest.approx(10 * math.log10(255**2 / y_step**2))
    assert psnr_y(sr, hr, 0) == pytest.approx(10 * math.log10(255**2 / (y_step**2 * 16 / 144)))
