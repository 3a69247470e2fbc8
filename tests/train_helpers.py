"""A micro model (tiny autoencoder, a two-level UNet) and small image folders for the training tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resshift_cli.config import UNetConfig
from resshift_cli.loading import write_model_folder
from resshift_cli.nets.unet import UNetModelSwin
from tiny import tiny_config, tiny_states

MICRO_UNET = UNetConfig(
    image_size=16,
    lq_size=16,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=(1, 1),
    attention_resolutions=(8,),
    swin_embed_dim=32,
    swin_depth=2,
)
"""Latent sides multiple of 16, HR crops multiple of 64: one training iteration in tens of milliseconds."""


def write_micro_folder(folder: Path, seed: int = 0) -> Path:
    """A model folder: the golden tiny VQ autoencoder and a seeded random micro UNet (v3 diffusion)."""
    config = replace(tiny_config("v3"), name="micro", unet=MICRO_UNET)
    torch.manual_seed(seed)
    unet = UNetModelSwin(MICRO_UNET).state_dict()
    write_model_folder(folder, config, unet, tiny_states()[1])
    return folder


def write_images(folder: Path, count: int, size: tuple[int, int] = (96, 80), seed: int = 0) -> Path:
    """`count` smooth random RGB PNGs of `size` (height, width), named img0.png, img1.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        low = torch.from_numpy(rng.random((1, 3, 6, 6), dtype=np.float32))
        smooth = torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)[0]
        pixels = (smooth.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One intra-op thread (import into a test module to use): on a shared 2-core machine 3× faster
    than two contending threads, and the same reduction order in every run of a test."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
