"""The run-time state of a model: precision casts and their exact undoing."""

from __future__ import annotations

import torch

from resshift_cli.pipeline import UpscaleOptions
from resshift_cli.runner import Runtime, upscale_tensor
from tiny import tiny_model


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
