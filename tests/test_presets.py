"""Architecture presets and freshly initialised models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from resshift_cli import presets, registry
from resshift_cli.config import ModelConfig
from resshift_cli.errors import ModelError, UsageError
from resshift_cli.loading import load_model
from resshift_cli.nets.space_to_depth import SpaceToDepth
from resshift_cli.nets.swin import WindowAttention
from resshift_cli.nets.unet import ResBlock, UNetModelSwin
from tiny import tiny_config, tiny_model, tiny_states, write_tiny_folder

LITE_MAX_PARAMETERS = 10_000_000
"""float16 weights within the wheel's 20 MB budget."""


def unet_parameters(config: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in UNetModelSwin(config.unet).parameters())


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_is_a_valid_round_tripping_config(name: str) -> None:
    config = presets.get(name)
    assert config.name == name and config.scale == 4
    assert ModelConfig.from_dict(config.to_dict()) == config
    if name != "lite":
        assert config.diffusion == registry.get("realsr-v3").diffusion
    # upstream's first convolution is channel_mult[0]·model_channels wide, ours model_channels: equal at 1
    assert config.unet.channel_mult[0] == 1


def test_realsr_preset_is_the_released_architecture() -> None:
    config = presets.get("realsr")
    assert unet_parameters(config) == 118_593_583  # docs/official-behaviour.md §4.1
    released = registry.get("realsr-v3").config()
    assert (config.unet, config.autoencoder) == (released.unet, released.autoencoder)
    assert config.diffusion.steps == 4 and config.diffusion.kappa == 2.0
    assert config.diffusion.min_noise_level == 0.2


def test_tiny_preset_is_the_golden_tiny_model() -> None:
    assert dataclasses.replace(presets.get("tiny"), name="tiny-v3") == tiny_config("v3")


def test_lite_preset_is_space_to_depth_and_fits_the_wheel() -> None:
    config = presets.get("lite")
    assert config.autoencoder.latent_channels == 48 == config.unet.in_channels == config.unet.out_channels
    assert unet_parameters(config) <= LITE_MAX_PARAMETERS


def test_lite_keeps_realsr_v3s_chain_shape_with_its_own_kappa_and_a_residual_prediction() -> None:
    lite, v3 = presets.get("lite").diffusion, registry.get("realsr-v3").diffusion
    assert lite.prediction == "residual" and lite.kappa == 0.5 and lite.timestep_respacing == 2
    assert dataclasses.replace(lite, kappa=v3.kappa, prediction="x0", timestep_respacing=None) == v3


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown architecture preset 'huge'; known: realsr, tiny, lite"):
        presets.get("huge")


def test_fresh_model_is_reproducible_from_its_seed_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    first, again, other = (presets.fresh_model("lite", seed) for seed in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(first.autoencoder, SpaceToDepth)
    weights = first.unet.state_dict()
    assert all(torch.equal(v, again.unet.state_dict()[k]) for k, v in weights.items())
    assert not torch.equal(
        weights["input_blocks.0.0.weight"], other.unet.state_dict()["input_blocks.0.0.weight"]
    )


def test_fresh_model_is_initialised_as_upstream() -> None:
    lite = presets.get("lite")
    x0 = dataclasses.replace(lite, diffusion=dataclasses.replace(lite.diffusion, prediction="x0"))
    unet = presets.fresh_model(x0, 0).unet
    resblocks = [m for m in unet.modules() if isinstance(m, ResBlock)]
    tables = [m.relative_position_bias_table for m in unet.modules() if isinstance(m, WindowAttention)]
    assert resblocks and tables
    assert all(not p.any() for block in resblocks for p in block.out_layers[-1].parameters())
    assert all(p.any() for block in resblocks for p in block.in_layers[-1].parameters())
    values = torch.cat([t.flatten() for t in tables])
    assert 0.015 < values.std() < 0.025 and values.abs().max() < 2
    assert unet.out[-1].weight.any()  # upstream's output convolution is not zero-initialised
    # … except for a residual prediction, which then starts at the bicubic image (tests/test_prediction.py)
    assert not presets.fresh_model("lite", 0).unet.out[-1].weight.any()


def test_vq_preset_without_autoencoder_weights_is_a_clear_error() -> None:
    with pytest.raises(
        ModelError, match=r"a VQ autoencoder's weights cannot be made from a seed.*autoencoder_from"
    ):
        presets.fresh_model("realsr", 0)


@pytest.mark.parametrize("source", ["folder", "loaded"])
def test_vq_preset_reuses_the_autoencoder_of_a_model(tmp_path: Path, source: str) -> None:
    given = write_tiny_folder(tmp_path / "m") if source == "folder" else tiny_model()
    model = presets.fresh_model("tiny", 1, autoencoder_from=given)
    _, ae_state = tiny_states()
    for key, value in model.autoencoder.state_dict().items():
        assert torch.equal(value, ae_state[key].float()), key
    assert model.config == presets.get("tiny") and not any(p.requires_grad for p in model.unet.parameters())


def test_autoencoder_of_another_architecture_is_refused(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    with pytest.raises(
        ModelError, match=r"its autoencoder \(autoencoder 32, .*\) is not the one realsr needs"
    ):
        presets.fresh_model("realsr", 0, autoencoder_from=folder)
    with pytest.raises(ModelError, match="is not the one lite needs"):
        presets.fresh_model("lite", 0, autoencoder_from=load_model(folder))
