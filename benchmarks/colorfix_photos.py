"""What `--color-fix` does on real photos: `python benchmarks/colorfix_photos.py PHOTO_DIR`.

Each photo (*.jpg, *.png) is resized to 512 pixels wide (HR) and bicubic-downscaled ×4 (LR). Two stand-ins
for a model's output are fixed against the bicubic ×4 of the LR: the HR itself (a colour-faithful output:
a fix should leave it alone) and the HR with an artificial colour drift (per-channel gain and offset plus a
smooth random tone drift: a fix should bring it back). Printed per photo and on average: PSNR against the
HR and the largest error of a channel's mean, in 8-bit levels. README's colour-fix table comes from
Debian's mate-backgrounds nature photos (usr/share/backgrounds/mate/nature, GPL-2+).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from resshift_cli.colorfix import COLOR_FIXES, fix_colors
from resshift_cli.pipeline import bicubic_upsample

WIDTH = 512
SCALE = 4


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def mean_error(a: Tensor, b: Tensor) -> float:
    """Largest difference of a channel's mean, in 8-bit levels."""
    return 255 * float((a.mean(dim=(0, 2, 3)) - b.mean(dim=(0, 2, 3))).abs().max())


def _tensor(image: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]


def pair(path: Path) -> tuple[Tensor, Tensor]:
    """(HR (1, 3, H, 512), LR (1, 3, H/4, 128)) in [0, 1] from one photo."""
    photo = Image.open(path).convert("RGB")
    height = round(photo.height * WIDTH / photo.width) // SCALE * SCALE
    hr = photo.resize((WIDTH, height), Image.Resampling.LANCZOS)
    lr = hr.resize((WIDTH // SCALE, height // SCALE), Image.Resampling.BICUBIC)
    return _tensor(hr), _tensor(lr)


def drifted(hr: Tensor, seed: int = 0) -> Tensor:
    """`hr` with a channel gain/offset and a smooth random tone drift, clamped to [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.randn(1, 3, 3, 4, generator=generator)
    drift = torch.nn.functional.interpolate(low, size=hr.shape[-2:], mode="bicubic")
    gain = torch.tensor([1.08, 1.0, 0.9]).view(1, 3, 1, 1)
    offset = torch.tensor([0.03, 0.0, -0.02]).view(1, 3, 1, 1)
    return (hr * gain + offset + 0.04 * drift).clamp(0, 1)


def measure(path: Path) -> dict[str, tuple[float, float]]:
    """{"faithful none": (PSNR, mean error), ..., "drifted adain": ...} for one photo."""
    hr, lr = pair(path)
    scores = {}
    for name, output in (("faithful", hr), ("drifted", drifted(hr))):
        for mode in COLOR_FIXES:
            fixed = fix_colors(output.clone(), lr, mode, lambda x: bicubic_upsample(x, SCALE), SCALE)
            scores[f"{name} {mode}"] = (psnr(fixed, hr), mean_error(fixed, hr))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="folder of photos (*.jpg, *.png)")
    args = parser.parse_args()
    paths = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = {path.stem: measure(path) for path in paths}
    keys = list(next(iter(rows.values())))
    print("| photo | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for stem, scores in [*rows.items(), ("mean", _means(list(rows.values()), keys))]:
        print(f"| {stem} | " + " | ".join(f"{scores[k][0]:.1f} dB / {scores[k][1]:.1f}" for k in keys) + " |")


def _means(rows: list[dict[str, tuple[float, float]]], keys: list[str]) -> dict[str, tuple[float, float]]:
    mean = lambda values: float(np.mean(values))  # noqa: E731
    return {k: (mean([r[k][0] for r in rows]), mean([r[k][1] for r in rows])) for k in keys}


if __name__ == "__main__":
    main()
