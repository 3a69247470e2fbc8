"""LR image → padded → bicubic ×4 → encode → residual-shifting sampler → decode → cropped SR image.

The tensor recipe only: it works on tensors and a model (`Networks`), runs once and raises what it meets.
Casting weights, compiling and retrying after errors belong to `runner`; pictures and files to `api`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from resshift_cli import cost
from resshift_cli.colorfix import ColorFix, fix_colors
from resshift_cli.config import SIZE_MULTIPLE, ModelConfig
from resshift_cli.devices import autocast, generator, memory_format
from resshift_cli.errors import UsageError
from resshift_cli.loading import Autoencoder
from resshift_cli.nets import winograd
from resshift_cli.nets.vqgan import shared_statistics
from resshift_cli.progress import Progress, ProgressCallback
from resshift_cli.sampler import Denoiser, StepInfo, sample
from resshift_cli.schedule import Schedule, make_schedule, respace
from resshift_cli.tiling import Tile, official_tiles, plan_cheapest_tiles, plan_tiles, tiled_map

DEFAULT_SEED = 12345
DEFAULT_TILE = 256
OVERLAP_FRACTION = 4
"""The official chop's automatic overlap is a quarter of the tile (64 at 256, 16 at 64), its own ratio."""
AUTO_OVERLAP = 32
"""Our layout's automatic overlap: a quarter of the tile up to this many LR pixels (16 at 64, 32 from 128).
A narrow overlap lets `plan_cheapest_tiles` cover 4 MP (a 512² LR canvas) with 3 × 3 tiles of 192 instead
of 3 × 3 of 256; shared-latent tiles still agree with the whole image (`lite`, 512² crops of two held-out
photos: 42.4–42.5 dB, against 44.8–45.5 dB for 256-pixel tiles overlapping by 64;
`benchmarks/tile_layouts.py`)."""
DEFAULT_TILE_BATCH = 0


