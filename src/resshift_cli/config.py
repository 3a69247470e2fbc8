"""Frozen settings for the networks, the diffusion and a whole model folder, with JSON in/out.

Field names follow the official ResShift YAML configs, so a `config.json` reads like them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from resshift_cli.errors import ModelError

FORMAT_NAME = "resshift-model"
FORMAT_VERSION = 1
CONFIG_FILE_NAME = "config.json"

T = TypeVar("T")


@dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of the official `UNetModelSwin` (docs/official-behaviour.md §4.1)."""

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 160
    out_channels: int = 3
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    conv_resample: bool = True
    dims: int = 2
    use_fp16: bool = False
    num_head_channels: int = 32
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    swin_depth: int = 2
    swin_embed_dim: int = 192
    window_size: int = 8
    mlp_ratio: float = 4
    cond_lq: bool = True
    cond_mask: bool = False
    lq_size: int = 64
    patch_norm: bool = False
    num_heads: int = 1


@dataclass(frozen=True)
class DDConfig:
    """Encoder/decoder layout of the VQ autoencoder (`ddconfig`, docs/official-behaviour.md §5.1)."""

    double_z: bool = False
    z_channels: int = 3
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    padding_mode: str = "zeros"


@dataclass(frozen=True)
class AutoencoderConfig:
    """Constructor arguments of the official `VQModelTorch` (docs/official-behaviour.md §5.1)."""

    embed_dim: int = 3
    n_embed: int = 8192
    ddconfig: DDConfig = field(default_factory=DDConfig)


@dataclass(frozen=True)
class DiffusionConfig:
    """Settings of the residual-shifting diffusion (docs/official-behaviour.md §2.1, paper Eq. 10)."""

    steps: int = 15
    kappa: float = 2.0
    min_noise_level: float = 0.04
    etas_end: float = 0.99
    power: float = 0.3
    scale_factor: float = 1.0
    normalize_input: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Everything `config.json` of a model folder says."""

    name: str
    scale: int
    unet: UNetConfig
    autoencoder: AutoencoderConfig
    diffusion: DiffusionConfig

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to `config.json`."""
        body = dataclasses.asdict(self)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **body}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
        """Parse and validate a `config.json` object; unknown or missing fields are a `ModelError`."""
        if data.get("format") != FORMAT_NAME:
            raise ModelError(f"{source}: not a resshift model config (format is {data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelError(
                f"{source}: unsupported format_version {data.get('format_version')!r} "
                f"(this resshift-cli reads version {FORMAT_VERSION}; upgrade resshift-cli)"
            )
        try:
            autoencoder = dict(data["autoencoder"])
            autoencoder["ddconfig"] = _build(DDConfig, autoencoder.get("ddconfig", {}), source)
            return cls(
                name=str(data["name"]),
                scale=int(data["scale"]),
                unet=_build(UNetConfig, data["unet"], source),
                autoencoder=_build(AutoencoderConfig, autoencoder, source),
                diffusion=_build(DiffusionConfig, data["diffusion"], source),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{source}: invalid model config ({err})") from None

    @classmethod
    def read(cls, path: Path) -> ModelConfig:
        """Read `config.json` from `path`."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{path}: missing (a model folder needs config.json)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelError(f"{path}: not a readable JSON file ({err})") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))


def _build(kind: type[T], values: Mapping[str, Any], source: str) -> T:
    """Instantiate dataclass `kind` from a JSON mapping, turning lists into tuples."""
    names = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ModelError(f"{source}: unknown {kind.__name__} field(s): {', '.join(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**converted)


def realsr_unet() -> UNetConfig:
    """The released realsr/bicsr UNet (v1 = v2 = v3 = bicsr, docs/official-behaviour.md §4.1)."""
    return UNetConfig()


def vq_f4() -> AutoencoderConfig:
    """The released `autoencoder_vq_f4` (docs/official-behaviour.md §5.1)."""
    return AutoencoderConfig()
