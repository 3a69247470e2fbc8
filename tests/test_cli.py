"""`resshift upscale`, `batch` and `doctor` end to end: CliRunner in-process, plus real subprocesses
for a shell pipeline and Ctrl-C. Model runs use the tiny golden weights; they are the slow part, so
each run here checks several things at once."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

import corpus
from resshift_cli import __version__, locations
from resshift_cli.cli import app
from resshift_cli.cli.options import ColorFixChoice, OutputFormat, Precision
from resshift_cli.cli.upscale import ProgressBars
from resshift_cli.colorfix import COLOR_FIXES
from resshift_cli.devices import PRECISIONS, cpu_has_native_bf16
from resshift_cli.images import FORMATS
from resshift_cli.manifest import write_manifest
from resshift_cli.nets import winograd
from resshift_cli.pipeline import Progress
from tiny import golden_case, write_tiny_folder

runner = CliRunner()
CPU = ("--device", "cpu", "--precision", "fp32")
MAIN = "from resshift_cli.cli import main; main()"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("models") / "tiny-v3", "v3")


def invoke(*args: object, stdin: bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin, catch_exceptions=False)


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def opened(path: Path) -> Image.Image:
    """The decoded file (pixels, mode, format, info with PNG text and EXIF), closed again."""
    with Image.open(path) as image:
        image.load()
        copied = image.copy()
        copied.format = image.format
        return copied


def all_files(folder: Path) -> set[str]:
    """Every file under `folder` (hidden temporary files included), as relative POSIX paths."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def wait_for_first_output(process: subprocess.Popen, folder: Path, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not any(not name.startswith(".") for name in (os.listdir(folder) if folder.is_dir() else [])):
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)


# -- one photo ------------------------------------------------------------------------------------------


def test_upscale_writes_beside_the_photo_with_provenance(tmp_path: Path, model_dir: Path) -> None:
    """EXIF-rotated JPEG with ICC and XMP → <stem>_x4.jpg, upright, 4× the upright size, metadata kept."""
    samples = corpus.sample_pixels(3, 8)
    photo = corpus.write_jpeg(
        tmp_path, "photo.jpg", samples, corpus.sample_exif(6), corpus.srgb_icc(), corpus.sample_xmp(6)
    )
    result = invoke("upscale", photo, "-m", model_dir, *CPU, "--json", "--seed", 7)
    assert result.exit_code == 0, result.stderr
    (record,) = records(result.stdout)
    output = tmp_path / "photo_x4.jpg"
    assert record["input"] == str(photo) and record["output"] == str(output) and record["status"] == "ok"
    assert record["error"] is None and record["seconds"] > 0
    assert (record["width"], record["height"]) == (4 * corpus.HEIGHT, 4 * corpus.WIDTH)  # turned upright
    assert (record["model"], record["seed"], record["version"]) == ("tiny-v3", 7, __version__)
    image = opened(output)
    assert image.format == "JPEG" and image.size == (4 * corpus.HEIGHT, 4 * corpus.WIDTH)
    exif = image.getexif()
    assert exif[0x0131] == f"resshift-cli {__version__}"  # Software
    assert exif[0x0112] == 1 and exif[0x010F] == "Canon"  # Orientation reset, Make kept
    assert image.info["icc_profile"] == corpus.srgb_icc()
    assert b"dc:creator" in image.info["xmp"]
    assert result.stderr == ""


def test_stdin_to_stdout_keeps_16_bit_gray_and_records_provenance(model_dir: Path) -> None:
    data = corpus.png_bytes(corpus.sample_pixels(1, 16))
    result = invoke("upscale", "-", "-o", "-", "-m", model_dir, *CPU, "-q", stdin=data)
    assert result.exit_code == 0, result.stderr
    image = Image.open(io.BytesIO(result.stdout_bytes))
    assert image.format == "PNG" and image.mode.startswith("I;16")
    assert image.size == (4 * corpus.WIDTH, 4 * corpus.HEIGHT)
    assert image.text["Software"] == f"resshift-cli {__version__}"
    assert image.text["resshift:model"] == "tiny-v3" and image.text["resshift:seed"] == "12345"
    assert result.stderr == ""


