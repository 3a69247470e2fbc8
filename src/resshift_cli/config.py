"""Frozen settings for the networks, the diffusion and a whole model folder, with JSON in/out.

Field names follow the official ResShift YAML configs, so a `config.json` reads like them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from resshift_cli.errors import ModelError

FORMAT_NAME = "resshift-model"
FORMAT_VERSION = 3
"""The newest `format_version` this resshift-cli reads; it reads every older one too.

1: the VQ autoencoder only. 2: adds the autoencoder "kind" (space_to_depth). 3: adds the diffusion's
`prediction` (what the network outputs) and `timestep_respacing` (its default sampling steps). A config is
written with the oldest version that describes it, so VQ models stay readable by releases that only know
version 1.
"""
CONFIG_FILE_NAME = "config.json"
VQ_KIND = "vq"
SPACE_TO_DEPTH_KIND = "space_to_depth"
PREDICTIONS = ("x0", "residual")
"""What the network outputs: x̂₀ itself (every released model, the official `START_X`), or the residual
ê₀ = y₀ − x̂₀ (the official `RESIDUAL` mean type), from which x̂₀ = y₀ − ê₀."""

T = TypeVar("T")


SIZE_MULTIPLE = 64
"""LR sides and tiles are multiples of this for every released model (`UNetConfig.lq_size`); code that has a
model at hand takes it from the model (`LoadedModel.size_multiple`)."""


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
    lq_size: int = SIZE_MULTIPLE
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
    """Constructor arguments of the official `VQModelTorch` (docs/official-behaviour.md §5.1).

    The default autoencoder kind: its JSON object has no "kind" key (absent or "vq" both mean this
    kind), so files stay as before.
    """

    embed_dim: int = 3
    n_embed: int = 8192
    ddconfig: DDConfig = field(default_factory=DDConfig)

    @property
    def latent_channels(self) -> int:
        return self.embed_dim

    @property
    def factor(self) -> int:
        """Spatial down-sampling factor of the latent (4 for f4)."""
        return 2 ** (len(self.ddconfig.ch_mult) - 1)

    def summary(self) -> str:
        return f"autoencoder {self.ddconfig.ch}, codebook {self.n_embed}×{self.embed_dim}"


@dataclass(frozen=True)
class SpaceToDepthConfig:
    """The exact, parameter-free "autoencoder": pixel unshuffle by `factor` (no weights, no codebook).

    JSON: `{"kind": "space_to_depth", "factor": 4}`; the latent has 3·factor² channels.
    """

    factor: int = 4
    kind: Literal["space_to_depth"] = SPACE_TO_DEPTH_KIND

    def __post_init__(self) -> None:
        if self.kind != SPACE_TO_DEPTH_KIND:
            raise ValueError(f"kind must be {SPACE_TO_DEPTH_KIND!r}, got {self.kind!r}")
        if not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"space_to_depth factor must be a positive integer, got {self.factor!r}")

    @property
    def latent_channels(self) -> int:
        return 3 * self.factor**2

    def summary(self) -> str:
        return f"space-to-depth ×{self.factor} ({self.latent_channels} channels, no weights)"


FirstStage = AutoencoderConfig | SpaceToDepthConfig
"""Any autoencoder kind a model folder may name (the LDM "first stage")."""


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
    prediction: str = "x0"
    """One of `PREDICTIONS`; "x0" is what every released model uses."""
    timestep_respacing: int | None = None
    """Sampling steps when none are asked for (`--steps`), respaced from the `steps` trained ones as the
    official key of this name does; None (every released model): all trained steps."""


VERSION_3_DEFAULTS = {"prediction": "x0", "timestep_respacing": None}
"""The diffusion fields format version 3 added, and the values that mean "as before"."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything `config.json` of a model folder says.

    The UNet's input and output channels must equal the latent's, and the latent must be at LR size
    (autoencoder factor = scale): the pipeline concatenates the LR image to the latent.
    """

    name: str
    scale: int
    unet: UNetConfig
    autoencoder: FirstStage
    diffusion: DiffusionConfig

    def check(self, source: str) -> None:
        """Raise `ModelError` (naming `source`) when the UNet and the autoencoder do not fit together."""
        channels = self.autoencoder.latent_channels
        if (self.unet.in_channels, self.unet.out_channels) != (channels, channels):
            raise ModelError(
                f"{source}: invalid model config (the UNet's in/out channels ({self.unet.in_channels}/"
                f"{self.unet.out_channels}) must equal the autoencoder's latent channels ({channels}))"
            )
        if self.diffusion.prediction not in PREDICTIONS:
            raise ModelError(
                f"{source}: invalid model config (diffusion prediction {self.diffusion.prediction!r}; "
                f"known: {', '.join(PREDICTIONS)})"
            )
        respacing = self.diffusion.timestep_respacing
        if respacing is not None and not 1 <= respacing <= self.diffusion.steps:
            raise ModelError(
                f"{source}: invalid model config (timestep_respacing {respacing} must lie in 1 … "
                f"{self.diffusion.steps}, the trained steps)"
            )
        if self.autoencoder.factor != self.scale:
            raise ModelError(
                f"{source}: invalid model config (the autoencoder's factor ({self.autoencoder.factor}) must "
                f"equal the scale ({self.scale}): the latent is at LR size)"
            )

    @property
    def format_version(self) -> int:
        """The oldest `format_version` that describes this config: 3 for a residual prediction or a
        timestep respacing, 2 for an autoencoder kind other than VQ, else 1."""
        if any(getattr(self.diffusion, name) != value for name, value in VERSION_3_DEFAULTS.items()):
            return 3
        return 1 if isinstance(self.autoencoder, AutoencoderConfig) else 2

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to `config.json`. The version-3 diffusion fields are left out where they
        hold their defaults, so that a version-1 or -2 config reads the same in releases that predate them."""
        body = dataclasses.asdict(self)
        for name, default in VERSION_3_DEFAULTS.items():
            if body["diffusion"][name] == default:
                del body["diffusion"][name]
        return {"format": FORMAT_NAME, "format_version": self.format_version, **body}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> ModelConfig:
        """Parse and validate a `config.json` object; unknown or missing fields are a `ModelError`."""
        if data.get("format") != FORMAT_NAME:
            raise ModelError(f"{source}: not a resshift model config (format is {data.get('format')!r})")
        version = data.get("format_version")
        if not (isinstance(version, int) and 1 <= version <= FORMAT_VERSION):
            raise ModelError(
                f"{source}: unsupported format_version {version!r} "
                f"(this resshift-cli reads versions 1 to {FORMAT_VERSION}; upgrade resshift-cli)"
            )
        try:
            config = cls(
                name=str(data["name"]),
                scale=int(data["scale"]),
                unet=_build(UNetConfig, data["unet"], source),
                autoencoder=_first_stage(data["autoencoder"], source),
                diffusion=_build(DiffusionConfig, data["diffusion"], source),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{source}: invalid model config ({err})") from None
        config.check(source)
        return config

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


def _first_stage(values: Mapping[str, Any], source: str) -> FirstStage:
    """The autoencoder config of the kind `values["kind"]` names (absent: the VQ autoencoder)."""
    values = dict(values)
    kind = values.get("kind", VQ_KIND)
    if kind == SPACE_TO_DEPTH_KIND:
        return _build(SpaceToDepthConfig, values, source)
    if kind != VQ_KIND:
        raise ModelError(
            f"{source}: unknown autoencoder kind {kind!r} (known: {VQ_KIND}, {SPACE_TO_DEPTH_KIND})"
        )
    values.pop("kind", None)
    values["ddconfig"] = _build(DDConfig, values.get("ddconfig", {}), source)
    return _build(AutoencoderConfig, values, source)


def realsr_unet() -> UNetConfig:
    """The released realsr/bicsr UNet (v1 = v2 = v3 = bicsr, docs/official-behaviour.md §4.1)."""
    return UNetConfig()


def vq_f4() -> AutoencoderConfig:
    """The released `autoencoder_vq_f4` (docs/official-behaviour.md §5.1)."""
    return AutoencoderConfig()


def space_to_depth(factor: int = 4) -> SpaceToDepthConfig:
    """The parameter-free pixel-unshuffle autoencoder (latent 3·factor² channels at 1/factor size)."""
    return SpaceToDepthConfig(factor=factor)
