"""Denoiser tile layouts against the whole image on real photos, with the built-in `lite` model.

Each photo in PHOTO_DIR is cropped to SIZE×SIZE pixels at (100, 300) and used as the LR input as it is;
the float32 output of each layout is compared with the untiled float32 output (PSNR(Y), 4-pixel border,
and the largest difference in 8-bit levels). Layouts: the former default (256-pixel tiles overlapping by
64), the current default (`--tile 256`: the cheapest side per axis, automatic overlap) and `--tile 128`.

    python benchmarks/tile_layouts.py PHOTO_DIR [--size 512] [--model lite]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from resshift_cli import metrics
from resshift_cli.cache import resolve_model
from resshift_cli.loading import load_model
from resshift_cli.pipeline import UpscaleOptions, plan, upscale_tensor
from resshift_cli.train.data import read_rgb

LAYOUTS = {
    "256-px tiles, overlap 64 (former default)": UpscaleOptions(tile=256, tile_overlap=64),
    "--tile 256, auto (default)": UpscaleOptions(tile=256),
    "--tile 128, auto": UpscaleOptions(tile=128),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("photo_dir", type=Path)
    parser.add_argument("--size", type=int, default=512, help="LR crop side, a multiple of 64 (default 512)")
    parser.add_argument("--model", default="lite")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(resolve_model(args.model))
    print("| photo | layout | tiles | PSNR(Y) vs whole | max difference (levels) |\n|---|---|---|---|---|")
    for path in sorted(args.photo_dir.iterdir()):
        lr = read_rgb(path)[None, :, 100 : 100 + args.size, 300 : 300 + args.size].contiguous()
        ref = upscale_tensor(model, lr, UpscaleOptions(tile=0))[0].permute(1, 2, 0).double().numpy()
        for name, options in LAYOUTS.items():
            tiles = plan(*lr.shape[-2:], options)
            out = upscale_tensor(model, lr, options)[0].permute(1, 2, 0).double().numpy()
            psnr = metrics.psnr_y(out, ref, 4)
            worst = np.abs(out - ref).max() * 255
            size = "×".join(map(str, tiles[0].size))
            print(
                f"| {path.name} | {name} | {len(tiles)} × {size} | {psnr:.1f} dB | {worst:.0f} |", flush=True
            )


if __name__ == "__main__":
    main()
