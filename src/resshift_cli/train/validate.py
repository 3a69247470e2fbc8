"""Validation on held-out images: the objective on fixed steps and noise, and PSNR(Y) of sampled outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from resshift_cli import metrics
from resshift_cli.loading import LoadedModel
from resshift_cli.pipeline import UpscaleOptions, to_unit, upscale_tensor
from resshift_cli.schedule import Schedule
from resshift_cli.train.data import NOISE_STREAM, VALIDATION_STREAM, Example, PairOptions, center_pair
from resshift_cli.train.data import keyed_generator as keyed
from resshift_cli.train.objective import diffusion_loss, latent_shape


def psnr_y(sr: Tensor, hr: Tensor, border: int) -> float:
    """PSNR in dB of the Y channel of (3, H, W) images in [0, 1], `border` pixels cropped on every side:
    `metrics.psnr_y`, the protocol `resshift eval` reports (8-bit rounding, BT.601 Y, float64)."""
    return metrics.psnr_y(sr.permute(1, 2, 0).double().numpy(), hr.permute(1, 2, 0).double().numpy(), border)


@dataclass(frozen=True)
class ValidationSet:
    """Fixed validation pairs: centre crops (3, crop, crop) and their LR (3, crop/s, crop/s) in [−1, 1]."""

    hr: list[Tensor]
    lr: list[Tensor]
    seed: int

    @classmethod
    def make(cls, examples: list[Example], options: PairOptions, seed: int) -> ValidationSet:
        """Degrade each centre crop with a generator keyed by its index: the same pairs at every check."""
        pairs = [center_pair(e, options, keyed(seed, VALIDATION_STREAM, i)) for i, e in enumerate(examples)]
        return cls([hr for hr, _ in pairs], [lr for _, lr in pairs], seed)


@torch.no_grad()
def validation_loss(model: LoadedModel, schedule: Schedule, val: ValidationSet) -> float:
    """Mean of the objective over every image and every step t, with noise keyed by (image, t)."""
    device = next(model.unet.parameters()).device
    total = 0.0
    for i, (hr, lr) in enumerate(zip(val.hr, val.lr, strict=True)):
        steps = torch.arange(schedule.steps, device=device)
        shape = (schedule.steps, *latent_shape(model, hr.shape[-2], hr.shape[-1]))
        noise = torch.randn(shape, generator=keyed(val.seed, NOISE_STREAM, i)).to(device)
        hr_b = hr.to(device).expand(schedule.steps, -1, -1, -1)
        lr_b = lr.to(device).expand(schedule.steps, -1, -1, -1)
        total += float(diffusion_loss(model.denoise, model, schedule, hr_b, lr_b, steps, noise).loss.sum())
    return total / (len(val.hr) * schedule.steps)


def validation_psnr(model: LoadedModel, val: ValidationSet) -> float:
    """Mean PSNR(Y) of the sampled ×s output against the HR crop (whole image, float32, fixed seed)."""
    device = next(model.unet.parameters()).device
    options = UpscaleOptions(seed=val.seed, tile=0)
    scores = [
        psnr_y(
            upscale_tensor(model, to_unit(lr)[None].to(device), options)[0].cpu(), to_unit(hr), model.scale
        )
        for hr, lr in zip(val.hr, val.lr, strict=True)
    ]
    return sum(scores) / len(scores)
