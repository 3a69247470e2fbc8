"""Image-quality metrics the way SR papers report them, and optional perceptual metrics through pyiqa.

Full-reference protocol (BasicSR's `calculate_psnr`/`calculate_ssim` with `test_y_channel=True`, used by
Real-ESRGAN and ResShift):
1. both images are rounded to 8-bit levels (clamped to [0, 1], ×255, rounded);
2. converted to the Y channel of YCbCr, ITU-R BT.601 studio range:
   Y = 16 + 65.481 R + 128.553 G + 24.966 B with R, G, B in [0, 1] (Y in [16, 235], not rounded);
3. `crop` pixels (the SR scale) are removed from every border;
4. PSNR = 10 log₁₀(255² / MSE) in float64 (∞ for identical images);
   SSIM (Wang et al. 2004) with an 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, L = 255,
   population (co)variances, averaged over the positions where the window fits inside the image.

Perceptual metrics (LPIPS, CLIPIQA, MUSIQ) come from pyiqa (IQA-PyTorch, `pip install 'resshift-cli[eval]'`),
only when it is installed and the weights it needs are already on disk: networks are built with every
network connection refused, so a missing weight file fails at once and the metric is reported as missing.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from resshift_cli.errors import first_line

YCBCR_Y = np.array([65.481, 128.553, 24.966])
"""BT.601 weights of Y for R, G, B in [0, 1] (offset 16): MATLAB's `rgb2ycbcr`."""
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PEAK = 255.0

PERCEPTUAL = ("lpips", "clipiqa", "musiq")
"""Perceptual metrics: LPIPS (full-reference, lower is better), CLIPIQA and MUSIQ (no-reference, higher)."""
EVAL_EXTRA_HINT = "pip install 'resshift-cli[eval]'"


# 1. PSNR and SSIM on the Y channel -----------------------------------------------------------------------


def to_8bit(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] → (H, W, 3) float64 on the 8-bit levels 0 … 255."""
    return np.round(np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0) * 255.0)


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] → (H, W) float64 BT.601 Y in [16, 235], after rounding to 8-bit levels."""
    return 16.0 + (to_8bit(rgb) / 255.0) @ YCBCR_Y


def crop_border(image: np.ndarray, crop: int) -> np.ndarray:
    """(H, W, ...) without `crop` pixels on every side."""
    if crop <= 0:
        return image
    return image[crop:-crop, crop:-crop, ...]


def _prepare(sr: np.ndarray, gt: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape != gt.shape:
        raise ValueError(f"images differ in size: {sr.shape} vs {gt.shape}")
    return crop_border(y_channel(sr), crop), crop_border(y_channel(gt), crop)


def psnr_y(sr: np.ndarray, gt: np.ndarray, crop: int = 4) -> float:
    """PSNR (dB) of two (H, W, 3) images in [0, 1] on the Y channel (module docstring protocol)."""
    a, b = _prepare(sr, gt, crop)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK**2 / mse)


def _gaussian_window() -> np.ndarray:
    """(11,) float64 Gaussian taps, σ = 1.5, summing to 1 (OpenCV `getGaussianKernel`)."""
    return cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA).astype(np.float64)[:, 0]


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """(H, W) filtered by the separable window, only where it fits: (H − 10, W − 10)."""
    half = len(taps) // 2
    filtered = cv2.sepFilter2D(image, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)
    return filtered[half:-half, half:-half]


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) float64 images on the 0 … 255 scale → (H − 10, W − 10) SSIM map (Wang et al. 2004, Eq. 13):
    ((2μₐμ_b + C1)(2σ_ab + C2)) / ((μₐ² + μ_b² + C1)(σₐ² + σ_b² + C2)), C1 = (K1·L)², C2 = (K2·L)²."""
    taps = _gaussian_window()
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    mu_a, mu_b = _filter_valid(a, taps), _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a**2
    var_b = _filter_valid(b * b, taps) - mu_b**2
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim_y(sr: np.ndarray, gt: np.ndarray, crop: int = 4) -> float:
    """Mean SSIM of two (H, W, 3) images in [0, 1] on the Y channel (module docstring protocol)."""
    a, b = _prepare(sr, gt, crop)
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"images too small for SSIM after the {crop}-pixel border crop: {a.shape}")
    return float(ssim_map(a, b).mean())


# 2. Perceptual metrics through pyiqa ---------------------------------------------------------------------


@dataclass(frozen=True)
class Perceptual:
    """One perceptual metric: `score(sr, gt)` on (1, 3, H, W) tensors in [0, 1] when available, else the
    reason it is missing."""

    name: str
    score: Callable[[torch.Tensor, torch.Tensor], float] | None
    missing: str | None = None
    lower_better: bool = False


def _refuse_connection(*_args: object, **_kwargs: object) -> None:
    raise OSError("network access is disabled while loading metric weights (offline check)")


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Every socket connection fails at once, and Hugging Face libraries run offline, inside the block.

    Patches `socket` process-wide for the duration: not for use while other threads need the network."""
    saved = socket.socket.connect, socket.create_connection, os.environ.get("HF_HUB_OFFLINE")
    socket.socket.connect = _refuse_connection  # type: ignore[method-assign,assignment]
    socket.create_connection = _refuse_connection  # type: ignore[assignment]
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        socket.socket.connect, socket.create_connection = saved[0], saved[1]  # type: ignore[method-assign]
        if saved[2] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved[2]


def _import_pyiqa() -> tuple[Any, str | None]:
    """(the pyiqa module, None), or (None, why it cannot be used)."""
    try:
        return importlib.import_module("pyiqa"), None
    except ImportError:
        return None, f"pyiqa not installed ({EVAL_EXTRA_HINT})"
    except Exception as err:
        return None, f"pyiqa cannot be imported ({first_line(err)})"


def _scorer(metric: Any, full_reference: bool) -> Callable[[torch.Tensor, torch.Tensor], float]:
    def score(sr: torch.Tensor, gt: torch.Tensor) -> float:
        with torch.inference_mode():
            value = metric(sr, gt) if full_reference else metric(sr)
        return float(torch.as_tensor(value).float().mean())

    return score


def _build(pyiqa: Any, name: str, device: torch.device) -> Perceptual:
    """The pyiqa metric `name` with no network; missing (with the reason) when its weights are not cached."""
    try:
        with no_network():
            metric = pyiqa.create_metric(name, device=device)
    except Exception as err:
        return Perceptual(name, None, f"weights not cached ({first_line(err)})")
    lower = bool(getattr(metric, "lower_better", name == "lpips"))
    return Perceptual(name, _scorer(metric, name == "lpips"), None, lower)


def perceptual_metrics(device: torch.device, names: Sequence[str] = PERCEPTUAL) -> list[Perceptual]:
    """Each of `names` ready to score, or missing with a one-line reason (library or weights absent)."""
    pyiqa, reason = _import_pyiqa()
    if pyiqa is None:
        return [Perceptual(name, None, reason) for name in names]
    return [_build(pyiqa, name, device) for name in names]
