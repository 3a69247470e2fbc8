"""Write a trained `lite` run folder (RUN/final: EMA weights, float32) as the built-in float16 model folder.

Usage: python scripts/export_lite.py RUN/final src/resshift_cli/builtin/lite
Replaces config.json, unet.safetensors, autoencoder.safetensors and manifest.json in the destination (its
MODEL_CARD.md is kept: it is written by hand from the run's log and evaluation). The config written is the
preset's: the run must be of the `lite` preset, except for `timestep_respacing` (the default sampling steps,
which do not change training and are chosen after it on the validation photos).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

from resshift_cli import presets
from resshift_cli.config import ModelConfig
from resshift_cli.loading import load_model, write_model_folder
from resshift_cli.manifest import write_manifest

NAME = "lite"
LIMIT_BYTES = 20_000_000
"""The package carries this model: keep it small (issue 11: at most 20 MB)."""


def _trained(config: ModelConfig) -> ModelConfig:
    """`config` without its default sampling steps: what training depends on."""
    return replace(config, diffusion=replace(config.diffusion, timestep_respacing=None))


def main(run_final: Path, dest: Path) -> None:
    model = load_model(run_final)
    config = presets.get(NAME)
    if _trained(replace(model.config, name=NAME)) != _trained(config):
        sys.exit(f"{run_final}: not a model of the {NAME!r} preset")
    write_model_folder(
        dest,
        config,
        model.unet.state_dict(),
        model.autoencoder.state_dict(),
        dtype=torch.float16,
        source=str(run_final),
    )
    manifest = write_manifest(dest, NAME, [])
    for record in manifest.files:
        (dest / record.file).chmod(0o644)  # package data: readable by every user of an installation
    size = sum(record.size for record in manifest.files)
    print(f"{dest}: {size / 1e6:.1f} MB")
    if size > LIMIT_BYTES:
        sys.exit(f"{dest}: {size / 1e6:.1f} MB is over the {LIMIT_BYTES / 1e6:.0f} MB limit")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/export_lite.py RUN/final DEST")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
