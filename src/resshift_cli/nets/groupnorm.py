"""GroupNorm whose statistics can be gathered over a whole tiled image and then shared by every tile.

Tiled autoencoding normalises each tile with its own statistics, which shifts tone from tile to tile. A
first pass over all tiles gathers each layer's per-group moments (weighted by the number of values seen);
the second pass normalises every tile with those image-wide moments, so all tiles see one normalisation.
Statistics are pooled over everything run while gathering: use it for one image at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn


class SharedGroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` that can gather its input moments (first pass) or use fixed ones (second pass)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self._sums: Tensor | None = None  # (3, G): Σ n, Σ n·mean, Σ n·E[x²]
        self._fixed: tuple[Tensor, Tensor] | None = None  # (G,) mean, (G,) variance

    def start_gathering(self) -> None:
        self._sums, self._fixed = None, None
        self._gathering = True

    def freeze(self) -> None:
        """Turn the gathered moments into the fixed (mean, variance) used from now on."""
        if self._sums is None:
            raise RuntimeError("freeze() without any gathered statistics")
        count, mean_sum, square_sum = self._sums
        mean = mean_sum / count
        self._fixed = (mean, (square_sum / count - mean**2).clamp_min(0))
        self._sums, self._gathering = None, False

    def reset(self) -> None:
        self._sums, self._fixed, self._gathering = None, None, False

    def _gather(self, x: Tensor) -> None:
        groups = x.float().reshape(x.shape[0], self.num_groups, -1)
        var, mean = torch.var_mean(groups, dim=-1, correction=0)  # (B, G) each
        n = groups.shape[2]
        count = torch.full((self.num_groups,), float(groups.shape[0] * n), device=x.device)
        moments = torch.stack([count, mean.sum(0) * n, (var + mean**2).sum(0) * n])
        self._sums = moments if self._sums is None else self._sums + moments

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H, W); float32 out when using fixed statistics."""
        if getattr(self, "_gathering", False):
            self._gather(x)
        if self._fixed is None:
            return super().forward(x)
        mean, var = self._fixed
        groups = x.float().reshape(x.shape[0], self.num_groups, -1)
        normed = ((groups - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)).reshape(
            x.shape
        )
        return normed * self.weight[None, :, None, None] + self.bias[None, :, None, None]


@contextlib.contextmanager
def shared_statistics(module: nn.Module) -> Iterator[Callable[[], None]]:
    """Gather statistics in every `SharedGroupNorm` of `module`; the yielded `freeze()` fixes them."""
    norms = [m for m in module.modules() if isinstance(m, SharedGroupNorm)]
    for norm in norms:
        norm.start_gathering()

    def freeze() -> None:
        for norm in norms:
            norm.freeze()

    try:
        yield freeze
    finally:
        for norm in norms:
            norm.reset()
