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


def get(name: str) -> ModelEntry:
    """Look up a named model; an unknown name is a usage error that lists the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(MODELS)
        raise UsageError(
            f"unknown model {name!r}; known models: {known} (or a model folder, or hf://owner/name)"
        ) from None


def preset(name: str) -> DiffusionConfig:
    """The diffusion settings of a named model (`resshift models convert --preset`)."""
    return get(name).diffusion
