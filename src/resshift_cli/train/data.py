"""Training pairs: HR crops from a folder, their LR made on the fly (or read from a paired folder).

Every random choice is keyed, not streamed: global sample g (the g-th sample of the run, counted over
iterations and ranks) reads image `order(g)` and crops, flips and degrades it with a generator seeded by
(seed, g); the order is a fresh permutation per epoch seeded by (seed, epoch). The data stream is therefore
a pure function of (seed, g): resuming at iteration k continues it exactly, any number of DDP ranks or
DataLoader workers see the same samples, and a checkpoint only needs the count of samples consumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from resshift_cli.degrade import degrade
from resshift_cli.errors import ImageError, UsageError
from resshift_cli.images import model_rgb, read_picture
from resshift_cli.jobs import find_images
from resshift_cli.loading import LoadedModel
from resshift_cli.pipeline import to_signed

ORDER_STREAM, SAMPLE_STREAM, NOISE_STREAM, VALIDATION_STREAM = range(4)
"""Independent random streams of one seed (`keyed_generator`'s second key)."""


def keyed_generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator whose state depends only on (seed, stream, index), well mixed by SeedSequence."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


@dataclass(frozen=True)
class Example:
    """One training image: its HR file, the paired LR file (or None), and the HR size (height, width)."""

    hr: Path
    lr: Path | None
    size: tuple[int, int]


@dataclass(frozen=True)
class PairOptions:
    """How a sample is made: HR crop side (a multiple of `scale`), LR degradation, horizontal flips."""

    crop: int
    scale: int
    degradation: str
    hflip: bool = True


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header (EXIF rotation does not change the shorter side)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageError(f"{path}: cannot read this image ({type(err).__name__}: {err})") from None
    return height, width


def _images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"{folder}: {what} is not a folder")
    found = find_images(folder, recursive=True)
    if not found:
        raise UsageError(f"{folder}: no images in {what} (looked recursively for image file suffixes)")
    return found


def _paired_files(hr_dir: Path, hr_files: list[Path], lr_dir: Path) -> dict[Path, Path]:
    """HR file → LR file of the same relative name (suffix aside); a missing LR is a `UsageError`."""
    by_stem = {p.relative_to(lr_dir).with_suffix(""): p for p in _images(lr_dir, "--paired-lr")}
    missing = [p for p in hr_files if p.relative_to(hr_dir).with_suffix("") not in by_stem]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"{missing[0]}: no LR image of the same name in {lr_dir}{more}")
    return {p: by_stem[p.relative_to(hr_dir).with_suffix("")] for p in hr_files}


def _check_pair(example: Example, options: PairOptions) -> None:
    assert example.lr is not None
    lr_size = _header_size(example.lr)
    expected = (lr_size[0] * options.scale, lr_size[1] * options.scale)
    if example.size != expected:
        raise ImageError(
            f"{example.hr}: HR is {example.size[1]}×{example.size[0]} but its LR {example.lr} is"
            f" {lr_size[1]}×{lr_size[0]} (expected HR = {options.scale} × LR)"
        )


def scan(folder: Path, options: PairOptions, paired_lr: Path | None = None) -> list[Example]:
    """Every usable image under `folder` (recursive, sorted), checked before training starts.

    Unreadable files, images smaller than the crop and missing or mis-sized LR pairs raise one-line
    `ImageError`/`UsageError` naming the file.
    """
    files = _images(folder, "the training folder" if paired_lr is None else "HR_DIR")
    pairs = _paired_files(folder, files, paired_lr) if paired_lr is not None else {}
    examples = []
    for path in files:
        example = Example(path, pairs.get(path), _header_size(path))
        if min(example.size) < options.crop:
            raise ImageError(
                f"{path}: {example.size[1]}×{example.size[0]} is smaller than the crop"
                f" ({options.crop}×{options.crop}); remove it or pass a smaller --crop"
            )
        if example.lr is not None:
            _check_pair(example, options)
        examples.append(example)
    return examples


