from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from resshift_cli.config import DiffusionConfig
from resshift_cli.errors import ModelError
from resshift_cli.schedule import make_schedule
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
