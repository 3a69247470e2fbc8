"""The residual-shifting sampler (paper Algorithm 2, docs/official-behaviour.md §2.2–2.3) over a denoiser.

The sampler never owns the network, the device or the progress display: it calls `denoise(x_in, t)`
for the x₀ prediction and `callback(info)` after every step.

Symbols (paper → code):

    t = T … 1   i = N−1 … 0          the step; the network gets timesteps[i] = t − 1 (a subset if respaced)
    η_t         schedule.etas[i]     share of the residual e₀ = y₀ − x₀ shifted in by step t (η₁ ≈ 0, η_T ≈ 1)
    α_t         schedule.alpha[i]    η_t − η_{t−1}, with η₀ = 0
    κ           schedule.kappa       the noise scale
    y₀, x₀      y0, x0               the encoded LR (bicubic ×s) latent and the clean HR latent

Equations (numbered as in the paper): the forward transition (Eq. 1) and its marginal
q(x_t | x₀, y₀) = N(x₀ + η_t e₀, κ²η_t I) (Eq. 2); the posterior q(x_{t−1} | x_t, x₀, y₀) (Eq. 6) whose mean
and variance, with x₀ replaced by the network's x̂₀, give each reverse step (Eq. 7); the training loss
(Eq. 8, `train.objective`); the prior x_T = y₀ + κ√η_T ε (Eq. 9); the η schedule (Eq. 10, `schedule`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from resshift_cli.schedule import Schedule

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""(x_in (B, C, h, w) scaled x_t, t (B,) int64 trained step index) → the network's output (B, C, h, w):
x̂₀, or ê₀ = y₀ − x̂₀ for a residual-predicting model (`predicted_start`)."""


@dataclass(frozen=True)
class StepInfo:
    """What the sampler reports after each step: schedule index i (N−1 … 0) and the latents."""

    i: int
    steps: int
    x: Tensor
    x0: Tensor


StepCallback = Callable[[StepInfo], None]


@dataclass(frozen=True)
class Coefficients:
    """The constants of one reverse step, float32 scalars on the latent's device (from float64, as upstream).

    t: the network's step index. keep: η_{t−1}/η_t. shift: α_t/η_t. std: κ√(η_{t−1}α_t/η_t), the posterior's
    standard deviation (0 at the last step, which adds no noise). norm: √(κ²η_t + 1), the input
    normalisation (None when the model does not normalise its input).
    """

    t: int
    keep: Tensor
    shift: Tensor
    std: Tensor
    norm: Tensor | None


def _f32(values: np.ndarray, i: int, device: torch.device) -> Tensor:
    """Entry i of a float64 schedule array as a float32 scalar tensor (upstream `_extract_into_tensor`)."""
    return torch.tensor(values[i], dtype=torch.float64).float().to(device)


def coefficients(schedule: Schedule, i: int, device: torch.device) -> Coefficients:
    """Step i's constants (Eqs. 6–7), computed once per step in the official order of float operations."""
    log_variance = _f32(schedule.posterior_log_variance_clipped, i, device)
    norm = None
    if schedule.normalize_input:
        norm = torch.sqrt(_f32(schedule.etas, i, device) * schedule.kappa**2 + 1)
    return Coefficients(
        t=int(schedule.timesteps[i]),
        keep=_f32(schedule.posterior_mean_coef1, i, device),
        shift=_f32(schedule.posterior_mean_coef2, i, device),
        std=torch.exp(0.5 * log_variance) if i > 0 else torch.zeros((), device=device),
        norm=norm,
    )


def draw_noise(shape: torch.Size, generator: torch.Generator, device: torch.device) -> Tensor:
    """Standard normal noise drawn on the CPU from `generator`, then moved: one seed, one image anywhere."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def prior_sample(y0: Tensor, schedule: Schedule, noise: Tensor) -> Tensor:
    """x_T = y₀ + κ√η_T ε (paper Eq. 9), η_T the schedule's last (largest kept) η; κ√η_T cast to float32."""
    coefficient = schedule.kappa * schedule.sqrt_etas
    return y0 + _f32(coefficient, schedule.steps - 1, y0.device) * noise


def scale_input(x: Tensor, c: Coefficients) -> Tensor:
    """x_t / √(κ²η_t + 1): normalises the latent's variance before the network
    (docs/official-behaviour.md §2.2)."""
    return x if c.norm is None else x / c.norm


def predicted_start(output: Tensor, y0: Tensor, prediction: str) -> Tensor:
    """x̂₀ from the network's output (B, C, h, w): the output itself for "x0" (official `START_X`), or
    y₀ − ê₀ for "residual" (official `RESIDUAL`: the network predicts e₀ = y₀ − x₀ of Eq. 2)."""
    return output if prediction == "x0" else y0 - output


def posterior_step(x: Tensor, x0: Tensor, c: Coefficients, noise: Tensor) -> Tensor:
    """x_{t−1} ~ N((η_{t−1}/η_t) x_t + (α_t/η_t) x̂₀, κ² η_{t−1}/η_t α_t) (Eqs. 6–7)."""
    return c.keep * x + c.shift * x0 + c.std * noise


def sample(
    denoise: Denoiser,
    y0: Tensor,
    schedule: Schedule,
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run the chain from x_T to x₀ for the encoded LR latent y₀ (B, C, h, w); returns x₀ (B, C, h, w).

    Step i calls the network with the trained index `schedule.timesteps[i]` (i itself unless respaced).
    Noise contract: one draw of y₀'s shape for the prior, then one per step N−1 … 0 (the last weighted 0),
    all from `generator` on the CPU.
    """
    device = y0.device
    x = prior_sample(y0, schedule, draw_noise(y0.shape, generator, device))
    for i in reversed(range(schedule.steps)):
        c = coefficients(schedule, i, device)
        t = torch.full((y0.shape[0],), c.t, dtype=torch.int64, device=device)
        x0 = predicted_start(denoise(scale_input(x, c), t).float(), y0, schedule.prediction)
        x = posterior_step(x, x0, c, draw_noise(y0.shape, generator, device))
        if callback is not None:
            callback(StepInfo(i=i, steps=schedule.steps, x=x, x0=x0))
    return x
