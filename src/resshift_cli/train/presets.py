"""Architectures a new model can be trained from (`resshift train --arch NAME`), freshly initialised.

`realsr`: the released realsr UNet and VQ-f4 autoencoder with the v3 diffusion (4 steps); `tiny`: the same
layout at the narrow widths of the golden test model. The VQ autoencoder is never trained here: its weights
come from an existing model (`--autoencoder`), whose autoencoder config must match the preset's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from resshift_cli.config import (
    AutoencoderConfig,
    DDConfig,
    DiffusionConfig,
    ModelConfig,
    UNetConfig,
    realsr_unet,
    vq_f4,
)
from resshift_cli.errors import UsageError
from resshift_cli.loading import LoadedModel, build_model
from resshift_cli.nets.unet import ResBlock, UNetModelSwin

V3_DIFFUSION = DiffusionConfig(steps=4, min_noise_level=0.2)

PRESETS: dict[str, ModelConfig] = {
    "realsr": ModelConfig("realsr", 4, realsr_unet(), vq_f4(), V3_DIFFUSION),
    "tiny": ModelConfig(
        "tiny",
        4,
        UNetConfig(model_channels=32, swin_embed_dim=64),
        AutoencoderConfig(ddconfig=DDConfig(ch=32)),
        V3_DIFFUSION,
    ),
}


def preset(name: str) -> ModelConfig:
    """The config of preset `name` (`UsageError` naming the choices otherwise)."""
    if name not in PRESETS:
        raise UsageError(f"unknown --arch {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def _zero_init(unet: torch.nn.Module) -> None:
    """Zero the last convolution of every ResBlock and of the output, as the official `zero_module` does."""
    for module in unet.modules():
        if isinstance(module, ResBlock):
            torch.nn.init.zeros_(module.out_layers[-1].weight)
            torch.nn.init.zeros_(module.out_layers[-1].bias)
    torch.nn.init.zeros_(unet.out[-1].weight)
    torch.nn.init.zeros_(unet.out[-1].bias)


def fresh_model(config: ModelConfig, autoencoder: LoadedModel, seed: int) -> LoadedModel:
    """A new UNet for `config` (seeded default init, zeroed output layers) with `autoencoder`'s VQ weights."""
    if autoencoder.config.autoencoder != config.autoencoder:
        raise UsageError(
            f"--autoencoder {autoencoder.folder}: its autoencoder differs from the --arch {config.name}"
            " preset's (use a model with the same autoencoder, e.g. realsr-v3 for realsr)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetModelSwin(config.unet)
    _zero_init(unet)
    state: dict[str, Tensor] = unet.state_dict()
    return build_model(config, state, autoencoder.autoencoder.state_dict(), autoencoder.folder, config.name)
