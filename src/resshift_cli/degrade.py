"""HR → LR degradations that make training and test pairs: Matlab-style bicubic ×1/s and the Real-ESRGAN
second-order pipeline (Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
Synthetic Data", ICCVW 2021, §3), with the probabilities and ranges of ResShift's realsr training configs.

Every entry point takes one image (3, H, W) float32 in [0, 1] and a CPU `torch.Generator`, and returns
(3, H/s, W/s) float32 in [0, 1] rounded to 8-bit levels. Every random choice is drawn from that generator
(first all parameters, `draw_plan`, then the noise), so the same generator state gives the same LR.

Differences from the official GPU code, all deliberate: JPEG goes through libjpeg (OpenCV, quality rounded
to an integer, 4:2:0) instead of the DiffJPEG simulation; resizes pass explicit output sizes (at least one
pixel) to `F.interpolate`; blur pads by repeated reflection so images smaller than the kernel work; kernels
are not zero-padded to 21×21 (a no-op for the result).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from resshift_cli.errors import ImageError, UsageError

DEGRADATIONS = ("realesrgan", "bicubic")
KERNEL_FAMILIES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, used for gray Poisson noise (torchvision's `rgb_to_grayscale`)."""


# 1. Settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlurSettings:
    """One blur stage: odd kernel sizes drawn uniformly, a sinc kernel with `sinc_prob`, else a family of
    `KERNEL_FAMILIES` with `family_probs`; σ in `sigma`, generalized β in `beta_g`, plateau β in `beta_p`."""

    sizes: tuple[int, ...]
    family_probs: tuple[float, ...]
    sigma: tuple[float, float]
    beta_g: tuple[float, float]
    beta_p: tuple[float, float]
    sinc_prob: float


@dataclass(frozen=True)
class NoiseSettings:
    """Gaussian noise (σ in 8-bit levels) with `gaussian_prob`, else Poisson (`poisson_scale`); the same
    noise in every channel with `gray_prob`."""

    gaussian_prob: float
    sigma: tuple[float, float]
    poisson_scale: tuple[float, float]
    gray_prob: float


@dataclass(frozen=True)
class ResizeSettings:
    """Up/down/keep with `probs`; up factors in [1, range[1]], down factors in [range[0], 1]."""

    probs: tuple[float, float, float]
    range: tuple[float, float]


@dataclass(frozen=True)
class RealESRGANSettings:
    """The whole second-order pipeline (defaults: ResShift realsr configs, docs/official-behaviour.md §6)."""

    blur1: BlurSettings
    resize1: ResizeSettings
    noise1: NoiseSettings
    jpeg1: tuple[float, float]
    second_order_prob: float
    blur2_prob: float
    blur2: BlurSettings
    resize2: ResizeSettings
    noise2: NoiseSettings
    final_sinc_prob: float
    final_sinc_sizes: tuple[int, ...]
    jpeg2: tuple[float, float]


_FAMILY_PROBS = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
REALSR = RealESRGANSettings(
    blur1=BlurSettings(tuple(range(3, 21, 2)), _FAMILY_PROBS, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0), 0.1),
    resize1=ResizeSettings((0.2, 0.7, 0.1), (0.15, 1.5)),
    noise1=NoiseSettings(0.5, (1.0, 30.0), (0.05, 3.0), 0.4),
    jpeg1=(30.0, 95.0),
    second_order_prob=0.5,
    blur2_prob=0.8,
    blur2=BlurSettings(tuple(range(3, 15, 2)), _FAMILY_PROBS, (0.2, 1.5), (0.5, 4.0), (1.0, 2.0), 0.1),
    resize2=ResizeSettings((0.3, 0.4, 0.3), (0.3, 1.2)),
    noise2=NoiseSettings(0.5, (1.0, 25.0), (0.05, 2.5), 0.4),
    final_sinc_prob=0.8,
    final_sinc_sizes=tuple(range(3, 15, 2)),
    jpeg2=(30.0, 95.0),
)


