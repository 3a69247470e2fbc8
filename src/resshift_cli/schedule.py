"""The η schedule of ResShift and its posterior coefficients (Eqs. 1–7, docs/official-behaviour.md §2.1).

Computed in float64 with numpy exactly as the official code does; the sampler casts each value to
float32 when it uses it. `respace` keeps N of the T trained steps (the official `timestep_respacing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from resshift_cli.config import DiffusionConfig
from resshift_cli.errors import ModelError, UsageError


@dataclass(frozen=True)
class Schedule:
    """Per-step constants, index i = 0 … N−1; every array is (N,) float64 except `timesteps`.

    timesteps: (N,) int64, ascending, the trained step index the network receives at step i (paper step
    t = timesteps[i] + 1); `arange(T)` for the trained schedule, a subset after `respace`.
    prediction: what the network outputs, "x0" or "residual" (`config.PREDICTIONS`,
    `sampler.predicted_start`).
    """

    kappa: float
    normalize_input: bool
    prediction: str
    timesteps: np.ndarray
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
    """All constants of the trained T-step chain: marginal (Eq. 2), posterior mean/variance (Eqs. 6–7)."""
    sqrt_etas = sqrt_eta_schedule(config)
    return _from_sqrt_etas(
        config.kappa, config.normalize_input, config.prediction, sqrt_etas, np.arange(len(sqrt_etas))
    )


def kept_steps(trained: int, steps: int) -> np.ndarray:
    """The trained step indices a `steps`-step run keeps: {int(T/N · k) : k = 0 … N−1}, ascending, (N,) int64.

    The official rule (float division, then truncation): index 0 is always kept, T−1 only when N = T.
    UsageError unless 1 ≤ N ≤ T.
    """
    if not 1 <= steps <= trained:
        raise UsageError(f"--steps must be between 1 and the model's {trained} trained steps, got {steps}")
    return np.array(sorted({int(trained / steps * k) for k in range(steps)}), dtype=np.int64)


def respace(schedule: Schedule, steps: int) -> Schedule:
    """The chain on `steps` of the schedule's steps (`kept_steps`), constants recomputed from the kept √η.

    η'_j = η_{kept[j]}, η'_prev = (0, η'_0, …, η'_{N−2}) and the posterior of Eqs. 6–7 on them; the network
    still receives the original index kept[j]. `steps` = T returns an identical schedule.
    """
    kept = kept_steps(schedule.steps, steps)
    return _from_sqrt_etas(
        schedule.kappa,
        schedule.normalize_input,
        schedule.prediction,
        schedule.sqrt_etas[kept],
        schedule.timesteps[kept],
    )


def _from_sqrt_etas(
    kappa: float, normalize_input: bool, prediction: str, sqrt_etas: np.ndarray, timesteps: np.ndarray
) -> Schedule:
    """Every constant of the chain from √η (N,) float64, by the official formulas.

    See docs/official-behaviour.md §2.1.
    """
    # 1. η and its predecessor (η_prev = 0 before the first step)
    etas = sqrt_etas**2
    etas_prev = np.append(0.0, etas[:-1])
    # 2. α_t = η_t − η_{t−1} and the posterior variance κ² η_{t−1}/η_t α_t (Eq. 7)
    alpha = etas - etas_prev
    posterior_variance = kappa**2 * etas_prev / etas * alpha
    # 3. its log, entry 0 (variance 0) taking entry 1's value; −inf for a single step, which adds no noise
    clipped = np.append(posterior_variance[min(1, len(etas) - 1)], posterior_variance[1:])
    return Schedule(
        kappa=kappa,
        normalize_input=normalize_input,
        prediction=prediction,
        timesteps=timesteps,
        sqrt_etas=sqrt_etas,
        etas=etas,
        etas_prev=etas_prev,
        alpha=alpha,
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=_log(clipped),
        posterior_mean_coef1=etas_prev / etas,
        posterior_mean_coef2=alpha / etas,
    )


def _log(values: np.ndarray) -> np.ndarray:
    """Natural log, log 0 = −inf without a warning."""
    with np.errstate(divide="ignore"):
        return np.log(values)
