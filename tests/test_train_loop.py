"""The training loop on a micro model: learning, exact resume, atomic checkpoints, accumulation, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import resshift_cli.train.checkpoint as checkpoint_module
from resshift_cli.errors import UsageError
from resshift_cli.loading import load_model
from resshift_cli.pipeline import UpscaleOptions, upscale_tensor
from resshift_cli.train import PairOptions, TrainEvent, TrainOptions, TrainPairs, ValidationSet, fit, scan
from resshift_cli.train.checkpoint import read_state
from resshift_cli.train.loop import LAST, Trainer, resume_model
from train_helpers import (
    one_thread,  # noqa: F401 (an autouse fixture)
    write_images,
    write_micro_folder,
)

PAIRS = PairOptions(crop=64, scale=4, degradation="bicubic")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    return {
        "model": write_micro_folder(root / "micro"),
        "hr": write_images(root / "hr", 4),
        "val": write_images(root / "val", 2, seed=1),
    }


def options(**changes: object) -> TrainOptions:
    base = TrainOptions(iterations=6, batch_size=2, learning_rate=1e-3, ema_rate=0.5, save_every=2)
    return replace(base, **changes)


def train(setup: dict[str, Path], run: Path, opts: TrainOptions, **kwargs: object) -> Path:
    data = TrainPairs(scan(setup["hr"], PAIRS), PAIRS, opts.seed)
    model = resume_model(run) if kwargs.get("resume") else load_model(setup["model"])
    return fit(model, data, run, opts, torch.device("cpu"), **kwargs)  # type: ignore[arg-type]


def log(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet.safetensors")


def test_training_lowers_the_validation_loss(setup: dict[str, Path], tmp_path: Path) -> None:
    pairs = ValidationSet.make(scan(setup["val"], PAIRS), PAIRS, 0)
    events: list[TrainEvent] = []
    final = train(
        setup,
        tmp_path / "run",
        options(iterations=30, val_every=30, save_every=0),
        val=pairs,
        callback=events.append,
    )
    validations = [e for e in log(tmp_path / "run") if "val_loss" in e]
    assert [v["iteration"] for v in validations] == [0, 30]
    assert validations[1]["val_loss"] < 0.7 * validations[0]["val_loss"]
    assert all(v["val_psnr"] > 0 for v in validations)
    assert [e.iteration for e in events] == list(range(31))
    assert [e.iteration for e in events if e.validation is not None] == [0, 30]
    assert load_model(final).config.name == "run"  # a model folder `upscale --model` takes


def test_resume_after_an_interrupt_continues_the_same_run(setup: dict[str, Path], tmp_path: Path) -> None:
    train(setup, tmp_path / "whole", options())

    def stop_at_3(event: TrainEvent) -> None:
        if event.iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(setup, tmp_path / "split", options(), callback=stop_at_3)
    assert read_state(tmp_path / "split" / LAST)["iteration"] == 3
    train(setup, tmp_path / "split", options(), resume=True)
    assert [e["loss"] for e in log(tmp_path / "split")] == [e["loss"] for e in log(tmp_path / "whole")]
    for name in ("final", "last"):
        whole, split = weights(tmp_path / "whole" / name), weights(tmp_path / "split" / name)
        assert all(torch.equal(whole[k], split[k]) for k in whole)
    whole, split = read_state(tmp_path / "whole" / LAST), read_state(tmp_path / "split" / LAST)
    assert all(torch.equal(whole["unet"][k], split["unet"][k]) for k in whole["unet"])


def test_a_run_killed_while_saving_keeps_the_previous_checkpoint(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves = []
    real_save = torch.save

    def dying_save(state: object, path: Path) -> None:
        saves.append(path)
        if len(saves) == 2:  # the second checkpoint: half a file, then the process dies
            Path(path).write_bytes(b"truncated")
            raise SystemExit("killed")
        real_save(state, path)

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(SystemExit):
        train(setup, tmp_path / "run", options())
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert read_state(tmp_path / "run" / LAST)["iteration"] == 2
    load_model(tmp_path / "run" / LAST)
    # dying between moving the old checkpoint aside and renaming the new one in: the old one comes back
    (tmp_path / "run" / LAST).rename(tmp_path / "run" / ".last.old")
    train(setup, tmp_path / "run", options(), resume=True)
    assert read_state(tmp_path / "run" / LAST)["iteration"] == 6
    assert [e["iteration"] for e in log(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]


def _one_step(setup: dict[str, Path], tmp_path: Path, **changes: object) -> dict[str, torch.Tensor]:
    data = TrainPairs(scan(setup["hr"], PAIRS), PAIRS, 0)
    trainer = Trainer(load_model(setup["model"]), data, tmp_path / "step", options(batch_size=4, **changes))
    hr, lr = (torch.stack(t) for t in zip(*(data[g] for g in range(4)), strict=True))
    trainer.step(hr, lr, [0, 1, 2, 3])
    return {k: v.grad.clone() for k, v in trainer.model.unet.named_parameters() if v.grad is not None}


def test_micro_batches_and_checkpointing_give_the_full_batch_update(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    full = _one_step(setup, tmp_path)
    for changes in ({"micro_batch": 1}, {"micro_batch": 3, "grad_checkpoint": True}):
        other = _one_step(setup, tmp_path, **changes)
        assert other.keys() == full.keys() and len(full) > 50
        floor = 1e-7 * max(g.abs().max() for g in full.values())  # biases feeding a GroupNorm: g ≈ 0
        for key in full:  # gradients: Adam's first step is ±lr wherever |g| >> eps and would hide errors
            assert (other[key] - full[key]).abs().max() <= 1e-5 * full[key].abs().max() + floor, key


def test_bf16_autocast_trains(setup: dict[str, Path], tmp_path: Path) -> None:
    train(setup, tmp_path / "run", options(iterations=2, precision="bf16"))
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log(tmp_path / "run"))
    assert read_state(tmp_path / "run" / LAST)["scaler"] == {}  # no loss scaling outside fp16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_scales_the_loss(setup: dict[str, Path], tmp_path: Path) -> None:
    data = TrainPairs(scan(setup["hr"], PAIRS), PAIRS, 0)
    opts = options(iterations=4, precision="fp16")
    fit(load_model(setup["model"]), data, tmp_path / "run", opts, torch.device("cuda"))
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log(tmp_path / "run"))
    assert read_state(tmp_path / "run" / LAST)["scaler"]["scale"] > 0


def test_zero_iterations_from_a_model_is_that_model(setup: dict[str, Path], tmp_path: Path) -> None:
    final = train(setup, tmp_path / "run", options(iterations=0))
    source, copy = load_model(setup["model"]), load_model(final)
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    options_ = UpscaleOptions(tile=0)
    assert torch.equal(upscale_tensor(source, lr, options_), upscale_tensor(copy, lr, options_))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_reproduce_one(setup: dict[str, Path], tmp_path: Path) -> None:
    command = [
        "train", str(setup["hr"]), "--from", str(setup["model"]), "--iterations", "4", "--batch-size", "4",
        "--micro-batch", "1", "--learning-rate", "1e-3", "--degradation", "bicubic", "--crop", "64",
        "--workers", "0", "--device", "cpu", "--precision", "fp32", "--save-every", "0", "-q",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    two = subprocess.run(
        [*torchrun, "-m", "resshift_cli", *command, "-o", str(tmp_path / "two")], env=env, capture_output=True
    )
    assert two.returncode == 0, two.stderr.decode()[-2000:]
    one = subprocess.run(
        [sys.executable, "-m", "resshift_cli", *command, "-o", str(tmp_path / "one")],
        env=env,
        capture_output=True,
    )
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    losses = [torch.tensor([e["loss"] for e in log(tmp_path / name)]) for name in ("one", "two")]
    assert len(losses[0]) == 4
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=0)
    one_w, two_w = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    for key in one_w:
        torch.testing.assert_close(two_w[key], one_w[key], rtol=1e-5, atol=1e-6)


def test_resuming_for_more_iterations_keeps_the_warm_up(setup: dict[str, Path], tmp_path: Path) -> None:
    def stop_at(iteration: int) -> Callable[[TrainEvent], None]:
        def callback(event: TrainEvent) -> None:
            if event.iteration == iteration:
                raise KeyboardInterrupt

        return callback

    with pytest.raises(KeyboardInterrupt):  # 20 iterations: default warm-up 2
        train(setup, tmp_path / "run", options(iterations=20, warmup=None), callback=stop_at(1))
    with pytest.raises(KeyboardInterrupt):  # 40 would default to 4; the run keeps its 2
        train(setup, tmp_path / "run", options(iterations=40, warmup=None), resume=True, callback=stop_at(3))
    assert [e["lr"] for e in log(tmp_path / "run")] == pytest.approx([5e-4, 1e-3, 1e-3])
    with pytest.raises(UsageError, match="warmup"):
        train(setup, tmp_path / "run", options(iterations=40, warmup=4), resume=True)