# 2. Random draws -----------------------------------------------------------------------------------------


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float uniform in [low, high)."""
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def chance(generator: torch.Generator, probability: float) -> bool:
    """True with `probability`."""
    return uniform(generator, 0.0, 1.0) < probability


def choose(generator: torch.Generator, options: Sequence[str], probs: Sequence[float] | None = None) -> str:
    """One of `options`, with `probs` (default: all equally likely)."""
    weights = probs if probs is not None else [1.0] * len(options)
    cumulative = np.cumsum(weights) / sum(weights)
    index = int(np.searchsorted(cumulative, uniform(generator, 0.0, 1.0), side="right"))
    return options[min(index, len(options) - 1)]


def choose_int(generator: torch.Generator, options: Sequence[int]) -> int:
    """One of `options`, all equally likely."""
    return options[int(torch.randint(len(options), (), generator=generator))]


def split_beta(generator: torch.Generator, beta: tuple[float, float]) -> float:
    """Real-ESRGAN's shape draw: with prob 0.5 uniform in [beta[0], 1], else in [1, beta[1]]."""
    return uniform(generator, beta[0], 1.0) if chance(generator, 0.5) else uniform(generator, 1.0, beta[1])


# 3. Blur kernels (Real-ESRGAN §3.1) ----------------------------------------------------------------------


@dataclass(frozen=True)
class KernelDraw:
    """One drawn kernel: `family` of KERNEL_FAMILIES or "sinc"; σ and rotation θ (radians) for the
    Gaussian-like families (σ_y = σ_x and θ = 0 when isotropic), β for generalized/plateau, ω_c for sinc."""

    family: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    beta: float = 1.0
    omega_c: float = 0.0


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> Tensor:
    """(k, k) float64: xᵀ Σ⁻¹ x on the centred pixel grid, Σ = R(θ) diag(σ_x², σ_y²) R(θ)ᵀ."""
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xx, yy], dim=-1)  # k, k, 2 (x, y)
    c, s = math.cos(theta), math.sin(theta)
    rotation = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    sigma = rotation @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2], dtype=torch.float64)) @ rotation.T
    return torch.einsum("...i,ij,...j->...", grid, torch.linalg.inv(sigma), grid)


def sinc_kernel(size: int, omega_c: float) -> Tensor:
    """(k, k) circular low-pass (2-D sinc) kernel with cut-off ω_c (radians): ω_c J₁(ω_c r) / (2π r),
    ω_c² / (4π) at r = 0 (Real-ESRGAN Eq. 5), normalised to sum 1."""
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    radius = torch.sqrt(axis[:, None] ** 2 + axis[None, :] ** 2)
    safe = radius.clamp_min(1e-12)
    kernel = omega_c * torch.special.bessel_j1(omega_c * safe) / (2 * math.pi * safe)
    kernel[radius == 0] = omega_c**2 / (4 * math.pi)
    return kernel / kernel.sum()


def make_kernel(draw: KernelDraw) -> Tensor:
    """(k, k) float32 kernel summing to 1: Gaussian exp(−q/2), generalized Gaussian exp(−q^β/2),
    plateau 1/(1 + q^β) with q = xᵀΣ⁻¹x (Real-ESRGAN Eqs. 2–4), or the sinc kernel."""
    if draw.family == "sinc":
        return sinc_kernel(draw.size, draw.omega_c).float()
    q = _quadratic_form(draw.size, draw.sigma_x, draw.sigma_y, draw.theta)
    if draw.family.startswith("generalized"):
        kernel = torch.exp(-0.5 * q**draw.beta)
    elif draw.family.startswith("plateau"):
        kernel = 1.0 / (q**draw.beta + 1.0)
    else:
        kernel = torch.exp(-0.5 * q)
    return (kernel / kernel.sum()).float()


def _sinc_cutoff(generator: torch.Generator, size: int) -> float:
    """ω_c uniform in [π/3, π] for kernels below 13 pixels, else in [π/5, π] (Real-ESRGAN's dataset)."""
    return uniform(generator, math.pi / 3 if size < 13 else math.pi / 5, math.pi)


def draw_kernel(generator: torch.Generator, settings: BlurSettings) -> KernelDraw:
    """A random blur kernel of one stage (size, then sinc or a family with its σ, θ and β)."""
    size = choose_int(generator, settings.sizes)
    if chance(generator, settings.sinc_prob):
        return KernelDraw("sinc", size, omega_c=_sinc_cutoff(generator, size))
    family = choose(generator, KERNEL_FAMILIES, settings.family_probs)
    sigma_x = uniform(generator, *settings.sigma)
    sigma_y, theta = sigma_x, 0.0
    if family.endswith("aniso"):
        sigma_y = uniform(generator, *settings.sigma)
        theta = uniform(generator, -math.pi, math.pi)
    beta = 1.0
    if family.startswith("generalized"):
        beta = split_beta(generator, settings.beta_g)
    elif family.startswith("plateau"):
        beta = split_beta(generator, settings.beta_p)
    return KernelDraw(family, size, sigma_x, sigma_y, theta, beta)


