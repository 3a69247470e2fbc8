"""A cost model of the pipeline: FLOPs per stage as a function of tile, context and overlap, and the chooser
that picks the autoencoder's tiling from it.

Counting convention: 2 FLOP per multiply-add of convolutions, linear layers and attention matmuls (what
`torch.utils.flop_counter.FlopCounterMode` counts); norms, activations and element-wise adds are left out.
Each count is split into a part linear in the pixels ("conv": convolutions and linear layers) and the
attention matmuls ("attention"); the autoencoder's mid-block attention is global, 4·N²·C for N latent
positions of C channels (QKᵀ and AV, 2·N²·C each), so its share grows with the tile's area.

Seconds are FLOPs divided by a throughput per CPU class, precision and kind (`RATES`, measured with
`benchmarks/bench.py` single-threaded); the chooser needs only their ratios, so one table serves every
thread count.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from resshift_cli.config import AutoencoderConfig, DDConfig, FirstStage, ModelConfig, UNetConfig
from resshift_cli.devices import cpu_class, precision_label
from resshift_cli.tiling import Tile, context_window, official_tiles, plan_cheapest_tiles, plan_tiles

LQ_CHANNELS = 3
"""LR channels concatenated to the latent at the UNet's input (`nets.unet.LQ_CHANNELS`)."""


@dataclass(frozen=True)
class Flops:
    """FLOPs of some work, split into `conv` (linear in pixels) and `attention` (attention matmuls)."""

    conv: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.conv + self.attention

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.conv + other.conv, self.attention + other.attention)

    def __mul__(self, factor: float) -> Flops:
        return Flops(self.conv * factor, self.attention * factor)

    __rmul__ = __mul__


def total(parts: Iterable[Flops]) -> Flops:
    """The sum of `parts`."""
    return sum(parts, Flops())


def conv(c_in: int, c_out: int, pixels: float, kernel: int = 1) -> Flops:
    """A k×k convolution (or a linear layer, k = 1) with `pixels` output positions, 2·k²·c_in·c_out each."""
    return Flops(conv=2.0 * kernel * kernel * c_in * c_out * pixels)


def global_attention(positions: float, channels: int, shared: float | None = None) -> Flops:
    """Single-head attention of N positions (LDM `AttnBlock`) over themselves: q, k, v and out projections
    plus QKᵀ and AV, 4·N²·C, the term quadratic in the tile's area. With `shared` = M recorded keys and
    values (`nets.vqgan.shared_statistics`): q and out projections plus 4·N·M·C, linear in the tile."""
    if shared is not None:
        return 2 * conv(channels, channels, positions) + Flops(attention=4.0 * positions * shared * channels)
    return 4 * conv(channels, channels, positions) + Flops(attention=4.0 * positions * positions * channels)


# The VQ autoencoder (nets/vqgan.py), image of P₀ = H·W pixels; level i works at P₀ / 4^i pixels.


def vq_resnet(c_in: int, c_out: int, pixels: float) -> Flops:
    """`ResnetBlock`: two 3×3 convolutions and a 1×1 shortcut when the widths differ."""
    shortcut = conv(c_in, c_out, pixels) if c_in != c_out else Flops()
    return conv(c_in, c_out, pixels, 3) + conv(c_out, c_out, pixels, 3) + shortcut


def vq_mid(channels: int, pixels: float, shared: float | None = None) -> Flops:
    """`Mid`: ResnetBlock → global attention (over `shared` recorded positions if given) → ResnetBlock."""
    return 2 * vq_resnet(channels, channels, pixels) + global_attention(pixels, channels, shared)


