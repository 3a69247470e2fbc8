"""`--compile`: the torch.compile'd denoiser reproduces the official output, and a failing compiler falls
back to eager mode with a warning. Real compiles in fresh processes and caches: the slowest tests here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny import golden_case, write_tiny_folder

MAIN = "from resshift_cli.cli import main; main()"
CASE = "sample_v3_72x100"


def upscale_compiled(
    tmp_path: Path, golden_dir: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`resshift upscale --compile` on the golden LR image in a fresh process with an empty compile cache."""
    model = write_tiny_folder(tmp_path / "tiny-v3", "v3")
    output = tmp_path / "sr.png"
    command = [sys.executable, "-c", MAIN, "upscale", str(golden_dir / f"{CASE}_lr.png"), "-o", str(output)]
    command += ["-m", str(model), "--seed", "12345", "--tile", "0", "--device", "cpu", "--precision", "fp32"]
    environment = os.environ | {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")} | env
    done = subprocess.run(
        [*command, "--compile"], env=environment, capture_output=True, text=True, timeout=600, check=False
    )
    return done, output


def assert_golden(output: Path) -> None:
    with Image.open(output) as image:
        ours = np.asarray(image.convert("RGB")).astype(np.int16)
    golden = golden_case(CASE)[0]["out_uint8"].numpy().astype(np.int16)
    assert ours.shape == golden.shape
    assert (ours == golden).mean() >= 0.995
    assert np.abs(ours - golden).max() <= 1


@pytest.mark.slow
def test_compiled_denoiser_reproduces_the_official_output(tmp_path: Path, golden_dir: Path) -> None:
    done, output = upscale_compiled(tmp_path, golden_dir)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    assert_golden(output)


@pytest.mark.slow
def test_a_failing_compiler_falls_back_to_eager_with_one_warning(tmp_path: Path, golden_dir: Path) -> None:
    done, output = upscale_compiled(tmp_path, golden_dir, CXX=str(tmp_path / "no-such-compiler"))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "torch.compile failed (" in warnings[0] and warnings[0].endswith("continuing without --compile")
    assert "Traceback" not in done.stderr
    assert_golden(output)
