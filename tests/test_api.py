"""`resshift_cli.Upscaler` as a user calls it: PIL images, arrays, tensors and files give the same pixels as
`resshift upscale` with the same options (tiny golden model folder, CPU, float32)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import corpus
from resshift_cli import Result, Upscaler
from resshift_cli.cli import app
from resshift_cli.errors import ImageError, UsageError
from tiny import write_tiny_folder

CPU = ("--device", "cpu", "--precision", "fp32")
RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("models") / "tiny-v3", "v3")


@pytest.fixture(scope="module")
def upscaler(model_dir: Path) -> Upscaler:
    return Upscaler.from_pretrained(model_dir, device="cpu", precision="fp32")


def cli(source: Path, target: Path, model_dir: Path, *options: object) -> None:
    """`resshift upscale SOURCE -o TARGET` with the tiny model and `options`."""
    args = ["upscale", source, "-o", target, "-m", model_dir, *CPU, "-q", *options]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr


def cli_pixels(tmp_path: Path, model_dir: Path, samples: np.ndarray, *options: object) -> np.ndarray:
    """The CLI's output samples for an input PNG holding `samples` (uint8/uint16, gray or colour)."""
    source = tmp_path / "in.png"
    layout = (
        samples
        if samples.ndim == 2 or samples.shape[2] < 3
        else samples[..., [2, 1, 0, 3][: samples.shape[2]]]
    )
    assert cv2.imwrite(str(source), layout)
    cli(source, tmp_path / "out.png", model_dir, *options)
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    return out if out.ndim == 2 else out[..., [2, 1, 0, 3][: out.shape[2]]]


def test_a_pil_image_with_alpha_comes_back_as_the_cli_writes_it(
    tmp_path: Path, model_dir: Path, upscaler: Upscaler
) -> None:
    rgba = RNG.integers(0, 256, (6, 9, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0
    image = Image.fromarray(rgba, "RGBA")
    image.save(tmp_path / "in.png")
    out = upscaler(image, seed=7, tile=0)
    cli(tmp_path / "in.png", tmp_path / "out.png", model_dir, "--seed", 7, "--tile", 0)
    assert isinstance(out, Image.Image) and out.mode == "RGBA" and out.size == (36, 24)
    with Image.open(tmp_path / "out.png") as expected:
        assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_a_uint8_array_matches_the_cli_with_the_same_options(
    tmp_path: Path, model_dir: Path, upscaler: Upscaler
) -> None:
    rgb = RNG.integers(0, 256, (10, 7, 3), dtype=np.uint8)
    options = ("--seed", 3, "--steps", 2, "--color-fix", "wavelet", "--scale", 2)
    out = upscaler(rgb, seed=3, steps=2, color_fix="wavelet", scale=2)
    assert out.dtype == np.uint8 and out.shape == (20, 14, 3)
    assert np.array_equal(out, cli_pixels(tmp_path, model_dir, rgb, *options))


def test_uint16_and_float_gray_arrays_match_the_cli(
    tmp_path: Path, model_dir: Path, upscaler: Upscaler
) -> None:
    gray = RNG.integers(0, 65536, (8, 8), dtype=np.uint16)
    out = upscaler(gray, seed=5)
    assert out.dtype == np.uint16 and out.shape == (32, 32)
    assert np.array_equal(out, cli_pixels(tmp_path, model_dir, gray, "--seed", 5))
    unit = gray.astype(np.float32) * np.float32(1 / 65535)
    floats = upscaler(unit[..., None], seed=5)
    assert floats.dtype == np.float32 and floats.shape == (32, 32, 1)
    assert np.abs(floats[..., 0] * 65535 - out).max() <= 0.5 + 1e-3  # the 16-bit output is its rounding


def test_a_tensor_comes_back_in_its_own_layout_and_matches_the_cli(
    tmp_path: Path, model_dir: Path, upscaler: Upscaler
) -> None:
    rgb = RNG.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    unit = torch.from_numpy(rgb.astype(np.float32) * np.float32(1 / 255)).permute(2, 0, 1)
    batched = upscaler(unit[None], seed=9, tile=64, tile_overlap=16)
    assert batched.shape == (1, 3, 32, 48) and batched.dtype == torch.float32
    assert torch.equal(upscaler(unit, seed=9, tile=64, tile_overlap=16), batched[0])
    quantised = (batched[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(
        quantised, cli_pixels(tmp_path, model_dir, rgb, "--seed", 9, "--tile", 64, "--tile-overlap", 16)
    )


def test_upscale_file_writes_what_the_cli_writes(tmp_path: Path, model_dir: Path, upscaler: Upscaler) -> None:
    photo = corpus.write_jpeg(tmp_path, "photo.jpg", corpus.sample_pixels(3, 8), corpus.sample_exif(6))
    result = upscaler.upscale_file(photo, tmp_path / "api.png", seed=4)
    cli(photo, tmp_path / "cli.png", model_dir, "--seed", 4)
    assert (tmp_path / "api.png").read_bytes() == (tmp_path / "cli.png").read_bytes()
    assert isinstance(result, Result) and result.target == tmp_path / "api.png" and result.fmt == "png"
    assert (result.width, result.height) == (4 * corpus.HEIGHT, 4 * corpus.WIDTH)  # EXIF-rotated upright
    assert result.provenance.model == "tiny-v3" and result.provenance.precision == "fp32"
    with pytest.raises(ImageError, match="already exists; pass overwrite=True"):
        upscaler.upscale_file(photo, tmp_path / "api.png")
    with pytest.raises(ImageError, match="is the input file"):
        upscaler.upscale_file(photo, photo, overwrite=True)
    with pytest.raises(UsageError, match="JPG holds 8 bits per channel; bit_depth=16 needs png or tiff"):
        upscaler.upscale_file(photo, tmp_path / "deep.jpg", bit_depth=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.png", "cli.png", "photo.jpg"]


@pytest.mark.parametrize(
    ("image", "error", "message"),
    [
        (np.zeros((4, 4, 5), np.uint8), UsageError, r"<array>: expected an \(H, W\) or \(H, W, C\) array"),
        (np.zeros((4, 4, 3), np.int32), UsageError, "<array>: unsupported dtype int32"),
        (
            np.full((4, 4), 1.5, np.float32),
            ImageError,
            r"<array>: float samples must be finite and lie in \[0, 1\]",
        ),
        (np.zeros((0, 4, 3), np.uint8), ImageError, "<array>: empty image"),
        (torch.zeros(2, 3, 4, 4), UsageError, r"<tensor>: expected a \(3, H, W\) or \(1, 3, H, W\) tensor"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), UsageError, "<tensor>: expected floats in"),
        ([[0, 1]], UsageError, "cannot upscale a list"),
    ],
)
def test_bad_images_are_one_line_errors(upscaler: Upscaler, image: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        upscaler(image)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile": 100}, "tile must be 0 or a multiple of 64, got 100"),
        ({"tile": 64, "tile_overlap": 64}, "tile_overlap 64 does not fit tile 64: use 0 to 63"),
        ({"steps": 9}, "between 1 and the model's 4 trained steps"),
        ({"color_fix": "sepia"}, "unknown color_fix 'sepia'"),
        ({"scale": 32}, "scale must be between 1 and 16"),
    ],
)
def test_bad_options_are_usage_errors(upscaler: Upscaler, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        upscaler(np.zeros((4, 4, 3), np.uint8), **options)
