"""Official `.pth` → model folder: canonicalisation, the restricted loader, width inference, conversion."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resshift_cli.cache import convert_to_folder
from resshift_cli.config import DiffusionConfig
from resshift_cli.convert import (
    canonicalize,
    convert_state_dicts,
    infer_config,
    load_pth,
    strip_prefixes,
)
from resshift_cli.errors import ModelError
from resshift_cli.loading import AUTOENCODER_FILE, UNET_FILE, is_recomputed, load_model, write_model_folder
from resshift_cli.registry import preset
from servers import tiny_release, torch_bytes


class Trap:
    """A pickle payload that creates `marker` when unpickled by an unrestricted loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.fixture(scope="module")
def golden_states(golden_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return load_file(golden_dir / "tiny_unet.safetensors"), load_file(golden_dir / "tiny_vq_f4.safetensors")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


# Canonicalisation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["module.a.weight", "module.b"], ["a.weight", "b"]),
        (["_orig_mod.a", "_orig_mod.b"], ["a", "b"]),
        (["module._orig_mod.a", "module._orig_mod.b"], ["a", "b"]),
        (["_orig_mod.module.a"], ["a"]),
        (["module.a", "b"], ["module.a", "b"]),
        (["a.module.b"], ["a.module.b"]),
    ],
)
def test_strip_prefixes_only_when_every_key_has_one(keys: list[str], expected: list[str]) -> None:
    state = {k: torch.zeros(1) for k in keys}
    assert list(strip_prefixes(state)) == expected


def test_canonicalize_unwraps_state_dict_and_strips() -> None:
    weight = torch.ones(2)
    checkpoint = {"state_dict": {"module.x.weight": weight}}
    assert canonicalize(checkpoint, "f.pth") == {"x.weight": weight}


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ({"a": torch.zeros(1), "epoch": 3}, "entry 'epoch' is a int, not a tensor"),
        ({"state_dict": {"a": [torch.zeros(1)]}}, "entry 'a' is a list"),
        ([torch.zeros(1)], "not a state dict (the file holds a list)"),
    ],
)
def test_canonicalize_refuses_anything_but_tensors(checkpoint: object, message: str) -> None:
    with pytest.raises(ModelError, match=r"^f\.pth: ") as err:
        canonicalize(checkpoint, "f.pth")
    assert message in str(err.value)


# The restricted loader ------------------------------------------------------------------------------------


def test_load_pth_reads_official_layouts(tmp_path: Path, golden_dir: Path, golden_states) -> None:
    unet, autoencoder = golden_states
    for wrapping in ("ddp", "compiled", "plain"):
        files = tiny_release(golden_dir, wrapping)
        assert _same(
            load_pth(_write(tmp_path / f"{wrapping}.pth", files["resshift_realsrx4_s4_v3.pth"])), unet
        )
    assert _same(load_pth(_write(tmp_path / "ae.pth", files["autoencoder_vq_f4.pth"])), autoencoder)


def test_load_pth_reads_the_legacy_format(tmp_path: Path) -> None:
    state = {"module.w": torch.arange(6.0).reshape(2, 3)}
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert _same(load_pth(path), {"w": state["module.w"]})


@pytest.mark.parametrize("legacy", [False, True])
def test_booby_trapped_pickle_is_refused_and_never_runs(tmp_path: Path, legacy: bool) -> None:
    live_marker, marker = tmp_path / "live", tmp_path / "pwned"
    kwargs = {"_use_new_zipfile_serialization": False} if legacy else {}
    torch.save({"state_dict": {"w": torch.zeros(1), "x": Trap(live_marker)}}, tmp_path / "live.pth", **kwargs)
    torch.load(tmp_path / "live.pth", weights_only=False)
    assert live_marker.exists(), "the payload must be real for this test to mean anything"

    torch.save({"state_dict": {"w": torch.zeros(1), "x": Trap(marker)}}, tmp_path / "trap.pth", **kwargs)
    with pytest.raises(ModelError, match=r"trap\.pth: refused: .*exec.*nothing in it ran"):
        load_pth(tmp_path / "trap.pth")
    assert not marker.exists()


