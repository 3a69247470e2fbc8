"""The exact, parameter-free space-to-depth "autoencoder": pixel unshuffle in, pixel shuffle out.

With factor f = scale, the residual-shifting chain (paper Eqs. 1–9) runs on the image's own pixels, laid
out at LR resolution: an HR image (B, 3, f·H, f·W) is the latent (B, 3·f², H, W) and back, bit for bit.
It offers the interface the pipeline uses on `VQModelTorch` (`encode`, `quantize`,
`decode_without_quantization`, `decode`, and the `encoder` / `quant_conv` / `quantize` / `post_quant_conv` /
`decoder` stages), the learned parts replaced by exact ones: the codebook snap is the identity.
"""

from __future__ import annotations

from torch import Tensor, nn

from resshift_cli.config import SpaceToDepthConfig


class SpaceToDepth(nn.Module):
    """(B, 3, f·H, f·W) in [−1, 1] ↔ (B, 3·f², H, W) latent; no parameters, no buffers."""

    def __init__(self, config: SpaceToDepthConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.PixelUnshuffle(config.factor)
        self.quant_conv = nn.Identity()
        self.quantize = nn.Identity()
        self.post_quant_conv = nn.Identity()
        self.decoder = nn.PixelShuffle(config.factor)

    @property
    def factor(self) -> int:
        """Spatial down-sampling factor of the latent."""
        return self.config.factor

    def encode(self, x: Tensor) -> Tensor:
        """(B, 3, f·H, f·W) → (B, 3·f², H, W): channel c·f² + i·f + j holds pixel (f·h + i, f·w + j) of c."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """(B, 3·f², H, W) → (B, 3, f·H, f·W), the exact inverse of `encode` (not clamped)."""
        return self.decoder(self.post_quant_conv(self.quantize(z)))

    def decode_without_quantization(self, z: Tensor) -> Tensor:
        """Same as `decode`: there is no codebook to snap to."""
        return self.decoder(self.post_quant_conv(z))
