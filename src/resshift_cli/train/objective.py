"""The training objective of ResShift (paper Eq. 8 with the x₀-parameterisation, spec §6).

A residual-predicting model (`prediction: "residual"`) is trained on the same error: its x̂₀ = z_y − ê₀.

As the official `training_losses` computes it: z₀ = E(HR), z_y = E(bicubic ×s of LR), both without
gradient; t uniform per sample; z_t from the marginal q(x_t | x₀, y₀) (Eq. 2); the network predicts z₀
from z_t/√(κ²η_t + 1); the loss is the mean over C, H, W of (x̂₀ − z₀)² per sample. The KL-derived
per-step weights of the paper are not used (`weighted_mse: False` in every released config).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from resshift_cli.loading import LoadedModel
from resshift_cli.pipeline import encode_lr
from resshift_cli.sampler import predicted_start
from resshift_cli.schedule import Schedule

Denoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
"""f_θ(x_in (B, C, h, w), t (B,) int64, lq (B, 3, h, w) in [−1, 1]) → x̂₀ or ê₀ (B, C, h, w): the UNet, or its
DDP / checkpointed wrapper."""


@dataclass(frozen=True)
class LossTerms:
    """Everything one evaluation of the objective produced; latents are (B, C, h, w) float32."""

    loss: Tensor
    """(B,) mean over C, H, W of (x̂₀ − z₀)²."""
    z_start: Tensor
    z_y: Tensor
    z_t: Tensor
    model_input: Tensor
    model_output: Tensor
    """The network's output: x̂₀, or ê₀ = z_y − x̂₀ for a residual-predicting model."""
    x0: Tensor
    """x̂₀ (`sampler.predicted_start`), with gradient."""


def latent_shape(model: LoadedModel, height: int, width: int) -> tuple[int, int, int]:
    """(C, h, w) of the latent of an HR image of `height` × `width` pixels (C: the UNet's input)."""
    factor = model.autoencoder.factor
    return model.config.unet.in_channels, height // factor, width // factor


def per_sample(values: np.ndarray, t: Tensor) -> Tensor:
    """Entries t of a float64 schedule array, cast to float32, shaped (B, 1, 1, 1) for broadcasting."""
    return torch.from_numpy(values).float().to(t.device)[t].view(-1, 1, 1, 1)


@torch.no_grad()
def encode_pair(model: LoadedModel, hr: Tensor, lr: Tensor) -> tuple[Tensor, Tensor]:
    """z₀ = E(HR) and z_y = E(bicubic ×s of LR): (B, 3, H, W) and (B, 3, H/s, W/s) in [−1, 1] → two
    (B, C, H/s, W/s) latents (encoder + quant_conv, not quantised, times `scale_factor`)."""
    scale_factor = model.config.diffusion.scale_factor
    z_start = model.autoencoder.encode(hr).float() * scale_factor
    return z_start, encode_lr(model, lr)


def marginal(z_start: Tensor, z_y: Tensor, t: Tensor, noise: Tensor, schedule: Schedule) -> Tensor:
    """z_t = η_t (z_y − z₀) + z₀ + κ√η_t ε (Eq. 2), in this order, float32 coefficients from float64."""
    eta = per_sample(schedule.etas, t)
    kappa_sqrt_eta = per_sample(schedule.kappa * schedule.sqrt_etas, t)
    return eta * (z_y - z_start) + z_start + kappa_sqrt_eta * noise


def network_input(z_t: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
    """z_t / √(κ²η_t + 1) per sample (η_t float32, then ·κ², +1, √ in float32); z_t when not normalised."""
    if not schedule.normalize_input:
        return z_t
    return z_t / torch.sqrt(per_sample(schedule.etas, t) * schedule.kappa**2 + 1)


def diffusion_loss(
    denoise: Denoiser,
    model: LoadedModel,
    schedule: Schedule,
    hr: Tensor,
    lr: Tensor,
    t: Tensor,
    noise: Tensor,
) -> LossTerms:
    """The MSE term of Eq. 8 for a batch.

    hr (B, 3, H, W) and lr (B, 3, H/s, W/s) in [−1, 1]; t (B,) int64 in [0, T); noise (B, C, H/s, W/s)
    standard normal. The gradient reaches θ only through `denoise`; the autoencoder stays frozen.
    """
    # 1. the two latents, without gradient
    z_start, z_y = encode_pair(model, hr, lr)
    # 2. a draw from the marginal at step t (Eq. 2) and its variance-normalised version
    z_t = marginal(z_start, z_y, t, noise, schedule)
    model_input = network_input(z_t, t, schedule)
    # 3. x̂₀ from f_θ(·, t, y) and the per-sample squared error against z₀ (for a residual prediction the
    #    same error as ê₀ against its target z_y − z₀)
    model_output = denoise(model_input, t, lr).float()
    x0 = predicted_start(model_output, z_y, schedule.prediction)
    loss = torch.mean((x0 - z_start) ** 2, dim=(1, 2, 3))
    return LossTerms(loss, z_start, z_y, z_t, model_input, model_output, x0)


def decode_for_loss(model: LoadedModel, x0: Tensor) -> Tensor:
    """(B, C, h, w) predicted latent → (B, 3, s·h, s·w) image in [−1, 1] with gradient to x0.

    Quantisation passes the gradient straight through (z + sg(e − z)), as the official `VectorQuantizer2`
    does; the inference quantiser (`z + (e − z)`) would give the prediction a zero gradient.
    """
    autoencoder = model.autoencoder
    z = x0 / model.config.diffusion.scale_factor
    z_q = z + (autoencoder.quantize(z) - z).detach()
    return autoencoder.decode_without_quantization(z_q).clamp(-1, 1)