# 4. The drawn plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResizeDraw:
    """A resize factor and its interpolation mode (`RESIZE_MODES`)."""

    factor: float
    mode: str


@dataclass(frozen=True)
class NoiseDraw:
    """ "gaussian" (amount = σ in 8-bit levels) or "poisson" (amount = scale); gray or per channel."""

    kind: str
    amount: float
    gray: bool


@dataclass(frozen=True)
class Plan:
    """Every random parameter of one Real-ESRGAN degradation, drawn before any pixel is touched.

    second_* are None when the second stage is skipped (blur2 also when its 0.8 draw fails);
    final_sinc is None when the final sinc filter is skipped; sinc_before_jpeg: the final order.
    """

    blur1: KernelDraw
    resize1: ResizeDraw
    noise1: NoiseDraw
    jpeg1: float
    second: bool
    blur2: KernelDraw | None
    resize2: ResizeDraw | None
    noise2: NoiseDraw | None
    sinc_before_jpeg: bool
    final_mode: str
    final_sinc: KernelDraw | None
    jpeg2: float


def draw_resize(generator: torch.Generator, settings: ResizeSettings) -> ResizeDraw:
    """Up, down or keep with `settings.probs`, the factor in its range, then a random mode."""
    direction = choose(generator, ("up", "down", "keep"), settings.probs)
    factor = 1.0
    if direction == "up":
        factor = uniform(generator, 1.0, settings.range[1])
    elif direction == "down":
        factor = uniform(generator, settings.range[0], 1.0)
    return ResizeDraw(factor, choose(generator, RESIZE_MODES))


def draw_noise(generator: torch.Generator, settings: NoiseSettings) -> NoiseDraw:
    """Gaussian (σ) with `gaussian_prob`, else Poisson (scale); then gray with `gray_prob`."""
    if chance(generator, settings.gaussian_prob):
        kind, amount = "gaussian", uniform(generator, *settings.sigma)
    else:
        kind, amount = "poisson", uniform(generator, *settings.poisson_scale)
    return NoiseDraw(kind, amount, chance(generator, settings.gray_prob))


def draw_plan(generator: torch.Generator, settings: RealESRGANSettings = REALSR) -> Plan:
    """All random parameters of one degradation, in a fixed order (first stage, second stage, final)."""
    blur1, resize1 = draw_kernel(generator, settings.blur1), draw_resize(generator, settings.resize1)
    noise1, jpeg1 = draw_noise(generator, settings.noise1), uniform(generator, *settings.jpeg1)
    second = chance(generator, settings.second_order_prob)
    blur2 = resize2 = noise2 = None
    if second:
        blur2 = draw_kernel(generator, settings.blur2) if chance(generator, settings.blur2_prob) else None
        resize2, noise2 = draw_resize(generator, settings.resize2), draw_noise(generator, settings.noise2)
    sinc_before_jpeg = chance(generator, 0.5)
    final_mode = choose(generator, RESIZE_MODES)
    final_sinc = None
    if chance(generator, settings.final_sinc_prob):
        size = choose_int(generator, settings.final_sinc_sizes)
        final_sinc = KernelDraw("sinc", size, omega_c=uniform(generator, math.pi / 3, math.pi))
    jpeg2 = uniform(generator, *settings.jpeg2)
    return Plan(blur1, resize1, noise1, jpeg1, second, blur2, resize2, noise2, sinc_before_jpeg, final_mode,
                final_sinc, jpeg2)  # fmt: skip


# 5. Image operations -------------------------------------------------------------------------------------


def _reflect_pad(x: Tensor, pad: int) -> Tensor:
    """(1, C, H, W) padded by `pad` on every side by mirror reflection, repeated when a side is shorter than
    the pad (a 1-pixel side is replicated)."""
    left = pad
    while left:
        step = min(left, x.shape[-2] - 1, x.shape[-1] - 1)
        if step == 0:
            return F.pad(x, (left,) * 4, mode="replicate")
        x = F.pad(x, (step,) * 4, mode="reflect")
        left -= step
    return x


