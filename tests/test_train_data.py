"""Training pairs: keyed and reproducible, paired crops aligned, bad folders reported before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resshift_cli.errors import ImageError, UsageError
from resshift_cli.train.data import PairOptions, TrainPairs, scan
from train_helpers import (
    one_thread,  # noqa: F401 (an autouse fixture)
    write_images,
)

BICUBIC = PairOptions(crop=64, scale=4, degradation="bicubic")


def test_samples_depend_only_on_seed_and_index(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "hr", 3)
    first, second = (
        TrainPairs(scan(folder, BICUBIC), BICUBIC, 7),
        TrainPairs(scan(folder, BICUBIC), BICUBIC, 7),
    )
    for g in (5, 0, 4):  # any order: no hidden stream state
        hr, lr = first[g]
        assert hr.shape == (3, 64, 64) and lr.shape == (3, 16, 16)
        assert hr.min() >= -1 and hr.max() <= 1
        assert torch.equal(hr, second[g][0]) and torch.equal(lr, second[g][1])
    other = TrainPairs(scan(folder, BICUBIC), BICUBIC, 8)
    assert not torch.equal(first[0][0], other[0][0])
    epoch = sorted(first.examples.index(first.example(g)) for g in range(3))
    assert epoch == [0, 1, 2]  # each epoch visits every image once


def test_paired_crops_are_aligned(tmp_path: Path) -> None:
    hr_dir = write_images(tmp_path / "hr" / "sub", 2, size=(128, 96)).parent
    lr_dir = tmp_path / "lr" / "sub"
    lr_dir.mkdir(parents=True)
    for path in sorted((hr_dir / "sub").iterdir()):  # LR = 4×4 box means of HR, 8-bit
        pixels = np.asarray(Image.open(path), dtype=np.float64)
        box = pixels.reshape(32, 4, 24, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        Image.fromarray(box).save(lr_dir / path.with_suffix(".png").name)
    options = PairOptions(crop=64, scale=4, degradation="bicubic", hflip=True)
    data = TrainPairs(scan(hr_dir, options, tmp_path / "lr"), options, 0)
    for g in range(4):
        hr, lr = data[g]
        box = torch.nn.functional.avg_pool2d(hr[None] * 0.5 + 0.5, 4)[0]
        assert (box - (lr * 0.5 + 0.5)).abs().max() <= 0.5 / 255 + 1e-6


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    with pytest.raises(UsageError, match="no images"):
        scan(tmp_path / "hr", BICUBIC)


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "hr", 1)
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match=r"broken\.png"):
        scan(folder, BICUBIC)


def test_image_smaller_than_the_crop_is_named_with_its_size(tmp_path: Path) -> None:
    folder = write_images(tmp_path / "hr", 1)
    write_images(tmp_path / "small", 1, size=(40, 100))
    (tmp_path / "small" / "img0.png").rename(folder / "small.png")
    with pytest.raises(ImageError, match=r"small\.png: 100×40 is smaller than the crop \(64×64\)"):
        scan(folder, BICUBIC)


def test_missing_and_mis_sized_pairs_are_named(tmp_path: Path) -> None:
    hr_dir = write_images(tmp_path / "hr", 2, size=(64, 64))
    lr_dir = write_images(tmp_path / "lr", 1, size=(16, 16))
    with pytest.raises(UsageError, match=r"img1\.png: no LR image"):
        scan(hr_dir, BICUBIC, lr_dir)
    write_images(lr_dir, 2, size=(20, 16))
    with pytest.raises(ImageError, match=r"img0\.png: HR is 64×64 but its LR"):
        scan(hr_dir, BICUBIC, lr_dir)
