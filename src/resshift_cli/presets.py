"""Named architecture presets (`resshift train --arch NAME`) and freshly initialised models built from them.

A preset is a whole `ModelConfig`: UNet, autoencoder and diffusion. `fresh_model` gives its networks with
the official initialisation and a seed; the weights of a VQ autoencoder cannot be made that way (it is
trained separately and frozen), so they come from an existing model (`autoencoder_from`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from resshift_cli import registry
from resshift_cli.config import (
    CONFIG_FILE_NAME,
    AutoencoderConfig,
    DDConfig,
    DiffusionConfig,
    FirstStage,
    ModelConfig,
    UNetConfig,
    realsr_unet,
    space_to_depth,
    vq_f4,
)
from resshift_cli.errors import ModelError, UsageError
from resshift_cli.loading import AUTOENCODER_FILE, LoadedModel, build_model, read_weights
from resshift_cli.nets.swin import WindowAttention
from resshift_cli.nets.unet import ResBlock, UNetModelSwin

BIAS_TABLE_STD = 0.02
"""Standard deviation of the relative-position bias tables at initialisation (timm `trunc_normal_`)."""


@dataclass(frozen=True)
class Preset:
    """A named architecture: what it is for and the config it builds."""

    name: str
    description: str
    config: ModelConfig


def _v3(name: str, unet: UNetConfig, autoencoder: FirstStage) -> ModelConfig:
    """A ×4 model with realsr-v3's chain: 4 steps, κ 2, √η₁ 0.2/κ … √η_T 0.99, p 0.3."""
    return ModelConfig(name, 4, unet, autoencoder, registry.get("realsr-v3").diffusion)


TINY_AUTOENCODER = AutoencoderConfig(ddconfig=DDConfig(ch=32))
LITE_UNET = UNetConfig(
    in_channels=48,
    out_channels=48,
    model_channels=32,
    channel_mult=(1, 2, 2, 4),
    num_res_blocks=(2, 2, 2, 2),
    attention_resolutions=(32, 16, 8),
    swin_embed_dim=64,
)
"""The lite denoiser, 5.2 M parameters (an 11.2 MB model folder in float16): the tiny model's widths on
the 48-channel latent, without Swin at the LR-size level. Chosen with `benchmarks/lite_arch.py` (README,
"Architecture presets"): about 1 CPU-second per training step of 8 × 64² LR crops (bf16), 2.7 CPU-seconds
per output megapixel."""

LITE_DIFFUSION = DiffusionConfig(
    steps=4,
    kappa=0.5,
    min_noise_level=0.2,
    etas_end=0.99,
    power=0.3,
    prediction="residual",
    timestep_respacing=2,
)
"""The lite chain: realsr-v3's 4-step schedule shape (√η₁ … √η_T = 0.99, p 0.3) with κ 0.5 and the residual
prediction, sampled in 2 of its 4 steps unless `--steps` says otherwise (README, "The built-in lite model"):
in pixel space κ 2 buries the signal in [−1, 1] under noise of standard deviation 2 at the first step, and 2
steps gave the best validation PSNR of 1–4 (measured, MODEL_CARD.md)."""

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "realsr",
            "the released architecture (UNet 118.6 M, VQ-f4 55.3 M parameters), 4 steps as realsr-v3",
            _v3("realsr", realsr_unet(), vq_f4()),
        ),
        Preset(
            "tiny",
            "the golden test widths (UNet 32, Swin 64, VQ-f4 32), 4 steps; for tests",
            _v3("tiny", UNetConfig(model_channels=32, swin_embed_dim=64), TINY_AUTOENCODER),
        ),
        Preset(
            "lite",
            "space-to-depth ×4 (48-channel latent at LR size, no autoencoder weights), narrow Swin-UNet, "
            "4 steps (sampled in 2), κ 0.5, residual prediction",
            ModelConfig("lite", 4, LITE_UNET, space_to_depth(4), LITE_DIFFUSION),
        ),
    )
}


def get(name: str) -> ModelConfig:
    """The config of preset `name`; an unknown name is a `UsageError` listing the known ones."""
    try:
        return PRESETS[name].config
    except KeyError:
        raise UsageError(f"unknown architecture preset {name!r}; known: {', '.join(PRESETS)}") from None


def init_unet(config: UNetConfig, seed: int, zero_output: bool = False) -> UNetModelSwin:
    """A UNet initialised as the official code does, from `seed` (the global RNG is left untouched).

    PyTorch's default initialisation everywhere, then, as upstream: the last convolution of every ResBlock
    zeroed (improved-diffusion's `zero_module`), and every relative-position bias table drawn from
    N(0, 0.02²) truncated to [−2, 2] (timm's `trunc_normal_`). The output convolution keeps its default
    initialisation (upstream's `UNetModelSwin.out` is not zeroed) unless `zero_output`: a residual-predicting
    model then starts at ê₀ = 0, i.e. x̂₀ = y₀, the bicubic image.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetModelSwin(config)
        with torch.no_grad():
            for module in unet.modules():
                if isinstance(module, ResBlock):
                    for parameter in module.out_layers[-1].parameters():
                        parameter.zero_()
                elif isinstance(module, WindowAttention):
                    nn.init.trunc_normal_(module.relative_position_bias_table, std=BIAS_TABLE_STD)
            if zero_output:
                for parameter in unet.out[-1].parameters():
                    parameter.zero_()
    return unet


def _autoencoder_state(config: ModelConfig, source: LoadedModel | Path | str | None) -> dict[str, Tensor]:
    """The autoencoder weights for `config`: none for a parameter-free kind, else those of `source`."""
    if source is None:
        if isinstance(config.autoencoder, AutoencoderConfig):
            raise ModelError(
                f"{config.name}: a VQ autoencoder's weights cannot be made from a seed; reuse a trained one "
                "from a model (autoencoder_from=a model folder or loaded model, e.g. realsr-v3)"
            )
        return {}
    if isinstance(source, LoadedModel):
        name, given = source.name, source.config.autoencoder
        state = {k: v.detach().to("cpu", copy=True) for k, v in source.autoencoder.state_dict().items()}
    else:
        name = str(source)
        given = ModelConfig.read(Path(source) / CONFIG_FILE_NAME).autoencoder
        state = read_weights(Path(source) / AUTOENCODER_FILE)
    if given != config.autoencoder:
        raise ModelError(
            f"{name}: its autoencoder ({given.summary()}) is not the one {config.name} needs "
            f"({config.autoencoder.summary()})"
        )
    return state


def fresh_model(
    preset: str | ModelConfig, seed: int, autoencoder_from: LoadedModel | Path | str | None = None
) -> LoadedModel:
    """A new model of `preset` (a name or a config): a seeded, officially initialised UNet, and the
    autoencoder's weights taken from `autoencoder_from` (a model folder or a loaded model; required for a
    VQ autoencoder, optional for a parameter-free one). A residual-predicting UNet starts with its output
    convolution zeroed (`init_unet`), so the untrained model returns the bicubic image. float32 on the CPU,
    eval mode, no gradients: a trainer switches the UNet to `train()` and `requires_grad_(True)` itself.
    """
    config = get(preset) if isinstance(preset, str) else preset
    ae_state = _autoencoder_state(config, autoencoder_from)
    zero_output = config.diffusion.prediction == "residual"
    unet_state = init_unet(config.unet, seed, zero_output=zero_output).state_dict()
    folder = Path(f"fresh-{config.name}-seed{seed}")
    return build_model(config, unet_state, ae_state, folder, f"fresh {config.name} (seed {seed})")
