"""`resshift eval` and `resshift degrade` end to end with CliRunner: tiny LR/GT pairs made by `degrade`, the
tiny golden model, every output format and every bad-input case."""

from __future__ import annotations

import csv
import json
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from resshift_cli import metrics
from resshift_cli.cli import app
from resshift_cli.cli.degrade import image_seed
from resshift_cli.degrade import degrade
from resshift_cli.images import read_picture
from resshift_cli.pipeline import bicubic_upsample
from tiny import write_tiny_folder

runner = CliRunner()
HR_SIZES = {"a.png": (64, 64), "sub/b.jpg": (64, 48), "c.png": (48, 64)}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _photo(size: tuple[int, int], seed: int) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour blobs plus a little texture."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((size[0] // 8, size[1] // 8, 3)) * 255).astype(np.uint8))
    smooth = np.asarray(coarse.resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


def _write_hr(folder: Path, sizes: dict[str, tuple[int, int]] = HR_SIZES) -> Path:
    for name, size in sizes.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_photo(size, zlib.crc32(name.encode()))).save(path, quality=95)
    return folder


def _rgb(path: Path) -> np.ndarray:
    return read_picture(path).rgb


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("models") / "tiny-v3", "v3")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(LR_DIR, GT_DIR): three GT images and their bicubic LR made by `resshift degrade`."""
    root = tmp_path_factory.mktemp("pairs")
    gt = _write_hr(root / "gt")
    result = invoke("degrade", gt, "-o", root / "lr", "--degradation", "bicubic", "-q")
    assert result.exit_code == 0, result.stderr
    return root / "lr", gt


def _direct_bicubic(lr_dir: Path, gt_dir: Path) -> tuple[float, float]:
    psnr, ssim = [], []
    for lr_path in sorted(lr_dir.rglob("*.png")):
        stem = lr_path.relative_to(lr_dir).with_suffix("")
        gt_path = next(gt_dir.glob(f"{stem}.*"))
        lr = torch.from_numpy(_rgb(lr_path)).permute(2, 0, 1)[None]
        sr = bicubic_upsample(lr, 4).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        psnr.append(metrics.psnr_y(sr, _rgb(gt_path), 4))
        ssim.append(metrics.ssim_y(sr, _rgb(gt_path), 4))
    return float(np.mean(psnr)), float(np.mean(ssim))


# eval ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_table_with_a_model_per_image_rows_and_csv(pairs: tuple[Path, Path], model_dir: Path, tmp_path: Path):
    """One pair only: the tiny model costs seconds per image on a CPU (the LR is padded to 64 pixels)."""
    lr, gt = tmp_path / "lr", tmp_path / "gt"
    for source, target in ((pairs[0] / "a.png", lr / "a.png"), (pairs[1] / "a.png", gt / "a.png")):
        target.parent.mkdir()
        target.write_bytes(source.read_bytes())
    table_csv = tmp_path / "scores.csv"
    args = ["--lr", lr, "--gt", gt, "-m", model_dir, "--device", "cpu", "--precision", "fp32"]
    result = invoke("eval", *args, "--per-image", "--csv", table_csv, "--no-perceptual")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("PSNR" in line and "SSIM" in line for line in lines)
    assert any("bicubic" in line and "│ 1" in line for line in lines)
    assert sum(str(model_dir) in line for line in lines) == 2  # mean row + image row
    assert "per image" in result.stdout and "LPIPS" not in result.stdout
    with table_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["image"]) for r in rows[:2]] == [("bicubic", "mean"), (str(model_dir), "mean")]
    assert len(rows) == 2 + 2 and list(rows[0]) == ["method", "image", "images", "psnr", "ssim"]
    psnr, ssim = _direct_bicubic(lr, gt)
    assert float(rows[0]["psnr"]) == pytest.approx(psnr) and float(rows[0]["ssim"]) == pytest.approx(ssim)
    assert not list(tmp_path.glob(".*.tmp"))


def test_json_bicubic_row_equals_direct_metrics(pairs: tuple[Path, Path]) -> None:
    lr, gt = pairs
    result = invoke("eval", "--lr", lr, "--gt", gt, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    (row,) = report["methods"]
    assert row["method"] == "bicubic" and row["images"] == 3
    psnr, ssim = _direct_bicubic(lr, gt)
    assert row["psnr"] == pytest.approx(psnr, abs=1e-9) and row["ssim"] == pytest.approx(ssim, abs=1e-9)
    assert report["protocol"]["crop"] == 4 and report["failed"] == []
    assert set(report["missing"]) == set(metrics.PERCEPTUAL) and row["lpips"] is None
    assert "pyiqa not installed" in report["missing"]["lpips"] or "weights" in report["missing"]["lpips"]


def test_sr_mode_scores_images_as_they_are(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    _, gt = pairs
    sr = tmp_path / "sr"
    expected = []
    for index, (name, size) in enumerate(HR_SIZES.items()):
        truth = _rgb(gt / name)
        noisy = np.clip(truth + np.random.default_rng(index).normal(0, 0.03, truth.shape), 0, 1)
        target = sr / Path(name).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(target)
        expected.append(metrics.psnr_y(noisy, truth, 4))
        assert truth.shape[:2] == size
    result = invoke("eval", "--sr", sr, "--gt", gt, "--json", "--per-image", "--no-perceptual")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [m["method"] for m in report["methods"]] == ["sr"]
    assert report["methods"][0]["psnr"] == pytest.approx(np.mean(expected), abs=1e-9)
    assert len(report["images"]) == 3 and "lpips" not in report["methods"][0]


def test_perceptual_columns_with_a_fake_library(pairs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    class Metric:
        lower_better = False

        def __call__(self, sr: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
            return torch.tensor([0.5 if gt is None else 0.25])

    def create_metric(name: str, device: torch.device) -> Metric:
        if name == "clipiqa":
            raise FileNotFoundError("clip weights are not here")
        return Metric()

    monkeypatch.setitem(sys.modules, "pyiqa", types.SimpleNamespace(create_metric=create_metric))
    lr, gt = pairs
    result = invoke("eval", "--lr", lr, "--gt", gt, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    row = report["methods"][0]
    assert (
        row["lpips"] == pytest.approx(0.25) and row["musiq"] == pytest.approx(0.5) and row["clipiqa"] is None
    )
    assert report["missing"] == {"clipiqa": "weights not cached (clip weights are not here)"}
    table = invoke("eval", "--lr", lr, "--gt", gt, "--device", "cpu")
    assert "missing" in table.stdout and "0.2500" in table.stdout


def test_missing_pairs_are_named_and_the_rest_scored(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    lr, _ = pairs
    partial_gt = tmp_path / "gt"
    _write_hr(partial_gt, {"a.png": (64, 64), "extra.png": (32, 32)})
    result = invoke("eval", "--lr", lr, "--gt", partial_gt, "--json")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 3
    assert any("extra.png" in line and "no LR image" in line for line in errors)
    assert any("c.png" in line and "no GT image" in line for line in errors)
    assert any("b.png" in line and "no GT image" in line for line in errors)
    assert json.loads(result.stdout)["methods"][0]["images"] == 1


def test_size_mismatch_names_the_file_and_both_sizes(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    lr, _ = pairs
    wrong = _write_hr(tmp_path / "gt", {"a.png": (60, 64), "c.png": (48, 64), "sub/b.png": (64, 48)})
    result = invoke("eval", "--lr", lr, "--gt", wrong)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert str(wrong / "a.png") in line and "64×60" in line and "64×64" in line and "16×16" in line


def test_sr_size_mismatch(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    _, gt = pairs
    sr = _write_hr(tmp_path / "sr", {"a.png": (32, 32), "c.png": (48, 64), "sub/b.png": (64, 48)})
    result = invoke("eval", "--sr", sr, "--gt", gt, "--no-perceptual")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "a.png" in line and "64×64" in line and "32×32" in line


def test_unreadable_image_is_one_line(pairs: tuple[Path, Path], tmp_path: Path) -> None:
    lr, gt = pairs
    broken = tmp_path / "lr"
    broken.mkdir()
    for path in lr.rglob("*.png"):
        target = broken / path.relative_to(lr)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (broken / "a.png").write_bytes(b"not a picture")
    result = invoke("eval", "--lr", broken, "--gt", gt, "--json")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "a.png" in line
    assert json.loads(result.stdout)["methods"][0]["images"] == 2


def test_usage_errors(pairs: tuple[Path, Path], tmp_path: Path, model_dir: Path) -> None:
    lr, gt = pairs
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--lr", empty, "--gt", gt], "no images"),
        (["--lr", lr, "--gt", empty], "no images"),
        (["--lr", lr, "--sr", lr, "--gt", gt], "exactly one of --lr"),
        (["--gt", gt], "exactly one of --lr"),
        (["--sr", lr, "--gt", gt, "-m", model_dir], "--model needs --lr"),
    ]
    for args, message in cases:
        result = invoke("eval", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert invoke("eval", "--lr", lr, "--gt", gt, "--csv", tmp_path).exit_code == 2  # Typer: a directory


# degrade ---------------------------------------------------------------------------------------------------


def test_degrade_mirrors_the_tree_and_is_reproducible_per_path(tmp_path: Path) -> None:
    hr = _write_hr(tmp_path / "hr", {"a.png": (64, 64), "sub/b.jpg": (66, 50)})
    result = invoke("degrade", hr, "-o", tmp_path / "lr", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    assert "cropped to 48×64" in result.stderr and "2 written, 0 failed" in result.stderr
    first = tmp_path / "lr" / "sub" / "b.png"
    with Image.open(first) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (12, 16)
        assert image.info["degradation"] == "realesrgan" and image.info["source"] == "sub/b.jpg"
    # the same image alone, elsewhere: same LR (seed from the relative path, not the order)
    alone = _write_hr(tmp_path / "alone", {"sub/b.jpg": (66, 50)})
    assert invoke("degrade", alone, "-o", tmp_path / "lr2", "--seed", "3", "-q").exit_code == 0
    assert np.array_equal(_rgb(first), _rgb(tmp_path / "lr2" / "sub" / "b.png"))
    # and it is `degrade.degrade` on the cropped HR with the image's generator
    cropped = torch.from_numpy(_rgb(hr / "sub" / "b.jpg")[:64, :48]).permute(2, 0, 1)
    generator = torch.Generator().manual_seed(image_seed(3, Path("sub/b.jpg")))
    direct = degrade(cropped, "realesrgan", generator, 4).permute(1, 2, 0).numpy()
    assert np.allclose(_rgb(first), direct, atol=1e-6)
    other = invoke("degrade", alone, "-o", tmp_path / "lr3", "--seed", "4", "-q")
    assert other.exit_code == 0
    assert not np.array_equal(_rgb(first), _rgb(tmp_path / "lr3" / "sub" / "b.png"))


def test_degrade_bad_image_fails_alone_and_outputs_are_kept(tmp_path: Path) -> None:
    hr = _write_hr(tmp_path / "hr", {"a.png": (32, 32), "b.png": (32, 32)})
    (hr / "broken.png").write_bytes(b"nope")
    out = tmp_path / "lr"
    result = invoke("degrade", hr, "-o", out, "-d", "bicubic")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    before = (out / "a.png").read_bytes()
    again = invoke("degrade", hr, "-o", out, "-d", "bicubic", "-q")
    assert again.exit_code == 1 and "already exists" in again.stderr
    replaced = invoke("degrade", hr, "-o", out, "-d", "bicubic", "--overwrite", "-q")
    assert replaced.exit_code == 1 and replaced.stderr.count("error:") == 1  # broken.png still fails
    assert (out / "a.png").read_bytes() == before  # rewritten, identical
    assert not list(out.rglob(".*.tmp"))


def test_degrade_refuses_colliding_folders(tmp_path: Path) -> None:
    hr = _write_hr(tmp_path / "hr", {"a.png": (32, 32), "a.jpg": (32, 32)})
    same = invoke("degrade", hr, "-o", hr)
    assert same.exit_code == 2 and "must differ" in same.stderr
    inside = invoke("degrade", hr, "-o", hr / "lr", "-q")
    assert inside.exit_code == 1 and "writes the same output" in inside.stderr
    assert [p.name for p in (hr / "lr").iterdir()] == ["a.png"]
    rerun = invoke("degrade", hr, "-o", hr / "lr", "--overwrite", "-q")  # outputs are never read as inputs
    assert rerun.exit_code == 1 and rerun.stderr.count("error:") == 1
    assert not (hr / "lr" / "lr").exists()
