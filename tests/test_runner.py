"""The run-time state of a model: precision casts and their exact undoing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resshift_cli.errors import ModelError
from resshift_cli.loading import load_model, write_model_folder
from resshift_cli.pipeline import UpscaleOptions
from resshift_cli.runner import Runtime, upscale_tensor
from tiny import tiny_model, write_tiny_folder


def test_prepare_casts_compute_weights_and_restores_float32_exactly() -> None:
    model = Runtime(tiny_model("v3"))
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    model.prepare(torch.bfloat16, torch.channels_last)
    conv = model.autoencoder.decoder.conv_in.weight
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
    assert model.unet.time_embed[0].weight.dtype == torch.bfloat16  # linear layers too
    assert model.autoencoder.decoder.norm_out.weight.dtype == torch.float32  # norms stay float32
    assert model.autoencoder.quantize.embedding.weight.dtype == torch.float32  # so does the codebook
    cast = conv.data_ptr()
    model.prepare(torch.bfloat16, torch.channels_last)  # every image of a batch asks again: no re-cast
    assert conv.data_ptr() == cast
    model.prepare(torch.float16, torch.contiguous_format)  # switching between reduced precisions
    assert conv.dtype == torch.float16
    model.prepare(torch.float32, torch.contiguous_format)
    for key, value in model.unet.state_dict().items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype, key
    assert conv.dtype == torch.float32 and conv.is_contiguous()


def test_a_bare_loaded_model_keeps_its_float32_weights_after_a_reduced_precision_run() -> None:
    model = tiny_model("v3")
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = upscale_tensor(model, lr, UpscaleOptions(dtype=torch.bfloat16, steps=1))
    assert out.shape == (1, 3, 32, 32)
    for key, value in model.unet.state_dict().items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype, key


def _folder_model(tmp_path: Path) -> tuple[Runtime, dict[str, torch.Tensor]]:
    """A tiny model written to a folder and loaded back: its weights are what the files hold."""
    model = load_model(write_tiny_folder(tmp_path / "m"))
    return Runtime(model), {k: v.clone() for k, v in model.unet.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_weights_the_folder_holds_are_read_back_from_it_not_kept_in_memory(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    model, before = _folder_model(tmp_path)
    model.prepare(dtype, torch.channels_last)
    assert not model._remainders and not model._masters  # only the cast copies stay in memory
    model.prepare(torch.float32, torch.contiguous_format)
    for key, value in model.unet.state_dict().items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype, key


def test_weights_changed_in_memory_keep_their_own_exact_copy(tmp_path: Path) -> None:
    model, _ = _folder_model(tmp_path)
    changed = model.unet.out[-1].weight
    changed.data += 0.125
    expected = changed.detach().clone()
    model.prepare(torch.bfloat16, torch.channels_last)
    assert list(model._remainders) == ["unet.out.2.weight"]  # only the weight the file does not hold
    model.prepare(torch.float32, torch.contiguous_format)
    assert torch.equal(changed, expected)


def test_a_weight_file_changed_after_loading_is_an_error_not_wrong_weights(tmp_path: Path) -> None:
    model, _ = _folder_model(tmp_path)
    model.prepare(torch.bfloat16, torch.channels_last)
    fresh = load_model(tmp_path / "m")
    doubled = {k: v * 2 for k, v in fresh.unet.state_dict().items()}
    write_model_folder(tmp_path / "m", fresh.config, doubled, fresh.autoencoder.state_dict())
    with pytest.raises(ModelError, match="changed since the model was loaded"):
        model.prepare(torch.float32, torch.contiguous_format)


def _lr(side: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))


def _residency_log(model: Runtime) -> list[tuple[str, bool]]:
    """(stage, whether the other network held its weights) at the start of every network call."""
    log: list[tuple[str, bool]] = []
    unet_weight, decoder_weight = (
        model.model.unet.out[2].weight,
        model.model.autoencoder.decoder.conv_in.weight,
    )
    model.model.autoencoder.encoder.register_forward_pre_hook(
        lambda *_: log.append(("encode", unet_weight.numel() > 0))
    )
    model.model.unet.register_forward_pre_hook(lambda *_: log.append(("denoise", decoder_weight.numel() > 0)))
    model.model.autoencoder.decoder.register_forward_pre_hook(
        lambda *_: log.append(("decode", unet_weight.numel() > 0))
    )
    return log


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_the_cpu_the_networks_take_turns_holding_their_weights(tmp_path: Path, dtype: torch.dtype) -> None:
    model, before = _folder_model(tmp_path)
    log = _residency_log(model)
    options = UpscaleOptions(dtype=dtype, steps=2, tile=0)
    lean = upscale_tensor(model, _lr(), options)
    assert {held for _, held in log} == {False}  # the idle network never held its weights
    assert [stage for stage, _ in log] == ["encode", "denoise", "denoise", "decode"]
    whole = upscale_tensor(Runtime(load_model(tmp_path / "m"), lean=False), _lr(), options)
    assert torch.equal(lean, whole)  # read back exactly as prepared
    model.close()
    for key, value in model.unet.state_dict().items():  # both resident again, as loaded
        assert torch.equal(value, before[key]), key


def test_the_official_chop_and_models_without_files_keep_both_networks(tmp_path: Path) -> None:
    model, _ = _folder_model(tmp_path)
    log = _residency_log(model)
    upscale_tensor(model, _lr(), UpscaleOptions(steps=1, tile=64, official_tiling=True))
    assert log and {held for _, held in log} == {True}  # alternates per patch: reading would cost more
    in_memory = Runtime(tiny_model("v3"))
    log = _residency_log(in_memory)
    upscale_tensor(in_memory, _lr(), UpscaleOptions(steps=1, tile=0))
    assert {held for _, held in log} == {True}  # nothing to read the weights back from


def test_weights_changed_in_memory_are_never_dropped_for_the_file_s(tmp_path: Path) -> None:
    model, _ = _folder_model(tmp_path)
    changed = model.model.unet.out[2].weight
    changed.data += 0.125
    expected = changed.detach().clone()
    reference = Runtime(load_model(tmp_path / "m"), lean=False)
    reference.model.unet.out[2].weight.data += 0.125
    options = UpscaleOptions(steps=2, tile=0)
    assert torch.equal(upscale_tensor(model, _lr(), options), upscale_tensor(reference, _lr(), options))
    assert torch.equal(changed, expected)


def test_a_weight_file_changed_during_a_run_is_an_error_not_wrong_weights(tmp_path: Path) -> None:
    model, _ = _folder_model(tmp_path)
    fresh = load_model(tmp_path / "m")
    halved = {k: v / 2 for k, v in fresh.autoencoder.state_dict().items()}

    def rewrite(*_: object) -> None:  # while the denoiser runs, the autoencoder's weights are dropped
        write_model_folder(tmp_path / "m", fresh.config, fresh.unet.state_dict(), halved)

    model.model.unet.register_forward_pre_hook(rewrite)
    with pytest.raises(ModelError, match="changed since the model was loaded"):
        upscale_tensor(model, _lr(), UpscaleOptions(steps=1, tile=0))
