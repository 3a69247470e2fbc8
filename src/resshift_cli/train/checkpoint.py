"""Checkpoints of a run: a model folder (EMA weights) plus `state.pt`, written atomically.

`RUN_DIR/last` is a complete model folder that `resshift upscale --model RUN_DIR/last` loads, with the
training state beside it in `state.pt`: plain tensors and builtins only (the trainable weights, the
optimiser, the loss scaler, the RNG states, the iteration and the options), read back with
`torch.load(weights_only=True)`, so a checkpoint never runs pickled code.

Writing goes to a hidden temporary folder, every file and the folder are fsynced, then the folder is
renamed into place; the previous checkpoint is moved aside first and deleted last, and `recover` puts it
back if a run died between the two renames. A killed run therefore leaves either the old or the new
checkpoint, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from resshift_cli.config import ModelConfig
from resshift_cli.errors import ModelError
from resshift_cli.loading import write_model_folder

STATE_FILE = "state.pt"


def _fsync(path: Path) -> None:
    """Flush a file or a folder to disk (folders: their entries; skipped where the OS cannot)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _aside(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.old")


def recover(folder: Path) -> None:
    """Bring back the previous checkpoint if a run died after moving it aside and before the new one."""
    old = _aside(folder)
    with contextlib.suppress(FileNotFoundError):  # another DDP rank may have recovered it already
        if old.is_dir() and not folder.exists():
            os.replace(old, folder)
        elif old.is_dir():
            shutil.rmtree(old)


def write_atomically(folder: Path, fill: Callable[[Path], None]) -> None:
    """Create `folder` as `fill(temporary)` makes it, replacing any previous one only once complete."""
    recover(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    fill(partial)
    for path in partial.iterdir():
        _fsync(path)
    _fsync(partial)
    old = _aside(folder)
    if folder.exists():
        os.replace(folder, old)
    os.replace(partial, folder)
    _fsync(folder.parent)
    if old.exists():
        shutil.rmtree(old)


def write_model(
    folder: Path,
    config: ModelConfig,
    unet: Mapping[str, Tensor],
    autoencoder: Mapping[str, Tensor],
    state: Mapping[str, Any] | None = None,
) -> None:
    """Write a model folder (and, given `state`, the training state) atomically at `folder`."""

    def fill(partial: Path) -> None:
        write_model_folder(partial, config, unet, autoencoder, source=str(folder))
        if state is not None:
            torch.save(dict(state), partial / STATE_FILE)

    write_atomically(folder, fill)


def read_state(folder: Path) -> dict[str, Any]:
    """The training state of checkpoint `folder`, loaded without unpickling code (weights_only)."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing; {folder} is not a training checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise ModelError(f"{path}: not a readable training state ({err})") from None
