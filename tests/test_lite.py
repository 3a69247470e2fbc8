"""The built-in `lite` model: packaged and read-only, usable offline, registered in `models`, and better
than bicubic on a photo it was never trained on (tests/photos/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

import resshift_cli
from resshift_cli import cache, metrics, presets, registry, release
from resshift_cli.cli import app
from resshift_cli.loading import UNET_FILE, LoadedModel, load_model
from resshift_cli.manifest import verify_folder
from resshift_cli.pipeline import UpscaleOptions, bicubic_upsample, upscale_tensor
from train_helpers import one_thread  # noqa: F401 (an autouse fixture)

PHOTOS = Path(__file__).parent / "photos"
SIZE_LIMIT = 20_000_000
TILED_PSNR_FLOOR = 40.0
"""Issue 11: tiled against whole-image sampling, PSNR(Y) in dB, with no visible seam."""
BF16_PSNR_FLOOR = 45.0
"""bf16 (what --precision auto picks on CPUs with native bf16) against float32, PSNR(Y) in dB."""

runner = CliRunner()


@pytest.fixture(scope="module")
def lite() -> LoadedModel:
    return load_model(cache.resolve_model("lite"))


def load(path: Path) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] of an 8-bit RGB file."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(rgb).permute(2, 0, 1)[None]


def photo(name: str) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] of tests/photos/evening_glow_<name>.png."""
    return load(PHOTOS / f"evening_glow_{name}.png")


def hwc(image: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).float().numpy()


def test_lite_resolves_to_the_packaged_folder_which_verifies() -> None:
    folder = cache.resolve_model("lite")
    assert folder == Path(resshift_cli.__file__).parent / registry.BUILTIN_DIR / "lite"
    assert verify_folder(folder) == []
    assert cache.folder_size(folder) <= SIZE_LIMIT
    with safe_open(folder / UNET_FILE, "pt") as weights:
        dtypes = {weights.get_slice(k).get_dtype() for k in weights.keys()}  # noqa: SIM118
    assert dtypes == {"F16", "I64"}  # float16 weights, int64 relative-position indices
    assert load_model(folder).config == presets.get("lite")
    assert registry.DEFAULT_MODEL != "lite"


def test_upscale_with_model_lite_works_offline(tmp_path: Path) -> None:
    """The suite runs with HF_HUB_OFFLINE=1 and dead release/Hub endpoints (conftest)."""
    out = tmp_path / "x4.png"
    lr = PHOTOS / "evening_glow_lr.png"
    result = runner.invoke(app, ["upscale", str(lr), "--model", "lite", "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert Image.open(out).size == (384, 384)


def held_out_pairs() -> list[tuple[torch.Tensor, np.ndarray]]:
    """The first 256² crop of each of the 5 test photos and its LR (tests/photos/README.md)."""
    return [
        (load(path), hwc(load(path.with_name(path.name.replace("_lr", "_gt")))))
        for path in sorted((PHOTOS / "held-out").glob("*_lr.png"))
    ]


def test_lite_beats_bicubic_on_held_out_photos(lite: LoadedModel) -> None:
    """Issue 11's target on photos never trained on, mean PSNR(Y) and SSIM(Y) (MODEL_CARD.md has the table
    of all 38 crops). An untrained lite is exactly bicubic (tests/test_diffusion_options.py)."""
    pairs = held_out_pairs()
    assert len(pairs) == 5
    ours = [hwc(upscale_tensor(lite, lr, UpscaleOptions(tile=0))) for lr, _ in pairs]
    bicubic = [hwc(bicubic_upsample(lr, 4).clamp(0, 1)) for lr, _ in pairs]
    truths = [gt for _, gt in pairs]
    for metric in (metrics.psnr_y, metrics.ssim_y):
        mean_ours = np.mean([metric(sr, gt) for sr, gt in zip(ours, truths, strict=True)])
        assert mean_ours > np.mean([metric(sr, gt) for sr, gt in zip(bicubic, truths, strict=True)])


def test_tiled_matches_whole_image_sampling_on_a_photo(lite: LoadedModel) -> None:
    """64-pixel LR tiles (the smallest; 2 × 2 of them on this 96² crop) on the shared latent against the
    whole image (`--official-tiling` runs independent chains, each with its own noise: ~35 dB)."""
    lr = photo("lr")
    whole = hwc(upscale_tensor(lite, lr, UpscaleOptions(tile=0)))
    tiled = hwc(upscale_tensor(lite, lr, UpscaleOptions(tile=64)))
    assert metrics.psnr_y(tiled, whole) >= TILED_PSNR_FLOOR


def test_bf16_matches_float32_on_a_photo(lite: LoadedModel) -> None:
    lr = photo("lr")
    exact = hwc(upscale_tensor(lite, lr, UpscaleOptions(tile=0)))
    bf16 = hwc(upscale_tensor(lite, lr, UpscaleOptions(tile=0, dtype=torch.bfloat16)))
    assert metrics.psnr_y(bf16, exact) >= BF16_PSNR_FLOOR


def resshift(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_models_list_info_verify_and_remove_know_lite_is_built_in() -> None:
    code, out, _ = resshift("models", "list")
    row = next(line for line in out.splitlines() if "lite" in line)
    assert code == 0 and "built in" in row and " MB" in row
    assert f"{registry.DEFAULT_MODEL} (default)" in out

    code, out, _ = resshift("models", "info", "lite")
    assert code == 0
    assert "source: built into resshift-cli (no download)" in out
    assert "# lite" in out and "Data" in out  # the model card follows

    code, out, _ = resshift("models", "verify", "lite")
    assert (code, out) == (0, "ok lite\n")

    code, _, err = resshift("models", "remove", "lite")
    assert code == 2 and err.count("\n") == 1
    assert "lite is built into resshift-cli" in err and "cannot be removed" in err
    assert (cache.resolve_model("lite") / UNET_FILE).is_file()


def test_a_default_model_that_cannot_be_fetched_points_to_lite() -> None:
    code, _, err = resshift("models", "download", registry.DEFAULT_MODEL)
    assert code == 1 and err.count("\n") == 1
    assert "HF_HUB_OFFLINE is set" in err and "--model lite" in err
    assert "--model lite" in release.unreachable("example.org", "timed out", "x.pth")


def test_lite_is_not_an_official_preset() -> None:
    code, _, err = resshift("models", "convert", __file__, __file__, "--preset", "lite", "-o", "out")
    assert code == 2 and "lite is a built-in model" in err
