"""LR image → padded → bicubic ×4 → encode → residual-shifting sampler → decode → cropped SR image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from resshift_cli.devices import autocast, generator
from resshift_cli.loading import LoadedModel
from resshift_cli.sampler import StepInfo, sample
from resshift_cli.schedule import make_schedule

DEFAULT_SEED = 12345


@dataclass(frozen=True)
class UpscaleOptions:
    """How to run one image: the noise seed and the autocast dtype (float32 = exact path)."""

    seed: int = DEFAULT_SEED
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class Progress:
    """Progress of one image: `done` of `total` units of work (denoiser steps)."""

    stage: str
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad (B, C, H, W) at the bottom/right to multiples of `multiple` by mirror reflection.

    Same as the official `F.pad(mode="reflect")` whenever that works (pad < side). For sides too short for
    one reflection (LR sides ≤ 32 with multiple 64), the reflection is repeated, i.e. the image is extended
    as a mirrored periodic signal; a side of 1 pixel is replicated.
    """
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    while pad_h or pad_w:
        step_h, step_w = min(pad_h, x.shape[-2] - 1), min(pad_w, x.shape[-1] - 1)
        if step_h == 0 and step_w == 0:
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x


def to_signed(image: Tensor) -> Tensor:
    """[0, 1] → [−1, 1] as upstream computes it: (x − 0.5) / 0.5."""
    return (image - 0.5) / 0.5


def to_unit(image: Tensor) -> Tensor:
    """[−1, 1] → [0, 1] after clamping."""
    return image.clamp(-1, 1) * 0.5 + 0.5


def encode_lr(model: LoadedModel, y_padded: Tensor) -> Tensor:
    """(B, 3, h, w) LR in [−1, 1] → bicubic ×scale (no antialias, no clamp) → latent (B, 3, h, w)."""
    upsampled = F.interpolate(y_padded, scale_factor=model.scale, mode="bicubic")
    return model.autoencoder.encode(upsampled).float() * model.config.diffusion.scale_factor


def decode_latent(model: LoadedModel, z: Tensor) -> Tensor:
    """(B, 3, h, w) latent → (B, 3, 4h, 4w) image, roughly [−1, 1], not clamped."""
    return model.autoencoder.decode(z / model.config.diffusion.scale_factor).float()


def _denoiser(model: LoadedModel, lq: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda x, t: model.unet(x, t, lq)


def _step_reporter(progress: ProgressCallback | None, steps: int) -> Callable[[StepInfo], None] | None:
    if progress is None:
        return None
    return lambda info: progress(Progress("denoise", steps - info.i, steps))


@torch.inference_mode()
def upscale_tensor(
    model: LoadedModel,
    lr: Tensor,
    options: UpscaleOptions = UpscaleOptions(),
    progress: ProgressCallback | None = None,
) -> Tensor:
    """Super-resolve (1, 3, H, W) RGB in [0, 1] → (1, 3, s·H, s·W) in [0, 1] on the model's device."""
    device = next(model.unet.parameters()).device
    schedule = make_schedule(model.config.diffusion)
    height, width = lr.shape[-2:]
    y = pad_to_multiple(to_signed(lr.to(device, torch.float32)), model.config.unet.lq_size)
    with autocast(device, options.dtype):
        z_y = encode_lr(model, y)
        z_0 = sample(
            _denoiser(model, y),
            z_y,
            schedule,
            generator(options.seed),
            _step_reporter(progress, schedule.steps),
        )
        image = decode_latent(model, z_0)
    return to_unit(image[..., : model.scale * height, : model.scale * width])
