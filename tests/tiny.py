"""The tiny golden model (official architecture, narrow widths) as configs, modules and model folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from resshift_cli.config import DiffusionConfig, ModelConfig
from resshift_cli.loading import LoadedModel, build_model, write_model_folder

GOLDEN = Path(__file__).parent / "golden"
DIFFUSION = {
    "v1": DiffusionConfig(steps=15, min_noise_level=0.04),
    "v3": DiffusionConfig(steps=4, min_noise_level=0.2),
}


def tiny_config(version: str = "v3") -> ModelConfig:
    """The golden tiny config with the diffusion settings of realsr `version` (v1: 15 steps, v3: 4)."""
    raw = json.loads((GOLDEN / "tiny_config.json").read_text())
    diffusion = DIFFUSION[version]
    return ModelConfig.from_dict(
        {
            "format": "resshift-model",
            "format_version": 1,
            "name": f"tiny-{version}",
            "scale": 4,
            "unet": raw["unet"],
            "autoencoder": raw["autoencoder"],
            "diffusion": {f: getattr(diffusion, f) for f in diffusion.__dataclass_fields__},
        }
    )


def tiny_states() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The golden tiny UNet and autoencoder state dicts (official keys, float16 as stored)."""
    return load_file(GOLDEN / "tiny_unet.safetensors"), load_file(GOLDEN / "tiny_vq_f4.safetensors")


def tiny_model(version: str = "v3") -> LoadedModel:
    unet, autoencoder = tiny_states()
    return build_model(tiny_config(version), unet, autoencoder, GOLDEN, "tiny")


def write_tiny_folder(folder: Path, version: str = "v3", dtype: torch.dtype | None = None) -> Path:
    """A model folder holding the tiny golden weights; returns `folder`."""
    unet, autoencoder = tiny_states()
    write_model_folder(folder, tiny_config(version), unet, autoencoder, dtype=dtype)
    return folder


def golden_case(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of one `sample_*` golden file."""
    path = GOLDEN / f"{name}.safetensors"
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    return load_file(path), metadata
