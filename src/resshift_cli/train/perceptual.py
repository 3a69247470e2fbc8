"""The optional LPIPS (VGG) term of the v3 trainer: LPIPS(decode(x̂₀).clamp(−1, 1), HR), weight 1.

It comes from the `lpips` package and needs its VGG-16 backbone weights already in torch's hub cache
(torchvision's `vgg16-397923af.pth`): training never downloads anything. When either is missing, asking for
the term (`--lpips-weight` above 0) is a one-line `UsageError`, never a silent skip.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from resshift_cli.errors import UsageError

VGG_WEIGHTS = "vgg16-397923af.pth"

Perceptual = Callable[[Tensor, Tensor], Tensor]
"""(B, 3, H, W), (B, 3, H, W) in [−1, 1] → (B,) distances."""


def vgg_weights() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG_WEIGHTS


def load_lpips(device: torch.device) -> Perceptual:
    """LPIPS(VGG) as a frozen callable on `device`, or a `UsageError` saying what is missing."""
    if importlib.util.find_spec("lpips") is None:
        raise UsageError(
            "--lpips-weight needs the lpips package (pip install 'resshift-cli[train]'); it is not installed"
        )
    if not vgg_weights().is_file():
        raise UsageError(
            f"--lpips-weight needs the VGG-16 weights at {vgg_weights()} (torchvision's ImageNet VGG-16);"
            " they are not there and training never downloads"
        )
    import lpips  # optional dependency, imported only when asked for

    network = lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)
    return lambda x, y: network(x, y).flatten()
