from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resshift_cli import devices
from resshift_cli.devices import (
    CPU_CLASSES,
    autocast,
    available_cpus,
    class_of_flags,
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


AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16"})
SKYLAKE = frozenset({"avx2", "avx512f"})
HASWELL = frozenset({"avx", "avx2"})


@pytest.fixture
def uncapped(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    return monkeypatch


def test_cpu_class_of_cpuinfo_flags() -> None:
    assert [class_of_flags(f) for f in (AMX, ZEN4, SKYLAKE, HASWELL, frozenset({"sse4_2"}))] == list(
        CPU_CLASSES
    )
    assert class_of_flags(frozenset({"avx2", "amx_tile"})) == "avx2"  # AMX tiles without BF16: not the class


def test_cpu_flags_are_read_from_the_flags_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC with avx512f in its name\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert devices.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert devices.cpu_flags(tmp_path / "missing") is None
    monkeypatch.setattr(devices, "cpu_flags", lambda: None)
    assert devices.cpu_hardware_class() in CPU_CLASSES  # torch's own detection stands in


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        (AMX, {}, "amx"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "amx"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, "avx512-bf16"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "avx512"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "avx2"),
        (AMX, {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2"),
        (AMX, {"ATEN_CPU_CAPABILITY": "avx512"}, "amx"),
        (AMX, {"ATEN_CPU_CAPABILITY": "default"}, "other"),
        (ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "avx512-bf16"),  # a cap never raises the class
        (HASWELL, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "avx2"),
        (ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx2"}, "avx2"),
    ],
)
def test_cpu_class_is_the_hardware_lowered_by_the_caps(uncapped, flags, env, expected) -> None:
    uncapped.setattr(devices, "cpu_flags", lambda: flags)
    for name, value in env.items():
        uncapped.setenv(name, value)
    assert devices.cpu_class() == expected
    native = expected in ("amx", "avx512-bf16")
    assert devices.cpu_has_native_bf16() is native
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert resolve_precision("bf16", cpu) == torch.bfloat16  # an explicit precision is never overridden


def test_caps_name_the_variables_that_lower_the_class(uncapped) -> None:
    assert devices.cpu_class_caps() == {}
    uncapped.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    uncapped.setenv("ATEN_CPU_CAPABILITY", "avx512")
    assert devices.cpu_class_caps() == {"ONEDNN_MAX_CPU_ISA=AVX2": "avx2"}
