"""Layers that, on the Winograd path, take their inputs band by band of rows: same values as whole, and the
full-size temporaries they avoid are never formed."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from resshift_cli.nets import layers, swin, winograd
from resshift_cli.nets.layers import GroupNorm32
from resshift_cli.nets.unet import ResBlock, Upsample
from tiny import tiny_model

needs_nnpack = pytest.mark.skipif(not winograd.available(), reason="this PyTorch has no NNPACK for this CPU")


def _randn(*shape: int, seed: int = 0, offset: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + offset


def _close(fast: torch.Tensor, exact: torch.Tensor, tolerance: float = 1e-5) -> bool:
    return fast.shape == exact.shape and ((fast - exact).norm() / exact.norm()).item() < tolerance


def _seeded(module: torch.nn.Module) -> torch.nn.Module:
    """Random (not default-initialised) parameters, so zero-initialised affine terms are exercised too."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module.eval()


@pytest.mark.parametrize("split", [[48], [10, 38], [7, 20, 21]])
def test_scale_shift_from_parts_is_the_group_norm_of_their_concatenation(
    split: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layers, "STATS_BAND_ELEMENTS", 2 * 48 * 13 * 5)  # 5 rows a band: 3 bands, one short
    norm = _seeded(GroupNorm32(16, 48))  # 3 channels a group: groups straddle the parts
    x = _randn(2, 48, 13, 17, offset=4.0) * 3  # means well away from 0
    parts = list(x.split(split, dim=1))
    scale, shift = norm.scale_shift(parts)
    assert scale.shape == shift.shape == (2, 48, 1, 1)
    with torch.no_grad():
        assert _close(x * scale + shift, norm(x), 1e-6)


@needs_nnpack
@pytest.mark.parametrize(("c_in", "split"), [(32, [32]), (96, [64, 32])])
def test_a_res_block_given_parts_in_bands_matches_the_whole_concatenation(
    c_in: int, split: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(winograd, "BAND_BYTES", 2 * c_in * 40 * 4 * 12)  # 12 rows a band, the last short
    block = _seeded(ResBlock(c_in, 32, 16))
    x, emb = _randn(2, c_in, 40, 40, seed=1, offset=1.0), _randn(2, 16, seed=2)
    parts = list(x.split(split, dim=1))
    with torch.inference_mode():
        exact = block(x, emb)
        taken = list(parts)
        assert torch.equal(block(taken, emb), exact)  # the exact path concatenates
        assert taken == []  # the block took the list over
        with winograd.enabled(True):
            taken = list(parts)
            fast = block(taken, emb)
    assert taken == []
    assert _close(fast, exact)
    assert torch.equal(torch.cat(parts, dim=1), x)  # the tensors themselves are left as they were


@needs_nnpack
def test_upsampling_by_rows_matches_the_whole_upsampled_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winograd, "BAND_BYTES", 2 * 8 * 38 * 4 * 6)  # 6-row bands: odd first input rows
    layer = _seeded(Upsample(8))
    x = _randn(2, 8, 17, 19, seed=4)
    with torch.inference_mode():
        exact = layer(x)
        with winograd.enabled(True):
            fast = layer(x)
    assert fast.shape == (2, 8, 34, 38)
    assert _close(fast, exact)


@pytest.mark.parametrize("shift", [0, 4])
def test_swin_block_in_place_and_in_bands_matches_the_whole(
    shift: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swin, "CHUNK_ELEMENTS", 2 * 4 * 64 * 3 * 32)  # 2 rows of windows (or MLP rows) a band
    block = _seeded(swin.SwinTransformerBlock(32, 2, 8, shift, 64, 2.0))
    x = _randn(2, 32, 40, 32, seed=5, offset=0.5)  # 5 rows of windows: the last band short, the shift wraps
    with torch.inference_mode():
        exact = block.feed_forward(block.attend(x))
        attended = block.attend_in_place(x.clone())
        assert _close(attended, block.attend(x), 1e-6)
        fast = block.mlp.normalised_residual(attended, block.norm2)
    assert fast.data_ptr() == attended.data_ptr()  # written in place
    assert _close(fast, exact, 1e-6)


def test_bands_only_inside_the_switch_for_float32_cpu_tensors_outside_autograd() -> None:
    x = torch.zeros(1, 4, 8, 8)
    with torch.no_grad():
        assert not winograd.in_bands(x)
        with winograd.enabled(True):
            assert winograd.in_bands(x) == winograd.available()
            assert not winograd.in_bands(x.bfloat16())
            with torch.enable_grad():
                assert not winograd.in_bands(x)


class _Shapes(TorchDispatchMode):
    """Records (op, output shape) of every operator call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.calls.append((str(func.overloadpacket), tuple(tensor.shape)))
        return out


@needs_nnpack
def test_the_unet_in_bands_forms_no_full_size_concatenation_or_normalised_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(winograd, "BAND_BYTES", 96 * 64 * 4 * 12)  # several bands at the top level
    unet = tiny_model("v3").unet.eval()
    x, lq = _randn(1, 3, 64, 64, seed=6), _randn(1, 3, 64, 64, seed=7)
    t = torch.tensor([2])
    with torch.inference_mode():
        exact = unet(x, t, lq)
        with winograd.enabled(True), _Shapes() as shapes:
            fast = unet(x, t, lq)
    assert _close(fast, exact)
    full = [(op, shape) for op, shape in shapes.calls if len(shape) == 4 and shape[-2:] == (64, 64)]
    assert ("aten.cat", (1, 6, 64, 64)) in full  # the latent and the LR: the network's own input
    full.remove(("aten.cat", (1, 6, 64, 64)))
    assert not [call for call in full if call[0] in ("aten.cat", "aten.native_group_norm")]
    assert not [call for call in full if call[0] == "aten.upsample_nearest2d"]
