"""The diffusion options beyond the released models': the residual prediction (`prediction: "residual"`:
config, sampler, training loss, init) and a model's default respacing (`timestep_respacing`)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from resshift_cli import presets
from resshift_cli.config import ModelConfig
from resshift_cli.errors import ModelError, UsageError
from resshift_cli.pipeline import UpscaleOptions, bicubic_upsample, schedule_for, upscale_tensor
from resshift_cli.sampler import predicted_start, sample
from resshift_cli.schedule import make_schedule, respace
from resshift_cli.train.objective import diffusion_loss
from test_space_to_depth import TINY_S2D_UNET, lr_image
from tiny import tiny_config


def s2d_config(prediction: str) -> ModelConfig:
    lite = presets.get("lite")
    diffusion = dataclasses.replace(lite.diffusion, prediction=prediction)
    return dataclasses.replace(lite, name=f"s2d-{prediction}", unet=TINY_S2D_UNET, diffusion=diffusion)


def test_a_residual_config_is_format_version_3_and_round_trips() -> None:
    config = s2d_config("residual")
    data = json.loads(config.to_json())
    assert data["format_version"] == 3 and data["diffusion"]["prediction"] == "residual"
    assert ModelConfig.from_dict(data) == config
    assert json.loads(tiny_config().to_json())["format_version"] == 1


def test_an_unknown_prediction_is_a_clear_error() -> None:
    data = json.loads(s2d_config("residual").to_json())
    data["diffusion"]["prediction"] = "epsilon"
    with pytest.raises(ModelError, match=r"x/config.json: .*prediction 'epsilon'; known: x0, residual"):
        ModelConfig.from_dict(data, source="x/config.json")


def test_predicted_start_is_the_output_or_y0_minus_it() -> None:
    output, y0 = torch.randn(2, 48, 4, 4), torch.randn(2, 48, 4, 4)
    assert predicted_start(output, y0, "x0") is output
    torch.testing.assert_close(predicted_start(output, y0, "residual"), y0 - output)


@pytest.mark.parametrize("steps", [4, 2])
def test_the_sampler_gives_the_network_x0_or_the_residual(steps: int) -> None:
    """A network that predicts x₀ = c exactly, once as x̂₀ and once as ê₀ = y₀ − c: the same chain."""
    y0, target = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    runs = []
    for prediction, network in (("x0", lambda x, t: target), ("residual", lambda x, t: y0 - target)):
        config = dataclasses.replace(tiny_config().diffusion, prediction=prediction)
        schedule = respace(make_schedule(config), steps)
        runs.append(sample(network, y0, schedule, torch.Generator().manual_seed(5)))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(runs[1], target, rtol=0, atol=1e-6)


def test_a_fresh_residual_model_returns_the_bicubic_image() -> None:
    """Zeroed output convolution: ê₀ = 0 at every step, so x̂₀ = y₀, the bicubic ×4 image (clamped)."""
    model = presets.fresh_model(s2d_config("residual"), seed=1)
    assert all(bool((p == 0).all()) for p in model.unet.out[-1].parameters())
    lr = lr_image(64, 64, seed=2)
    out = upscale_tensor(model, lr, UpscaleOptions(seed=0))
    expected = (bicubic_upsample(lr * 2 - 1, 4).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_the_training_loss_of_a_residual_model_is_the_x0_error() -> None:
    model = presets.fresh_model(s2d_config("residual"), seed=1)
    schedule = make_schedule(model.config.diffusion)
    generator = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 256, 256, generator=generator) * 2 - 1
    lr = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    t = torch.tensor([0, 3])
    noise = torch.randn(2, 48, 64, 64, generator=generator)
    output = torch.randn(2, 48, 64, 64, generator=generator)
    terms = diffusion_loss(lambda x, t_, lq: output, model, schedule, hr, lr, t, noise)
    torch.testing.assert_close(terms.x0, terms.z_y - output)
    expected = ((terms.z_y - output - terms.z_start) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms.loss, expected)
    # the same objective written on the residual: ê₀ against its target e₀ = z_y − z₀
    residual_error = ((output - (terms.z_y - terms.z_start)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms.loss, residual_error, rtol=1e-5, atol=1e-7)


# timestep_respacing -------------------------------------------------------------------------------------


def respaced_config(respacing: int | None) -> ModelConfig:
    config = s2d_config("x0")
    return dataclasses.replace(
        config, diffusion=dataclasses.replace(config.diffusion, timestep_respacing=respacing)
    )


def test_a_default_respacing_is_format_version_3_and_round_trips() -> None:
    config = respaced_config(2)
    data = json.loads(config.to_json())
    assert data["format_version"] == 3 and data["diffusion"]["timestep_respacing"] == 2
    assert ModelConfig.from_dict(data) == config
    assert json.loads(respaced_config(None).to_json())["format_version"] == 2


@pytest.mark.parametrize("respacing", [0, 5])
def test_a_respacing_outside_the_trained_steps_is_a_clear_error(respacing: int) -> None:
    data = json.loads(respaced_config(2).to_json())
    data["diffusion"]["timestep_respacing"] = respacing
    message = rf"x/config.json: .*timestep_respacing {respacing} must lie in 1 … 4"
    with pytest.raises(ModelError, match=message):
        ModelConfig.from_dict(data, source="x/config.json")


class Holder:
    """What `schedule_for` needs of a model: its config."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config


def test_the_models_respacing_is_the_default_and_steps_override_it() -> None:
    model = Holder(respaced_config(2))
    full = make_schedule(model.config.diffusion)
    default = schedule_for(model, UpscaleOptions())  # type: ignore[arg-type]
    assert default.steps == 2 and list(default.timesteps) == list(respace(full, 2).timesteps)
    assert schedule_for(model, UpscaleOptions(steps=4)).steps == 4  # type: ignore[arg-type]
    assert schedule_for(model, UpscaleOptions(steps=1)).steps == 1  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        schedule_for(model, UpscaleOptions(steps=5))  # type: ignore[arg-type]
    assert schedule_for(Holder(respaced_config(None)), UpscaleOptions()).steps == 4  # type: ignore[arg-type]
