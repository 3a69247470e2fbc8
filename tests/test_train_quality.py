"""Training learns super-resolution: a micro space-to-depth model beats its own untrained start on PSNR."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resshift_cli.config import space_to_depth
from resshift_cli.images import model_rgb, read_picture
from resshift_cli.loading import load_model, write_model_folder
from resshift_cli.metrics import psnr_y
from resshift_cli.pipeline import UpscaleOptions, upscale_tensor
from resshift_cli.presets import get, init_unet
from resshift_cli.train import PairOptions, TrainOptions, TrainPairs, fit, scan
from train_helpers import (
    MICRO_UNET,
    one_thread,  # noqa: F401 (an autouse fixture)
    write_images,
)

PAIRS = PairOptions(crop=64, scale=4, degradation="bicubic")
MICRO_S2D = replace(MICRO_UNET, in_channels=48, out_channels=48)
"""A two-level UNet on the 48-channel pixel-unshuffle latent: LR crops of 16, HR crops of 64."""


def _micro_folder(folder: Path) -> Path:
    config = replace(get("lite"), name="micro-s2d", unet=MICRO_S2D, autoencoder=space_to_depth(4))
    write_model_folder(folder, config, init_unet(MICRO_S2D, seed=0).state_dict(), {})
    return folder


def _held_out_psnr(model_folder: Path, lr_dir: Path, hr_dir: Path) -> float:
    """Mean PSNR (Y, border 4) of the model's ×4 output against HR over the held-out pairs."""
    model = load_model(model_folder)
    scores = []
    for lr_path in sorted(lr_dir.glob("*.png")):
        lr = torch.from_numpy(model_rgb(read_picture(lr_path))).permute(2, 0, 1)[None]
        sr = upscale_tensor(model, lr, UpscaleOptions(seed=1, tile=0))[0].permute(1, 2, 0).numpy()
        hr = model_rgb(read_picture(hr_dir / lr_path.name))
        scores.append(psnr_y(sr, hr, crop=4))
    return float(np.mean(scores))


def _held_out_pairs(root: Path) -> tuple[Path, Path]:
    """HR crops (64×64) of unseen smooth images and their bicubic LR (16×16), saved as PNG."""
    hr_dir = write_images(root / "hr", 3, size=(64, 64), seed=7)
    lr_dir = root / "lr"
    lr_dir.mkdir()
    for path in hr_dir.glob("*.png"):
        Image.open(path).resize((16, 16), Image.Resampling.BICUBIC).save(lr_dir / path.name)
    return lr_dir, hr_dir


@pytest.mark.slow
def test_a_trained_micro_model_beats_its_untrained_start(tmp_path: Path) -> None:
    start = _micro_folder(tmp_path / "start")
    data = TrainPairs(scan(write_images(tmp_path / "train", 6, size=(96, 96)), PAIRS), PAIRS, 0)
    options = TrainOptions(iterations=150, batch_size=4, learning_rate=2e-3, ema_rate=0.9, save_every=0)
    final = fit(load_model(start), data, tmp_path / "run", options, torch.device("cpu"))
    lr_dir, hr_dir = _held_out_pairs(tmp_path / "held-out")
    before, after = _held_out_psnr(start, lr_dir, hr_dir), _held_out_psnr(final, lr_dir, hr_dir)
    assert after > before + 3.0, (before, after)
