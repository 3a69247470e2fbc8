"""README's before/after picture: one held-out photo crop through bicubic and the built-in `lite` model.

Reads an HR photo, cuts a `--size`² crop at `--at`, makes its ×4 LR with the Real-ESRGAN degradation
(`--seed`), upscales it whole and in `--tile`-pixel LR tiles (overlap a quarter, the shared latent), and
writes a 3 × 2 sheet: LR (nearest ×4), bicubic, lite / lite tiled, |tiled − whole| × `--gain`, HR. The
caption of each panel gives its PSNR(Y) against the HR crop (`metrics.psnr_y`).

    python scripts/lite_comparison.py PHOTO -o docs/lite-comparison.jpg [--at 0,0] [--size 384] [--tile 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from resshift_cli import metrics
from resshift_cli.cache import resolve_model
from resshift_cli.degrade import degrade
from resshift_cli.loading import load_model
from resshift_cli.pipeline import UpscaleOptions, bicubic_upsample, to_signed, to_unit, upscale_tensor
from resshift_cli.train.data import read_rgb

SCALE = 4
CAPTION_HEIGHT = 22


def hwc(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [0, 1] → (H, W, 3) float64."""
    return image.reshape(-1, *image.shape[-2:]).permute(1, 2, 0).double().numpy()


def panel(image: np.ndarray, caption: str) -> Image.Image:
    """(H, W, 3) in [0, 1] → an 8-bit picture with `caption` on a strip above it."""
    pixels = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
    sheet = Image.new("RGB", (pixels.width, pixels.height + CAPTION_HEIGHT), "white")
    sheet.paste(pixels, (0, CAPTION_HEIGHT))
    ImageDraw.Draw(sheet).text((4, 5), caption, fill="black")
    return sheet


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("photo", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--at", default="0,0", help="top,left of the HR crop (default 0,0)")
    parser.add_argument("--size", type=int, default=384, help="HR crop side, a multiple of 4 (default 384)")
    parser.add_argument("--tile", type=int, default=64, help="LR tile side of the tiled run (default 64)")
    parser.add_argument("--gain", type=float, default=10.0, help="difference panel gain (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="degradation and sampling seed (default 0)")
    parser.add_argument("--model", default="lite")
    args = parser.parse_args()
    top, left = (int(v) for v in args.at.split(","))
    hr = read_rgb(args.photo)[:, top : top + args.size, left : left + args.size].contiguous()
    lr = degrade(hr, "realesrgan", torch.Generator().manual_seed(args.seed), SCALE)[None]
    model = load_model(resolve_model(args.model))
    whole = upscale_tensor(model, lr, UpscaleOptions(seed=args.seed, tile=0))
    tiled = upscale_tensor(model, lr, UpscaleOptions(seed=args.seed, tile=args.tile))
    bicubic = to_unit(bicubic_upsample(to_signed(lr), SCALE))
    nearest = F.interpolate(lr, scale_factor=SCALE, mode="nearest")
    truth = hwc(hr)

    def scored(name: str, image: torch.Tensor) -> Image.Image:
        return panel(hwc(image), f"{name}: {metrics.psnr_y(hwc(image), truth):.2f} dB")

    difference = (tiled - whole).abs() * args.gain
    tiles_vs_whole = metrics.psnr_y(hwc(tiled), hwc(whole))
    panels = [
        panel(hwc(nearest), f"LR {lr.shape[-1]}x{lr.shape[-2]} (nearest x4)"),
        scored("bicubic", bicubic),
        scored(f"{args.model}, whole image", whole),
        scored(f"{args.model}, {args.tile}-px tiles", tiled),
        panel(hwc(difference), f"|tiled - whole| x{args.gain:g} ({tiles_vs_whole:.1f} dB)"),
        panel(truth, "HR (ground truth)"),
    ]
    width, height = panels[0].size
    sheet = Image.new("RGB", (3 * width, 2 * height), "white")
    for index, picture in enumerate(panels):
        sheet.paste(picture, ((index % 3) * width, (index // 3) * height))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, quality=88)
    print(f"{args.output}: tiled vs whole {tiles_vs_whole:.1f} dB")


if __name__ == "__main__":
    main()