class Networks(Protocol):
    """What the recipe needs of a model: `loading.LoadedModel` or a `runner.Runtime` around one."""

    @property
    def config(self) -> ModelConfig: ...

    @property
    def autoencoder(self) -> Autoencoder: ...

    @property
    def scale(self) -> int: ...

    @property
    def size_multiple(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def denoise(self, x: Tensor, t: Tensor, lq: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class UpscaleOptions:
    """How to run one image.

    seed: noise seed (CPU generator). dtype: autocast dtype (float32 = the exact path).
    tile: largest denoiser tile side in LR pixels, a multiple of 64, or 0 for the whole image at once (our
    layout picks the side per axis up to it that means the least work, `plan`; the official chop uses it).
    tile_overlap: LR pixels shared by neighbouring tiles, None = automatic (`overlap`).
    tile_batch: denoiser tiles per network call (0 = `tile_batch_for(device)`).
    official_tiling: reproduce the official script's chop (independent chains, equal-weight average).
    steps: sampling steps, 1 … the model's trained steps (respaced, `schedule.respace`); None = the model's
    default (`timestep_respacing` in its config, else every trained step).
    color_fix: "none", "wavelet" or "adain" (`colorfix`), applied to the result against the bicubic input.
    vae_tile: autoencoder tile side in LR (= latent) pixels, 0 for the whole image at once; None = chosen
    by the cost model (`cost.choose_vae_tiling`), or untiled when `tile` is 0 (the exact path).
    winograd: on the CPU, 3×3 convolutions through Winograd's transform (`nets.winograd`, relative error
    ~3·10⁻⁶, not bit-identical): the autoencoder then runs in float32 whatever `dtype` is
    (`autoencoder_dtype`), the denoiser in `dtype` (Winograd where that is float32). False: the direct
    convolutions (the exact path).
    """

    seed: int = DEFAULT_SEED
    dtype: torch.dtype = torch.float32
    tile: int = DEFAULT_TILE
    tile_overlap: int | None = None
    tile_batch: int = DEFAULT_TILE_BATCH
    official_tiling: bool = False
    steps: int | None = None
    color_fix: ColorFix = "none"
    vae_tile: int | None = None
    winograd: bool = False

    @property
    def autoencoder_dtype(self) -> torch.dtype:
        """The autoencoder's precision: float32 with `winograd` (whose kernels are float32), else `dtype`."""
        return torch.float32 if self.winograd else self.dtype

    @property
    def overlap(self) -> int:
        """The tile overlap in LR pixels: `tile_overlap`, or when that is None a quarter of the tile, at most
        `AUTO_OVERLAP` for our layout (the official chop: a quarter)."""
        if self.tile_overlap is not None:
            return self.tile_overlap
        quarter = self.tile // OVERLAP_FRACTION
        return quarter if self.official_tiling else min(quarter, AUTO_OVERLAP)


DEFAULT_OPTIONS = UpscaleOptions()


def check_tiling(
    tile: int,
    tile_overlap: int | None,
    multiple: int = SIZE_MULTIPLE,
    names: tuple[str, str] = ("tile", "tile_overlap"),
) -> None:
    """UsageError unless `tile` is 0 or a multiple of the model's size multiple and an explicit
    `tile_overlap` lies in 0 … tile − 1 (None, automatic, always fits). `names` spell the two
    options in the messages as the caller's user knows them ("--tile", "--tile-overlap" on the CLI)."""
    tile_name, overlap_name = names
    if tile < 0 or tile % multiple:
        raise UsageError(f"{tile_name} must be 0 or a multiple of {multiple}, got {tile}")
    if tile_overlap is not None and tile_overlap < 0:
        raise UsageError(f"{overlap_name} must be 0 or more, got {tile_overlap}")
    if tile and tile_overlap is not None and tile_overlap >= tile:
        raise UsageError(
            f"{overlap_name} {tile_overlap} does not fit {tile_name} {tile}: use 0 to {tile - 1},"
            f" or leave it at auto ({UpscaleOptions(tile=tile).overlap})"
        )


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad (B, C, H, W) at the bottom/right to multiples of `multiple` by mirror reflection.

    Same as the official `F.pad(mode="reflect")` whenever that works (pad < side). For sides too short for
    one reflection (LR sides ≤ 32 with multiple 64), the reflection is repeated, i.e. the image is extended
    as a mirrored periodic signal; a side of 1 pixel is replicated.
    """
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    while pad_h or pad_w:
        step_h, step_w = min(pad_h, x.shape[-2] - 1), min(pad_w, x.shape[-1] - 1)
        if step_h == 0 and step_w == 0:
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x


def to_signed(image: Tensor) -> Tensor:
    """[0, 1] → [−1, 1] as upstream computes it: (x − 0.5) / 0.5."""
    return (image - 0.5) / 0.5


def to_unit(image: Tensor) -> Tensor:
    """[−1, 1] → [0, 1] after clamping."""
    return image.clamp(-1, 1) * 0.5 + 0.5


def bicubic_upsample(x: Tensor, scale: int) -> Tensor:
    """(B, C, h, w) → (B, C, scale·h, scale·w) bicubic (a = −0.75, no antialias, no clamp), as upstream.

    On the tensor's device, or on the CPU and back where the backend has no bicubic kernel (older MPS).
    """
    try:
        return F.interpolate(x, scale_factor=scale, mode="bicubic")
    except NotImplementedError:
        return F.interpolate(x.cpu(), scale_factor=scale, mode="bicubic").to(x.device)


def encode_lr(model: Networks, y_padded: Tensor) -> Tensor:
    """(B, 3, h, w) LR in [−1, 1] → bicubic ×scale → latent (B, 3, h, w): `encode_canvas` untiled."""
    return encode_canvas(model, y_padded)


def decode_latent(
    model: Networks,
    z: Tensor,
    tiling: cost.VaeTiling = cost.UNTILED,
    report: Callable[[int, int], None] | None = None,
) -> Tensor:
    """(B, 3, h, w) latent → (B, 3, 4h, 4w) image, roughly [−1, 1], not clamped.

    Quantisation is per position, so it runs once on the whole latent; only the decoder is tiled.
    """
    autoencoder = model.autoencoder
    z_q = autoencoder.quantize(z / model.config.diffusion.scale_factor)
    decode = lambda part: autoencoder.decode_without_quantization(part).float()  # noqa: E731
    return vae_map(decode, autoencoder.decoder, z_q, model.scale, tiling, report)


def encode_canvas(
    model: Networks,
    y_padded: Tensor,
    tiling: cost.VaeTiling = cost.UNTILED,
    report: Callable[[int, int], None] | None = None,
) -> Tensor:
    """`encode_lr` of a whole (B, 3, h, w) LR canvas in [−1, 1], tiled as `tiling` says → (B, 3, h, w).

    The bicubic ×s runs once on the whole canvas, so tiles see exactly the pixels the untiled encoder sees.
    """
    upsampled = bicubic_upsample(y_padded, model.scale)
    autoencoder, factor = model.autoencoder, model.config.diffusion.scale_factor
    encode = lambda image: autoencoder.encode(image).float() * factor  # noqa: E731
    return vae_map(encode, autoencoder.encoder, upsampled, Fraction(1, model.scale), tiling, report)


def schedule_for(model: Networks, options: UpscaleOptions) -> Schedule:
    """The model's trained schedule, respaced to `options.steps` when given (UsageError beyond 1 … T),
    else to the model's own `timestep_respacing` when its config sets one."""
    diffusion = model.config.diffusion
    steps = diffusion.timestep_respacing if options.steps is None else options.steps
    schedule = make_schedule(diffusion)
    return schedule if steps is None else respace(schedule, steps)


class _DenoiseProgress:
    """The "denoise" stage in (step, tile) pairs, `steps · tiles` in all. Finished steps are counted by the
    sampler's callback (never read back from the timestep tensor, a device sync on CUDA); a tiled step also
    reports each batch of tiles as it is done."""

    def __init__(self, progress: ProgressCallback | None, steps: int, tiles: int) -> None:
        self.progress, self.steps, self.tiles = progress, steps, tiles
        self.finished = 0

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(Progress("denoise", done, self.steps * self.tiles))

    def tiles_done(self, done: int, _total: int) -> None:
        self._report(self.finished * self.tiles + done)

    def step_done(self, info: StepInfo) -> None:
        self.finished = info.steps - info.i
        if self.tiles == 1:
            self._report(self.finished)


def _denoiser(
    model: Networks, lq: Tensor, tiles: list[Tile], options: UpscaleOptions, tracker: _DenoiseProgress
) -> Denoiser:
    """x̂₀ = f_θ(x_in, t, y) on the whole latent canvas, on overlapping tiles blended with smooth weights."""
    if len(tiles) == 1:
        return lambda x, t: model.denoise(x, t, lq)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        def tile_unet(x_tiles: Tensor, lq_tiles: Tensor) -> Tensor:
            return model.denoise(x_tiles, t[:1].expand(x_tiles.shape[0]), lq_tiles)

        batch = options.tile_batch or tile_batch_for(x.device)
        return tiled_map(tile_unet, x, tiles, extra=(lq,), batch=batch, on_batch=tracker.tiles_done)

    return denoise


def vae_map(
    fn: Callable[[Tensor], Tensor],
    network: torch.nn.Module,
    x: Tensor,
    scale: int | Fraction,
    tiling: cost.VaeTiling,
    report: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Run an autoencoder half (`fn`, whose GroupNorms live in `network`) on the whole (B, C, H, W) canvas,
    or tile by tile as `tiling` says (its sizes in latent pixels; `scale` 1/s for the encoder, whose input
    has s pixels per latent pixel): each tile reads `tiling.context` pixels of unblended context and tiles
    are blended over `tiling.overlap`. With `tiling.stats_side`, all tiles share the GroupNorm statistics
    and attention keys of one pass over `cost.sample_crops` (so they agree in tone); without, each tile
    uses its own. → (B, C', h·scale, w·scale)."""
    if not tiling.tiled:
        out = fn(x).float()
        if report is not None:
            report(1, 1)
        return out
    unit = int(1 / Fraction(scale)) if scale < 1 else 1  # input pixels per latent pixel
    height, width = x.shape[-2] // unit, x.shape[-1] // unit
    tiles = [t.scaled(unit) for t in plan_tiles(height, width, tiling.tile, tiling.overlap)]
    context = tiling.context * unit
    if not tiling.stats_side:
        return tiled_map(fn, x, tiles, scale, context=context, on_batch=report)
    crops = [x[(..., *c.slices(unit))] for c in cost.sample_crops(height, width, tiling)]
    with shared_statistics(network, lambda: fn(torch.cat(crops))):
        return tiled_map(fn, x, tiles, scale, context=context, on_batch=report)


def vae_tiling(model: Networks, options: UpscaleOptions, height: int, width: int) -> cost.VaeTiling:
    """The autoencoder tiling for a (height, width) padded LR canvas: `options.vae_tile` when given (0 =
    untiled), untiled when the denoiser is (`tile` 0: the exact path), else the cost model's choice for the
    model's device class and precision."""
    if options.vae_tile is not None:
        return cost.with_tile(options.vae_tile)
    if options.tile == 0:
        return cost.UNTILED
    rates = cost.rates_for(model.device, options.autoencoder_dtype, options.winograd)
    return cost.choose_vae_tiling(model.config.autoencoder, height, width, rates)


def tile_batch_for(device: torch.device) -> int:
    """Denoiser tiles per call by default: 4 on CUDA (fills the GPU); 1 elsewhere, where batching gains
    nothing and multiplies peak memory (CPU, tiny model, 512² → 2048²: 1.85 GB with 4, 1.30 GB with 1)."""
    return 4 if device.type == "cuda" else 1


def plan(height: int, width: int, options: UpscaleOptions, multiple: int = SIZE_MULTIPLE) -> list[Tile]:
    """Tiles on the padded LR/latent canvas (sides multiples of `multiple`); one tile when tiling is off.

    `options.tile` is the largest tile side: each axis gets the side (a multiple of `multiple`) whose
    layout covers the fewest pixels (`plan_cheapest_tiles`), the least denoiser work within that memory.
    """
    if options.tile == 0 or (height <= options.tile and width <= options.tile):
        return [Tile(0, 0, height, width)]
    return plan_cheapest_tiles(height, width, options.tile, options.overlap, multiple)


def _reporter(progress: ProgressCallback | None, stage: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(Progress(stage, done, total))


def _upscale(
    model: Networks, y: Tensor, options: UpscaleOptions, progress: ProgressCallback | None
) -> Tensor:
    """The shared-latent pipeline on (1, 3, H, W) in [−1, 1] → (1, 3, s·H, s·W) in [−1, 1], not clamped.

    1. reflect-pad to multiples of 64 and plan the denoiser's tiles on the padded canvas;
    2. encode bicubic-×s LR into one latent canvas (in tiles when `vae_tiling` says so);
    3. draw prior and step noise on the whole canvas; at every step blend the tiles' x̂₀ (smooth weights);
    4. decode (tiled likewise) and crop the padding.
    """
    height, width = y.shape[-2:]
    y_p = pad_to_multiple(y, model.size_multiple)
    tiles = plan(*y_p.shape[-2:], options, model.size_multiple)
    tiling = vae_tiling(model, options, *y_p.shape[-2:])
    schedule = schedule_for(model, options)
    with autoencoder_scope(y.device, options):
        z_y = encode_canvas(model, y_p, tiling, _reporter(progress, "encode"))
    tracker = _DenoiseProgress(progress, schedule.steps, len(tiles))
    denoise = _denoiser(model, y_p, tiles, options, tracker)
    z_0 = sample(denoise, z_y, schedule, generator(options.seed), tracker.step_done)
    with autoencoder_scope(y.device, options):
        image = decode_latent(model, z_0, tiling, _reporter(progress, "decode"))
    return image[..., : model.scale * height, : model.scale * width]


def _official_chop(
    model: Networks, y: Tensor, options: UpscaleOptions, progress: ProgressCallback | None
) -> Tensor:
    """The official script's tiling: each LR patch an independent chain (its own padding and noise, drawn in
    patch order from one generator), results clamped and averaged with equal weights
    (docs/official-behaviour.md §2.4)."""
    if options.tile == 0:
        return _upscale(model, y, options, progress).clamp(-1, 1)
    rng = generator(options.seed)
    schedule = schedule_for(model, options)

    def chain(patch: Tensor) -> Tensor:
        padded = pad_to_multiple(patch, model.size_multiple)
        with autoencoder_scope(y.device, options):
            z_y = encode_lr(model, padded)
        z_0 = sample(lambda x, t: model.denoise(x, t, padded), z_y, schedule, rng)
        with autoencoder_scope(y.device, options):
            image = decode_latent(model, z_0)
        return image[..., : model.scale * patch.shape[-2], : model.scale * patch.shape[-1]].clamp(-1, 1)

    tiles = official_tiles(*y.shape[-2:], options.tile, options.tile - options.overlap)
    return tiled_map(chain, y, tiles, model.scale, weights="uniform", on_batch=_reporter(progress, "tiles"))


def autoencoder_scope(
    device: torch.device, options: UpscaleOptions
) -> contextlib.AbstractContextManager[None]:
    """Autocast off around the autoencoder when it runs in float32 while the denoiser does not
    (`UpscaleOptions.autoencoder_dtype`); the run's own autocast otherwise."""
    if options.autoencoder_dtype == options.dtype:
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def run(model: Networks, y: Tensor, options: UpscaleOptions, progress: ProgressCallback | None) -> Tensor:
    """(1, 3, H, W) LR in [−1, 1] on the model's device → (1, 3, s·H, s·W) in [0, 1], before colour fixing.

    Under autocast for `options.dtype`, the input in that precision's memory layout.
    """
    fmt = memory_format(y.device, options.dtype)
    recipe = _official_chop if options.official_tiling else _upscale
    with autocast(y.device, options.dtype), winograd.enabled(options.winograd):
        return to_unit(recipe(model, y.contiguous(memory_format=fmt), options, progress)).contiguous()


def finish(model: Networks, out: Tensor, lr: Tensor, options: UpscaleOptions) -> Tensor:
    """`out` colour-corrected against the bicubic ×s of `lr` (both in [0, 1]) as `options.color_fix` says."""
    upsample = lambda x: bicubic_upsample(x, model.scale)  # noqa: E731
    return fix_colors(out, lr, options.color_fix, upsample, model.scale)


@torch.inference_mode()
def upscale_tensor(
    model: Networks,
    lr: Tensor,
    options: UpscaleOptions = DEFAULT_OPTIONS,
    progress: ProgressCallback | None = None,
) -> Tensor:
    """Super-resolve (1, 3, H, W) RGB in [0, 1] → (1, 3, s·H, s·W) in [0, 1] on the model's device, once.

    No retries and no weight casts (autocast alone handles a reduced precision): `runner.upscale_tensor`
    adds those. The result is colour-corrected against the bicubic ×s of `lr` as `options.color_fix` says.
    """
    lr = lr.to(model.device, torch.float32)
    return finish(model, run(model, to_signed(lr), options, progress), lr, options)
