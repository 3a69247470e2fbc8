"""The η schedule of ResShift and its posterior coefficients (Eqs. 1–7, docs/official-behaviour.md §2.1).

Computed in float64 with numpy exactly as the official code does; the sampler casts each value to
float32 when it uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from resshift_cli.config import DiffusionConfig
from resshift_cli.errors import ModelError


@dataclass(frozen=True)
class Schedule:
    """Per-step constants, index i = 0 … T−1 ↔ paper step t = i + 1; every array is (T,) float64."""

    kappa: float
    normalize_input: bool
    sqrt_etas: np.ndarray
    etas: np.ndarray
    etas_prev: np.ndarray
    alpha: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.etas)


def sqrt_eta_schedule(config: DiffusionConfig) -> np.ndarray:
    """√η_t = √η₁ · b^(β_t), β_t = ((t−1)/(T−1))^p · (T−1) (paper Eq. 10): (T,) float64, √η_T = etas_end."""
    steps = config.steps
    if steps < 2:
        raise ModelError(f"diffusion steps must be at least 2, got {steps}")
    # 1. the first level, √η₁ = min(min_noise_level / κ, min_noise_level)
    sqrt_eta_1 = min(config.min_noise_level / config.kappa, config.min_noise_level)
    # 2. the per-unit growth b, so that √η_T = etas_end
    increaser = math.exp(1 / (steps - 1) * math.log(config.etas_end / sqrt_eta_1))
    # 3. the warped exponents β
    power = np.linspace(0, 1, steps, endpoint=True) ** config.power * (steps - 1)
    # 4. √η = b^β · √η₁
    return np.power(increaser, power) * sqrt_eta_1


def make_schedule(config: DiffusionConfig) -> Schedule:
    """All constants of the chain: marginal (Eq. 2), posterior mean/variance (Eqs. 6–7)."""
    sqrt_etas = sqrt_eta_schedule(config)
    etas = sqrt_etas**2
    etas_prev = np.append(0.0, etas[:-1])
    alpha = etas - etas_prev
    posterior_variance = config.kappa**2 * etas_prev / etas * alpha
    clipped = np.append(posterior_variance[1], posterior_variance[1:])
    return Schedule(
        kappa=config.kappa,
        normalize_input=config.normalize_input,
        sqrt_etas=sqrt_etas,
        etas=etas,
        etas_prev=etas_prev,
        alpha=alpha,
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(clipped),
        posterior_mean_coef1=etas_prev / etas,
        posterior_mean_coef2=alpha / etas,
    )
