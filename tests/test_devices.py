from __future__ import annotations

import pytest
import torch

from resshift_cli.devices import (
    autocast,
    available_cpus,
    configure_threads,
    cpu_has_native_bf16,
    generator,
    memory_format,
    resolve_device,
    resolve_precision,
)
from resshift_cli.errors import DeviceError, UsageError


def test_auto_and_environment_pick_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")
    monkeypatch.setenv("RESSHIFT_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_missing_cuda_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="CUDA was requested"):
        resolve_device("cuda:0")


def test_unknown_device_and_precision_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        resolve_device("tpu")
    with pytest.raises(UsageError):
        resolve_precision("fp8", torch.device("cpu"))


def test_precision_policy() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("fp16", cpu) == torch.float16


def test_autocast_runs_matmuls_in_the_requested_dtype() -> None:
    a = torch.randn(4, 4)
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), torch.float32):
        assert (a @ a).dtype == torch.float32


def test_generator_is_seeded_on_the_cpu() -> None:
    assert torch.equal(torch.randn(3, generator=generator(9)), torch.randn(3, generator=generator(9)))
    assert generator(9).device.type == "cpu"


def test_threads_follow_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert configure_threads() == available_cpus() >= 1
    finally:
        torch.set_num_threads(before)


def test_channels_last_only_for_reduced_precision_on_cpu_and_cuda() -> None:
    cpu, mps = torch.device("cpu"), torch.device("mps")
    assert memory_format(cpu, torch.float32) == torch.contiguous_format
    assert memory_format(cpu, torch.bfloat16) == torch.channels_last
    assert memory_format(torch.device("cuda"), torch.float16) == torch.channels_last
    assert memory_format(mps, torch.float16) == torch.contiguous_format
