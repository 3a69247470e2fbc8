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
    assert cells[:7] == ["tiny-v3", "cpu", "fp32", "16x16", "off", "off", "4"]
    assert cells[-2:] == ["1.00", "inf"]
    assert float(cells[7]) == pytest.approx(64 * 64 / 1e6, abs=1e-3)
    assert cells[9] == "-"  # no warm-up run without --compile
    assert rows[1].startswith("peak GiB: rss")


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
        (100, 0, 0, "bf16"),
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
