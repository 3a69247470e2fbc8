"""Smoke test of benchmarks/bench.py on the tiny golden model: table layout, baseline ratio and PSNR."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from resshift_cli import devices
from resshift_cli.devices import cpu_class
from tiny import write_tiny_folder

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("bench") / "m")


@pytest.fixture(autouse=True)
def restore_threads():
    """`--threads` sets torch's process-wide thread count; put it back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def uncapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caps of a CPU class are the benchmark's to set: none leak in from the caller's environment."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)


def _run(bench: ModuleType, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    common = ["--sizes", "16", "--tiles", "0", "--device", "cpu", "--threads", "1", "--no-subprocess"]
    assert bench.main([*common, *options]) == 0
    return capsys.readouterr().out


def test_table_has_every_column_and_the_baseline_row(bench, tiny_folder, capsys):
    out = _run(bench, capsys, "--model", str(tiny_folder), "--precisions", "fp32")
    header, rule, *rows = out.splitlines()
    assert header.split() == [word for name, _ in bench.COLUMNS for word in name.split()]
    assert set(rule) == {"-", " "}
    cells = rows[0].split()
    assert cells[:8] == ["tiny-v3", "cpu", f"native={cpu_class()}", "fp32", "16x16", "off", "off", "4"]
    assert cells[-2:] == ["1.00", "inf"]
    assert float(cells[8]) == pytest.approx(64 * 64 / 1e6, abs=1e-3)
    assert cells[10] == "-"  # no warm-up run without --compile
    assert rows[1].startswith("peak GiB: rss")
    assert rows[2].startswith(f"cpu class {cpu_class()}: no caps; torch capability ")


def test_json_reports_stages_and_finite_psnr_against_fp32(bench, tiny_folder, capsys):
    out = _run(bench, capsys, "--model", str(tiny_folder), "--precisions", "fp32,bf16", "--json")
    base, bf16 = json.loads(out)
    assert (base["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert base["psnr_db"] is None and base["speedup"] == 1.0
    assert math.isfinite(bf16["psnr_db"]) and bf16["psnr_db"] > 20
    for result in (base, bf16):
        assert result["unet_calls"] == result["steps"] == 4
        assert all(result["stages"][stage] > 0 for stage in bench.STAGES)
        assert sum(result["stages"].values()) <= result["total_s"]
        assert result["peak_gib"] > 0


def test_tile_covering_the_image_is_the_untiled_run(bench):
    args = bench.parser().parse_args(["--sizes", "16,100", "--tiles", "64,128", "--precisions", "bf16"])
    planned = [(c.size, c.tile, c.tile_overlap, c.precision) for c in bench.plan_cases(args)]
    assert planned == [
        (16, 0, 0, "fp32"),
        (16, 0, 0, "bf16"),
        (100, 0, 0, "fp32"),
        (100, 64, 16, "bf16"),
        (100, 128, 32, "bf16"),  # whole denoiser; the cost model may still tile the autoencoder
    ]


def test_compile_both_adds_a_compiled_twin_of_every_case_and_one_eager_baseline(bench):
    args = bench.parser().parse_args(["--sizes", "64", "--precisions", "bf16", "--compile", "both"])
    planned = [(c.precision, c.compile) for c in bench.plan_cases(args)]
    assert planned == [("fp32", False), ("bf16", False), ("bf16", True)]


def test_fewer_steps_are_timed_against_the_full_step_fp32_run(bench, tiny_folder, capsys):
    out = _run(bench, capsys, "--model", str(tiny_folder), "--precisions", "fp32", "--steps", "4,2", "--json")
    full, same, fewer = json.loads(out)
    assert (full["steps"], full["unet_calls"], full["psnr_db"]) == (4, 4, None)
    assert (same["steps"], same["psnr_db"]) == (4, None)  # all trained steps: the baseline bit for bit
    assert (fewer["steps"], fewer["unet_calls"]) == (2, 2)
    assert math.isfinite(fewer["psnr_db"]) and fewer["row"]["steps"] == 2
    assert fewer["row"]["s/step"] == pytest.approx(fewer["stages"]["denoise"] / 2)


def test_steps_plan_one_full_step_baseline(bench):
    args = bench.parser().parse_args(["--sizes", "64", "--precisions", "bf16", "--steps", "15,5"])
    planned = [(c.precision, c.steps) for c in bench.plan_cases(args)]
    assert planned == [("fp32", 0), ("bf16", 15), ("bf16", 5)]


def test_a_bf16_baseline_is_the_full_step_bf16_case_itself(bench):
    args = ["--sizes", "64", "--precisions", "bf16", "--steps", "0,5", "--baseline-precision", "bf16"]
    planned = [(c.precision, c.steps) for c in bench.plan_cases(bench.parser().parse_args(args))]
    assert planned == [("bf16", 0), ("bf16", 5)]


ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16"})


def test_cpu_classes_plan_one_baseline_each_and_outermost(bench):
    args = ["--sizes", "64", "--precisions", "auto", "--cpu-class", "avx512-bf16,avx2"]
    planned = [(c.cpu_class, c.precision) for c in bench.plan_cases(bench.parser().parse_args(args))]
    assert planned == [("avx512-bf16", "fp32"), ("avx512-bf16", "auto"), ("avx2", "fp32"), ("avx2", "auto")]
    assert bench.parser().parse_args([]).cpu_class == ["native"]


def test_each_class_runs_under_its_caps_and_native_under_none(bench):
    base = {"PATH": "/bin", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    expected = {
        "native": {},
        "amx": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "ATEN_CPU_CAPABILITY": "avx512"},
        "avx512-bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx512"},
        "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512"},
        "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    }
    for name, caps in expected.items():
        assert bench.class_environment(name, base) == {"PATH": "/bin", **caps}


@pytest.mark.parametrize("name", ["amx", "avx512-bf16", "avx512", "avx2"])
def test_the_caps_of_a_class_give_that_class_and_its_precision(bench, monkeypatch, name):
    """Under each class's environment an AMX machine computes at exactly that class; auto follows bf16."""
    monkeypatch.setattr(devices, "cpu_flags", lambda: ZEN4 | {"amx_tile", "amx_bf16"})
    for variable, value in bench.class_environment(name, {}).items():
        monkeypatch.setenv(variable, value)
    assert devices.cpu_class() == name
    native = name in ("amx", "avx512-bf16")
    assert devices.resolve_precision("auto", torch.device("cpu")) == (
        torch.bfloat16 if native else torch.float32
    )


def test_a_class_above_the_hardware_is_refused_in_one_line(bench, monkeypatch, capsys):
    monkeypatch.setattr(devices, "cpu_flags", lambda: ZEN4)
    bench.refuse_unavailable(["native", "avx512-bf16", "avx512", "avx2"])
    assert bench.main(["--cpu-class", "avx2,amx", "--sizes", "16"]) == bench.REFUSED
    assert capsys.readouterr().err == (
        "error: --cpu-class amx is not available: this CPU is avx512-bf16;"
        " it can measure native, avx512-bf16, avx512, avx2\n"
    )


def test_a_worker_whose_caps_did_not_take_refuses(bench, monkeypatch):
    """A worker started without its caps, or whose torch read ATEN_CPU_CAPABILITY before it was set (as this
    test process did), must not run at another class."""
    monkeypatch.setattr(devices, "cpu_flags", lambda: ZEN4)
    with pytest.raises(
        bench.Refused, match="--cpu-class avx2 did not take effect: the worker computes at avx512"
    ):
        bench.verify_cpu_class("avx2")
    bench.verify_cpu_class("native")
    capability = torch.backends.cpu.get_cpu_capability()
    for variable, value in bench.class_environment("avx2", {}).items():
        monkeypatch.setenv(variable, value)
    assert devices.cpu_class() == "avx2"
    if capability != "AVX2":
        with pytest.raises(bench.Refused, match=rf"computes at avx2 \(torch capability {capability}\)"):
            bench.verify_cpu_class("avx2")


def test_unknown_classes_and_in_process_caps_are_usage_errors(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parser().parse_args(["--cpu-class", "avx2,sse"])
    assert "unknown CPU class 'sse'" in capsys.readouterr().err
    assert bench.main(["--cpu-class", "avx2", "--no-subprocess"]) == bench.REFUSED
    assert "drop --no-subprocess" in capsys.readouterr().err


def test_baseline_none_plans_no_baseline_runs(bench):
    args = bench.parser().parse_args(
        ["--sizes", "64,128", "--tiles", "64", "--precisions", "bf16", "--baseline", "none"]
    )
    assert [(c.size, c.precision, c.official) for c in bench.plan_cases(args)] == [
        (64, "bf16", False),
        (128, "bf16", False),
    ]
