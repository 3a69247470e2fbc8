"""Model folders ↔ modules: strict key/shape checking, safetensors only, a descriptor as the result.

A model folder holds `config.json`, `unet.safetensors` and `autoencoder.safetensors` (official key names,
float32 or float16 on disk, loaded into float32). Every folder has all three files: for a parameter-free
autoencoder (space-to-depth) `autoencoder.safetensors` is a valid file holding no tensors, so downloads,
manifests, verification and export treat every model alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from resshift_cli.config import CONFIG_FILE_NAME, AutoencoderConfig, FirstStage, ModelConfig, UNetConfig
from resshift_cli.errors import ModelError
from resshift_cli.fileio import atomic_write
from resshift_cli.nets.space_to_depth import SpaceToDepth
from resshift_cli.nets.swin import SwinTransformerBlock, WindowAttention
from resshift_cli.nets.unet import UNetModelSwin
from resshift_cli.nets.vqgan import VQModelTorch

CONFIG_FILE = CONFIG_FILE_NAME
UNET_FILE = "unet.safetensors"
AUTOENCODER_FILE = "autoencoder.safetensors"
RECOMPUTED = ("relative_position_index", "attn_mask")
"""Buffers we rebuild ourselves; copies found in a file are ignored."""

_MAX_LISTED = 6

Autoencoder = VQModelTorch | SpaceToDepth
"""Either autoencoder kind; both offer `encode`, `quantize`, `decode_without_quantization` and `decode`."""


def autoencoder_for(config: FirstStage) -> Autoencoder:
    """The autoencoder module of the kind `config` describes (randomly initialised where it has weights)."""
    if isinstance(config, AutoencoderConfig):
        return VQModelTorch(config)
    return SpaceToDepth(config)


@dataclass
class LoadedModel:
    """A model as loaded: its config, both networks (float32, eval mode) and the folder it came from.

    A plain descriptor: run-time state (weights cast to a reduced precision, a compiled denoiser) belongs
    to a `runner.Runtime` that wraps it, so the trainer and the tools always see plain float32 networks.
    """

    config: ModelConfig
    unet: UNetModelSwin
    autoencoder: Autoencoder
    folder: Path

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def scale(self) -> int:
        """Output side / input side of one pass (4 for every released model)."""
        return self.config.scale

    @property
    def size_multiple(self) -> int:
        """LR sides are padded to multiples of this (the UNet's `lq_size`, 64 for every released model);
        tiles are multiples of it too."""
        return self.config.unet.lq_size

    @property
    def device(self) -> torch.device:
        """Where the networks are."""
        return next(self.unet.parameters()).device

    def to(self, device: torch.device | str) -> LoadedModel:
        """Move both networks (in place) and return self."""
        self.unet.to(device)
        self.autoencoder.to(device)
        return self

    def denoise(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        """x̂₀ = f_θ(x_t, t, y): (B, C, h, w) latent, (B,) steps, (B, 3, h, w) LR in [−1, 1] → (B, C, h, w)."""
        return self.unet(x, t, lq)


def is_recomputed(key: str) -> bool:
    """Whether `key` names a buffer that we rebuild instead of loading."""
    return key.rsplit(".", 1)[-1] in RECOMPUTED


def _expected_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not is_recomputed(k)}


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def check_state_dict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise `ModelError` naming missing, unexpected and mis-shaped keys of `state` for `module`."""
    expected = _expected_shapes(module)
    given = {k: tuple(v.shape) for k, v in state.items() if not is_recomputed(k)}
    problems = []
    if missing := sorted(expected.keys() - given.keys()):
        problems.append(f"missing {_listed(missing)}")
    if unexpected := sorted(given.keys() - expected.keys()):
        problems.append(f"unexpected {_listed(unexpected)}")
    if misshaped := sorted(k for k in expected.keys() & given.keys() if expected[k] != given[k]):
        detail = [f"{k} {given[k]} (expected {expected[k]})" for k in misshaped]
        problems.append(f"mis-shaped {_listed(detail)}")
    if problems:
        raise ModelError(f"{source}: weights do not match the architecture: {'; '.join(problems)}")


def _meta_networks(config: ModelConfig) -> tuple[UNetModelSwin, Autoencoder]:
    """Both networks with parameters on the meta device (no memory, no random init)."""
    with torch.device("meta"):
        return UNetModelSwin(config.unet), autoencoder_for(config.autoencoder)


def check_state_dicts(
    config: ModelConfig,
    unet_state: Mapping[str, Tensor],
    autoencoder_state: Mapping[str, Tensor],
    source: str,
) -> None:
    """Check both state dicts against the architecture `config` describes (`ModelError` on mismatch)."""
    config.check(source)
    unet, autoencoder = _meta_networks(config)
    check_state_dict(unet, unet_state, f"{source} (unet)")
    check_state_dict(autoencoder, autoencoder_state, f"{source} (autoencoder)")


_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
"""safetensors dtype names → torch dtypes (the ones model files use)."""


class WeightFile:
    """A safetensors file read tensor by tensor into fresh buffers with plain reads, not memory-mapped.

    The `safetensors` library checks the file first (header, dtypes, offsets against the file size); the
    data are then read with `readinto`. So every tensor owns its memory: the weights resident in the
    process are exactly the tensors kept alive (a memory-mapped file stays resident, and counted, as long
    as any one of its tensors lives), and every tensor starts on an allocator boundary whatever the
    file's header length (the alignment of a mapped tensor changed float32 outputs by ~1e-6 between files
    holding the same values). Use as a context manager; errors are `SafetensorError`/`OSError`/`ValueError`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        self._file: BinaryIO | None = None

    def __enter__(self) -> WeightFile:
        with safe_open(self.path, framework="pt") as checked:
            names = set(checked.keys())
        self._file = self.path.open("rb")
        header_length = int.from_bytes(self._file.read(8), "little")
        header = json.loads(self._file.read(header_length))
        for name in names:
            entry = header[name]
            begin, end = entry["data_offsets"]
            start = 8 + header_length + begin
            self._entries[name] = (_DTYPES[entry["dtype"]], tuple(entry["shape"]), start, end - begin)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def names(self) -> list[str]:
        """The tensor names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def read(self, name: str) -> Tensor:
        """Tensor `name` in its stored dtype, in a buffer of its own (KeyError if the file lacks it)."""
        dtype, shape, start, size = self._entries[name]
        if self._file is None:
            raise ValueError(f"{self.path}: read outside the `with` block")
        buffer = torch.empty(size, dtype=torch.uint8)
        self._file.seek(start)
        if self._file.readinto(memoryview(buffer.numpy())) != size:
            raise ValueError(f"{name}: file ends inside the tensor")
        return buffer.view(dtype).reshape(shape)


def read_weights(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file into CPU tensors (`WeightFile`); missing or corrupt: a `ModelError`."""
    if not path.is_file():
        raise ModelError(f"{path}: missing (model folders need {UNET_FILE} and {AUTOENCODER_FILE})")
    try:
        with WeightFile(path) as weights:
            return {name: weights.read(name) for name in weights.names()}
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        raise ModelError(f"{path}: not a valid safetensors file (truncated or corrupt?): {err}") from None


def _float32(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items() if not is_recomputed(k)}


def _materialise(module: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Assign `state` (already checked) to a meta-device module and rebuild the recomputed buffers."""
    module.load_state_dict(_float32(state), strict=False, assign=True)
    for child in module.modules():
        if isinstance(child, (WindowAttention, SwinTransformerBlock)):
            child.rebuild_buffers("cpu")
    module.eval().requires_grad_(False)


def build_model(
    config: ModelConfig,
    unet_state: Mapping[str, Tensor],
    autoencoder_state: Mapping[str, Tensor],
    folder: Path,
    source: str,
) -> LoadedModel:
    """Networks from checked state dicts, in float32 on the CPU."""
    check_state_dicts(config, unet_state, autoencoder_state, source)
    unet, autoencoder = _meta_networks(config)
    _materialise(unet, unet_state)
    _materialise(autoencoder, autoencoder_state)
    return LoadedModel(config=config, unet=unet, autoencoder=autoencoder, folder=folder)


def load_model(folder: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a model folder strictly; any problem is a `ModelError` naming the file and the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(
            f"{folder}: not a model folder (expected {CONFIG_FILE}, {UNET_FILE}, {AUTOENCODER_FILE})"
        )
    config = ModelConfig.read(folder / CONFIG_FILE)
    unet_state = read_weights(folder / UNET_FILE)
    autoencoder_state = read_weights(folder / AUTOENCODER_FILE)
    return build_model(config, unet_state, autoencoder_state, folder, str(folder)).to(device)


def _save(state: Mapping[str, Tensor], path: Path, config: ModelConfig, dtype: torch.dtype | None) -> None:
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in state.items()
    }
    with atomic_write(path) as temporary:
        save_file(tensors, temporary, metadata={"format": "pt", "resshift_config": config.to_json()})


def write_model_folder(
    folder: Path,
    config: ModelConfig,
    unet_state: Mapping[str, Tensor],
    autoencoder_state: Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
    source: str | None = None,
) -> None:
    """Write a model folder (checked first); `dtype` casts floating tensors, None keeps them as given.

    `source` names the weights in error messages (default: the folder). The recomputed buffers are
    written too when present, so the files also load in the official code.
    """
    check_state_dicts(config, unet_state, autoencoder_state, source or str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    _save(unet_state, folder / UNET_FILE, config, dtype)
    _save(autoencoder_state, folder / AUTOENCODER_FILE, config, dtype)
    with atomic_write(folder / CONFIG_FILE) as temporary:
        temporary.write_text(config.to_json() + "\n", encoding="utf-8")


def networks(unet: UNetConfig, autoencoder: FirstStage) -> tuple[UNetModelSwin, Autoencoder]:
    """Randomly initialised networks in eval mode (benchmarks: cost does not depend on the values)."""
    pair = UNetModelSwin(unet), autoencoder_for(autoencoder)
    for network in pair:
        network.eval().requires_grad_(False)
    return pair
