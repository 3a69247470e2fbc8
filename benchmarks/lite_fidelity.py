"""Tiling and precision against whole-image float32 sampling, on real photos, with the built-in `lite` model.

For each HR photo in HR_DIR (sides cropped to multiples of 4·64): its ×4 LR by the Real-ESRGAN degradation
(seeded by the file's index), then `upscale_tensor` untiled in float32 (the reference), untiled in bf16 and
fp16, and in float32 with LR tiles of 64/128/256 (overlap a quarter) on one shared latent and with
`--official-tiling`. Prints a Markdown table: mean PSNR(Y) against the reference (`metrics.psnr_y`, 4-pixel
border) and against the HR photo, and CPU seconds per output megapixel, over the photos.

    python benchmarks/lite_fidelity.py HR_DIR [--model lite] [--max-side 384]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from resshift_cli import metrics
from resshift_cli.cache import resolve_model
from resshift_cli.degrade import degrade
from resshift_cli.loading import LoadedModel, load_model
from resshift_cli.pipeline import DEFAULT_TILE, UpscaleOptions, upscale_tensor
from resshift_cli.train.data import read_rgb

SCALE, MULTIPLE = 4, 64


@dataclass(frozen=True)
class Case:
    name: str
    options: UpscaleOptions


def cases() -> list[Case]:
    exact = UpscaleOptions(tile=0)
    found = [
        Case("untiled fp32 (reference)", exact),
        Case("untiled bf16", replace(exact, dtype=torch.bfloat16)),
        Case("untiled fp16", replace(exact, dtype=torch.float16)),
    ]
    for tile in (64, 128, 256):
        default = " (the defaults)" if tile == DEFAULT_TILE else ""
        found.append(Case(f"tile {tile}, shared latent{default}", replace(exact, tile=tile)))
        found.append(Case(f"tile {tile}, --official-tiling", replace(exact, tile=tile, official_tiling=True)))
    return found


def pair(path: Path, index: int, max_side: int) -> tuple[torch.Tensor, np.ndarray]:
    """(1, 3, h, w) LR in [0, 1] and the (4h, 4w, 3) HR crop it was made from."""
    hr = read_rgb(path)
    side = SCALE * MULTIPLE
    height = min(hr.shape[1], SCALE * max_side) // side * side
    width = min(hr.shape[2], SCALE * max_side) // side * side
    hr = hr[:, :height, :width].contiguous()
    lr = degrade(hr, "realesrgan", torch.Generator().manual_seed(index), SCALE)
    return lr[None], hr.permute(1, 2, 0).numpy()


def run(model: LoadedModel, lr: torch.Tensor, options: UpscaleOptions) -> tuple[np.ndarray, float]:
    start = time.process_time()
    out = upscale_tensor(model, lr, options)
    return out[0].permute(1, 2, 0).float().numpy(), time.process_time() - start


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("hr_dir", type=Path)
    parser.add_argument("--model", default="lite")
    parser.add_argument("--max-side", type=int, default=384, help="largest LR side used (default 384)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(resolve_model(args.model))
    photos = sorted(p for p in args.hr_dir.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    rows: dict[str, list[tuple[float, float, float]]] = {c.name: [] for c in cases()}
    for index, path in enumerate(photos):
        lr, hr = pair(path, index, args.max_side)
        megapixels = hr.shape[0] * hr.shape[1] / 1e6
        outputs = {case.name: run(model, lr, case.options) for case in cases()}
        reference = outputs[cases()[0].name][0]
        for name, (out, seconds) in outputs.items():
            rows[name].append((metrics.psnr_y(out, reference), metrics.psnr_y(out, hr), seconds / megapixels))
        print(f"{path.name}: LR {lr.shape[-1]}×{lr.shape[-2]}", flush=True)
    print("\n| run | PSNR(Y) vs untiled fp32 | PSNR(Y) vs HR | CPU s / MP |\n|---|---|---|---|")
    for name, values in rows.items():
        ref, gt, cost = (float(np.mean([v[i] for v in values])) for i in range(3))
        print(f"| {name} | {'identical' if np.isinf(ref) else f'{ref:.1f} dB'} | {gt:.2f} dB | {cost:.1f} |")


if __name__ == "__main__":
    main()
