"""The named models: one table with their diffusion settings, official sources, Hub copies and license."""

from __future__ import annotations

from dataclasses import dataclass

from resshift_cli.config import DiffusionConfig, ModelConfig, realsr_unet, vq_f4
from resshift_cli.errors import UsageError

RELEASE_URL = "https://github.com/zsyOAOA/ResShift/releases/download/v2.0"
"""Where the official `.pth` files live (override with the `RESSHIFT_RELEASE_URL` environment variable)."""

AUTOENCODER_FILE = "autoencoder_vq_f4.pth"
LICENSE = "S-Lab License 1.0"
LICENSE_NOTE = (
    "S-Lab License 1.0 (NTU): non-commercial use only; commercial use needs the authors' permission"
)
DEFAULT_MODEL = "realsr-v1"
BUILTIN_DIR = "builtin"
"""Folder inside the `resshift_cli` package that holds the built-in model folders (`builtin/<name>/`)."""


@dataclass(frozen=True)
class HubLocation:
    """A converted model folder on the Hugging Face Hub, pinned to one commit."""

    repo_id: str
    revision: str


@dataclass(frozen=True)
class ModelEntry:
    """One named model: what it is, how it samples, and where its weights come from."""

    name: str
    description: str
    diffusion: DiffusionConfig
    unet_file: str
    autoencoder_file: str = AUTOENCODER_FILE
    scale: int = 4
    license: str = LICENSE
    hub: HubLocation | None = None

    @property
    def steps(self) -> int:
        return self.diffusion.steps

    def config(self) -> ModelConfig:
        """The model folder config for this entry (all realsr/bicsr models share one architecture)."""
        return ModelConfig(
            name=self.name,
            scale=self.scale,
            unet=realsr_unet(),
            autoencoder=vq_f4(),
            diffusion=self.diffusion,
        )


_S15 = DiffusionConfig(steps=15, min_noise_level=0.04)
_S4 = DiffusionConfig(steps=4, min_noise_level=0.2)

MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            "realsr-v1",
            "Real-world ×4, 15 steps (NeurIPS 2023 paper model, 300k iterations)",
            _S15,
            "resshift_realsrx4_s15_v1.pth",
        ),
        ModelEntry(
            "realsr-v2",
            "Real-world ×4, 15 steps (trained longer, 500k iterations)",
            _S15,
            "resshift_realsrx4_s15_v2.pth",
        ),
        ModelEntry(
            "realsr-v3",
            "Real-world ×4, 4 steps (journal model, MSE + LPIPS)",
            _S4,
            "resshift_realsrx4_s4_v3.pth",
        ),
        ModelEntry(
            "bicsr",
            "Bicubic ×4, 4 steps, for clean bicubic-downscaled inputs",
            _S4,
            "resshift_bicsrx4_s4.pth",
        ),
    )
}


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside the package (`resshift_cli/builtin/<name>/`): no download, read-only."""

    name: str
    description: str
    steps: int
    license: str
    license_note: str
    card: str = "MODEL_CARD.md"


BUILTIN: dict[str, BuiltinModel] = {
    entry.name: entry
    for entry in (
        BuiltinModel(
            "lite",
            "Our own small ×4 model (5.2 M parameters, space-to-depth latent), trained on CPU on 17 photos; "
            "fast, works offline; +0.55 dB PSNR over bicubic on held-out photos, far below realsr-v3 "
            "(model card)",
            2,
            "MIT",
            "MIT, as resshift-cli; trained on photos under GPL-2+, LGPL-3 and CC-BY-SA-3.0 (model card)",
        ),
    )
}

OFFLINE_HINT = (
    "or try the built-in model now: --model lite (small and offline;"
    " a little better than bicubic, far from the official models)"
)
"""Appended to every "cannot fetch the default weights" message."""


def known_names() -> str:
    """Every name `--model` accepts, built-in ones marked."""
    return ", ".join([*MODELS, *(f"{name} (built in)" for name in BUILTIN)])


def get(name: str) -> ModelEntry:
    """Look up a downloadable named model; an unknown name is a usage error that lists the known ones."""
    if name in BUILTIN:
        raise UsageError(f"{name} is a built-in model: it has no official release to download or convert")
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(
            f"unknown model {name!r}; known models: {known_names()} (or a model folder, or hf://owner/name)"
        ) from None


def preset(name: str) -> DiffusionConfig:
    """The diffusion settings of a named model (`resshift models convert --preset`)."""
    return get(name).diffusion