def test_several_inputs_into_a_folder_scale_format_overwrite_and_failed_write(
    tmp_path: Path, model_dir: Path
) -> None:
    """`-o DIR` keeps names; --scale 2 and --format webp apply; --overwrite replaces a file; a write that
    fails at the last step (the target is a folder) leaves nothing behind; a missing input is reported."""
    rgba = corpus.write_png(tmp_path, "rgba.png", corpus.sample_pixels(4, 8))
    gray = corpus.write_png(tmp_path, "gray.png", corpus.sample_pixels(1, 8))
    out = tmp_path / "out"
    (out / "gray.webp").mkdir(parents=True)
    (out / "rgba.webp").write_bytes(b"old")
    missing = tmp_path / "missing.png"
    result = invoke(
        "upscale",
        rgba,
        missing,
        gray,
        "-o",
        out,
        "-s",
        2,
        "--format",
        "webp",
        "--overwrite",
        "-m",
        model_dir,
        *CPU,
    )
    assert result.exit_code == 1
    image = opened(out / "rgba.webp")
    assert (
        image.format == "WEBP"
        and image.mode == "RGBA"
        and image.size == (2 * corpus.WIDTH, 2 * corpus.HEIGHT)
    )
    alpha = np.asarray(image)[..., 3]
    assert alpha.min() < 64 and alpha.max() == 255  # transparency carried through
    errors = result.stderr.splitlines()
    assert f"error: {missing}: no such file" in errors
    assert any(line.startswith(f"error: {out / 'gray.webp'}: cannot write") for line in errors)
    assert errors[-1].startswith("1 upscaled, 0 skipped, 2 failed in ")
    assert all_files(out) == {"rgba.webp"} and not any(p.name.startswith(".") for p in out.iterdir())


# -- bad input and usage errors (no model is ever loaded: --model points nowhere) ------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file"),
        ("truncated", ""),
        ("text", "not an image"),
        ("bomb", "exceeds --max-pixels"),
        ("animated", "animated or multi-page"),
        ("missing", "no such file"),
        ("folder", "is a directory"),
    ],
)
def test_bad_input_gets_one_line_naming_the_file_and_no_output(
    tmp_path: Path, kind: str, reason: str
) -> None:
    good = corpus.write_png(tmp_path, "good.png", corpus.sample_pixels())
    source = {
        "empty": lambda: corpus.write_empty(tmp_path),
        "truncated": lambda: corpus.write_truncated(tmp_path, good),
        "text": lambda: corpus.write_text_file(tmp_path, "lies.jpg"),
        "bomb": lambda: corpus.write_bomb_png(tmp_path),
        "animated": lambda: corpus.write_animated_gif(tmp_path),
        "missing": lambda: tmp_path / "missing.png",
        "folder": lambda: (tmp_path / "folder.png").mkdir() or tmp_path / "folder.png",
    }[kind]()
    before = all_files(tmp_path)
    result = invoke("upscale", source, "-m", tmp_path / "no-such-model", *CPU)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {source}: ") and reason in line
    assert all_files(tmp_path) == before


def test_max_pixels_can_be_lowered_and_raised(tmp_path: Path) -> None:
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    result = invoke("upscale", image, "--max-pixels", 100, "-m", tmp_path / "none", *CPU)
    assert (
        result.exit_code == 1
        and f"{corpus.WIDTH}×{corpus.HEIGHT} = 204 pixels exceeds --max-pixels 100" in result.stderr
    )
    bomb = corpus.write_bomb_png(tmp_path, 3000, 2000)
    result = invoke("upscale", bomb, "--max-pixels", 10_000_000, "-m", tmp_path / "none", *CPU)
    # past the raised limit the file is decoded, and only then is the (missing) model asked for
    assert result.exit_code == 1 and "exceeds" not in result.stderr and "not a model folder" in result.stderr


