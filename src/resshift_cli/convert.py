"""Official `.pth` checkpoints → checked state dicts: a loader that cannot run code, and pure transforms.

The released files are pickles (docs/official-behaviour.md §1.1). We open them only with
`torch.load(weights_only=True)`, which refuses any pickle that names a function or class outside PyTorch's
tensor allowlist, so a booby-trapped file is rejected before anything in it runs. What comes out must be a
flat mapping of names to tensors.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from resshift_cli.config import DiffusionConfig, ModelConfig, realsr_unet, vq_f4
from resshift_cli.errors import ModelError, first_line
from resshift_cli.loading import check_state_dicts

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes added by `DistributedDataParallel` and `torch.compile`; stripped when every key has one."""

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
"""Start of a pre-1.6 `torch.save` file: protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c."""
_UNPICKLER_DETAIL = "WeightsUnpickler error:"


def _unwrap(checkpoint: object, source: str) -> Mapping[object, object]:
    """The state dict inside a checkpoint: the object itself, or its `"state_dict"` entry."""
    if not isinstance(checkpoint, Mapping):
        raise ModelError(f"{source}: not a state dict (the file holds a {type(checkpoint).__name__})")
    inner = checkpoint.get("state_dict")
    return inner if isinstance(inner, Mapping) else checkpoint


def _tensors_only(state: Mapping[object, object], source: str) -> dict[str, Tensor]:
    """`state` as a str → Tensor dict; any other entry is refused with its name."""
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ModelError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor "
                "(only plain state dicts of tensors are accepted)"
            )
    return dict(state)  # type: ignore[arg-type]


def strip_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove `module.` / `_orig_mod.` (in any nesting) when every key carries the same prefix."""
    result = dict(state)
    while result:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in result)), None)
        if prefix is None:
            break
        result = {k[len(prefix) :]: v for k, v in result.items()}
    return result


def canonicalize(checkpoint: object, source: str) -> dict[str, Tensor]:
    """One pass for every incoming checkpoint: unwrap `state_dict`, insist on tensors, strip prefixes."""
    return strip_prefixes(_tensors_only(_unwrap(checkpoint, source), source))


def _check_header(path: Path) -> None:
    """Refuse files that are not PyTorch checkpoints at all (HTML error pages, images, empty files)."""
    try:
        with path.open("rb") as file:
            head = file.read(len(_LEGACY_MAGIC))
    except OSError as err:
        raise ModelError(f"{path}: cannot read ({err.strerror or err})") from None
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC:
        return
    if not head:
        raise ModelError(f"{path}: empty file, not a PyTorch checkpoint")
    kind = "an HTML/XML page" if head.lstrip().startswith(b"<") else f"a file starting with {head[:8]!r}"
    raise ModelError(f"{path}: not a PyTorch checkpoint ({kind})")


def _first_line(err: BaseException) -> str:
    """The informative line of a PyTorch loader error (its messages span several lines)."""
    text = str(err)
    return first_line(err, text.split(_UNPICKLER_DETAIL, 1)[1] if _UNPICKLER_DETAIL in text else text)


def load_pth(path: Path) -> dict[str, Tensor]:
    """Read an official `.pth` safely: `weights_only` unpickling, tensors only, canonical key names.

    Returns CPU tensors keyed by the official parameter names. A pickle that references code is refused
    (`ModelError`) before any of it runs; so is a truncated, corrupt or non-checkpoint file.
    """
    _check_header(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(
            f"{path}: refused: the pickle asks for more than tensors ({_first_line(err)}); nothing in it ran"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ModelError(f"{path}: corrupt or truncated PyTorch checkpoint ({_first_line(err)})") from None
    return canonicalize(checkpoint, str(path))


def _dim(state: Mapping[str, Tensor], key: str, axis: int, default: int) -> int:
    """Size of `state[key]` along `axis`, or `default` when the key is absent or too low-dimensional."""
    tensor = state.get(key)
    return int(tensor.shape[axis]) if tensor is not None and tensor.dim() > axis else default


def infer_config(
    unet_state: Mapping[str, Tensor],
    autoencoder_state: Mapping[str, Tensor],
    name: str,
    diffusion: DiffusionConfig,
    scale: int = 4,
) -> ModelConfig:
    """The realsr architecture with its widths read from the weights (released: 160 / 192 / 128 / 8192×3).

    Reads `model_channels` from `input_blocks.0.0.weight` (C, 6, 3, 3), `swin_embed_dim` from
    `input_blocks.1.1.patch_embed.proj.weight` (E, C, 1, 1), the autoencoder `ch` from
    `encoder.conv_in.weight` (ch, 3, 3, 3) and `n_embed`, `embed_dim` from `quantize.embedding.weight`
    (n_embed, embed_dim). A missing key keeps the released value, so `check_state_dicts` names the difference.
    """
    unet, autoencoder = realsr_unet(), vq_f4()
    unet = replace(
        unet,
        model_channels=_dim(unet_state, "input_blocks.0.0.weight", 0, unet.model_channels),
        swin_embed_dim=_dim(unet_state, "input_blocks.1.1.patch_embed.proj.weight", 0, unet.swin_embed_dim),
    )
    codebook = "quantize.embedding.weight"
    autoencoder = replace(
        autoencoder,
        n_embed=_dim(autoencoder_state, codebook, 0, autoencoder.n_embed),
        embed_dim=_dim(autoencoder_state, codebook, 1, autoencoder.embed_dim),
        ddconfig=replace(
            autoencoder.ddconfig,
            ch=_dim(autoencoder_state, "encoder.conv_in.weight", 0, autoencoder.ddconfig.ch),
        ),
    )
    return ModelConfig(name=name, scale=scale, unet=unet, autoencoder=autoencoder, diffusion=diffusion)


def _check_order(
    unet_state: Mapping[str, Tensor], autoencoder_state: Mapping[str, Tensor], source: str
) -> None:
    """Catch the two files given the wrong way round, which would otherwise list hundreds of keys."""
    if "encoder.conv_in.weight" in unet_state and "input_blocks.0.0.weight" in autoencoder_state:
        raise ModelError(f"{source}: the UNet and autoencoder files are swapped (give the UNet first)")


@dataclass(frozen=True)
class Converted:
    """A checked model: the config inferred from the weights and both canonical state dicts."""

    config: ModelConfig
    unet: dict[str, Tensor]
    autoencoder: dict[str, Tensor]


def convert_state_dicts(
    unet_state: Mapping[str, Tensor],
    autoencoder_state: Mapping[str, Tensor],
    name: str,
    diffusion: DiffusionConfig,
    source: str,
    scale: int = 4,
) -> Converted:
    """Check canonical official state dicts against the inferred architecture (nothing is written).

    Tensors keep their dtype. Raises `ModelError` naming the differing keys; `source` names the weights.
    """
    _check_order(unet_state, autoencoder_state, source)
    config = infer_config(unet_state, autoencoder_state, name, diffusion, scale)
    check_state_dicts(config, unet_state, autoencoder_state, source)
    return Converted(config, dict(unet_state), dict(autoencoder_state))
