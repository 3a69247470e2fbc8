"""`resshift doctor`'s CPU class lines: the class, what lowers it, and what the defaults pick there."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from resshift_cli import devices
from resshift_cli.cli import app
from resshift_cli.nets import winograd

ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16"})


def _cpu_lines(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[str, str, str]:
    monkeypatch.setattr(devices, "cpu_flags", lambda: ZEN4)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    cpu = next(line for line in lines if line.startswith("  cpu: "))
    cls = next(line for line in lines if line.startswith("  cpu class: "))
    defaults = next(line for line in lines if line.startswith("  cpu defaults: "))
    return cpu, cls, defaults


def test_doctor_shows_the_cpu_class_and_its_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winograd, "available", lambda: True)
    cpu, cls, defaults = _cpu_lines(monkeypatch, OMP_NUM_THREADS="3")
    assert cpu.endswith("(auto: bf16+winograd)")
    capability = torch.backends.cpu.get_cpu_capability()
    assert cls == f"  cpu class: avx512-bf16 (hardware avx512-bf16; torch capability {capability})"
    assert defaults == (
        "  cpu defaults: precision auto → bf16+winograd (Winograd 3×3 convolutions (NNPACK), autoencoder"
        " float32), channels-last memory format,"
        f" {torch.get_num_threads()} threads (OMP_NUM_THREADS), denoiser tile batch 1"
    )


def test_doctor_names_the_cap_and_follows_it_to_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(winograd, "available", lambda: False)
    cpu, cls, defaults = _cpu_lines(monkeypatch, ONEDNN_MAX_CPU_ISA="AVX2")
    assert cpu.endswith("(auto: fp32)")
    assert cls.startswith("  cpu class: avx2 (hardware avx512-bf16, capped by ONEDNN_MAX_CPU_ISA=AVX2; ")
    threads = devices.available_cpus()
    assert defaults == (
        "  cpu defaults: precision auto → fp32 (direct convolutions (no NNPACK for this CPU)), contiguous"
        f" memory format, {threads} threads, denoiser tile batch 1"
    )