def test_a_model_that_cannot_load_is_reported_once_after_inputs_are_read(tmp_path: Path) -> None:
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    result = invoke("upscale", image, "-m", tmp_path / "no-such-model", *CPU)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "no-such-model" in line and "not a model folder" in line
    assert not (tmp_path / "a_x4.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--skip-existing", "--overwrite"], "exclude each other"),
        (["--tile", "100"], "multiple of 64"),
        (["--tile", "64", "--tile-overlap", "64"], "use 0 to 63, or leave it at auto (16)"),
        (["--tile", "128", "--tile-overlap", "200", "--official-tiling"], "use 0 to 127"),
        (["--tile-overlap", "lots"], "must be auto or a whole number"),
        (["--steps", "0"], "Invalid value for '--steps'"),
        (["--color-fix", "sepia"], "Invalid value for '--color-fix'"),
        (["--bit-depth", "12"], "must be 8 or 16"),
        (["--bit-depth", "16", "--format", "jpg"], "JPG holds 8 bits"),
        (["--format", "gif"], "Invalid value for '--format'"),
        (["--scale", "20"], "Invalid value for '--scale'"),
        (["--device", "tpu"], "unknown device"),
        (["-o", "-", "--json"], "both write to stdout"),
        (["-o", "out.jpg", "--format", "png"], "the suffix says jpg"),
    ],
)
def test_usage_errors_exit_2_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    result = invoke("upscale", image, "-m", tmp_path / "none", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert all_files(tmp_path) == {"a.png"}


def test_device_from_the_environment_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESSHIFT_DEVICE", "quantum")
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    result = invoke("upscale", image, "-m", tmp_path / "none")
    assert result.exit_code == 2 and "unknown device 'quantum'" in result.stderr


def test_an_existing_output_is_never_replaced_silently(tmp_path: Path) -> None:
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    (tmp_path / "a_x4.png").write_bytes(b"mine")
    result = invoke("upscale", image, "-m", tmp_path / "none", *CPU)
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.stderr
    assert (tmp_path / "a_x4.png").read_bytes() == b"mine"
    result = invoke("upscale", image, "-m", tmp_path / "none", *CPU, "--skip-existing", "--json")
    assert result.exit_code == 0 and records(result.stdout)[0]["status"] == "skipped"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_an_unavailable_device_is_refused_before_reading(tmp_path: Path) -> None:
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    result = invoke("upscale", image, "-m", tmp_path / "none", "--device", "cuda")
    assert result.exit_code == 1 and "CUDA was requested but is not available" in result.stderr


def test_debug_shows_the_traceback_of_a_failed_input(tmp_path: Path) -> None:
    empty = corpus.write_empty(tmp_path)
    command = [sys.executable, "-c", MAIN, "upscale", str(empty), "-m", str(tmp_path / "none"), "--debug"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert f"error: {empty}: empty file" in done.stderr and "Traceback (most recent call last)" in done.stderr


def test_image_data_is_never_written_to_a_terminal(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    primary, secondary = pty.openpty()
    command = [sys.executable, "-c", MAIN, "upscale", str(image), "-o", "-", "-m", str(tmp_path / "none")]
    try:
        done = subprocess.run(
            command, stdout=secondary, stderr=subprocess.PIPE, text=True, timeout=120, check=False
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert done.returncode == 2 and "refusing to write image data to a terminal" in done.stderr


# -- a folder -------------------------------------------------------------------------------------------


GOOD = ["rgba.png", "sub/cmyk.jpg", "sub/palette.gif", "sub/deep/deep16.tif"]
BAD = {
    "empty.png": "empty file",
    "lies.jpg": "not an image",
    "sub/animated.gif": "animated",
    "sub/bomb.png": "exceeds --max-pixels",
    "sub/truncated_rgba.png": "",
}


def make_tree(root: Path) -> Path:
    sub, deep = root / "sub", root / "sub" / "deep"
    deep.mkdir(parents=True)
    rgba = corpus.write_png(root, "rgba.png", corpus.sample_pixels(4, 8))
    corpus.write_cmyk_jpeg(sub, corpus.cmyk_icc())
    corpus.write_palette_gif(sub)
    corpus.write_tiff(deep, "deep16.tif", corpus.sample_pixels(3, 16))
    corpus.write_empty(root)
    corpus.write_text_file(root, "lies.jpg")
    corpus.write_animated_gif(sub)
    corpus.write_bomb_png(sub)
    corpus.write_truncated(sub, rgba)
    (root / "readme.txt").write_text("not picked up")
    corpus.write_png(root, ".hidden.png", corpus.sample_pixels())
    return root


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    root = make_tree(tmp_path_factory.mktemp("batch") / "in")
    out = root.parent / "out"
    result = invoke("batch", root, "-o", out, "--recursive", "--json", "-m", model_dir, *CPU)
    return root, out, result


def test_batch_mirrors_the_tree_and_reports_every_file(batch_run) -> None:
    root, out, result = batch_run
    assert result.exit_code == 1  # some inputs failed
    expected_outputs = {"rgba.png", "sub/cmyk.jpg", "sub/palette.png", "sub/deep/deep16.tif"}
    assert all_files(out) == expected_outputs
    lines = records(result.stdout)
    by_input = {Path(r["input"]).relative_to(root).as_posix(): r for r in lines}
    assert set(by_input) == set(GOOD) | set(BAD)
    assert all(by_input[name]["status"] == "ok" for name in GOOD)
    for name, reason in BAD.items():
        assert by_input[name]["status"] == "failed" and reason in by_input[name]["error"]
        assert f"error: {root / name}: " in result.stderr
    assert result.stderr.splitlines()[-1].startswith("4 upscaled, 0 skipped, 5 failed")


def test_batch_keeps_what_each_kind_of_image_is(batch_run) -> None:
    _, out, _ = batch_run
    rgba = opened(out / "rgba.png")
    assert rgba.mode == "RGBA" and rgba.size == (4 * corpus.WIDTH, 4 * corpus.HEIGHT)
    assert rgba.info["resshift:tiling"].startswith("tile 256")
    cmyk = opened(out / "sub/cmyk.jpg")
    assert cmyk.format == "JPEG" and cmyk.mode == "RGB" and "icc_profile" not in cmyk.info
    palette = opened(out / "sub/palette.png")
    assert palette.mode == "RGBA" and np.asarray(palette)[..., 3].min() < 255
    deep = cv2.imread(str(out / "sub/deep/deep16.tif"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (4 * corpus.HEIGHT, 4 * corpus.WIDTH, 3)


def test_batch_rerun_skips_or_refuses_existing_outputs_without_touching_them(batch_run) -> None:
    root, out, _ = batch_run
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    model = root.parent / "no-model-needed"
    resumed = invoke("batch", root, "-o", out, "-r", "--skip-existing", "--json", "-m", model, *CPU)
    statuses = {Path(r["input"]).relative_to(root).as_posix(): r["status"] for r in records(resumed.stdout)}
    assert {statuses[name] for name in GOOD} == {"skipped"} and resumed.exit_code == 1
    refused = invoke("batch", root, "-o", out, "-r", "-q", "-m", model, *CPU)
    assert refused.exit_code == 1 and refused.stderr.count("already exists") == len(GOOD)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_batch_collisions_are_reported_before_work_and_never_written(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    corpus.write_png(root, "a.png", corpus.sample_pixels())
    corpus.write_jpeg(root, "a.jpg", corpus.sample_pixels())
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep")
    result = invoke(
        "batch", root, "-o", out, "--format", "png", "--overwrite", "--json", "-m", tmp_path / "none", *CPU
    )
    assert result.exit_code == 1
    assert [r["status"] for r in records(result.stdout)] == ["failed", "failed"]
    assert result.stderr.count("would all write") == 2
    assert (out / "a.png").read_bytes() == b"keep"


def test_batch_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    corpus.write_png(tmp_path / "in", "a.png", corpus.sample_pixels())
    assert invoke("batch", tmp_path / "in", "-o", tmp_path / "in").exit_code == 2
    nothing = invoke("batch", tmp_path / "in", "-o", tmp_path / "out", "--glob", "*.cr2")
    assert nothing.exit_code == 2 and "no files matching" in nothing.stderr
    assert invoke("batch", tmp_path / "absent", "-o", tmp_path / "out").exit_code == 2


# -- steps, colour fix and tiles -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["upscale", "batch"])
@pytest.mark.parametrize("tile", [64, 128])
def test_small_tiles_work_without_an_overlap(
    tmp_path: Path, model_dir: Path, command: str, tile: int
) -> None:
    """The overlap follows the tile (a quarter) and is recorded; --steps and --color-fix are recorded too."""
    folder = tmp_path / "photos"
    folder.mkdir()
    image = corpus.write_png(folder, "a.png", corpus.sample_pixels())
    target = [image, "-o", tmp_path / "a.png"] if command == "upscale" else [folder, "-o", tmp_path / "out"]
    extra = ["--steps", 1, "--color-fix", "adain", "--json"]
    result = invoke(command, *target, "--tile", tile, "-m", model_dir, *CPU, *extra)
    assert result.exit_code == 0, result.stderr
    (record,) = records(result.stdout)
    assert record["tiling"] == f"tile {tile}, overlap {tile // 4}"
    assert (record["steps"], record["color_fix"]) == (1, "adain")
    text = opened(Path(record["output"])).info
    assert (text["resshift:steps"], text["resshift:color_fix"]) == ("1", "adain")


@pytest.mark.slow
def test_fewer_steps_on_several_tiles_with_the_wavelet_fix(tmp_path: Path, model_dir: Path) -> None:
    """A 20×100 photo on 64-pixel tiles: three tiles on the padded 64×128 canvas, one step, wavelet fix."""
    photo = corpus.write_png(tmp_path, "wide.png", corpus.sample_pixels(3, 8, 20, 100, seed=3))
    args = ["--steps", 1, "--color-fix", "wavelet", "--tile", 64, "--json"]
    result = invoke("upscale", photo, "-o", tmp_path / "wide_x4.png", "-m", model_dir, *CPU, *args)
    assert result.exit_code == 0, result.stderr
    (record,) = records(result.stdout)
    assert record["tiling"] == "tile 64, overlap 16" and record["color_fix"] == "wavelet"
    assert (record["width"], record["height"], record["steps"]) == (400, 80, 1)


def test_more_steps_than_trained_is_one_usage_line_after_loading(tmp_path: Path, model_dir: Path) -> None:
    image = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    result = invoke("upscale", image, "-m", model_dir, *CPU, "--steps", 5)
    assert result.exit_code == 2
    assert result.stderr == "error: --steps must be between 1 and the model's 4 trained steps, got 5\n"
    assert all_files(tmp_path) == {"a.png"}


# -- a pipeline and Ctrl-C, as real processes ------------------------------------------------------------


@pytest.mark.slow
def test_shell_pipeline_stdin_to_stdout(tmp_path: Path, model_dir: Path) -> None:
    photo = corpus.write_jpeg(tmp_path, "p.jpg", corpus.sample_pixels())
    command = [sys.executable, "-c", MAIN, "upscale", "-", "-o", "-", "-m", str(model_dir), *CPU]
    done = subprocess.run(command, input=photo.read_bytes(), capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""  # no progress bars when stderr is not a terminal
    image = Image.open(io.BytesIO(done.stdout))
    assert image.format == "PNG" and image.size == (4 * corpus.WIDTH, 4 * corpus.HEIGHT)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child process on Windows")
def test_ctrl_c_stops_cleanly_and_skip_existing_resumes(tmp_path: Path, model_dir: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    for index in range(3):
        corpus.write_png(root, f"{index}.png", corpus.sample_pixels(seed=index))
    command = [sys.executable, "-c", MAIN, "batch", str(root), "-o", str(out), "-m", str(model_dir), *CPU]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_first_output(process, out)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip().splitlines()[-1].startswith("error: interrupted")
    assert stdout == b""
    finished = all_files(out)
    assert 1 <= len(finished) < 3 and not any(name.startswith(".") for name in finished)
    resumed = invoke("batch", root, "-o", out, "--skip-existing", "--json", "-m", model_dir, *CPU)
    assert resumed.exit_code == 0, resumed.stderr
    statuses = [r["status"] for r in records(resumed.stdout)]
    assert statuses.count("skipped") == len(finished) and statuses.count("ok") == 3 - len(finished)
    assert all_files(out) == {"0.png", "1.png", "2.png"}


# -- golden --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_upscale_reproduces_the_official_output(tmp_path: Path, golden_dir: Path, model_dir: Path) -> None:
    output = tmp_path / "sr.png"
    lr = golden_dir / "sample_v3_72x100_lr.png"
    result = invoke("upscale", lr, "-o", output, "-m", model_dir, "--seed", 12345, "--tile", 0, *CPU, "-q")
    assert result.exit_code == 0, result.stderr
    ours = np.asarray(opened(output).convert("RGB")).astype(np.int16)
    golden = golden_case("sample_v3_72x100")[0]["out_uint8"].numpy().astype(np.int16)
    assert ours.shape == golden.shape
    assert (ours == golden).mean() >= 0.995
    assert np.abs(ours - golden).max() <= 1


def test_option_choices_match_the_library() -> None:
    assert [p.value for p in Precision] == list(PRECISIONS)
    assert {f.value for f in OutputFormat} == set(FORMATS.values())
    assert tuple(c.value for c in ColorFixChoice) == COLOR_FIXES


# -- progress and doctor ----------------------------------------------------------------------------------


def test_progress_bars_show_file_stage_and_counts_on_a_terminal() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100, color_system=None)
    with ProgressBars(files=2, enabled=True, console=console) as bars:
        report = bars.image("photo.jpg")
        for done in range(5):
            report(Progress("denoise", done, 4))
            bars.bars.refresh()
        bars.file_done()
        bars.bars.refresh()
    text = stream.getvalue()
    assert "photo.jpg · denoise" in text and "4/4" in text and "1/2" in text


def test_progress_bars_stay_silent_when_disabled() -> None:
    stream = io.StringIO()
    with ProgressBars(files=3, enabled=False, console=Console(file=stream, force_terminal=True)) as bars:
        bars.image("a.png")(Progress("denoise", 1, 4))
        bars.file_done()
    assert stream.getvalue() == ""


def test_doctor_lists_devices_versions_and_the_cache() -> None:
    folder = write_tiny_folder(locations.models_dir() / "tiny-v3", "v3")
    write_manifest(folder, "tiny-v3", [])
    result = invoke("doctor")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"resshift-cli {__version__}"
    assert any(line.startswith(f"torch {torch.__version__}") for line in lines)
    auto = ("bf16" if cpu_has_native_bf16() else "fp32") + ("+winograd" if winograd.available() else "")
    assert any(line.startswith("  cpu: ") and "fp32" in line and f"(auto: {auto})" in line for line in lines)
    assert f"cache: {locations.cache_home()} (set RESSHIFT_HOME to move it)" in lines
    assert any(line.startswith(f"  model: {folder} (") for line in lines)
