from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from resshift_cli.errors import DeviceError
from resshift_cli.pipeline import Progress, UpscaleOptions, plan
from resshift_cli.runner import _after_out_of_memory, smaller_tile, upscale_tensor
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


@pytest.mark.parametrize(("official", "calls"), [(False, [2, 2, 2, 0, 0, 0]), (True, [2, 0, 2, 0])])
def test_fewer_steps_work_with_every_tiling_mode(model, official: bool, calls: list[int]) -> None:
    """--steps 2 of 4 on tiles with the automatic overlap: shared-latent tiles see every kept index once per
    step (3 tiles on the padded 64×128 canvas), the official chop runs each patch's own 2-step chain."""
    lr = torch.rand(1, 3, 40, 100, generator=torch.Generator().manual_seed(1))
    seen: list[int] = []
    events: list[Progress] = []
    hook = model.unet.register_forward_pre_hook(lambda _m, args: seen.append(int(args[1][0])))
    try:
        options = UpscaleOptions(tile=64, steps=2, official_tiling=official)
        out = upscale_tensor(model, lr, options, events.append)
    finally:
        hook.remove()
    assert seen == calls
    assert out.shape == (1, 3, 160, 400) and torch.isfinite(out).all()
    last = [e for e in events if e.stage == ("tiles" if official else "denoise")][-1]
    assert last.done == last.total == (2 if official else 2 * 3)


def test_automatic_overlap_is_a_quarter_of_the_tile_up_to_32_official_a_quarter() -> None:
    assert [UpscaleOptions(tile=tile).overlap for tile in (256, 128, 64)] == [32, 32, 16]
    official = [UpscaleOptions(tile=tile, official_tiling=True).overlap for tile in (256, 128, 64)]
    assert official == [64, 32, 16]
    assert UpscaleOptions(tile=128, tile_overlap=0).overlap == 0
    starts = sorted({t.left for t in plan(64, 320, UpscaleOptions(tile=64))})
    assert len(starts) == 7 and starts[-1] == 256  # the fewest 64-wide tiles overlapping by >= 16
    assert all(0 < b - a <= 64 - 16 for a, b in itertools.pairwise(starts))


def test_an_overlap_that_no_longer_fits_the_halved_tile_becomes_automatic() -> None:
    y = torch.zeros(1, 3, 512, 512)
    kept = _after_out_of_memory(UpscaleOptions(tile=256, tile_overlap=32), y, torch.device("cuda"), print)
    assert (kept.tile, kept.overlap) == (128, 32)
    auto = _after_out_of_memory(UpscaleOptions(tile=128, tile_overlap=64), y, torch.device("cuda"), print)
    assert (auto.tile, auto.tile_overlap, auto.overlap) == (64, None, 16)


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
