from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import load_file

from resshift_cli.config import DiffusionConfig
from resshift_cli.errors import ModelError, UsageError
from resshift_cli.schedule import kept_steps, make_schedule, respace
from tiny import GOLDEN

FIELDS = [
    "sqrt_etas",
    "etas",
    "etas_prev",
    "alpha",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
]


@pytest.mark.parametrize(("steps", "min_noise_level"), [(15, 0.04), (4, 0.2)])
def test_schedule_matches_official_bit_for_bit(steps: int, min_noise_level: float) -> None:
    golden = load_file(GOLDEN / "schedules.safetensors")
    schedule = make_schedule(DiffusionConfig(steps=steps, min_noise_level=min_noise_level))
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(schedule, field), golden[f"T{steps}.{field}"], err_msg=field)


def test_schedule_endpoints_and_posterior_identities() -> None:
    config = DiffusionConfig(steps=7, min_noise_level=0.1, etas_end=0.95, power=0.5, kappa=1.5)
    s = make_schedule(config)
    assert s.sqrt_etas[0] == pytest.approx(min(0.1 / 1.5, 0.1))
    assert s.sqrt_etas[-1] == pytest.approx(0.95)
    assert np.all(np.diff(s.sqrt_etas) > 0)
    np.testing.assert_allclose(s.posterior_mean_coef1 + s.posterior_mean_coef2, 1.0)
    assert s.posterior_mean_coef1[0] == 0 and s.posterior_mean_coef2[0] == 1


def test_single_step_schedule_is_refused() -> None:
    with pytest.raises(ModelError, match="at least 2"):
        make_schedule(DiffusionConfig(steps=1))


# -- respacing (fewer steps than trained) ------------------------------------------------------------------

RESPACED = [case for case in json.loads((GOLDEN / "cases.json").read_text()) if "respacing" in case]


def _kept_list(case: dict) -> list[int]:
    kept = case["kept_steps"]
    return [int(k) for k in kept.split(",")] if isinstance(kept, str) else [int(k) for k in kept]


def test_the_golden_cases_cover_every_respaced_file() -> None:
    assert sorted(case["file"] for case in RESPACED) == [
        "sample_v1_64x64_steps5.safetensors",
        "sample_v1_72x100_steps8.safetensors",
        "sample_v3_64x64_steps2.safetensors",
    ]


@pytest.mark.parametrize("case", RESPACED, ids=lambda case: case["file"])
def test_kept_steps_match_the_official_files(case: dict) -> None:
    kept = kept_steps(int(case["trained_steps"]), int(case["respacing"]))
    assert kept.dtype == np.int64
    assert kept.tolist() == _kept_list(case)


@pytest.mark.parametrize(("trained", "steps"), [(15, 5), (15, 8), (4, 2), (15, 1), (15, 15), (4, 3)])
def test_respaced_schedule_is_the_formulas_on_the_kept_golden_sqrt_etas(trained: int, steps: int) -> None:
    """Every field recomputed from the official √η at the kept indices, written out here entry by entry."""
    golden = load_file(GOLDEN / "schedules.safetensors")
    config = DiffusionConfig(steps=trained, min_noise_level=0.04 if trained == 15 else 0.2)
    respaced = respace(make_schedule(config), steps)
    kept = [int(trained / steps * k) for k in range(steps)]
    expected = _direct(golden[f"T{trained}.sqrt_etas"][sorted(set(kept))], config.kappa)
    np.testing.assert_array_equal(respaced.timesteps, sorted(set(kept)))
    for field, values in expected.items():
        np.testing.assert_allclose(getattr(respaced, field), values, rtol=1e-15, atol=0, err_msg=field)


def _direct(sqrt_etas: np.ndarray, kappa: float) -> dict[str, list[float]]:
    """The schedule's arrays with plain Python floats, one entry at a time (an independent computation)."""
    etas = [float(v) ** 2 for v in sqrt_etas]
    prev = [0.0, *etas[:-1]]
    alpha = [e - p for e, p in zip(etas, prev, strict=True)]
    variance = [kappa**2 * p / e * a for e, p, a in zip(etas, prev, alpha, strict=True)]
    logs = [math.log(v) if v > 0 else -math.inf for v in variance]
    return {
        "sqrt_etas": list(sqrt_etas),
        "etas": etas,
        "etas_prev": prev,
        "alpha": alpha,
        "posterior_variance": variance,
        "posterior_log_variance_clipped": [logs[1] if len(logs) > 1 else -math.inf, *logs[1:]],
        "posterior_mean_coef1": [p / e for e, p in zip(etas, prev, strict=True)],
        "posterior_mean_coef2": [a / e for e, a in zip(etas, alpha, strict=True)],
    }


@given(
    trained=st.integers(2, 60),
    fraction=st.floats(0.0, 1.0),
    kappa=st.floats(0.5, 3.0),
    min_noise=st.floats(0.01, 0.3),
    power=st.floats(0.2, 2.0),
)
def test_respacing_any_schedule(
    trained: int, fraction: float, kappa: float, min_noise: float, power: float
) -> None:
    """Other T and N than the golden files: N distinct ascending indices from 0, the arrays equal the direct
    computation on the kept √η, and N = T changes nothing at all."""
    config = DiffusionConfig(steps=trained, min_noise_level=min_noise, kappa=kappa, power=power)
    full = make_schedule(config)
    steps = 1 + round(fraction * (trained - 1))
    respaced = respace(full, steps)
    kept = respaced.timesteps
    assert len(kept) == respaced.steps == steps and kept[0] == 0
    assert np.all(np.diff(kept) > 0) and kept[-1] <= trained - 1
    assert (kept[-1] == trained - 1) == (steps == trained)
    for field, values in _direct(full.sqrt_etas[kept], kappa).items():
        np.testing.assert_allclose(getattr(respaced, field), values, rtol=1e-14, atol=0, err_msg=field)
    same = respace(full, trained)
    for field in ["timesteps", *FIELDS]:
        np.testing.assert_array_equal(getattr(same, field), getattr(full, field), err_msg=field)


def test_trained_schedule_calls_the_network_with_its_own_indices() -> None:
    schedule = make_schedule(DiffusionConfig(steps=15, min_noise_level=0.04))
    assert schedule.timesteps.tolist() == list(range(15))


@pytest.mark.parametrize("steps", [0, -1, 16])
def test_steps_outside_one_to_trained_are_a_usage_error(steps: int) -> None:
    schedule = make_schedule(DiffusionConfig(steps=15, min_noise_level=0.04))
    with pytest.raises(UsageError, match="between 1 and the model's 15 trained steps"):
        respace(schedule, steps)
