"""PSNR/SSIM against hand-computed values and scikit-image; perceptual metrics: missing and available."""

from __future__ import annotations

import math
import os
import socket
import sys
import types

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from resshift_cli import metrics


def _pair(seed: int, shape: tuple[int, int] = (48, 40), noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.random((*shape, 3)).astype(np.float32)
    sr = np.clip(gt + rng.normal(0, noise, gt.shape), 0, 1).astype(np.float32)
    return sr, gt


def test_y_channel_is_bt601_studio_range() -> None:
    white, black = np.ones((2, 2, 3)), np.zeros((2, 2, 3))
    assert np.allclose(metrics.y_channel(white), 235.0)
    assert np.allclose(metrics.y_channel(black), 16.0)
    red = np.zeros((1, 1, 3))
    red[..., 0] = 1
    assert metrics.y_channel(red)[0, 0] == pytest.approx(16 + 65.481)


def test_psnr_by_hand() -> None:
    """Grey 100 vs 110 (8-bit): Y differs by 10·219/255 everywhere, PSNR = 20 log₁₀(255 / that)."""
    gt = np.full((20, 20, 3), 100 / 255)
    sr = np.full((20, 20, 3), 110 / 255)
    expected = 20 * math.log10(255 / (10 * 219 / 255))
    assert metrics.psnr_y(sr, gt, crop=4) == pytest.approx(expected, abs=1e-9)


def test_identical_and_sub_level_differences() -> None:
    _, gt = _pair(0)
    assert metrics.psnr_y(gt, gt) == math.inf
    assert metrics.ssim_y(gt, gt) == pytest.approx(1.0)
    levels = np.round(gt * 255) / 255
    assert metrics.psnr_y(levels + 0.4 / 255, levels) == math.inf  # rounded back onto the same levels
    assert metrics.psnr_y(levels + 0.6 / 255, levels) < math.inf


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_and_ssim_match_scikit_image(seed: int, crop: int) -> None:
    sr, gt = _pair(seed)
    a = metrics.crop_border(metrics.y_channel(sr), crop)
    b = metrics.crop_border(metrics.y_channel(gt), crop)
    assert metrics.psnr_y(sr, gt, crop) == pytest.approx(
        peak_signal_noise_ratio(b, a, data_range=255), abs=1e-9
    )
    expected = structural_similarity(
        b, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert metrics.ssim_y(sr, gt, crop) == pytest.approx(expected, abs=1e-9)


def test_border_crop_is_applied() -> None:
    sr, gt = _pair(3, noise=0.0)
    sr = sr.copy()
    sr[:4] = 1 - sr[:4]  # damage only the 4-pixel top border
    assert metrics.psnr_y(sr, gt, crop=4) == math.inf
    assert metrics.psnr_y(sr, gt, crop=0) < 30


def test_size_mismatch_and_too_small() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        metrics.psnr_y(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="too small"):
        metrics.ssim_y(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), crop=4)


# Perceptual metrics ----------------------------------------------------------------------------------------


def test_missing_when_pyiqa_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # import fails with ImportError
    found = metrics.perceptual_metrics(torch.device("cpu"))
    assert [p.name for p in found] == list(metrics.PERCEPTUAL)
    assert all(p.score is None and p.missing and "pyiqa not installed" in p.missing for p in found)


class _FakeMetric:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lower_better = name == "lpips"

    def __call__(self, sr: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        if gt is None:
            return sr.mean().reshape(1, 1)
        return (sr - gt).abs().mean().reshape(1)


def test_available_path_scores_through_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[tuple[str, torch.device]] = []

    def create_metric(name: str, device: torch.device) -> _FakeMetric:
        assert os.environ.get("HF_HUB_OFFLINE") == "1"
        created.append((name, device))
        return _FakeMetric(name)

    monkeypatch.setitem(sys.modules, "pyiqa", types.SimpleNamespace(create_metric=create_metric))
    found = {p.name: p for p in metrics.perceptual_metrics(torch.device("cpu"))}
    assert [name for name, _ in created] == list(metrics.PERCEPTUAL)
    sr, gt = torch.full((1, 3, 8, 8), 0.75), torch.full((1, 3, 8, 8), 0.5)
    assert found["lpips"].score is not None and found["lpips"].lower_better
    assert found["lpips"].score(sr, gt) == pytest.approx(0.25)
    assert found["musiq"].score is not None and not found["musiq"].lower_better
    assert found["musiq"].score(sr, gt) == pytest.approx(0.75)


def test_weights_not_cached_fail_fast_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def create_metric(name: str, device: torch.device) -> _FakeMetric:
        if name == "musiq":
            return _FakeMetric(name)
        socket.create_connection(("example.invalid", 443), timeout=30)  # what a download would do
        raise AssertionError("unreachable")

    monkeypatch.setitem(sys.modules, "pyiqa", types.SimpleNamespace(create_metric=create_metric))
    hf_offline = os.environ.get("HF_HUB_OFFLINE")
    originals = socket.create_connection, socket.socket.connect
    found = {p.name: p for p in metrics.perceptual_metrics(torch.device("cpu"))}
    assert found["lpips"].score is None and found["lpips"].missing is not None
    assert (
        found["lpips"].missing.startswith("weights not cached") and "network access" in found["lpips"].missing
    )
    assert found["musiq"].score is not None
    assert (socket.create_connection, socket.socket.connect) == originals
    assert os.environ.get("HF_HUB_OFFLINE") == hf_offline
