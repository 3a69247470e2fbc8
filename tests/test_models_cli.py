"""`resshift models …` through the root CLI app, against local release and Hub servers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from resshift_cli import cache, locations
from resshift_cli.cli import app
from resshift_cli.cli.models import app as models_app
from resshift_cli.loading import UNET_FILE, load_model
from resshift_cli.manifest import read_manifest, verify_folder
from resshift_cli.release import ENV_RELEASE_URL
from servers import AUTOENCODER_PTH, UNET_PTH, HubServer, ReleaseServer, tiny_release, torch_bytes

MODEL = "realsr-v3"
runner = CliRunner()


@pytest.fixture
def release(golden_dir: Path, monkeypatch: pytest.MonkeyPatch, online: None) -> Iterator[ReleaseServer]:
    with ReleaseServer(tiny_release(golden_dir, "compiled")) as server:
        monkeypatch.setenv(ENV_RELEASE_URL, server.url)
        yield server


@pytest.fixture
def pth_files(tmp_path: Path, golden_dir: Path) -> tuple[Path, Path]:
    """The tiny official-layout `.pth` pair, as a user would have fetched it by hand."""
    files = tiny_release(golden_dir, "ddp")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path / UNET_PTH, tmp_path / AUTOENCODER_PTH


def resshift(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    for fragment in fragments:
        assert fragment in stderr


def assert_upscales_like_golden(model: str, golden_dir: Path, out: Path) -> None:
    """`resshift upscale` of the golden v3 input with `model` gives the golden 8-bit result."""
    args = [
        "upscale",
        str(golden_dir / "sample_v3_64x64_lr.png"),
        "--model",
        model,
        "-o",
        str(out),
        "--precision",
        "fp32",
        "--quiet",
    ]
    code, _, err = resshift(*args)
    assert code == 0, err
    expected = load_file(golden_dir / "sample_v3_64x64.safetensors")["out_uint8"].numpy().astype(int)
    difference = np.abs(np.asarray(Image.open(out)).astype(int) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3, "float rounding flips a few 8-bit values"


def test_upscale_end_to_end_from_the_release_server(
    release: ReleaseServer, golden_dir: Path, tmp_path: Path
) -> None:
    assert_upscales_like_golden(MODEL, golden_dir, tmp_path / "x4.png")
    assert len(release.downloads(UNET_PTH)) == 1


def test_list_shows_every_model_and_whether_cached(release: ReleaseServer) -> None:
    code, out, _ = resshift("models", "list")
    assert code == 0
    for name in ("realsr-v1 (default)", "realsr-v2", "realsr-v3", "bicsr"):
        assert name in out
    assert out.count("S-Lab License 1.0") == 4
    official = [line for line in out.splitlines() if "S-Lab" in line]
    assert not any(" yes " in line for line in official)

    assert resshift("models", "download", MODEL, "--quiet")[0] == 0
    row = next(line for line in resshift("models", "list")[1].splitlines() if MODEL in line)
    assert " yes " in row and " MB" in row and "to fetch" not in row


def test_download_prints_the_folder(release: ReleaseServer) -> None:
    code, out, err = resshift("models", "download", MODEL, "--quiet")
    assert (code, err) == (0, "")
    assert Path(out.strip()) == locations.models_dir() / MODEL
    assert verify_folder(Path(out.strip())) == []


def test_download_shows_progress_on_stderr(release: ReleaseServer) -> None:
    code, out, err = resshift("models", "download", MODEL)
    assert code == 0
    assert UNET_PTH in err and AUTOENCODER_PTH in err
    assert out.strip() == str(locations.models_dir() / MODEL)


def test_download_errors_are_one_line(release: ReleaseServer, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = resshift("models", "download", "realsr-v9")
    assert code == 2
    assert_one_error_line(
        err, "unknown model 'realsr-v9'; known models: realsr-v1, realsr-v2, realsr-v3, bicsr"
    )

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = resshift("models", "download", MODEL)
    assert code == 1
    assert_one_error_line(
        err, "HF_HUB_OFFLINE is set", f"resshift models download {MODEL}", "--model DIR", "--model lite"
    )


def test_convert_works_offline(
    pth_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out_dir = tmp_path / "converted"
    code, out, err = resshift(
        "models", "convert", *map(str, pth_files), "--preset", MODEL, "-o", str(out_dir)
    )
    assert (code, err) == (0, "")
    assert out.strip() == str(out_dir)
    model = load_model(out_dir)
    assert (model.config.name, model.config.diffusion.steps, model.config.unet.model_channels) == (
        MODEL,
        4,
        32,
    )
    manifest = read_manifest(out_dir)
    assert [(s.file, s.url) for s in manifest.sources] == [(UNET_PTH, None), (AUTOENCODER_PTH, None)]
    assert manifest.sources[0].sha256 == hashlib.sha256(pth_files[0].read_bytes()).hexdigest()


def test_convert_refuses_a_booby_trapped_pickle(pth_files: tuple[Path, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    pth_files[0].write_bytes(torch_bytes({"model": Payload()}))
    code, _, err = resshift(
        "models", "convert", *map(str, pth_files), "--preset", MODEL, "-o", str(tmp_path / "o")
    )
    assert code == 1
    assert_one_error_line(err, f"{pth_files[0]}: refused", "nothing in it ran")
    assert not marker.exists()
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (["--preset", "realsr-v7"], 2, "unknown model 'realsr-v7'"),
        (["--preset", MODEL, "-o", "{existing}"], 2, "already exists and is not an empty folder"),
    ],
)
def test_convert_usage_errors(
    pth_files: tuple[Path, Path], tmp_path: Path, extra: list[str], code: int, fragment: str
) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    args = [a.format(existing=existing) for a in extra]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "new")]
    result = resshift("models", "convert", *map(str, pth_files), *args)
    assert result[0] == code
    assert_one_error_line(result[2], fragment)
    assert (existing / "keep.txt").read_text() == "mine"


def test_export_loads_back_from_the_hub(
    release: ReleaseServer, hub_server: HubServer, golden_dir: Path, tmp_path: Path
) -> None:
    export_dir = tmp_path / "export"
    code, out, err = resshift("models", "export", MODEL, str(export_dir), "--quiet")
    assert code == 0, err
    assert out.strip() == str(export_dir)
    assert "hf upload OWNER/NAME" in err
    card = (export_dir / "README.md").read_text()
    assert card.startswith("---\nlicense: other\nlicense_name: s-lab-license-1.0\nlicense_link: https://")
    for name in (UNET_PTH, AUTOENCODER_PTH):
        assert hashlib.sha256(release.files[name]).hexdigest() in card
    assert hashlib.sha256((export_dir / UNET_FILE).read_bytes()).hexdigest() in card

    commit = hub_server.add_folder("me/resshift-v3", export_dir)
    folder = cache.resolve_model("hf://me/resshift-v3")
    assert folder.name == commit
    assert verify_folder(folder) == []
    assert load_model(folder).config == load_model(locations.models_dir() / MODEL).config
    release.stop()
    assert_upscales_like_golden("hf://me/resshift-v3", golden_dir, tmp_path / "x4.png")

    code, out, _ = resshift("models", "info", "hf://me/resshift-v3")
    assert code == 0
    assert f"folder: {folder}" in out and "steps: 4" in out


def test_export_of_a_tampered_model_is_refused(release: ReleaseServer, tmp_path: Path) -> None:
    folder = cache.resolve_model(MODEL)
    unet = load_file(folder / UNET_FILE)
    first = next(iter(unet))
    unet[first] = unet[first] + 1
    save_file(unet, folder / UNET_FILE)
    code, _, err = resshift("models", "export", MODEL, str(tmp_path / "export"))
    assert code == 1
    assert_one_error_line(err, "differs from the manifest")
    assert not (tmp_path / "export").exists()


def test_info_of_a_model_that_is_not_cached() -> None:
    code, out, _ = resshift("models", "info", MODEL)
    assert code == 0
    assert f"name: {MODEL}" in out
    assert "non-commercial" in out
    assert "resshift_realsrx4_s4_v3.pth" in out
    assert f"cached: no (`resshift models download {MODEL}` fetches it)" in out


def test_info_of_a_cached_model_shows_provenance(release: ReleaseServer) -> None:
    cache.resolve_model(MODEL)
    code, out, _ = resshift("models", "info", MODEL)
    assert code == 0
    assert "widths: unet 32, swin 64, autoencoder 32, codebook 8192×3" in out
    digest = hashlib.sha256(release.files[UNET_PTH]).hexdigest()
    assert f"converted from: {release.url}/{UNET_PTH} (sha256 {digest})" in out


def test_verify_detects_a_changed_file(release: ReleaseServer) -> None:
    folder = cache.resolve_model(MODEL)
    code, out, _ = resshift("models", "verify")
    assert (code, out) == (0, f"ok {MODEL}\n")

    data = bytearray((folder / UNET_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / UNET_FILE).write_bytes(bytes(data))
    code, out, err = resshift("models", "verify")
    assert code == 1
    assert out.startswith(f"FAILED {MODEL}\n  {folder / UNET_FILE}: sha256 ")
    assert_one_error_line(err, f"verification failed for {MODEL}")


def test_verify_with_an_empty_cache() -> None:
    code, out, _ = resshift("models", "verify")
    assert code == 0
    assert out.startswith("no models in the cache")


def test_remove(release: ReleaseServer) -> None:
    cache.resolve_model(MODEL)
    code, out, _ = resshift("models", "remove", MODEL)
    assert code == 0 and out.startswith(f"removed {MODEL}")
    assert not (locations.models_dir() / MODEL).exists()
    code, _, err = resshift("models", "remove", MODEL)
    assert code == 1
    assert_one_error_line(err, f"{MODEL} is not in the cache")


def test_sub_app_help_lists_the_commands() -> None:
    result = runner.invoke(models_app, ["--help"])
    assert result.exit_code == 0
    for command in ("list", "download", "convert", "export", "info", "verify", "remove"):
        assert command in result.stdout