def encoder_flops(
    dd: DDConfig, embed_dim: int, height: int, width: int, shared: float | None = None
) -> Flops:
    """Encoder + quant_conv on an (height, width) image (image pixels, not latent); `shared`: the number of
    recorded attention keys a tile attends over (None: its own positions)."""
    widths = [dd.ch * m for m in (1, *dd.ch_mult)]
    levels = len(dd.ch_mult)
    pixels = [height * width / 4**i for i in range(levels)]
    parts = [conv(dd.in_channels, dd.ch, pixels[0], 3)]
    for i in range(levels):
        chain = [widths[i]] + [widths[i + 1]] * dd.num_res_blocks
        parts += [vq_resnet(a, b, pixels[i]) for a, b in itertools.pairwise(chain)]
        if i != levels - 1:
            parts.append(conv(widths[i + 1], widths[i + 1], pixels[i + 1], 3))  # stride-2 Downsample
    z_out = dd.z_channels * (2 if dd.double_z else 1)
    latent = pixels[-1]
    parts += [
        vq_mid(widths[-1], latent, shared),
        conv(widths[-1], z_out, latent, 3),
        conv(dd.z_channels, embed_dim, latent),
    ]
    return total(parts)


def decoder_flops(
    dd: DDConfig, embed_dim: int, height: int, width: int, shared: float | None = None
) -> Flops:
    """post_quant_conv + Decoder from an (height, width) latent (latent pixels) to the image; `shared` as
    in `encoder_flops`."""
    levels = len(dd.ch_mult)
    pixels = [height * width * 4 ** (levels - 1 - i) for i in range(levels)]
    top = dd.ch * dd.ch_mult[-1]
    latent = pixels[-1]
    parts = [
        conv(embed_dim, dd.z_channels, latent),
        conv(dd.z_channels, top, latent, 3),
        vq_mid(top, latent, shared),
    ]
    inputs = [dd.ch * m for m in dd.ch_mult[1:]] + [top]
    for i in reversed(range(levels)):
        chain = [inputs[i]] + [dd.ch * dd.ch_mult[i]] * (dd.num_res_blocks + 1)
        parts += [vq_resnet(a, b, pixels[i]) for a, b in itertools.pairwise(chain)]
        if i != 0:
            parts.append(conv(chain[-1], chain[-1], pixels[i - 1], 3))  # Upsample at the finer level
    parts.append(conv(dd.ch * dd.ch_mult[0], dd.out_ch, pixels[0], 3))
    return total(parts)


# The Swin-UNet denoiser (nets/unet.py, nets/swin.py) on a latent of P = H·W positions, level l at P / 4^l.


def swin_layer(c: UNetConfig, channels: int, nominal_size: int, pixels: float) -> Flops:
    """`BasicLayer`: 1×1 projections around `swin_depth` window-attention blocks (qkv, 4·n·E per token for
    windows of n = window² tokens, proj, MLP)."""
    embed = c.swin_embed_dim
    window = min(c.window_size, nominal_size)
    hidden = int(embed * c.mlp_ratio)
    block = (
        conv(embed, 3 * embed, pixels)
        + Flops(attention=4.0 * window * window * embed * pixels)
        + conv(embed, embed, pixels)
        + conv(embed, hidden, pixels)
        + conv(hidden, embed, pixels)
    )
    return conv(channels, embed, pixels) + c.swin_depth * block + conv(embed, channels, pixels)


def unet_resblock(c_in: int, c_out: int, emb_dim: int, pixels: float, batch: int) -> Flops:
    """`ResBlock`: two 3×3 convolutions, a 1×1 skip when widths differ, and the step-embedding projection."""
    return vq_resnet(c_in, c_out, pixels) + conv(emb_dim, 2 * c_out, batch)