def read_rgb(path: Path) -> Tensor:
    """(3, H, W) float32 in [0, 1], orientation applied (`images.read_picture`, `images.model_rgb`)."""
    return torch.from_numpy(np.ascontiguousarray(model_rgb(read_picture(path)))).permute(2, 0, 1)


def _randint(high: int, generator: torch.Generator) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(0, high + 1, (1,), generator=generator))


def random_pair(example: Example, options: PairOptions, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random crop of `example` and its LR: (3, crop, crop) and (3, crop/s, crop/s) in [−1, 1].

    Draw order from `generator`: crop top, crop left, flip, then the degradation's own draws.
    """
    s, crop = options.scale, options.crop
    hr = read_rgb(example.hr)
    if example.lr is None:
        top, left = _randint(hr.shape[1] - crop, generator), _randint(hr.shape[2] - crop, generator)
        hr = hr[:, top : top + crop, left : left + crop]
        lr = None
    else:
        lr_full, side = read_rgb(example.lr), crop // s
        top, left = _randint(lr_full.shape[1] - side, generator), _randint(lr_full.shape[2] - side, generator)
        lr = lr_full[:, top : top + side, left : left + side]
        hr = hr[:, s * top : s * (top + side), s * left : s * (left + side)]
    if options.hflip and bool(torch.rand(1, generator=generator) < 0.5):
        hr = hr.flip(-1)
        lr = lr.flip(-1) if lr is not None else None
    if lr is None:
        lr = degrade(hr.contiguous(), options.degradation, generator, s)
    return to_signed(hr.contiguous()), to_signed(lr.contiguous())


class TrainPairs(Dataset[tuple[Tensor, Tensor]]):
    """Map-style data set indexed by the global sample index g (see the module docstring)."""

    def __init__(self, examples: list[Example], options: PairOptions, seed: int) -> None:
        self.examples = examples
        self.options = options
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def _order(self, epoch: int) -> list[int]:
        """The image order of `epoch`: a permutation drawn from (seed, epoch); the latest two are kept."""
        if epoch not in self._orders:
            generator = keyed_generator(self.seed, ORDER_STREAM, epoch)
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = torch.randperm(len(self.examples), generator=generator).tolist()
        return self._orders[epoch]

    def example(self, g: int) -> Example:
        """The image that global sample g reads."""
        epoch, position = divmod(g, len(self.examples))
        return self.examples[self._order(epoch)[position]]

    def __getitem__(self, g: int) -> tuple[Tensor, Tensor]:
        """(3, crop, crop) HR and (3, crop/s, crop/s) LR in [−1, 1] of global sample g."""
        return random_pair(self.example(g), self.options, keyed_generator(self.seed, SAMPLE_STREAM, g))


def center_pair(example: Example, options: PairOptions, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The centre crop of a validation image and its LR (degraded with `generator`), in [−1, 1]."""
    hr = read_rgb(example.hr)
    top, left = (hr.shape[1] - options.crop) // 2, (hr.shape[2] - options.crop) // 2
    hr = hr[:, top : top + options.crop, left : left + options.crop].contiguous()
    return to_signed(hr), to_signed(degrade(hr, options.degradation, generator, options.scale))


def check_degradation(options: PairOptions) -> None:
    """Run the degradation once on a grey crop, so an unknown or unavailable one fails before training."""
    degrade(
        torch.full((3, options.crop, options.crop), 0.5),
        options.degradation,
        torch.Generator(),
        options.scale,
    )


def crop_multiple(model: LoadedModel) -> int:
    """HR crops must be multiples of this: the latent (crop / autoencoder factor) must halve down the
    UNet's levels into whole Swin windows."""
    unet = model.config.unet
    return model.autoencoder.factor * 2 ** (len(unet.channel_mult) - 1) * unet.window_size


def check_crop(crop: int, model: LoadedModel) -> None:
    multiple = crop_multiple(model)
    if crop <= 0 or crop % multiple or crop % model.scale:
        raise UsageError(f"--crop {crop}: must be a positive multiple of {multiple} for this model")
