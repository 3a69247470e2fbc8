"""A loaded model at run time, and the retry policy around the tensor pipeline.

`Runtime` owns what changes while a model runs: convolution and linear weights cast to the precision in
use (once, not at every call), and the compiled denoiser. `upscale_tensor` runs `pipeline.run` with it
and retries when the device runs out of memory (smaller tiles), when a reduced-precision result is not
finite (float32) or when torch.compile fails (eager mode).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from resshift_cli.config import SIZE_MULTIPLE, ModelConfig
from resshift_cli.devices import memory_format, release_freed_memory
from resshift_cli.errors import DeviceError, ModelError, first_line
from resshift_cli.loading import AUTOENCODER_FILE, UNET_FILE, Autoencoder, LoadedModel, WeightFile
from resshift_cli.nets.unet import UNetModelSwin
from resshift_cli.pipeline import DEFAULT_OPTIONS, UpscaleOptions, finish, run, to_signed
from resshift_cli.progress import ProgressCallback

NETWORKS = ("unet", "autoencoder")
"""The two networks, by the key prefixes of `_compute_weights`."""
FileStamp = tuple[int, int, int]
"""(inode, size, modification time in ns) of a weight file (`FolderWeights.stamp`)."""

Notice = Callable[[str], None]
"""Told, in one line, about each retry that changes how an image is made."""


class Runtime:
    """A `LoadedModel` ready to run: weights held in the precision in use, the denoiser maybe compiled.

    The networks are shared with the model, not copied: while a reduced precision is in use the model's
    convolution and linear weights are cast copies (what recovers the float32 originals is kept here, and
    `prepare(torch.float32, ...)` restores them exactly).

    During a run on the CPU (`lean`, `taking_turns`), only the network that runs holds its convolution
    and linear weights: when the denoiser runs, the autoencoder's weights that its folder's file holds
    unchanged are dropped, and read back from the file when the autoencoder runs again (and the other way
    round). The two never run at once, so the peak holds one network's weights, not both (realsr-v3:
    0.21 GiB of float32 autoencoder weights while the denoiser runs, 0.22–0.44 GiB of denoiser weights
    while the autoencoder does). Between runs both are resident.
    """

    def __init__(self, model: LoadedModel, lean: bool | None = None) -> None:
        """lean: drop the idle network's weights between stages (None: on the CPU)."""
        self.model = model
        self._masters: dict[str, Tensor] = {}
        self._remainders: dict[str, Tensor] = {}
        self._compiled_unet: Callable[..., Tensor] | None = None
        self._layout: dict[str, tuple[torch.dtype, torch.memory_format]] = {
            network: (torch.float32, torch.contiguous_format) for network in NETWORKS
        }
        self.lean = model.device.type == "cpu" if lean is None else lean
        self._dropped: dict[str, FileStamp | None] = {}
        """Weights read back from the file when their network runs, with the file's stamp when dropped."""
        self._active: str | None = None
        self._turns = False
        self._fresh: set[str] = set()
        """Weights read back from the file during the current turns (known to match it)."""

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def unet(self) -> UNetModelSwin:
        self._activate("unet")
        return self.model.unet

    @property
    def autoencoder(self) -> Autoencoder:
        self._activate("autoencoder")
        return self.model.autoencoder

    @property
    def scale(self) -> int:
        return self.model.scale

    @property
    def size_multiple(self) -> int:
        return self.model.size_multiple

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def compiled(self) -> bool:
        return self._compiled_unet is not None

    def compile(self, enabled: bool = True) -> None:
        """Run the denoiser through `torch.compile` from now on (or, `enabled=False`, eagerly again).

        Only the UNet: it runs steps × tiles times, and compiling it measured faster (CPU, bf16, 128²
        latent: 0.50 → 0.46 s per call); the autoencoder halves measured slower compiled (encode
        1.2 → 1.5 s, decode 2.2 → 3.1 s). The first call per input size compiles (minutes on a small CPU).
        """
        self._compiled_unet = torch.compile(self.model.unet) if enabled else None

    def denoise(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor:
        """x̂₀ = f_θ(x_t, t, y): (B, C, h, w) latent, (B,) steps, (B, 3, h, w) LR in [−1, 1] → (B, C, h, w)."""
        self._activate("unet")
        unet = self.model.unet if self._compiled_unet is None else self._compiled_unet
        return unet(x, t, lq)

    def close(self) -> None:
        """Every compute weight float32 again, as loaded (for a model that outlives this Runtime)."""
        self.prepare(torch.float32, torch.contiguous_format)

    @contextlib.contextmanager
    def taking_turns(self, enabled: bool = True) -> Iterator[None]:
        """Inside the block (when `enabled` and `lean`, the denoiser not compiled), the networks hold
        their weights only while they run; afterwards both are resident again."""
        self._turns = enabled and self.lean and self._compiled_unet is None
        try:
            yield
        finally:
            self._turns, self._active = False, None
            self._read_back(NETWORKS)
            self._fresh.clear()

    def _activate(self, network: str) -> None:
        """`network`'s weights resident; taking turns, the other network's dropped."""
        if not self._turns or self._active == network:
            return
        self._active = network
        self._read_back((network,))
        self._drop(next(other for other in NETWORKS if other != network))

    def _drop(self, network: str) -> None:
        """Drop `network`'s compute weights that its folder's file holds as they are (checked now)."""
        with FolderWeights(self.model.folder) as files:
            stamp = files.stamp(network)
            for key, param in _compute_weights(self.model, network):
                if key in self._dropped:
                    continue
                if key in self._fresh or self._recoverable(key, param.data, files):
                    param.data = param.data.new_empty(0)
                    self._dropped[key] = stamp
        release_freed_memory()

    def _recoverable(self, key: str, held: Tensor, files: FolderWeights) -> bool:
        """Whether `held` (as `prepare` holds it) is what reading `key` from `files` would make again."""
        if held.dtype == torch.float32:
            return files.holds(key, held.contiguous())
        return key not in self._remainders and key not in self._masters and files.matches(key, held)

    def _read_back(self, networks: tuple[str, ...]) -> None:
        """Read the dropped weights of `networks` back from the file, held as `prepare` last asked."""
        keys = {key for key in self._dropped if key.split(".", 1)[0] in networks}
        if not keys:
            return
        with FolderWeights(self.model.folder) as files:
            for key, param in _compute_weights(self.model):
                if key in keys:
                    param.data = self._held(self._reread(key, files), *self._layout[key.split(".", 1)[0]])
                    self._fresh.add(key)

    def _reread(self, key: str, files: FolderWeights) -> Tensor:
        """The float32 weight `key` from the file; `ModelError` if the file changed since it was dropped."""
        network = key.split(".", 1)[0]
        stored = files.read(key)
        if stored is None or files.stamp(network) != self._dropped.pop(key):
            raise files.changed(network)
        return stored

    @staticmethod
    def _held(master: Tensor, dtype: torch.dtype, layout: torch.memory_format) -> Tensor:
        """Float32 `master` as `prepare` holds a weight the file holds: cast to `dtype` in `layout`."""
        shape_layout = layout if master.dim() == 4 else torch.contiguous_format
        cast = master if dtype == torch.float32 else _cast_like(master, torch.empty(0, dtype=dtype))
        return cast.contiguous(memory_format=shape_layout)

    def prepare(
        self, dtype: torch.dtype, layout: torch.memory_format, autoencoder_dtype: torch.dtype | None = None
    ) -> None:
        """Hold convolution and linear weights in `dtype` and `layout` for the next runs (the autoencoder's
        in `autoencoder_dtype` when that differs, in its own precision's layout: `devices.memory_format`).

        Casting once here spares autocast re-casting every weight at every call (CPU, bf16, 128² input:
        6.5 s instead of 7.1 s). Norms, the codebook and the position-bias tables stay float32. The
        float32 originals stay recoverable bit for bit, so returning to float32 (the NaN retry,
        `--precision fp32`) is exact. A weight its model folder's file holds unchanged is read back from
        that file when needed, so only the cast copy stays in memory (2 bytes a weight in bfloat16
        instead of 4: realsr-v3's 174 M weights, 0.32 GiB less). Any other weight keeps what recovers
        it: for bfloat16 a 16-bit remainder (`split_float32`), for other dtypes a float32 copy.
        """
        wanted = {"unet": (dtype, layout), "autoencoder": (dtype, layout)}
        if autoencoder_dtype is not None and autoencoder_dtype != dtype:
            wanted["autoencoder"] = (autoencoder_dtype, memory_format(self.device, autoencoder_dtype))
        self._read_back(NETWORKS)
        if wanted == self._layout:
            return
        self._layout = wanted
        with FolderWeights(self.model.folder) as files:
            for key, param in _compute_weights(self.model):
                self._cast(key, param, files, *wanted[key.split(".", 1)[0]])
        release_freed_memory()

    def _cast(
        self,
        key: str,
        param: nn.Parameter,
        files: FolderWeights,
        dtype: torch.dtype,
        layout: torch.memory_format,
    ) -> None:
        """Hold `param` in `dtype` and `layout`, keeping what recovers its float32 original (`prepare`)."""
        master = self._float32(key, param, files)
        param.data = self._held(master, dtype, layout)
        if dtype == torch.float32 or files.holds(key, master):
            return
        if dtype == torch.bfloat16:
            self._remainders[key] = split_float32(master)[1]
        else:
            self._masters[key] = master

    def _float32(self, key: str, param: nn.Parameter, files: FolderWeights) -> Tensor:
        """The exact float32 original of a compute weight (contiguous), dropping what recovered it."""
        if key in self._remainders:
            return join_float32(param.data.contiguous(), self._remainders.pop(key))
        if key in self._masters:
            return self._masters.pop(key)
        if param.dtype == torch.float32:
            return param.data.contiguous()
        return files.original(key, param.data)


class FolderWeights:
    """The float32 weights of a model folder's safetensors files, read one tensor at a time.

    Keys are `unet.<name>` / `autoencoder.<name>` (`_compute_weights`). A folder without the files (a
    model built in memory) holds nothing. Use as a context manager: the files stay open inside it.
    """

    def __init__(self, folder: Path) -> None:
        self._paths = {"unet": folder / UNET_FILE, "autoencoder": folder / AUTOENCODER_FILE}
        self._stack = ExitStack()
        self._files: dict[str, WeightFile] = {}

    def __enter__(self) -> FolderWeights:
        for network, path in self._paths.items():
            if path.is_file():
                try:
                    self._files[network] = self._stack.enter_context(WeightFile(path))
                except (SafetensorError, OSError, ValueError, KeyError):
                    continue
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stack.close()

    def stamp(self, network: str) -> FileStamp | None:
        """(inode, size, modification time in ns) of `network`'s file while open here, None if unreadable."""
        weights = self._files.get(network)
        if weights is None:
            return None
        info = os.stat(weights.path)
        return info.st_ino, info.st_size, info.st_mtime_ns

    def read(self, key: str) -> Tensor | None:
        """The file's tensor for `key` in float32 (as `load_model` made it), or None if it has none."""
        network, name = key.split(".", 1)
        weights = self._files.get(network)
        if weights is None or name not in weights:
            return None
        return weights.read(name).float()

    def holds(self, key: str, master: Tensor) -> bool:
        """Whether the file has `key` with exactly the float32 values `master` (contiguous) holds."""
        stored = self.read(key)
        return (
            stored is not None
            and stored.shape == master.shape
            and torch.equal(stored.view(torch.int32), master.view(torch.int32))
        )

    def matches(self, key: str, cast: Tensor) -> bool:
        """Whether the file's `key` rounds (as `Runtime.prepare` rounds) to exactly `cast`."""
        return _rounds_to(self.read(key), cast)

    def original(self, key: str, cast: Tensor) -> Tensor:
        """The float32 weight `cast` (a reduced-precision copy made by `Runtime.prepare`) came from,
        read from the file; `ModelError` if the file no longer holds it."""
        stored = self.read(key)
        if stored is None or not _rounds_to(stored, cast):
            raise self.changed(key.split(".", 1)[0])
        return stored

    def changed(self, network: str) -> ModelError:
        """The error for weights of `network` its file no longer holds."""
        return ModelError(f"{self._paths[network]}: changed since the model was loaded; load the model again")


def _rounds_to(stored: Tensor | None, cast: Tensor) -> bool:
    """Whether float32 `stored` exists and rounds (as `Runtime.prepare` rounds) to exactly `cast`."""
    return stored is not None and stored.shape == cast.shape and torch.equal(_cast_like(stored, cast), cast)


def _cast_like(master: Tensor, cast: Tensor) -> Tensor:
    """`master` (float32) rounded the way `Runtime.prepare` rounded it to `cast`'s dtype."""
    return split_float32(master)[0] if cast.dtype == torch.bfloat16 else master.to(cast.dtype)


def split_float32(x: Tensor) -> tuple[Tensor, Tensor]:
    """float32 → (bfloat16 high part, int16 remainder); `join_float32(*split_float32(x))` is x bit for bit.

    The high part is x rounded to bfloat16 half away from zero in magnitude (bits + 0x8000, then the top 16
    bits: equal to round-to-nearest-even except at exact ties); the remainder is the bit difference, which
    then lies in −0x8000 … 0x7FFF. Finite inputs below bfloat16's largest value only (weights).
    """
    bits = x.contiguous().view(torch.int32)
    high = (bits + 0x8000) >> 16
    remainder = (bits - (high << 16)).to(torch.int16)
    return high.to(torch.int16).view(torch.bfloat16), remainder


def join_float32(high: Tensor, remainder: Tensor) -> Tensor:
    """The float32 tensor `split_float32` split into `high` (bfloat16) and `remainder` (int16)."""
    return ((high.view(torch.int16).to(torch.int32) << 16) + remainder.to(torch.int32)).view(torch.float32)


def _compute_weights(model: LoadedModel, only: str | None = None) -> Iterator[tuple[str, nn.Parameter]]:
    """(unique key, parameter) of every convolution and linear layer of both networks (or of `only`)."""
    for prefix, network in (("unet", model.unet), ("autoencoder", model.autoencoder)):
        if only not in (None, prefix):
            continue
        for name, module in network.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                for param_name, param in module.named_parameters(recurse=False):
                    yield f"{prefix}.{name}.{param_name}", param


def runtime_of(model: LoadedModel | Runtime) -> Runtime:
    """`model` itself when it is a Runtime, else a fresh one around it."""
    return model if isinstance(model, Runtime) else Runtime(model)


def _is_compile_failure(err: BaseException) -> bool:
    """An error raised by torch.compile's tracer or backend (no C++ compiler, unsupported operator)."""
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def smaller_tile(options: UpscaleOptions, height: int, width: int, multiple: int = SIZE_MULTIPLE) -> int:
    """Half the current tile (or of the image's larger padded side when untiled), rounded down to the
    model's size multiple (64 LR pixels), at least one multiple."""
    current = options.tile or -(-max(height, width) // multiple) * multiple
    return max(multiple, current // 2 // multiple * multiple)


def _attempt(
    runtime: Runtime, y: Tensor, options: UpscaleOptions, progress: ProgressCallback | None
) -> Tensor:
    runtime.prepare(options.dtype, memory_format(y.device, options.dtype), options.autoencoder_dtype)
    with runtime.taking_turns(not options.official_tiling):  # the chop alternates networks per patch
        return run(runtime, y, options, progress)


@torch.inference_mode()
def upscale_tensor(
    model: LoadedModel | Runtime,
    lr: Tensor,
    options: UpscaleOptions = DEFAULT_OPTIONS,
    progress: ProgressCallback | None = None,
    notice: Notice | None = None,
) -> Tensor:
    """Super-resolve (1, 3, H, W) RGB in [0, 1] → (1, 3, s·H, s·W) in [0, 1] on the model's device.

    `pipeline.upscale_tensor` with the retry policy: on a CUDA/MPS out-of-memory error the tile is halved
    and the image retried (down to 64 LR pixels); a non-finite result in reduced precision is retried in
    float32; when torch.compile fails, the model goes back to eager mode and the image is retried.
    `notice` is told about each retry. Given a bare `LoadedModel`, a Runtime is made for this call and its
    float32 weights are restored afterwards; pass a Runtime to keep cast weights between calls.
    """
    runtime = runtime_of(model)
    try:
        return _with_retries(runtime, lr, options, progress, notice or (lambda _message: None))
    finally:
        if runtime is not model:
            runtime.close()


def _with_retries(
    runtime: Runtime, lr: Tensor, options: UpscaleOptions, progress: ProgressCallback | None, say: Notice
) -> Tensor:
    """Try `pipeline.run` until it succeeds, changing the options (or compile mode) after each failure."""
    device = runtime.device
    lr = lr.to(device, torch.float32)
    y = to_signed(lr)
    while True:
        try:
            out = _attempt(runtime, y, options, progress)
        except Exception as err:
            if runtime.compiled and _is_compile_failure(err):
                say(f"torch.compile failed ({first_line(err)}); continuing without --compile")
                runtime.compile(enabled=False)
                continue
            if device.type == "cpu" or not _is_out_of_memory(err):
                raise
            options = _after_out_of_memory(options, y, device, say, runtime.size_multiple)
            continue
        if options.dtype == torch.float32 or torch.isfinite(out).all():
            return finish(runtime, out, lr, options)
        say(f"non-finite values in {str(options.dtype).removeprefix('torch.')} output; retrying in float32")
        options = replace(options, dtype=torch.float32)


def _after_out_of_memory(
    options: UpscaleOptions, y: Tensor, device: torch.device, say: Notice, multiple: int = SIZE_MULTIPLE
) -> UpscaleOptions:
    """The options for the next try after running out of device memory, or a `DeviceError`.

    The tile halves; an explicit overlap that no longer fits it becomes the automatic quarter of the tile.
    """
    if options.tile == multiple:
        raise DeviceError(f"out of memory on {device} even with {multiple}-pixel tiles; try --device cpu")
    tile = smaller_tile(options, *y.shape[-2:], multiple)
    say(f"out of memory on {device} with tile {options.tile or 'off'}; retrying with --tile {tile}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    fits = options.tile_overlap is None or options.tile_overlap < tile
    return replace(options, tile=tile, tile_overlap=options.tile_overlap if fits else None)
