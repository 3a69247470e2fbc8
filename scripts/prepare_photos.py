"""Make the `lite` model's data from unpacked Debian wallpaper packages (scripts/fetch_photos.sh).

Only the photographs listed in PHOTOS are used (picked by looking at every candidate; illustrations and
renders are left out). Each photo is downscaled once by 2 (cv2.INTER_AREA): wallpapers are JPEGs of 1.3 to
20 megapixels whose finest level carries demosaicing, lens blur and JPEG noise, and averaging 2×2 pixels gives
a cleaner, sharper ground truth with more structure per 256-pixel crop. Then, per split:

- train: 512² tiles covering the whole photo (evenly spaced, overlapping where the side is not a multiple of
  512), PNG, so each training read decodes a small file;
- val:   6 evenly spaced 256² tiles per photo (`resshift train --val`, centre crops are the tiles);
- test-hr: 8 evenly spaced 256² tiles per photo, the held-out evaluation ground truth (never trained on).

Usage: python scripts/prepare_photos.py UNPACKED_DIR DATA_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

MATE = "mate-backgrounds/usr/share/backgrounds/mate/nature"
PLASMA = "plasma-workspace-wallpapers/usr/share/wallpapers"
LOMIRI = "lomiri-wallpapers-20.04/usr/share/backgrounds"

PHOTOS: dict[str, list[str]] = {
    "train": [
        f"{MATE}/Aqua.jpg",
        f"{MATE}/Blinds.jpg",
        f"{MATE}/Dune.jpg",
        f"{MATE}/FreshFlower.jpg",
        f"{MATE}/Garden.jpg",
        f"{MATE}/GreenMeadow.jpg",
        f"{MATE}/RainDrops.jpg",
        f"{MATE}/Wood.jpg",
        f"{MATE}/YellowFlower.jpg",
        f"{PLASMA}/BytheWater/contents/images/2560x1600.jpg",
        f"{PLASMA}/ColdRipple/contents/images/2560x1600.jpg",
        f"{PLASMA}/DarkestHour/contents/images/2560x1600.jpg",
        f"{PLASMA}/FallenLeaf/contents/images/2560x1600.jpg",
        f"{PLASMA}/Grey/contents/images/2560x1600.jpg",
        f"{PLASMA}/Kite/contents/images/2560x1600.jpg",
        f"{PLASMA}/summer_1am/contents/images/2560x1600.jpg",
        f"{LOMIRI}/Kleiber_by_Lukas_Baubkus.jpg",
    ],
    "val": [
        f"{MATE}/TwoWings.jpg",
        f"{PLASMA}/Path/contents/images/2560x1600.jpg",
    ],
    "test-hr": [
        f"{MATE}/LadyBird.jpg",
        f"{MATE}/Storm.jpg",
        f"{PLASMA}/ColorfulCups/contents/images/2560x1600.jpg",
        f"{PLASMA}/EveningGlow/contents/images/2560x1600.jpg",
        f"{PLASMA}/OneStandsOut/contents/images/2560x1600.jpg",
    ],
}
TILE = {"train": 512, "val": 256, "test-hr": 256}
PICK = {"train": 0, "val": 6, "test-hr": 8}
"""Tiles kept per photo: 0 = all, else this many evenly spaced over the grid (row-major order)."""


def photo_name(relative: str) -> str:
    """A short unique name: the wallpaper folder for Plasma, the file stem otherwise."""
    parts = Path(relative).parts
    return parts[4] if parts[0].startswith("plasma") else Path(relative).stem


def read_half(path: Path) -> np.ndarray:
    """(H/2, W/2, 3) uint8 RGB: EXIF orientation applied, downscaled by 2 with pixel-area averaging."""
    with Image.open(path) as image:
        rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    height, width = rgb.shape[0] // 2, rgb.shape[1] // 2
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _starts(length: int, side: int, cover: bool) -> list[int]:
    """Tile offsets along one axis: covering the whole length (overlapping) or a centred grid."""
    if cover:
        count = -(-length // side)
        return [int(x) for x in np.linspace(0, length - side, count).round()] if count > 1 else [0]
    count = length // side
    first = (length - count * side) // 2
    return [first + i * side for i in range(count)]


def tiles(image: np.ndarray, side: int, pick: int, cover: bool) -> list[tuple[str, np.ndarray]]:
    """side² tiles: covering the image, or on a non-overlapping centred grid; all, or `pick` evenly spaced
    ones (row-major order)."""
    cells = [
        (f"{r}{c}", top, left)
        for r, top in enumerate(_starts(image.shape[0], side, cover))
        for c, left in enumerate(_starts(image.shape[1], side, cover))
    ]
    if pick and pick < len(cells):
        cells = [cells[int(i)] for i in np.linspace(0, len(cells) - 1, pick).round()]
    return [(name, image[top : top + side, left : left + side]) for name, top, left in cells]


def main(unpacked: Path, data: Path) -> None:
    for split, photos in PHOTOS.items():
        out = data / split
        out.mkdir(parents=True, exist_ok=True)
        count = 0
        for relative in photos:
            image = read_half(unpacked / relative)
            for suffix, tile in tiles(image, TILE[split], PICK[split], cover=split == "train"):
                Image.fromarray(np.ascontiguousarray(tile)).save(out / f"{photo_name(relative)}_{suffix}.png")
                count += 1
        print(f"{split}: {len(photos)} photos, {count} tiles in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/prepare_photos.py UNPACKED_DIR DATA_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