def blur(image: Tensor, kernel: Tensor) -> Tensor:
    """(C, H, W) filtered by a (k, k) kernel with reflected borders (BasicSR `filter2D`), same size."""
    channels, size = image.shape[0], kernel.shape[-1]
    weight = kernel.to(image.dtype).expand(channels, 1, size, size)
    return F.conv2d(_reflect_pad(image[None], size // 2), weight, groups=channels)[0]


def resize(image: Tensor, height: int, width: int, mode: str) -> Tensor:
    """(C, h, w) → (C, height, width) with `F.interpolate` ("area", "bilinear", "bicubic"; no antialias,
    half-pixel centres, values may overshoot [0, 1]). Sizes are clamped to at least 1."""
    size = (max(1, height), max(1, width))
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image[None], size=size, mode=mode)[0]


def gaussian_noise(image: Tensor, sigma: float, gray: bool, generator: torch.Generator) -> Tensor:
    """(C, H, W) + N(0, (σ/255)²) per pixel (the same value in every channel when `gray`), clamped to
    [0, 1] (Real-ESRGAN §3.1, noise)."""
    shape = (1, *image.shape[1:]) if gray else image.shape
    noise = torch.randn(shape, generator=generator, dtype=image.dtype) * (sigma / 255.0)
    return (image + noise).clamp(0, 1)


def _poisson_residual(image: Tensor, generator: torch.Generator) -> Tensor:
    """Poisson(v·x)/v − x for x the image on 8-bit levels, v = 2^⌈log₂(#distinct levels)⌉ (scikit-image's
    `random_noise(mode="poisson")`, as BasicSR's `generate_poisson_noise_pt`)."""
    levels = torch.clamp(torch.round(image * 255.0), 0, 255) / 255.0
    vals = 2.0 ** math.ceil(math.log2(max(2, int(torch.unique(levels).numel()))))
    return torch.poisson(levels * vals, generator=generator) / vals - levels


def poisson_noise(image: Tensor, scale: float, gray: bool, generator: torch.Generator) -> Tensor:
    """(3, H, W) + scale · Poisson shot noise (of the BT.601 luma, in every channel, when `gray`),
    clamped to [0, 1]."""
    if gray:
        weights = torch.tensor(GRAY_WEIGHTS, dtype=image.dtype)[:, None, None]
        noise = _poisson_residual((image * weights).sum(0, keepdim=True), generator)
    else:
        noise = _poisson_residual(image, generator)
    return (image + scale * noise).clamp(0, 1)


def add_noise(image: Tensor, draw: NoiseDraw, generator: torch.Generator) -> Tensor:
    """Apply a drawn `NoiseDraw` (Gaussian or Poisson)."""
    if draw.kind == "gaussian":
        return gaussian_noise(image, draw.amount, draw.gray, generator)
    return poisson_noise(image, draw.amount, draw.gray, generator)


def jpeg(image: Tensor, quality: float) -> Tensor:
    """(3, H, W) in [0, 1] → clamped, rounded to 8 bits, JPEG-encoded at round(quality) (libjpeg via
    OpenCV, 4:2:0) and decoded back to float32 in [0, 1]."""
    rgb = torch.round(image.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    params = [int(cv2.IMWRITE_JPEG_QUALITY), round(quality)]
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ImageError("JPEG encoding failed during the degradation")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1).float() / 255.0


# 6. The pipelines ----------------------------------------------------------------------------------------


def to_8bit_levels(image: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the nearest of the 256 8-bit levels."""
    return torch.round(image.clamp(0, 1) * 255) / 255


def _final_resize_and_sinc(image: Tensor, plan: Plan, height: int, width: int) -> Tensor:
    out = resize(image, height, width, plan.final_mode)
    return blur(out, make_kernel(plan.final_sinc)) if plan.final_sinc is not None else out


def apply_plan(hr: Tensor, plan: Plan, generator: torch.Generator, scale: int = 4) -> Tensor:
    """(3, H, W) in [0, 1] → (3, H/scale, W/scale) LR, 8-bit levels, following a drawn `Plan`:
    1. blur → resize (factor of the current size) → noise → clamp → JPEG;
    2. (second stage) blur → resize to (factor·H/scale, factor·W/scale) → noise;
    3. [resize to (H/scale, W/scale) + sinc] then JPEG, or JPEG then [resize + sinc];
    4. clamp and round to 8-bit levels. Noise values are drawn from `generator`."""
    height, width = hr.shape[-2] // scale, hr.shape[-1] // scale
    out = blur(hr.float(), make_kernel(plan.blur1))
    out = resize(out, int(out.shape[-2] * plan.resize1.factor), int(out.shape[-1] * plan.resize1.factor),
                 plan.resize1.mode)  # fmt: skip
    out = jpeg(add_noise(out, plan.noise1, generator), plan.jpeg1)
    if plan.second and plan.resize2 is not None and plan.noise2 is not None:
        out = blur(out, make_kernel(plan.blur2)) if plan.blur2 is not None else out
        factor = plan.resize2.factor
        out = resize(out, int(height * factor), int(width * factor), plan.resize2.mode)
        out = add_noise(out, plan.noise2, generator)
    if plan.sinc_before_jpeg:
        out = jpeg(_final_resize_and_sinc(out, plan, height, width), plan.jpeg2)
    else:
        out = _final_resize_and_sinc(jpeg(out, plan.jpeg2), plan, height, width)
    return to_8bit_levels(out)


def realesrgan(
    hr: Tensor, generator: torch.Generator, scale: int = 4, settings: RealESRGANSettings = REALSR
) -> Tensor:
    """(3, H, W) in [0, 1] → (3, H/scale, W/scale) in [0, 1], 8-bit levels: Real-ESRGAN's second-order
    degradation with a plan drawn from `generator`."""
    return apply_plan(hr, draw_plan(generator, settings), generator, scale)


# 7. Matlab bicubic ---------------------------------------------------------------------------------------


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = −0.5 (Matlab `imresize`'s "cubic"), support [−2, 2]."""
    ax = x.abs()
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def imresize_matrix(in_length: int, out_length: int, scale: float) -> Tensor:
    """(out_length, in_length) float64 weights of Matlab `imresize(..., scale, "bicubic")` along one axis.

    Matlab's `contributions`: output pixel i (1-based) sits at u = i/scale + (1 − 1/scale)/2 in input
    coordinates; when shrinking, the kernel is stretched for antialiasing, h(x) = scale · cubic(scale · x),
    width 4/scale; the taps left = ⌊u − width/2⌋ + (0 … ⌈width⌉ + 1) are weighted by h(u − j), normalised
    to sum 1, and indices outside the image are mirrored with the edge pixel repeated (1, 2, …, n, n, …).
    """
    width = 4.0 / scale if scale < 1 else 4.0
    i = torch.arange(1, out_length + 1, dtype=torch.float64)[:, None]
    u = i / scale + 0.5 * (1 - 1 / scale)
    taps = torch.floor(u - width / 2) + torch.arange(math.ceil(width) + 2, dtype=torch.float64)[None, :]
    distance = u - taps
    weights = scale * cubic(scale * distance) if scale < 1 else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    mirror = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])
    columns = mirror[torch.remainder(taps.long() - 1, 2 * in_length)]
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    return matrix.scatter_add_(1, columns, weights)


