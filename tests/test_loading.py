from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from resshift_cli.config import ModelConfig
from resshift_cli.errors import ModelError
from resshift_cli.loading import AUTOENCODER_FILE, CONFIG_FILE, UNET_FILE, load_model
from tiny import tiny_config, tiny_states, write_tiny_folder


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_trip_through_safetensors_is_identical(tmp_path: Path, dtype: torch.dtype) -> None:
    folder = write_tiny_folder(tmp_path / "m", "v3", dtype=dtype)
    assert load_file(folder / UNET_FILE)["out.2.weight"].dtype == dtype
    model = load_model(folder)
    unet_state, ae_state = tiny_states()  # float16 values: exact in both on-disk dtypes
    for key, value in model.unet.state_dict().items():
        assert value.dtype == (torch.int64 if key.endswith("relative_position_index") else torch.float32)
        assert torch.equal(value, unet_state[key].to(value.dtype)), key
    for key, value in model.autoencoder.state_dict().items():
        assert torch.equal(value, ae_state[key].float()), key
    assert model.config == tiny_config("v3")
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())


def test_config_json_round_trip_and_fields(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    data = json.loads((folder / CONFIG_FILE).read_text())
    assert data["format"] == "resshift-model" and data["format_version"] == 1
    assert set(data["diffusion"]) == {
        "steps",
        "kappa",
        "min_noise_level",
        "etas_end",
        "power",
        "scale_factor",
        "normalize_input",
    }
    assert set(data["autoencoder"]) == {"embed_dim", "n_embed", "ddconfig"}
    assert ModelConfig.from_dict(data) == tiny_config()


def test_stored_recomputable_buffers_are_ignored(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    state = load_file(folder / UNET_FILE)
    key = "input_blocks.1.1.blocks.1.attn_mask"
    state[key] = torch.full_like(state[key], 7.0)
    del state["input_blocks.1.1.blocks.0.attn.relative_position_index"]
    save_file(state, folder / UNET_FILE)
    model = load_model(folder)
    assert model.unet.state_dict()[key].abs().max() == 100.0


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    state = load_file(folder / UNET_FILE)
    del state["out.2.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["time_embed.0.weight"] = torch.zeros(3, 3)
    save_file(state, folder / UNET_FILE)
    with pytest.raises(ModelError) as info:
        load_model(folder)
    message = str(info.value)
    assert "missing out.2.bias" in message
    assert "unexpected extra.weight" in message
    assert "time_embed.0.weight (3, 3) (expected (128, 32))" in message
    assert "\n" not in message


def test_truncated_weights_are_a_clear_error(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    data = (folder / AUTOENCODER_FILE).read_bytes()
    (folder / AUTOENCODER_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"autoencoder\.safetensors: not a valid safetensors file"):
        load_model(folder)


def test_garbage_weights_are_a_clear_error(tmp_path: Path) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    (folder / UNET_FILE).write_bytes(b"this is not a tensor file at all")
    with pytest.raises(ModelError, match=r"unet\.safetensors: not a valid safetensors file"):
        load_model(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="something"), "not a resshift model config"),
        (lambda d: d.update(format_version=99), "unsupported format_version 99"),
        (lambda d: d["unet"].update(bogus=1), "unknown UNetConfig field"),
        (lambda d: d.pop("diffusion"), "invalid model config"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    folder = write_tiny_folder(tmp_path / "m")
    data = json.loads((folder / CONFIG_FILE).read_text())
    edit(data)
    (folder / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=message):
        load_model(folder)


def test_missing_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(tmp_path / "nope")
    folder = write_tiny_folder(tmp_path / "m")
    (folder / UNET_FILE).unlink()
    with pytest.raises(ModelError, match=r"unet\.safetensors: missing"):
        load_model(folder)
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not a readable JSON file"):
        load_model(folder)


def test_model_construction_does_not_import_the_compiler_stack() -> None:
    """Building the networks on the meta device must not pull in torch._dynamo/sympy (≈ 0.9 s start-up)."""
    code = (
        "import sys; from resshift_cli.loading import check_state_dicts; from tiny import tiny_config, "
        "tiny_states; check_state_dicts(tiny_config('v3'), *tiny_states(), 'x'); "
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))"
    )
    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests, check=True)
    assert done.stdout.strip() == "[]"


def test_weights_own_their_memory_whatever_the_file_header(tmp_path: Path) -> None:
    """Each tensor is read into a buffer of its own (not a view of a mapped file): the same values stored
    behind headers of different lengths load to the same bits at aligned addresses, and give the same
    float32 output."""
    folder = write_tiny_folder(tmp_path / "m", dtype=torch.float32)
    other = write_tiny_folder(tmp_path / "n", dtype=torch.float32)
    state = load_file(other / UNET_FILE)
    save_file(state, other / UNET_FILE, metadata={"padding": "x" * 13})  # shifts every tensor by a few bytes
    a, b = load_model(folder), load_model(other)
    storages = set()
    for (key, x), y in zip(a.unet.state_dict().items(), b.unet.state_dict().values(), strict=True):
        assert torch.equal(
            x.view(torch.int32) if x.is_floating_point() else x,
            y.view(torch.int32) if y.is_floating_point() else y,
        ), key
        assert x.data_ptr() % 16 == 0 and y.data_ptr() % 16 == 0, key
        storages.add(x.untyped_storage().data_ptr())
    assert len(storages) == len(a.unet.state_dict())
    noise = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 64, 64, generator=noise)
    lq, t = torch.rand(1, 3, 64, 64, generator=noise), torch.tensor([1])
    with torch.inference_mode():
        assert torch.equal(a.unet(x, t, lq), b.unet(x, t, lq))
