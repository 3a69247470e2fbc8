"""The parameter-free space-to-depth autoencoder: config, exactness, model folders and the whole pipeline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from resshift_cli import card, cost, manifest, pipeline, presets
from resshift_cli.cli import app
from resshift_cli.config import ModelConfig, SpaceToDepthConfig, UNetConfig
from resshift_cli.errors import ModelError
from resshift_cli.loading import (
    AUTOENCODER_FILE,
    CONFIG_FILE,
    UNET_FILE,
    LoadedModel,
    check_state_dicts,
    load_model,
    write_model_folder,
)
from resshift_cli.nets.space_to_depth import SpaceToDepth
from resshift_cli.pipeline import UpscaleOptions, upscale_tensor
from tiny import tiny_config, write_tiny_folder

TINY_S2D_UNET = UNetConfig(
    in_channels=48,
    out_channels=48,
    model_channels=32,
    channel_mult=(1, 2, 2, 2),
    num_res_blocks=(1, 1, 1, 1),
    attention_resolutions=(32, 8),
    swin_embed_dim=32,
)
"""A very narrow space-to-depth denoiser for tests (Swin layers at two levels, one shifted-window size)."""


def tiny_s2d_config() -> ModelConfig:
    """The lite layout with this narrow UNet and realsr-v3's chain (an x₀ prediction)."""
    lite, v3 = presets.get("lite"), presets.get("tiny").diffusion
    return dataclasses.replace(lite, name="tiny-s2d", unet=TINY_S2D_UNET, diffusion=v3)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return presets.fresh_model(tiny_s2d_config(), seed=3)


def lr_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) smooth-plus-noise in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 8, 1), max(width // 8, 1), generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1)


# config.json ------------------------------------------------------------------------------------------


def test_config_round_trip_with_the_new_kind() -> None:
    config = dataclasses.replace(presets.get("lite"), diffusion=presets.get("tiny").diffusion)
    data = json.loads(config.to_json())
    assert data["format_version"] == 2
    assert data["autoencoder"] == {"factor": 4, "kind": "space_to_depth"}
    assert ModelConfig.from_dict(data) == config
    assert config.autoencoder.latent_channels == 48


def test_vq_configs_are_written_and_read_as_before() -> None:
    data = json.loads(tiny_config().to_json())
    assert data["format_version"] == 1 and "kind" not in data["autoencoder"]
    explicit = json.loads(json.dumps(data))
    explicit["autoencoder"]["kind"] = "vq"
    assert ModelConfig.from_dict(explicit) == ModelConfig.from_dict(data) == tiny_config()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["autoencoder"].update(kind="vae"), "unknown autoencoder kind 'vae'"),
        (
            lambda d: (d["autoencoder"].update(factor=2), d["unet"].update(in_channels=12, out_channels=12)),
            r"factor \(2\) must equal the scale \(4\)",
        ),
        (lambda d: d["autoencoder"].update(factor=0), "factor must be a positive integer"),
        (lambda d: d["autoencoder"].update(ch=3), "unknown SpaceToDepthConfig field"),
        (lambda d: d["unet"].update(in_channels=3), "must equal the autoencoder's latent channels"),
        (lambda d: d.update(format_version=4), "reads versions 1 to 3"),
    ],
)
def test_bad_space_to_depth_config_is_a_clear_error(edit, message: str) -> None:
    data = json.loads(presets.get("lite").to_json())
    edit(data)
    with pytest.raises(ModelError, match=message):
        ModelConfig.from_dict(data, source="x/config.json")


# the module ---------------------------------------------------------------------------------------------


def test_encode_then_decode_is_exactly_the_input() -> None:
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ae = SpaceToDepth(SpaceToDepthConfig(4))
    z = ae.encode(x)
    assert z.shape == (2, 48, 16, 24)
    assert torch.equal(z[:, 1 * 16 + 2 * 4 + 3, 5, 7], x[:, 1, 4 * 5 + 2, 4 * 7 + 3])
    assert torch.equal(ae.quantize(z), z)
    assert torch.equal(ae.decode(z), x) and torch.equal(ae.decode_without_quantization(z), x)
    assert not list(ae.parameters()) and not list(ae.buffers())


@pytest.mark.parametrize("tiled", [False, True])
def test_pipeline_encode_decode_reproduces_the_bicubic_input(model: LoadedModel, tiled: bool) -> None:
    y = pipeline.to_signed(lr_image(128, 192))
    tiling = cost.with_tile(128) if tiled else cost.UNTILED
    z = pipeline.encode_canvas(model, y, tiling)
    assert z.shape == (1, 48, 128, 192)
    image = pipeline.decode_latent(model, z, tiling)
    expected = pipeline.bicubic_upsample(y, 4)
    if tiled:  # blended tiles: equal values averaged with weights summing to one
        torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    else:
        assert torch.equal(image, expected)


# the whole pipeline ---------------------------------------------------------------------------------------