def unet_flops(c: UNetConfig, height: int, width: int, batch: int = 1) -> Flops:
    """One denoiser call on `batch` latents of (height, width) positions (plus the LR conditioning)."""
    mc, emb = c.model_channels, 4 * c.model_channels
    levels = len(c.channel_mult)
    pixels = [batch * height * width / 4**level for level in range(levels)]
    nominal = [c.image_size // 2**level for level in range(levels)]
    has_swin = [size in c.attention_resolutions for size in nominal]
    parts = [
        conv(mc, emb, batch) + conv(emb, emb, batch),
        conv(c.in_channels + LQ_CHANNELS, mc, pixels[0], 3),
    ]
    ch, skips = mc, [mc]
    for level, mult in enumerate(c.channel_mult):
        for i in range(c.num_res_blocks[level]):
            parts.append(unet_resblock(ch, mult * mc, emb, pixels[level], batch))
            ch = mult * mc
            if i == 0 and has_swin[level]:
                parts.append(swin_layer(c, ch, nominal[level], pixels[level]))
            skips.append(ch)
        if level != levels - 1:
            parts.append(conv(ch, ch, pixels[level + 1], 3))
            skips.append(ch)
    low = levels - 1
    parts += [
        2 * unet_resblock(ch, ch, emb, pixels[low], batch),
        swin_layer(c, ch, nominal[low], pixels[low]),
    ]
    for level, mult in reversed(list(enumerate(c.channel_mult))):
        for i in range(c.num_res_blocks[level] + 1):
            parts.append(unet_resblock(ch + skips.pop(), mult * mc, emb, pixels[level], batch))
            ch = mult * mc
            if i == 0 and has_swin[level]:
                parts.append(swin_layer(c, ch, nominal[level], pixels[level]))
            if level and i == c.num_res_blocks[level]:
                parts.append(conv(ch, ch, pixels[level - 1], 3))
    parts.append(conv(mc, c.out_channels, pixels[0], 3))
    return total(parts)


# Plans: a whole image through the autoencoder in tiles.


@dataclass(frozen=True)
class VaeTiling:
    """How the autoencoder halves run, in latent (= LR) pixels: tiles of `tile` (0 = the whole image at once),
    blended over `overlap`, each reading `context` pixels of unblended neighbourhood per side; tiles share
    GroupNorm statistics and attention keys from one pass over the image downscaled to `stats_side`
    (`nets.vqgan.shared_statistics`; 0: each tile uses its own)."""

    tile: int
    context: int = 0
    overlap: int = 0
    stats_side: int = 0
    stats_crops: int = 4

    @property
    def tiled(self) -> bool:
        return self.tile > 0


UNTILED = VaeTiling(0)


def windows(height: int, width: int, tiling: VaeTiling) -> list[Tile]:
    """The input windows (tile + context, slid inside the canvas) the tiled map reads, `tiling.py` rules."""
    if not tiling.tiled:
        return [Tile(0, 0, height, width)]
    tiles = plan_tiles(height, width, tiling.tile, tiling.overlap)
    return [context_window(t, tiling.context, height, width) for t in tiles]


def sample_crops(height: int, width: int, tiling: VaeTiling) -> list[Tile]:
    """The crops of the statistics pass: `tiling.stats_crops` squares of side `tiling.stats_side` (at most
    the canvas), on a grid spread evenly from corner to corner, fewer where the canvas has room for fewer."""
    side_h, side_w = min(tiling.stats_side, height), min(tiling.stats_side, width)
    per_axis = max(1, math.isqrt(tiling.stats_crops))
    tops = sorted({round(i * (height - side_h) / max(per_axis - 1, 1)) for i in range(per_axis)})
    lefts = sorted({round(i * (width - side_w) / max(per_axis - 1, 1)) for i in range(per_axis)})
    return [Tile(top, left, side_h, side_w) for top in tops for left in lefts]


def autoencoder_flops(config: FirstStage, height: int, width: int, tiling: VaeTiling) -> tuple[Flops, Flops]:
    """(encode, decode) FLOPs of a (height, width) latent canvas under `tiling`, statistics passes included;
    zero for the parameter-free space-to-depth autoencoder."""
    if not isinstance(config, AutoencoderConfig):
        return Flops(), Flops()
    dd, embed, f = config.ddconfig, config.embed_dim, config.factor
    sizes = [(w.height, w.width) for w in windows(height, width, tiling)]
    encode = total(encoder_flops(dd, embed, f * h, f * w) for h, w in sizes)
    decode = total(decoder_flops(dd, embed, h, w) for h, w in sizes)
    if not (tiling.tiled and tiling.stats_side):
        return encode, decode
    crops = sample_crops(height, width, tiling)
    shared = sum(c.height * c.width for c in crops)
    encode = total(encoder_flops(dd, embed, f * h, f * w, shared) for h, w in sizes)
    decode = total(decoder_flops(dd, embed, h, w, shared) for h, w in sizes)
    width_mid = dd.ch * dd.ch_mult[-1]
    for crop in crops:  # the statistics pass: each crop attends over all `shared` sampled positions
        keys_values = 2 * conv(width_mid, width_mid, crop.height * crop.width)
        encode += encoder_flops(dd, embed, f * crop.height, f * crop.width, shared) + keys_values
        decode += decoder_flops(dd, embed, crop.height, crop.width, shared) + keys_values
    return encode, decode


@dataclass(frozen=True)
class Rates:
    """Throughput of one CPU class (or GPU) in one precision, GFLOP/s per thread, per kind of work."""

    conv: float
    attention: float

    def seconds(self, flops: Flops, threads: int = 1) -> float:
        """Predicted seconds of `flops` on `threads` threads (assumes linear scaling)."""
        return (flops.conv / self.conv + flops.attention / self.attention) / 1e9 / threads


RATES: dict[tuple[str, str], Rates] = {
    ("avx512-bf16", "fp32"): Rates(conv=93.0, attention=94.0),
    ("avx512-bf16", "bf16"): Rates(conv=190.0, attention=92.5),
    ("avx2", "fp32"): Rates(conv=92.0, attention=96.0),
    ("avx2", "bf16"): Rates(conv=17.5, attention=91.7),
    ("avx512-bf16", "fp32+winograd"): Rates(conv=231.0, attention=98.2),
    ("avx2", "fp32+winograd"): Rates(conv=227.0, attention=99.0),
}
"""GFLOP/s per thread by (CPU class or "cuda", precision name), measured with `benchmarks/stage_rates.py`
(realsr-v3 architecture, 64² latent windows, one thread, CPU time); see benchmarks/README.md."""
FALLBACK_CLASS = "avx512-bf16"
"""Rates for a class or device not in `RATES` (only the conv : attention ratio matters to the chooser)."""

VAE_CONTEXT = 0
VAE_OVERLAP = 8
"""Autoencoder tiles are blended over `VAE_OVERLAP` latent pixels and read `VAE_CONTEXT` pixels of extra
context per side. Context is paid on every tile: 8 pixels made the realsr autoencoder 1.5× dearer at 1 MP
(predicted 2.47× → 1.68× over the official chop, bf16) for < 1 dB against untiled on the tiny model
(photo, 64-pixel tiles, per-tile statistics: 14.5 → 15.1 dB), so tiles read none, like the official chop."""
SHARED_CROPS = 4
"""`shared_tiling` samples this many crops (a 2 × 2 grid) for its statistics pass."""
EXACT_AREA = 128 * 128
"""Latent canvases of at most this many positions run the autoencoder whole (the exact, official path)
when that fits `VAE_MEMORY`: there the attention costs less than the convolutions and tiling saves
little (the tiny test model; realsr's decoder needs tiles for memory from 88×88 up)."""
MIN_TILE, TILE_STEP = 32, 8
"""Candidate autoencoder tiles: MIN_TILE, MIN_TILE + TILE_STEP, … below the canvas's longer side."""
VAE_MEMORY = 512 * 2**20
"""Bytes the largest autoencoder window's activations may take (`window_bytes`)."""
ACTIVATION_COPIES = 10
"""Full-resolution activations (first decoder level's width, float32) alive at once, as measured: realsr-v3
decoding a whole 128×128 latent in float32 peaked at 2.34 GiB with 0.9 GiB of weights and runtime, about
ten 512×512×128 float32 copies (GroupNorm and SiLU temporaries, the upsampled input, the block's output)."""


def with_tile(tile: int) -> VaeTiling:
    """An explicit autoencoder tile (0 = untiled) with the standard context and overlap; each tile
    normalises with its own statistics."""
    return UNTILED if tile == 0 else VaeTiling(tile, VAE_CONTEXT, min(VAE_OVERLAP, tile - 1))


def shared_tiling(tile: int, height: int, width: int) -> VaeTiling:
    """`with_tile(tile)` whose tiles share GroupNorm statistics and attention keys from a first pass over
    `SHARED_CROPS` crops that together cover the (height, width) canvas: tiles then agree with the untiled
    autoencoder (tests/test_vae_tiling.py), at the price of one more pass over the canvas."""
    side = -(-max(height, width) // math.isqrt(SHARED_CROPS))
    return VaeTiling(tile, VAE_CONTEXT, min(VAE_OVERLAP, tile - 1), side, SHARED_CROPS)


def window_bytes(config: FirstStage, height: int, width: int) -> float:
    """Bytes of the decoder's full-resolution activations for one (height, width) latent window (float32)."""
    if not isinstance(config, AutoencoderConfig):
        return 0.0
    channels = config.ddconfig.ch * config.ddconfig.ch_mult[0]
    return ACTIVATION_COPIES * (config.factor**2) * height * width * channels * 4.0


def predicted_seconds(config: FirstStage, height: int, width: int, tiling: VaeTiling, rates: Rates) -> float:
    """Seconds (one thread) of encoding and decoding a (height, width) latent canvas under `tiling`."""
    encode, decode = autoencoder_flops(config, height, width, tiling)
    return rates.seconds(encode + decode)


def choose_vae_tiling(config: FirstStage, height: int, width: int, rates: Rates) -> VaeTiling:
    """The autoencoder tiling with the least predicted time for a (height, width) latent canvas whose
    largest window fits `VAE_MEMORY`: untiled, or tiles of MIN_TILE, MIN_TILE + TILE_STEP, … (ties go
    to the larger tile). Untiled at or below `EXACT_AREA` when that fits, and for parameter-free
    autoencoders."""
    if not isinstance(config, AutoencoderConfig):
        return UNTILED

    def fits(tiling: VaeTiling) -> bool:
        return all(
            window_bytes(config, w.height, w.width) <= VAE_MEMORY for w in windows(height, width, tiling)
        )

    if height * width <= EXACT_AREA and fits(UNTILED):
        return UNTILED
    options = [UNTILED] + [with_tile(t) for t in range(MIN_TILE, max(height, width), TILE_STEP)]
    fitting = [t for t in options if fits(t)] or [options[1]]
    return min(fitting, key=lambda t: (predicted_seconds(config, height, width, t, rates), -t.tile))


def rates_for(device: torch.device, dtype: torch.dtype, winograd: bool = False) -> Rates:
    """`RATES` for a torch device and dtype (float32 with Winograd convolutions: "fp32+winograd",
    `devices.precision_label`): the CPU's class under its caps, or the device type."""
    cls = cpu_class() if device.type == "cpu" else device.type
    name = precision_label(dtype, winograd and dtype == torch.float32)
    return RATES.get((cls, name)) or RATES.get((FALLBACK_CLASS, name)) or RATES[FALLBACK_CLASS, "fp32"]


def _padded(side: int, multiple: int = 64) -> int:
    return -(-side // multiple) * multiple


def upscale_flops(
    config: ModelConfig, height: int, width: int, tile: int, overlap: int, tiling: VaeTiling, steps: int
) -> dict[str, Flops]:
    """FLOPs per stage ("encode", "denoise", "decode") of our pipeline on an LR image of (height, width):
    the canvas padded to 64, denoiser tiles up to `tile` (0 or ≥ the canvas: whole; `plan_cheapest_tiles`,
    as the pipeline plans them) overlapping by `overlap`,
    `steps` denoiser calls per tile, the autoencoder under `tiling`."""
    h, w = _padded(height), _padded(width)
    whole = tile == 0 or (h <= tile and w <= tile)
    tiles = [Tile(0, 0, h, w)] if whole else plan_cheapest_tiles(h, w, tile, overlap, 64)
    denoise = total(unet_flops(config.unet, t.height, t.width) for t in tiles) * steps
    encode, decode = autoencoder_flops(config.autoencoder, h, w, tiling)
    return {"encode": encode, "denoise": denoise, "decode": decode}


def official_chop_flops(
    config: ModelConfig, height: int, width: int, patch: int, overlap: int, steps: int
) -> dict[str, Flops]:
    """FLOPs per stage of the official chop (docs/official-behaviour.md §2.4): every patch of `patch` LR
    pixels (stride patch − overlap) a whole, independent run."""
    stages = {"encode": Flops(), "denoise": Flops(), "decode": Flops()}
    for t in official_tiles(height, width, patch, patch - overlap):
        for stage, flops in upscale_flops(config, t.height, t.width, 0, 0, UNTILED, steps).items():
            stages[stage] += flops
    return stages
