"""The residual-shifting sampler (paper Algorithm 2, docs/official-behaviour.md §2.2–2.3) over a denoiser.

The sampler never owns the network, the device or the progress display: it calls `denoise(x_in, t)`
for the x₀ prediction and `callback(info)` after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from resshift_cli.schedule import Schedule

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""(x_in (B, C, h, w) scaled x_t, t (B,) int64 trained step index) → x̂₀ (B, C, h, w)."""


@dataclass(frozen=True)
class StepInfo:
    """What the sampler reports after each step: schedule index i (N−1 … 0) and the latents."""

    i: int
    steps: int
    x: Tensor
    x0: Tensor


StepCallback = Callable[[StepInfo], None]


def _f32(values: np.ndarray, i: int, device: torch.device) -> Tensor:
    """Entry i of a float64 schedule array as a float32 scalar tensor (upstream `_extract_into_tensor`)."""
    return torch.tensor(values[i], dtype=torch.float64).float().to(device)


def draw_noise(shape: torch.Size, generator: torch.Generator, device: torch.device) -> Tensor:
    """Standard normal noise drawn on the CPU from `generator`, then moved: one seed, one image anywhere."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def prior_sample(y0: Tensor, schedule: Schedule, noise: Tensor) -> Tensor:
    """x_T = y₀ + κ√η_T ε (paper Eq. 9), η_T the schedule's last (largest kept) η; κ√η_T cast to float32."""
    coefficient = schedule.kappa * schedule.sqrt_etas
    return y0 + _f32(coefficient, schedule.steps - 1, y0.device) * noise


def scale_input(x: Tensor, schedule: Schedule, i: int) -> Tensor:
    """x_t / √(κ²η_t + 1): normalises the latent's variance before the network
    (docs/official-behaviour.md §2.2)."""
    if not schedule.normalize_input:
        return x
    eta = _f32(schedule.etas, i, x.device)
    return x / torch.sqrt(eta * schedule.kappa**2 + 1)


def posterior_step(x: Tensor, x0: Tensor, schedule: Schedule, i: int, noise: Tensor) -> Tensor:
    """x_{t−1} ~ q(x_{t−1} | x_t, x̂₀) = N((η_{t−1}/η_t) x_t + (α_t/η_t) x̂₀, κ² η_{t−1}/η_t α_t) (Eqs. 6–7)."""
    mean = (
        _f32(schedule.posterior_mean_coef1, i, x.device) * x
        + _f32(schedule.posterior_mean_coef2, i, x.device) * x0
    )
    if i == 0:
        return mean
    return mean + torch.exp(0.5 * _f32(schedule.posterior_log_variance_clipped, i, x.device)) * noise


def sample(
    denoise: Denoiser,
    y0: Tensor,
    schedule: Schedule,
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run the chain from x_T to x₀ for the encoded LR latent y₀ (B, C, h, w); returns x₀ (B, C, h, w).

    Step i calls the network with the trained index `schedule.timesteps[i]` (i itself unless respaced).
    Noise contract: one draw of y₀'s shape for the prior, then one per step N−1 … 0 (the last is unused),
    all from `generator` on the CPU.
    """
    device = y0.device
    x = prior_sample(y0, schedule, draw_noise(y0.shape, generator, device))
    for i in reversed(range(schedule.steps)):
        t = torch.full((y0.shape[0],), int(schedule.timesteps[i]), dtype=torch.int64, device=device)
        x0 = denoise(scale_input(x, schedule, i), t).float()
        x = posterior_step(x, x0, schedule, i, draw_noise(y0.shape, generator, device))
        if callback is not None:
            callback(StepInfo(i=i, steps=schedule.steps, x=x, x0=x0))
    return x