def matlab_imresize(image: Tensor, scale: float) -> Tensor:
    """(C, H, W) → (C, ⌈scale·H⌉, ⌈scale·W⌉) float32, Matlab `imresize(image, scale)` (bicubic, with
    antialiasing when shrinking), computed in float64 without clamping (BasicSR/ResShift `imresize_np`)."""
    height, width = image.shape[-2:]
    rows = imresize_matrix(height, math.ceil(height * scale), scale)
    cols = imresize_matrix(width, math.ceil(width * scale), scale)
    return (rows @ image.double() @ cols.T).float()


def bicubic(hr: Tensor, scale: int = 4) -> Tensor:
    """(3, H, W) → (3, H/scale, W/scale): Matlab-style antialiased bicubic ×1/scale (the bicsr LR), then
    clamped and rounded to 8-bit levels."""
    return to_8bit_levels(matlab_imresize(hr, 1 / scale))


def degrade(hr: Tensor, kind: str, generator: torch.Generator, scale: int = 4) -> Tensor:
    """(3, H, W) in [0, 1], H and W multiples of `scale` → (3, H/scale, W/scale) LR in [0, 1], 8-bit levels.

    kind: "realesrgan" (second-order pipeline drawn from `generator`) or "bicubic" (Matlab ×1/scale)."""
    if hr.ndim != 3 or hr.shape[0] != 3:
        raise UsageError(f"expected a (3, H, W) image, got shape {tuple(hr.shape)}")
    if hr.shape[-2] % scale or hr.shape[-1] % scale or min(hr.shape[-2:]) < scale:
        raise UsageError(f"image sides {tuple(hr.shape[-2:])} must be positive multiples of {scale}")
    if kind == "bicubic":
        return bicubic(hr, scale)
    if kind == "realesrgan":
        return realesrgan(hr, generator, scale)
    raise UsageError(f"unknown degradation {kind!r} (choose from {', '.join(DEGRADATIONS)})")