def test_plain_pickle_with_payload_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "plain.pth", pickle.dumps(Trap(marker), protocol=2))
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_pth(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file, not a PyTorch checkpoint"),
        (b"<!DOCTYPE html><html>Sign in</html>", "not a PyTorch checkpoint (an HTML/XML page)"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "not a PyTorch checkpoint (a file starting with b'\\x89PNG"),
    ],
)
def test_files_that_are_not_checkpoints(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(ModelError) as err:
        load_pth(_write(tmp_path / "x.pth", data))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_checkpoint_is_reported_as_corrupt(tmp_path: Path) -> None:
    data = torch_bytes({"w": torch.zeros(1000)})
    with pytest.raises(ModelError, match=r"x\.pth: corrupt or truncated PyTorch checkpoint \(.+\)$"):
        load_pth(_write(tmp_path / "x.pth", data[: len(data) // 2]))


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load_pth(tmp_path / "absent.pth")


# Width inference and conversion ---------------------------------------------------------------------------


def test_infer_config_reads_the_tiny_widths(golden_dir: Path, golden_states) -> None:
    config = infer_config(*golden_states, name="tiny", diffusion=preset("realsr-v3"))
    tiny = json.loads((golden_dir / "tiny_config.json").read_text())
    unet, autoencoder = config.to_dict()["unet"], config.to_dict()["autoencoder"]
    assert {k: unet[k] for k in tiny["unet"]} == {k: _tuple(v) for k, v in tiny["unet"].items()}
    assert autoencoder["ddconfig"] == {k: _tuple(v) for k, v in tiny["autoencoder"]["ddconfig"].items()}
    assert (autoencoder["n_embed"], autoencoder["embed_dim"]) == (8192, 3)
    assert (config.name, config.scale, config.diffusion.steps) == ("tiny", 4, 4)


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def test_infer_config_keeps_released_widths_for_missing_keys() -> None:
    config = infer_config({}, {}, name="x", diffusion=DiffusionConfig())
    assert (config.unet.model_channels, config.unet.swin_embed_dim, config.autoencoder.ddconfig.ch) == (
        160,
        192,
        128,
    )


def test_convert_official_round_trips(tmp_path: Path, golden_dir: Path, golden_states) -> None:
    files = tiny_release(golden_dir, "compiled")
    unet_pth = _write(tmp_path / "u.pth", files["resshift_realsrx4_s4_v3.pth"])
    autoencoder_pth = _write(tmp_path / "a.pth", files["autoencoder_vq_f4.pth"])
    config = convert_to_folder(
        unet_pth, autoencoder_pth, tmp_path / "model", name="realsr-v3", diffusion=preset("realsr-v3")
    )
    assert config.unet.model_channels == 32
    unet, autoencoder = golden_states
    assert _same(load_file(tmp_path / "model" / UNET_FILE), unet)
    assert _same(load_file(tmp_path / "model" / AUTOENCODER_FILE), autoencoder)
    assert load_model(tmp_path / "model").config == config


def test_different_architecture_names_the_keys(tmp_path: Path, golden_states) -> None:
    unet, autoencoder = golden_states
    unet = {k: v for k, v in unet.items() if k != "out.2.weight"} | {"extra.weight": torch.zeros(1)}
    autoencoder = {**autoencoder, "decoder.conv_out.weight": torch.zeros(3, 32, 1, 1)}
    with pytest.raises(ModelError, match=r"missing out\.2\.weight; unexpected extra\.weight") as err:
        convert_state_dicts(unet, autoencoder, "x", DiffusionConfig(), source="src")
    assert "\n" not in str(err.value)


def test_mis_shaped_autoencoder_is_named(tmp_path: Path, golden_states) -> None:
    unet, autoencoder = golden_states
    autoencoder = {**autoencoder, "decoder.conv_out.weight": torch.zeros(3, 32, 1, 1)}
    with pytest.raises(ModelError, match=r"\(autoencoder\).*mis-shaped decoder\.conv_out\.weight"):
        convert_state_dicts(unet, autoencoder, "x", DiffusionConfig(), source="src")


def test_swapped_files_are_detected(tmp_path: Path, golden_states) -> None:
    unet, autoencoder = golden_states
    with pytest.raises(ModelError, match="swapped"):
        convert_state_dicts(autoencoder, unet, "x", DiffusionConfig(), source="src")


def test_recomputed_buffers_are_not_required(tmp_path: Path, golden_states) -> None:
    unet, autoencoder = golden_states
    trimmed = {k: v for k, v in unet.items() if not is_recomputed(k)}
    assert len(trimmed) < len(unet)
    converted = convert_state_dicts(trimmed, autoencoder, "x", DiffusionConfig(), source="src")
    write_model_folder(tmp_path / "m", converted.config, converted.unet, converted.autoencoder)
    assert load_model(tmp_path / "m").config == converted.config
