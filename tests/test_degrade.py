"""Degradations: seeded reproducibility, shapes and 8-bit levels, kernels, the statistics of the random
choices (Real-ESRGAN settings of ResShift's realsr configs), JPEG/noise stages and Matlab bicubic."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import resize_right
import torch
import torch.nn.functional as F

from resshift_cli import degrade as d
from resshift_cli.errors import UsageError

DRAWS = 4000
TOLERANCE = 0.035  # > 4 standard deviations of a proportion over 4000 draws


def _image(seed: int = 0, size: tuple[int, int] = (64, 48)) -> torch.Tensor:
    """A smooth image with some texture, (3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(1, size[0] // 8), max(1, size[1] // 8), generator=g)
    smooth = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
    return (0.8 * smooth + 0.2 * torch.rand(3, *size, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def plans() -> list[d.Plan]:
    g = torch.Generator().manual_seed(2024)
    return [d.draw_plan(g) for _ in range(DRAWS)]


def _share(values: list[object], wanted: object) -> float:
    return sum(v == wanted for v in values) / len(values)


# Reproducibility, shapes, levels ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", d.DEGRADATIONS)
def test_same_seed_same_lr_and_8bit_levels(kind: str) -> None:
    hr = _image()
    first = d.degrade(hr, kind, torch.Generator().manual_seed(7))
    second = d.degrade(hr, kind, torch.Generator().manual_seed(7))
    assert first.shape == (3, 16, 12) and first.dtype == torch.float32
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, torch.round(first * 255) / 255)


def test_different_seeds_give_different_lr() -> None:
    hr = _image()
    outputs = [d.degrade(hr, "realesrgan", torch.Generator().manual_seed(s)) for s in range(4)]
    assert all(not torch.equal(outputs[0], other) for other in outputs[1:])


@pytest.mark.parametrize("scale", [2, 4])
def test_realesrgan_shapes_for_any_scale_and_tiny_images(scale: int) -> None:
    for side in (scale, 3 * scale, 20 * scale):
        lr = d.degrade(_image(1, (side, 2 * side)), "realesrgan", torch.Generator().manual_seed(side), scale)
        assert lr.shape == (3, side // scale, 2 * side // scale)


def test_bad_inputs_are_usage_errors() -> None:
    g = torch.Generator()
    with pytest.raises(UsageError, match="multiples of 4"):
        d.degrade(torch.rand(3, 30, 32), "bicubic", g)
    with pytest.raises(UsageError, match="unknown degradation"):
        d.degrade(torch.rand(3, 32, 32), "gaussian", g)
    with pytest.raises(UsageError, match=r"\(3, H, W\)"):
        d.degrade(torch.rand(1, 3, 32, 32), "bicubic", g)


# Kernels ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [*d.KERNEL_FAMILIES, "sinc"])
@pytest.mark.parametrize("size", [3, 7, 13, 19])
def test_every_kernel_family_is_normalised_and_sized(family: str, size: int) -> None:
    draw = d.KernelDraw(family, size, sigma_x=1.7, sigma_y=0.6, theta=0.4, beta=1.6, omega_c=1.2)
    kernel = d.make_kernel(draw)
    assert kernel.shape == (size, size) and kernel.dtype == torch.float32
    assert kernel.double().sum().item() == pytest.approx(1.0, abs=1e-6)
    # every family is point-symmetric, so correlation and convolution agree
    assert torch.allclose(kernel, kernel.flip(0, 1), atol=1e-7)


def test_gaussian_kernel_is_the_closed_form() -> None:
    kernel = d.make_kernel(d.KernelDraw("iso", 5, sigma_x=1.3, sigma_y=1.3))
    axis = torch.arange(5, dtype=torch.float64) - 2
    expected = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * 1.3**2))
    assert torch.allclose(kernel.double(), expected / expected.sum(), atol=1e-7)


def test_anisotropic_kernel_is_rotated() -> None:
    wide = d.make_kernel(d.KernelDraw("aniso", 9, sigma_x=3.0, sigma_y=0.5, theta=0.0))
    tall = d.make_kernel(d.KernelDraw("aniso", 9, sigma_x=3.0, sigma_y=0.5, theta=math.pi / 2))
    assert wide[4].sum() > wide[:, 4].sum()  # spread along x (columns)
    assert torch.allclose(tall, wide.T, atol=1e-6)


def test_generalized_beta_one_is_gaussian_and_plateau_is_flatter() -> None:
    base = d.KernelDraw("iso", 11, sigma_x=2.0, sigma_y=2.0)
    gaussian = d.make_kernel(base)
    generalized = d.make_kernel(d.KernelDraw("generalized_iso", 11, sigma_x=2.0, sigma_y=2.0, beta=1.0))
    plateau = d.make_kernel(d.KernelDraw("plateau_iso", 11, sigma_x=2.0, sigma_y=2.0, beta=2.0))
    assert torch.allclose(gaussian, generalized)
    assert plateau[5, 6] / plateau[5, 5] > gaussian[5, 6] / gaussian[5, 5]  # flatter top
    assert plateau[0, 0] / plateau[5, 5] > gaussian[0, 0] / gaussian[5, 5]  # heavier tails


def test_sinc_kernel_centre_and_first_ring() -> None:
    """ω_c J₁(ω_c r)/(2πr) before normalisation: the centre is the limit ω_c²/(4π)."""
    omega = 2.0
    kernel = d.sinc_kernel(5, omega)
    raw_centre, raw_side = omega**2 / (4 * math.pi), omega * 0.5767248077568734 / (2 * math.pi)  # J₁(2)
    assert (kernel[2, 2] / kernel[2, 3]).item() == pytest.approx(raw_centre / raw_side, rel=1e-9)


# Statistics of the random choices --------------------------------------------------------------------------


def test_kernel_draws_follow_the_config(plans: list[d.Plan]) -> None:
    first = [p.blur1 for p in plans]
    assert {k.size for k in first} == set(range(3, 21, 2))
    assert _share([k.family for k in first], "sinc") == pytest.approx(0.1, abs=TOLERANCE)
    families = Counter(k.family for k in first if k.family != "sinc")
    total = sum(families.values())
    for family, prob in zip(d.KERNEL_FAMILIES, d.REALSR.blur1.family_probs, strict=True):
        assert families[family] / total == pytest.approx(prob, abs=TOLERANCE), family
    for k in first:
        if k.family == "sinc":
            assert (math.pi / 3 if k.size < 13 else math.pi / 5) <= k.omega_c <= math.pi
            continue
        assert 0.2 <= k.sigma_x <= 3.0 and 0.2 <= k.sigma_y <= 3.0
        if not k.family.endswith("aniso"):
            assert k.sigma_x == k.sigma_y and k.theta == 0
        low, high = (0.5, 4.0) if k.family.startswith("generalized") else (1.0, 2.0)
        assert k.beta == 1.0 or low <= k.beta <= high
    second = [p.blur2 for p in plans if p.blur2 is not None]
    assert {k.size for k in second} == set(range(3, 15, 2))
    assert all(0.2 <= k.sigma_x <= 1.5 for k in second if k.family != "sinc")
    generalized = [k.beta for k in first if k.family.startswith("generalized")]
    assert _share([b < 1 for b in generalized], True) == pytest.approx(0.5, abs=0.1)


def test_resize_noise_jpeg_draws_follow_the_config(plans: list[d.Plan]) -> None:
    factors = [p.resize1.factor for p in plans]
    assert _share([f > 1 for f in factors], True) == pytest.approx(0.2, abs=TOLERANCE)
    assert _share([f < 1 for f in factors], True) == pytest.approx(0.7, abs=TOLERANCE)
    assert _share(factors, 1.0) == pytest.approx(0.1, abs=TOLERANCE)
    assert min(factors) >= 0.15 and max(factors) <= 1.5
    for mode in d.RESIZE_MODES:
        assert _share([p.resize1.mode for p in plans], mode) == pytest.approx(1 / 3, abs=TOLERANCE)
    noises = [p.noise1 for p in plans]
    assert _share([n.kind for n in noises], "gaussian") == pytest.approx(0.5, abs=TOLERANCE)
    assert _share([n.gray for n in noises], True) == pytest.approx(0.4, abs=TOLERANCE)
    assert all(1 <= n.amount <= 30 if n.kind == "gaussian" else 0.05 <= n.amount <= 3 for n in noises)
    jpegs = [p.jpeg1 for p in plans] + [p.jpeg2 for p in plans]
    assert min(jpegs) >= 30 and max(jpegs) <= 95
    assert float(np.mean(jpegs)) == pytest.approx(62.5, abs=1.5)


def test_second_and_final_stage_draws_follow_the_config(plans: list[d.Plan]) -> None:
    assert _share([p.second for p in plans], True) == pytest.approx(0.5, abs=TOLERANCE)
    seconds = [p for p in plans if p.second]
    assert _share([p.blur2 is not None for p in seconds], True) == pytest.approx(0.8, abs=TOLERANCE)
    factors = [p.resize2.factor for p in seconds if p.resize2 is not None]
    assert _share([f > 1 for f in factors], True) == pytest.approx(0.3, abs=TOLERANCE)
    assert _share([f < 1 for f in factors], True) == pytest.approx(0.4, abs=TOLERANCE)
    assert min(factors) >= 0.3 and max(factors) <= 1.2
    noises = [p.noise2 for p in seconds if p.noise2 is not None]
    assert all(1 <= n.amount <= 25 if n.kind == "gaussian" else 0.05 <= n.amount <= 2.5 for n in noises)
    assert all(p.resize2 is None and p.noise2 is None and p.blur2 is None for p in plans if not p.second)
    assert _share([p.sinc_before_jpeg for p in plans], True) == pytest.approx(0.5, abs=TOLERANCE)
    sincs = [p.final_sinc for p in plans]
    assert _share([s is not None for s in sincs], True) == pytest.approx(0.8, abs=TOLERANCE)
    assert {s.size for s in sincs if s is not None} == set(range(3, 15, 2))
    assert all(math.pi / 3 <= s.omega_c <= math.pi for s in sincs if s is not None)


# Stages ----------------------------------------------------------------------------------------------------


def test_jpeg_changes_the_image_more_at_low_quality() -> None:
    hr = _image(3, (64, 64))
    errors = {q: (d.jpeg(hr, q) - hr).abs().mean().item() for q in (30, 60, 95)}
    assert 0 < errors[95] < errors[60] < errors[30]
    out = d.jpeg(hr, 30)
    assert out.shape == hr.shape and torch.equal(out, torch.round(out * 255) / 255)


def test_gaussian_noise_has_the_drawn_sigma_and_gray_noise_is_shared() -> None:
    grey = torch.full((3, 128, 128), 0.5)
    g = torch.Generator().manual_seed(0)
    colour = d.gaussian_noise(grey, 10.0, gray=False, generator=g) - grey
    assert colour.std().item() * 255 == pytest.approx(10.0, rel=0.03)
    assert not torch.equal(colour[0], colour[1])
    gray = d.gaussian_noise(grey, 10.0, gray=True, generator=g) - grey
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_poisson_noise_scales_and_is_zero_mean() -> None:
    image = _image(4, (96, 96))
    g = torch.Generator().manual_seed(1)
    small = d.poisson_noise(image, 0.1, gray=False, generator=g) - image
    large = d.poisson_noise(image, 3.0, gray=False, generator=g) - image
    assert 0 < small.abs().mean() < large.abs().mean()
    assert abs(large.mean().item()) < 0.01
    middle = image * 0.5 + 0.25  # no clamping
    gray = d.poisson_noise(middle, 0.5, gray=True, generator=g) - middle
    assert torch.allclose(gray[0], gray[1], atol=1e-6) and gray.abs().max() > 0


def test_blur_with_a_pulse_is_the_identity_and_works_on_tiny_images() -> None:
    pulse = torch.zeros(7, 7)
    pulse[3, 3] = 1
    image = _image(5, (16, 16))
    assert torch.allclose(d.blur(image, pulse), image)
    tiny = torch.rand(3, 2, 3)
    kernel = d.make_kernel(d.KernelDraw("iso", 19, sigma_x=3.0, sigma_y=3.0))
    assert d.blur(tiny, kernel).shape == tiny.shape


# Matlab bicubic --------------------------------------------------------------------------------------------


def test_imresize_weights_by_hand() -> None:
    """×1/4 of 8 pixels: output 1 sits at u = 2.5 (1-based); weights ¼·cubic((2.5 − j)/4) for j = −6 … 11,
    normalised, indices mirrored."""

    def keys(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2 if x <= 2 else 0.0

    raw = {j: 0.25 * keys((2.5 - j) / 4) for j in range(-6, 12)}
    total = sum(raw.values())
    mirror = [*range(1, 9), *range(8, 0, -1)]
    expected = np.zeros(8)
    for j, w in raw.items():
        expected[mirror[(j - 1) % 16] - 1] += w / total
    assert np.allclose(d.imresize_matrix(8, 2, 0.25)[0].numpy(), expected, atol=1e-12)


def test_matlab_imresize_matches_resize_right() -> None:
    """resize-right (Shocher et al.) reproduces Matlab's imresize: cubic a = −0.5, antialiasing, symmetric
    padding."""
    image = torch.rand(3, 64, 40, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ours = d.matlab_imresize(image, 0.25).double()
    theirs = resize_right.resize(image.numpy(), scale_factors=[1, 0.25, 0.25], pad_mode="symmetric")
    assert ours.shape == (3, 16, 10)
    assert np.abs(ours.numpy() - theirs).max() < 1e-6


def test_matlab_imresize_interior_matches_torch_antialiased_bicubic() -> None:
    """Away from the borders (where Matlab mirrors and torch renormalises) both are the a = −0.5 kernel."""
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(10))
    ours = d.matlab_imresize(image, 0.25)
    theirs = F.interpolate(image[None], scale_factor=0.25, mode="bicubic", antialias=True)[0]
    assert torch.allclose(ours[:, 3:-3, 3:-3], theirs[:, 3:-3, 3:-3], atol=1e-5)


def test_bicubic_keeps_constants_and_rounds() -> None:
    flat = torch.full((3, 32, 32), 0.3)
    assert torch.allclose(d.bicubic(flat), torch.full((3, 8, 8), round(0.3 * 255) / 255))
    image = _image(6, (32, 64))
    assert torch.equal(d.bicubic(image), d.to_8bit_levels(d.matlab_imresize(image, 0.25)))
