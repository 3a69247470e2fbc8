"""`resshift degrade`: write the LR image the training pipeline makes of every HR image in a folder.

Each image's LR depends only on (--seed, its relative path), never on the order or the other files, so a
rerun or a subset gives the same pairs. Sides that are not multiples of --scale are cropped at the bottom
and right (a note line says so). Outputs are 8-bit RGB PNGs written atomically, mirroring the folder tree.
Exit codes: 0 every image written, 1 some image failed (one error line each), 2 usage error.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import track

from resshift_cli.cli.errors import error_line
from resshift_cli.cli.options import Debug, Overwrite, Quiet
from resshift_cli.degrade import degrade
from resshift_cli.errors import ImageError, ResshiftError, UsageError
from resshift_cli.images import Picture, model_rgb, read_picture, write_picture
from resshift_cli.jobs import find_images

EXIT_FAILED = 1
DEFAULT_DEGRADE_SEED = 0

HrDir = Annotated[
    Path,
    typer.Argument(
        help="Folder of high-resolution images (searched recursively).",
        metavar="HR_DIR",
        exists=True,
        file_okay=False,
        show_default=False,
    ),
]
LrDir = Annotated[
    Path,
    typer.Option(
        "--output",
        "-o",
        help="Folder that receives the LR images (<relative path>.png), mirroring HR_DIR.",
        file_okay=False,
        show_default=False,
    ),
]


class Kind(str, Enum):
    """The degradations `degrade.degrade` knows."""

    realesrgan = "realesrgan"
    bicubic = "bicubic"


Degradation = Annotated[
    Kind,
    typer.Option(
        "--degradation",
        "-d",
        help="realesrgan (the second-order pipeline of Real-ESRGAN, as ResShift trains) or bicubic"
        " (Matlab-style antialiased bicubic).",
    ),
]
DegradeSeed = Annotated[
    int, typer.Option("--seed", help="Base seed; each image's own seed comes from it and its path.")
]
DegradeScale = Annotated[int, typer.Option("--scale", "-s", min=1, max=16, help="Downscaling factor.")]


@dataclass(frozen=True)
class Item:
    """One HR image, its path relative to HR_DIR and its output."""

    source: Path
    relative: Path
    target: Path


def image_seed(seed: int, relative: Path) -> int:
    """A 63-bit seed from the base seed and the POSIX relative path (SHA-256), independent of the order."""
    digest = hashlib.sha256(f"{seed}:{relative.as_posix()}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _key(path: Path) -> str:
    return str(path.expanduser().resolve()).casefold()


def plan(hr_dir: Path, lr_dir: Path) -> tuple[list[Item], dict[Path, str]]:
    """Items for every image under HR_DIR, and the inputs ruled out with their reason: two inputs that
    would write one output (a.jpg and a.png), or an output that would land on an input."""
    if _key(hr_dir) == _key(lr_dir):
        raise UsageError(
            f"{lr_dir}: the output folder must differ from HR_DIR (outputs would replace inputs)"
        )
    sources = find_images(hr_dir, recursive=True, skip=lr_dir)
    if not sources:
        raise UsageError(f"{hr_dir}: no images")
    inputs = {_key(s) for s in sources}
    items, ruled_out, seen = [], {}, {}
    for source in sources:
        relative = source.relative_to(hr_dir)
        target = lr_dir / relative.with_suffix(".png")
        if _key(target) in inputs:
            ruled_out[source] = f"{source}: its output {target} is an input file; choose another -o folder"
        elif _key(target) in seen:
            ruled_out[source] = f"{source}: writes the same output as {seen[_key(target)]} ({target})"
        else:
            seen[_key(target)] = source
            items.append(Item(source, relative, target))
    return items, ruled_out


def _cropped(rgb: np.ndarray, scale: int, label: str, note: bool) -> np.ndarray:
    """(H, W, 3) cropped at the bottom/right to multiples of `scale`; a note line when anything was cut."""
    height, width = rgb.shape[0] // scale * scale, rgb.shape[1] // scale * scale
    if height == 0 or width == 0:
        raise ImageError(f"{label}: {rgb.shape[1]}×{rgb.shape[0]} is smaller than the scale {scale}")
    if (height, width) != rgb.shape[:2] and note:
        size = f"{rgb.shape[1]}×{rgb.shape[0]}"
        print(f"note: {label}: {size} cropped to {width}×{height} (multiples of {scale})", file=sys.stderr)
    return rgb[:height, :width]


def degrade_item(item: Item, kind: str, seed: int, scale: int, overwrite: bool, note: bool) -> None:
    """Read, crop, degrade with the image's own generator, and write one LR PNG (8-bit RGB, atomically)."""
    if item.target.exists() and not overwrite:
        raise ImageError(f"{item.target}: already exists; pass --overwrite to replace it")
    rgb = _cropped(model_rgb(read_picture(item.source)), scale, str(item.source), note)
    hr = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()
    generator = torch.Generator().manual_seed(image_seed(seed, item.relative))
    lr = degrade(hr, kind, generator, scale)
    provenance = {
        "degradation": kind,
        "seed": str(seed),
        "scale": str(scale),
        "source": item.relative.as_posix(),
    }
    try:
        item.target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageError(f"{item.target.parent}: cannot create the folder ({err.strerror or err})") from err
    picture = Picture(rgb=lr.permute(1, 2, 0).numpy(), alpha=None, source=item.source)
    write_picture(picture, item.target, "png", bit_depth=8, text=provenance)


def degrade_command(
    hr_dir: HrDir,
    output: LrDir,
    degradation: Degradation = Kind.realesrgan,
    seed: DegradeSeed = DEFAULT_DEGRADE_SEED,
    scale: DegradeScale = 4,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Make LR images from HR images with the training degradation (training and test pairs).

    The same --seed gives the same LR for an image whatever else is in the folder. Sides that are
    not multiples of --scale are cropped (a note says so). An image that fails gets one error
    line; the others are still done.
    """
    started = time.perf_counter()
    items, ruled_out = plan(hr_dir, output)
    for message in ruled_out.values():
        error_line(message)
    failed = len(ruled_out)
    show = not quiet and Console(stderr=True).is_terminal
    for item in track(
        items, description="degrading", console=Console(stderr=True), disable=not show, transient=True
    ):
        try:
            degrade_item(item, degradation.value, seed, scale, overwrite, note=not quiet)
        except ResshiftError as err:
            error_line(str(err))
            failed += 1
    if not quiet:
        done = len(items) - (failed - len(ruled_out))
        print(f"{done} written, {failed} failed in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if failed:
        raise typer.Exit(EXIT_FAILED)
