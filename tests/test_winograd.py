"""Winograd 3×3 convolutions (NNPACK): where they apply, how close they stay, and the runs that use them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resshift_cli import devices
from resshift_cli.devices import precision_label, resolve_winograd
from resshift_cli.nets import winograd
from resshift_cli.pipeline import UpscaleOptions
from resshift_cli.runner import Runtime, upscale_tensor
from tiny import tiny_model

needs_nnpack = pytest.mark.skipif(not winograd.available(), reason="this PyTorch has no NNPACK for this CPU")


def _conv(c_in: int = 8, c_out: int = 16, **kwargs: object) -> winograd.Conv2d:
    torch.manual_seed(0)
    return winograd.Conv2d(c_in, c_out, 3, **{"padding": 1, **kwargs})  # type: ignore[arg-type]


def _input(channels: int = 8, side: int = 40, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, side, side, generator=torch.Generator().manual_seed(1))


def test_outside_the_switch_it_is_nn_conv2d_bit_for_bit() -> None:
    conv, x = _conv(), _input()
    reference = nn.Conv2d(8, 16, 3, padding=1)
    reference.load_state_dict(conv.state_dict())  # same parameter names: checkpoints load unchanged
    with torch.no_grad():
        assert torch.equal(conv(x), reference(x))


@needs_nnpack
@pytest.mark.parametrize("batch", [1, 3])
def test_inside_the_switch_it_matches_the_direct_convolution_closely(batch: int) -> None:
    conv, x = _conv(), _input(batch=batch)
    with torch.no_grad():
        direct = conv(x)
        with winograd.enabled(True):
            fast = conv(x)
    assert fast.shape == direct.shape
    assert ((fast - direct).norm() / direct.norm()).item() < 1e-5


@needs_nnpack
def test_bands_of_rows_give_the_values_of_one_call_on_the_whole_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, weight, bias = _input(channels=8, side=70, batch=2), torch.randn(4, 8, 3, 3), torch.randn(4)
    whole = torch.cat(
        [torch._nnpack_spatial_convolution(x[i : i + 1], weight, bias, [1, 1], [1, 1]) for i in range(2)]
    )
    monkeypatch.setattr(winograd, "BAND_BYTES", 8 * 70 * 4 * 12)  # 12 rows a band: 6 bands, the last short
    assert winograd.band_rows(8, 70) == 12
    assert torch.equal(winograd.convolve(x, weight, bias, (1, 1)), whole)


@needs_nnpack
@pytest.mark.parametrize("padding", [(1, 1), (0, 1)])
def test_a_convolution_by_rows_may_write_into_the_input_it_reads(
    padding: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # one channel: the rows are read as views of the input, not copies
    x, weight, bias = _input(channels=1, side=70), torch.randn(1, 1, 3, 3), torch.randn(1)
    expected = winograd.convolve(x, weight, bias, padding)
    monkeypatch.setattr(winograd, "BAND_BYTES", 70 * 4 * 12)  # 12 rows a band
    target = x.clone()
    out = target[:, :, : expected.shape[2]] if padding[0] == 0 else target
    result = winograd.convolve_rows(lambda a, b: target[:, :, a:b], x.shape, weight, bias, padding, out=out)
    assert result.data_ptr() == target.data_ptr()
    assert torch.equal(result, expected)  # no row was overwritten before its last read


@pytest.mark.parametrize(
    ("conv", "x", "grad"),
    [
        (_conv(stride=2), _input(), False),  # strided (the Downsample layers)
        (_conv(dilation=2, padding=2), _input(), False),
        (_conv(padding_mode="reflect"), _input(), False),
        (_conv(), _input(side=16), False),  # fewer than MIN_PIXELS outputs
        (_conv(), _input(), True),  # training: autograd needs the direct convolution
        (_conv().to(torch.bfloat16), _input().to(torch.bfloat16), False),  # NNPACK is float32 only
    ],
)
def test_it_applies_only_to_float32_stride_1_undilated_3x3_inference(
    conv: winograd.Conv2d, x: torch.Tensor, grad: bool
) -> None:
    with torch.set_grad_enabled(grad):
        assert not winograd.applies(conv, x)
        with winograd.enabled(True):
            out = conv(x)
        assert torch.equal(out, nn.Conv2d.forward(conv, x))  # the direct route, bit for bit


def test_the_switch_is_scoped_and_off_by_default() -> None:
    assert not winograd._ENABLED.get()
    with winograd.enabled(True):
        assert winograd._ENABLED.get() == winograd.available()
        with winograd.enabled(False):
            assert not winograd._ENABLED.get()
    assert not winograd._ENABLED.get()


def test_only_auto_on_a_cpu_without_amx_chooses_winograd(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    for cls in ("avx512-bf16", "avx512", "avx2", "other"):
        monkeypatch.setattr(devices, "cpu_class", lambda cls=cls: cls)
        assert resolve_winograd("auto", cpu) == winograd.available()
    monkeypatch.setattr(devices, "cpu_class", lambda: "amx")
    assert not resolve_winograd("auto", cpu)  # bf16 tiles outrun Winograd's float32 there
    for explicit in ("fp32", "bf16", "fp16", torch.float32):
        assert not resolve_winograd(explicit, cpu)  # fp32 stays the exact path
    assert not resolve_winograd("auto", torch.device("cuda"))
    assert precision_label(torch.bfloat16, True) == "bf16+winograd"
    assert precision_label(torch.float32, False) == "fp32"


@needs_nnpack
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_winograd_run_stays_close_to_the_exact_one_and_keeps_the_weights(dtype: torch.dtype) -> None:
    model = Runtime(tiny_model("v3"))
    before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    lr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    exact = upscale_tensor(model, lr, UpscaleOptions(steps=2, tile=0))
    fast = upscale_tensor(model, lr, UpscaleOptions(dtype=dtype, steps=2, tile=0, winograd=True))
    assert model.autoencoder.decoder.conv_in.weight.dtype == torch.float32  # the autoencoder stays float32
    assert model.unet.out[2].weight.dtype == dtype
    mse = (fast - exact).square().mean().item()
    # float32: ~115 dB from the exact output; bf16 (the tiny random model amplifies its rounding): ~34 dB,
    # as without Winograd
    assert -10 * torch.log10(torch.tensor(mse)).item() > (90 if dtype == torch.float32 else 30)
    model.prepare(torch.float32, torch.contiguous_format)
    for key, value in model.autoencoder.state_dict().items():
        assert torch.equal(value, before[key]), key
