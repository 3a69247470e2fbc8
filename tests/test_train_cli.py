"""`resshift train` on the command line: a preset run, and one clear line for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import resshift_cli.cli.train as train_command
from resshift_cli.cli.app import app
from resshift_cli.loading import load_model
from resshift_cli.train.checkpoint import read_state
from tiny import write_tiny_folder
from train_helpers import (
    one_thread,  # noqa: F401 (an autouse fixture)
    write_images,
    write_micro_folder,
)

runner = CliRunner()
FAST = ["--degradation", "bicubic", "--crop", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_micro_folder(tmp_path_factory.mktemp("micro") / "micro")


def fails(args: list[str], code: int, *expected: str) -> str:
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_a_new_tiny_model_from_the_preset(tmp_path: Path) -> None:
    hr = write_images(tmp_path / "hr", 1, size=(256, 256))
    tiny = write_tiny_folder(tmp_path / "tiny")
    args = ["train", str(hr), "-o", str(tmp_path / "run"), "--arch", "tiny", "--autoencoder", str(tiny)]
    args += ["--iterations", "1", "--batch-size", "1", "--degradation", "bicubic", "--workers", "0", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "run" / "final")
    assert model.config.unet.model_channels == 32 and model.config.diffusion.steps == 4
    assert read_state(tmp_path / "run" / "last")["iteration"] == 1


def test_bad_inputs_are_one_line_each(tmp_path: Path, micro: Path) -> None:
    (tmp_path / "empty").mkdir()
    hr = write_images(tmp_path / "hr", 2)
    run = ["-o", str(tmp_path / "run"), *FAST]
    fails([str(tmp_path / "empty"), "--from", str(micro), *run], 2, "no images")
    fails([str(hr), *run], 2, "--from MODEL", "--arch PRESET")
    fails([str(hr), "--arch", "tiny", *run], 2, "--autoencoder")
    fails([str(hr), "--arch", "huge", *run], 2, "unknown architecture preset 'huge'")
    fails([str(hr), "--from", str(micro), *run, "--crop", "96"], 2, "--crop 96", "multiple of 64")
    fails([str(hr), "--from", str(micro), *run, "--crop", "128"], 1, "img0.png", "smaller than the crop")
    fails([str(hr), "--from", str(micro), *run, "--resume"], 2, "nothing to resume")
    fails([str(hr), "--from", str(micro), *run, "--degradation", "sharpen"], 2, "unknown degradation")
    fails([str(hr), "--from", str(micro), *run, "--iterations", "0", "--lpips-weight", "1"], 2, "lpips")
    assert (
        runner.invoke(app, ["train", str(hr), "--from", str(micro), *run, "--iterations", "0"]).exit_code == 0
    )
    fails([str(hr), "--from", str(micro), *run, "--iterations", "0"], 2, "already holds a run", "--resume")


def test_ctrl_c_exits_130_and_names_the_checkpoint(tmp_path: Path, micro: Path, monkeypatch) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "fit", interrupted)
    hr = write_images(tmp_path / "hr", 1)
    fails([str(hr), "--from", str(micro), "-o", str(tmp_path / "run"), *FAST], 130, "--resume", "last")
