"""Smoke test of benchmarks/lite_arch.py with one very narrow candidate: table layout and measured cells."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def lite_arch() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # lite_arch imports bench as a sibling module
    try:
        spec = importlib.util.spec_from_file_location("lite_arch", BENCHMARKS / "lite_arch.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["lite_arch"] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(autouse=True)
def restore_threads():
    """`--threads` sets torch's process-wide thread count; put it back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_table_rows_for_a_narrow_candidate(lite_arch, monkeypatch, capsys) -> None:
    narrow = dataclasses.replace(
        lite_arch.CANDIDATES["c32-1224-r1"],
        channel_mult=(1, 2),
        num_res_blocks=(1, 1),
        attention_resolutions=(),
    )
    monkeypatch.setattr(lite_arch, "CANDIDATES", {"narrow": narrow})
    argv = ["--candidates", "narrow", "--batch", "1", "--train-steps", "1", "--infer-size", "64"]
    assert lite_arch.main([*argv, "--reference", "none"]) == 0
    header, rule, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["model", "UNet", "M"] and set(rule) <= {"-", " "}
    cells = row.split()
    assert cells[0] == "narrow" and cells[-1] == "-"  # no reference: no speed-up
    assert len(cells) == 8 and all(float(value) > 0 for value in cells[1:7])
