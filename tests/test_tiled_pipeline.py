from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resshift_cli.errors import DeviceError
from resshift_cli.pipeline import Progress, UpscaleOptions, plan, smaller_tile, upscale_tensor
from test_pipeline import assert_images_match
from tiny import golden_case, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("v3")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_official_tiling_reproduces_the_official_chop(model) -> None:
    ref, meta = golden_case("sample_v3_100x72_chop64s48")
    assert (meta["chop_size"], meta["chop_stride"]) == ("64", "48")
    options = UpscaleOptions(seed=12345, tile=64, tile_overlap=16, official_tiling=True)
    out = upscale_tensor(model, ref["lr"] * 0.5 + 0.5, options)
    assert_images_match(out, ref["out_uint8"])


def test_image_within_one_tile_is_exactly_the_untiled_result(model) -> None:
    lr = torch.rand(1, 3, 20, 36, generator=torch.Generator().manual_seed(4))
    untiled = upscale_tensor(model, lr, UpscaleOptions(tile=0))
    assert torch.equal(upscale_tensor(model, lr, UpscaleOptions(tile=64, tile_overlap=16)), untiled)


@pytest.mark.slow
def test_shared_latent_tiling_beats_the_official_chop(model) -> None:
    lr = F.interpolate(torch.rand(1, 3, 12, 40, generator=torch.Generator().manual_seed(0)), size=(64, 192))
    lr = lr.clamp(0, 1)
    untiled = upscale_tensor(model, lr, UpscaleOptions(tile=0))
    ours = upscale_tensor(model, lr, UpscaleOptions(tile=64, tile_overlap=32))
    official = upscale_tensor(model, lr, UpscaleOptions(tile=64, tile_overlap=32, official_tiling=True))
    assert psnr(ours, untiled) > psnr(official, untiled) + 6


def test_progress_counts_tiles_times_steps(model) -> None:
    lr = torch.rand(1, 3, 40, 100, generator=torch.Generator().manual_seed(1))
    events: list[Progress] = []
    options = UpscaleOptions(tile=64, tile_overlap=0, tile_batch=2)
    upscale_tensor(model, lr, options, events.append)
    denoise = [e for e in events if e.stage == "denoise"]
    assert denoise[-1].done == denoise[-1].total == 4 * 2
    assert [e.done for e in denoise] == sorted(e.done for e in denoise)
    assert {e.stage for e in events} == {"encode", "denoise", "decode"}


@pytest.mark.slow
def test_tile_batch_does_not_change_the_result(model) -> None:
    lr = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(2))
    one = upscale_tensor(model, lr, UpscaleOptions(tile=64, tile_overlap=0, tile_batch=1))
    two = upscale_tensor(model, lr, UpscaleOptions(tile=64, tile_overlap=0, tile_batch=2))
    assert psnr(one, two) > 35  # batched convolutions round differently; no other change


def test_plan_snaps_tiles_to_the_padded_canvas() -> None:
    tiles = plan(128, 320, UpscaleOptions(tile=128, tile_overlap=32))
    assert all(t.height == 128 and t.width == 128 for t in tiles)
    assert tiles[-1].left + tiles[-1].width == 320
    assert [(t.height, t.width) for t in plan(128, 320, UpscaleOptions(tile=0))] == [(128, 320)]
    assert len(plan(128, 128, UpscaleOptions(tile=128))) == 1


def test_out_of_memory_halves_the_tile_down_to_64() -> None:
    assert smaller_tile(UpscaleOptions(tile=512), 1000, 1000) == 256
    assert smaller_tile(UpscaleOptions(tile=0), 300, 1000) == 512
    assert smaller_tile(UpscaleOptions(tile=128), 1000, 1000) == 64
    assert smaller_tile(UpscaleOptions(tile=64), 1000, 1000) == 64
    assert issubclass(DeviceError, Exception)


def test_non_finite_reduced_precision_output_is_retried_in_float32() -> None:
    model = tiny_model("v3")
    with torch.no_grad():
        model.autoencoder.decoder.conv_in.weight.mul_(1e6)  # overflows float16, harmless in float32
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    notices: list[str] = []
    out = upscale_tensor(model, lr, UpscaleOptions(dtype=torch.float16), notice=notices.append)
    assert torch.isfinite(out).all()
    assert notices == ["non-finite values in float16 output; retrying in float32"]
    assert torch.equal(out, upscale_tensor(model, lr, UpscaleOptions(dtype=torch.float32)))