MODES = {
    "untiled": UpscaleOptions(tile=0),
    "tiled-64": UpscaleOptions(tile=64, tile_overlap=32),
    "tiled-128": UpscaleOptions(tile=128, tile_overlap=32),
    "official-64": UpscaleOptions(tile=64, tile_overlap=16, official_tiling=True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", list(MODES))
def test_pixel_copying_denoiser_gives_nearest_upsampling_in_every_mode(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch, mode: str, dtype: torch.dtype
) -> None:
    """A denoiser predicting x̂₀ = every LR pixel copied into its 16 latent channels makes the chain end on
    that latent (coef2₀ = 1), which decodes to the nearest-neighbour ×4 image: encode/decode layout, tiles,
    padding, noise shapes and blending all line up with the LR geometry."""
    copy_pixels = lambda x, t, lq: lq.float().repeat_interleave(16, dim=1)  # noqa: E731
    monkeypatch.setattr(model, "denoise", copy_pixels)
    lr = lr_image(96, 160)
    out = upscale_tensor(model, lr, dataclasses.replace(MODES[mode], dtype=dtype))
    expected = F.interpolate(lr, scale_factor=4, mode="nearest")
    assert out.shape == (1, 3, 384, 640)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", [m for m in MODES if m != "tiled-128"])  # 128 covers this image: untiled
def test_random_space_to_depth_model_runs_in_every_mode(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch, mode: str, dtype: torch.dtype
) -> None:
    shapes: list[torch.Size] = []
    real_sample = pipeline.sample

    def recording_sample(denoise, y0, schedule, generator, callback=None):
        shapes.append(y0.shape)
        return real_sample(denoise, y0, schedule, generator, callback)

    monkeypatch.setattr(pipeline, "sample", recording_sample)
    options = dataclasses.replace(MODES[mode], dtype=dtype)
    lr = lr_image(60, 100)  # padded to 64 × 128 LR: three 64-pixel tiles
    out = upscale_tensor(model, lr, options)
    assert out.shape == (1, 3, 240, 400) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    assert shapes and all(s[1] == 48 for s in shapes)
    if mode == "tiled-64" and dtype == torch.float32:
        assert torch.equal(upscale_tensor(model, lr, options), out)


# model folders ----------------------------------------------------------------------------------------------


def test_model_folder_round_trip_without_autoencoder_weights(tmp_path: Path, model: LoadedModel) -> None:
    folder = tmp_path / "m"
    write_model_folder(folder, model.config, model.unet.state_dict(), {}, dtype=torch.float16)
    assert load_file(folder / AUTOENCODER_FILE) == {}
    loaded = load_model(folder)
    assert isinstance(loaded.autoencoder, SpaceToDepth) and loaded.config == model.config
    for key, value in loaded.unet.state_dict().items():
        assert torch.equal(value, model.unet.state_dict()[key].half().to(value.dtype)), key


def test_stray_or_missing_autoencoder_file_is_a_clear_error(tmp_path: Path, model: LoadedModel) -> None:
    folder = tmp_path / "m"
    write_model_folder(folder, model.config, model.unet.state_dict(), {})
    save_file({"encoder.weight": torch.zeros(1)}, folder / AUTOENCODER_FILE)
    with pytest.raises(ModelError, match=r"\(autoencoder\): .* unexpected encoder.weight"):
        load_model(folder)
    (folder / AUTOENCODER_FILE).unlink()
    with pytest.raises(ModelError, match=r"autoencoder\.safetensors: missing"):
        load_model(folder)
    with pytest.raises(ModelError, match="missing"):
        check_state_dicts(tiny_config(), model.unet.state_dict(), {}, "mixed")


def test_models_info_verify_and_export_handle_it(tmp_path: Path, model: LoadedModel) -> None:
    folder = tmp_path / "m"
    write_model_folder(folder, model.config, model.unet.state_dict(), {}, dtype=torch.float16)
    result = CliRunner().invoke(app, ["models", "info", str(folder)])
    assert result.exit_code == 0, result.stderr
    assert "space-to-depth ×4 (48 channels, no weights)" in result.stdout
    exported = card.export_model(str(folder), tmp_path / "export")
    assert manifest.verify_folder(exported) == []
    assert {p.name for p in exported.iterdir()} >= {CONFIG_FILE, UNET_FILE, AUTOENCODER_FILE}
    assert load_model(exported).config == model.config


def test_resshift_upscale_runs_a_space_to_depth_folder(tmp_path: Path, model: LoadedModel) -> None:
    folder = tmp_path / "m"
    write_model_folder(folder, model.config, model.unet.state_dict(), {})
    photo, output = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray((lr_image(40, 56)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(photo)
    options = ["-m", str(folder), "--device", "cpu", "--tile", "64", "--tile-overlap", "16", "-q"]
    result = CliRunner().invoke(app, ["upscale", str(photo), "-o", str(output), *options])
    assert result.exit_code == 0, result.stderr
    assert Image.open(output).size == (224, 160)


def test_vq_folders_still_load_unchanged(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    assert json.loads((folder / CONFIG_FILE).read_text())["format_version"] == 1
    assert load_model(folder).config == tiny_config()
