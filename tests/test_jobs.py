"""Planning outputs, finding collisions, and running one job, without the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import corpus
from resshift_cli.api import Provenance, describe_tiling, passes_for, upscale_to_scale
from resshift_cli.errors import UsageError
from resshift_cli.images import Picture
from resshift_cli.jobs import (
    Job,
    LazyModel,
    Record,
    Settings,
    check_formats,
    find_collisions,
    find_images,
    output_extension,
    plan_batch,
    plan_upscale,
    run_job,
    scale_suffix,
)
from resshift_cli.pipeline import UpscaleOptions
from tiny import tiny_model


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def unloadable() -> LazyModel:
    """A model that fails the test if anything asks for it."""
    return LazyModel(lambda: pytest.fail("the model was loaded"))


# -- names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "suffix"), [(4, "_x4"), (2.0, "_x2"), (1.5, "_x1.5"), (8.0, "_x8")])
def test_scale_suffix_follows_the_scale(scale: float, suffix: str) -> None:
    assert scale_suffix(scale) == suffix


@pytest.mark.parametrize(
    ("source", "fmt", "extension"),
    [
        (Path("a/IMG_1.JPG"), None, "JPG"),
        (Path("b.jpeg"), None, "jpeg"),
        (Path("c.bmp"), None, "png"),
        (Path("d.gif"), None, "png"),
        (Path("e.jpg"), "webp", "webp"),
        (None, None, "png"),
    ],
)
def test_output_extension_keeps_writable_suffixes(
    source: Path | None, fmt: str | None, extension: str
) -> None:
    assert output_extension(source, fmt) == extension


# -- plan_upscale -----------------------------------------------------------------------------------------


def test_without_output_each_result_goes_beside_its_input(tmp_path: Path) -> None:
    jobs = plan_upscale([str(tmp_path / "a.jpg"), str(tmp_path / "sub/b.tif")], None, None, None, 4)
    assert [(j.target, j.fmt) for j in jobs] == [
        (tmp_path / "a_x4.jpg", "jpg"),
        (tmp_path / "sub/b_x4.tif", "tiff"),
    ]


def test_suffix_and_format_options_change_the_default_name(tmp_path: Path) -> None:
    (job,) = plan_upscale([str(tmp_path / "a.jpg")], None, "png", "-big", 2)
    assert (job.target, job.fmt) == (tmp_path / "a-big.png", "png")
    (job,) = plan_upscale([str(tmp_path / "a.jpg")], None, None, None, 2.5)
    assert job.target == tmp_path / "a_x2.5.jpg"


def test_stdin_goes_to_stdout_in_png_unless_told(tmp_path: Path) -> None:
    assert plan_upscale(["-"], None, None, None, 4) == [Job(None, None, "png")]
    assert plan_upscale(["-"], "-", "webp", None, 4) == [Job(None, None, "webp")]
    assert plan_upscale(["-"], str(tmp_path / "o.tiff"), None, None, 4) == [
        Job(None, tmp_path / "o.tiff", "tiff")
    ]
    assert plan_upscale(["a.jpg"], "-", None, None, 4) == [Job(Path("a.jpg"), None, "png")]


def test_output_file_takes_its_format_from_the_suffix(tmp_path: Path) -> None:
    (job,) = plan_upscale(["a.png"], str(tmp_path / "out.webp"), None, None, 4)
    assert (job.target, job.fmt) == (tmp_path / "out.webp", "webp")
    (job,) = plan_upscale(["a.png"], str(tmp_path / "out.webp"), "webp", None, 4)
    assert job.fmt == "webp"


def test_several_inputs_go_into_the_output_folder_under_their_names(tmp_path: Path) -> None:
    jobs = plan_upscale(["x/a.png", "y/b.bmp"], str(tmp_path / "new"), None, None, 4)
    assert [j.target for j in jobs] == [tmp_path / "new/a.png", tmp_path / "new/b.png"]
    (one,) = plan_upscale(["x/a.png"], str(tmp_path), None, "_big", 4)
    assert one.target == tmp_path / "a_big.png"


def test_an_input_named_twice_is_done_once(tmp_path: Path) -> None:
    path = str(tmp_path / "a.png")
    assert len(plan_upscale([path, path, str(tmp_path / "sub/../a.png")], None, None, None, 4)) == 1


@pytest.mark.parametrize(
    ("inputs", "output", "fmt", "message"),
    [
        (["-", "a.png"], None, None, "must be the only input"),
        (["a.png", "b.png"], "-", None, "takes one input"),
        (["a.png"], "out.jpg", "png", "the suffix says jpg but --format is png"),
        (["a.png"], "out", None, "no file suffix"),
        (["a.png"], "out.gif", None, "cannot write .gif"),
        (["a.png"], None, "bmp", "unknown output format"),
    ],
)
def test_contradictory_requests_are_usage_errors(
    inputs: list[str], output: str | None, fmt: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        plan_upscale(inputs, output, fmt, None, 4)


def test_several_inputs_need_a_folder_not_a_file(tmp_path: Path) -> None:
    existing = touch(tmp_path / "file.png")
    with pytest.raises(UsageError, match="is a file"):
        plan_upscale(["a.png", "b.png"], str(existing), None, None, 4)
    with pytest.raises(UsageError, match="stdin has no file name"):
        plan_upscale(["-"], str(tmp_path), None, None, 4)


# -- plan_batch -------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for name in (
        "a.png",
        "B.JPG",
        "c.bmp",
        "notes.txt",
        ".hidden.png",
        "sub/d.tif",
        "sub/deep/e.webp",
        ".git/f.png",
    ):
        touch(root / name)
    return root


def test_batch_mirrors_the_tree_with_the_same_names(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    jobs = plan_batch(tree, out, recursive=True)
    assert {j.source.relative_to(tree).as_posix(): j.target.relative_to(out).as_posix() for j in jobs} == {
        "a.png": "a.png",
        "B.JPG": "B.JPG",
        "c.bmp": "c.png",
        "sub/d.tif": "sub/d.tif",
        "sub/deep/e.webp": "sub/deep/e.webp",
    }
    assert {j.fmt for j in jobs} == {"png", "jpg", "tiff", "webp"}


def test_batch_without_recursive_stays_at_the_top(tree: Path, tmp_path: Path) -> None:
    names = [j.source.name for j in plan_batch(tree, tmp_path / "out")]
    assert names == ["B.JPG", "a.png", "c.bmp"]


def test_batch_format_changes_every_suffix(tree: Path, tmp_path: Path) -> None:
    jobs = plan_batch(tree, tmp_path / "out", fmt="jpg", recursive=True)
    assert {j.target.suffix for j in jobs} == {".jpg"} and {j.fmt for j in jobs} == {"jpg"}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.jpg", ["B.JPG"]),
        ("*.TIF", ["sub/d.tif"]),
        ("sub/*", ["sub/d.tif", "sub/deep/e.webp"]),
        ("*.txt", ["notes.txt"]),
    ],
)
def test_glob_matches_names_or_relative_paths_ignoring_case(
    tree: Path, pattern: str, expected: list[str]
) -> None:
    found = find_images(tree, recursive=True, pattern=pattern)
    assert [p.relative_to(tree).as_posix() for p in found] == expected


def test_an_output_folder_inside_the_input_is_not_read(tree: Path) -> None:
    touch(tree / "out/old_result.png")
    jobs = plan_batch(tree, tree / "out", recursive=True)
    assert all("out" not in j.source.relative_to(tree).parts for j in jobs)


def test_batch_refuses_its_own_folder_and_empty_selections(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must differ"):
        plan_batch(tree, tree / "sub" / "..")
    with pytest.raises(UsageError, match=r"no files matching \"\*.cr2\""):
        plan_batch(tree, tmp_path / "out", pattern="*.cr2")
    with pytest.raises(UsageError, match="add --recursive"):
        plan_batch(tree / "sub" / "deep" / "..", tmp_path / "out", pattern="*.webp")


# -- collisions and formats ------------------------------------------------------------------------------


def test_two_inputs_for_one_output_are_both_reported(tmp_path: Path) -> None:
    for name in ("a.png", "a.jpg", "b.png"):
        touch(tmp_path / "in" / name)
    jobs = plan_batch(tmp_path / "in", tmp_path / "out", fmt="png")
    problems = find_collisions(jobs)
    assert {j.source.name for j in problems} == {"a.png", "a.jpg"}
    message = problems[jobs[0]]
    assert "a.jpg" in message and "a.png" in message and "out/a.png" in message


def test_an_output_that_would_replace_an_input_is_reported(tmp_path: Path) -> None:
    jobs = plan_upscale([str(tmp_path / "a.png"), str(tmp_path / "b.png")], str(tmp_path), None, None, 4)
    assert set(find_collisions(jobs)) == set(jobs)
    jobs = plan_upscale([str(tmp_path / "a.png")], None, None, "", 4)
    assert "would replace the input" in find_collisions(jobs)[jobs[0]]


def test_names_that_differ_only_in_case_collide(tmp_path: Path) -> None:
    jobs = [
        Job(tmp_path / "a.png", tmp_path / "o/A.png", "png"),
        Job(tmp_path / "b.png", tmp_path / "o/a.png", "png"),
    ]
    assert len(find_collisions(jobs)) == 2
    assert find_collisions([jobs[0], Job(tmp_path / "c.png", tmp_path / "o/c.png", "png")]) == {}


def test_sixteen_bits_are_refused_for_eight_bit_formats_before_any_work() -> None:
    check_formats([Job(None, None, "png"), Job(None, None, "tiff")], 16)
    check_formats([Job(None, None, "jpg")], 8)
    with pytest.raises(UsageError, match="WEBP holds 8 bits"):
        check_formats([Job(None, Path("x.webp"), "webp")], 16)


# -- records and provenance ------------------------------------------------------------------------------


def test_json_record_has_the_documented_fields() -> None:
    made = Provenance("realsr-v3", 7, 2.0, "tile 256, overlap 64", "fp16", "cuda", "1.2.3", 2, "wavelet")
    record = json.loads(Record("a.png", "a_x2.png", "ok", None, 1.23456, (40, 30), made).to_json())
    assert record == {
        "input": "a.png",
        "output": "a_x2.png",
        "status": "ok",
        "error": None,
        "seconds": 1.235,
        "width": 40,
        "height": 30,
        "model": "realsr-v3",
        "seed": 7,
        "scale": 2.0,
        "tiling": "tile 256, overlap 64",
        "precision": "fp16",
        "device": "cuda",
        "version": "1.2.3",
        "steps": 2,
        "color_fix": "wavelet",
    }
    failed = json.loads(Record("-", "-", "failed", "<stdin>: empty file").to_json())
    assert failed["error"] == "<stdin>: empty file" and failed["width"] is None and "model" not in failed


def test_provenance_text_names_the_tool_and_the_settings() -> None:
    text = Provenance("realsr-v1", 12345, 4.0, "none", "fp32", "cpu", "0.1.0").text()
    assert text["Software"] == "resshift-cli 0.1.0"
    assert (
        text["resshift:scale"] == "4"
        and text["resshift:seed"] == "12345"
        and text["resshift:tiling"] == "none"
    )


def test_tiling_description() -> None:
    assert describe_tiling(UpscaleOptions(tile=0)) == "none"
    assert describe_tiling(UpscaleOptions(tile=128, tile_overlap=32)) == "tile 128, overlap 32"
    assert describe_tiling(UpscaleOptions(tile=64)) == "tile 64, overlap 16"  # automatic: a quarter
    assert describe_tiling(UpscaleOptions(official_tiling=True)).startswith("official, tile 256")


@pytest.mark.parametrize(("scale", "passes"), [(1, 1), (2, 1), (4, 1), (4.01, 2), (16, 2), (16.5, 3)])
def test_passes_for_scale(scale: float, passes: int) -> None:
    assert passes_for(scale, 4) == passes


# -- run_job without a model ------------------------------------------------------------------------------


def test_lazy_model_loads_once_and_only_when_asked() -> None:
    calls = []
    lazy = LazyModel(lambda: calls.append(1) or "model")
    assert not lazy.loaded and calls == []
    assert lazy.get() == lazy.get() == "model"
    assert calls == [1] and lazy.loaded


def test_existing_output_fails_or_is_skipped_without_loading(tmp_path: Path) -> None:
    source = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels())
    target = touch(tmp_path / "a_x4.png", b"old")
    job = Job(source, target, "png")
    failed = run_job(job, Settings(), unloadable())
    assert failed.status == "failed" and "already exists; pass --overwrite" in failed.error
    assert run_job(job, Settings(existing="skip"), unloadable()).status == "skipped"
    assert target.read_bytes() == b"old"


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "bomb"])
def test_bad_inputs_fail_before_the_model_is_loaded(tmp_path: Path, kind: str) -> None:
    good = corpus.write_png(tmp_path, "good.png", corpus.sample_pixels())
    source = {
        "empty": lambda: corpus.write_empty(tmp_path),
        "text": lambda: corpus.write_text_file(tmp_path, "notes.jpg"),
        "truncated": lambda: corpus.write_truncated(tmp_path, good),
        "bomb": lambda: corpus.write_bomb_png(tmp_path),
    }[kind]()
    record = run_job(Job(source, tmp_path / "out.png", "png"), Settings(), unloadable())
    assert record.status == "failed" and record.error.startswith(str(source))
    assert "\n" not in record.error
    assert not (tmp_path / "out.png").exists()


def test_empty_stdin_names_stdin(tmp_path: Path) -> None:
    record = run_job(Job(None, tmp_path / "o.png", "png"), Settings(), unloadable(), stdin=io.BytesIO(b""))
    assert (record.status, record.error, record.input) == ("failed", "<stdin>: empty file", "-")


# -- scales other than 4 (runs the tiny model) ------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_model("v3")


def test_a_scale_above_four_runs_two_passes_then_resizes(model) -> None:
    rgb = np.random.default_rng(0).random((3, 5, 3), dtype=np.float32)
    alpha = np.ones((3, 5), np.float32)
    alpha[0, 0] = 0.0
    seen = []
    out = upscale_to_scale(model, Picture(rgb, alpha), 6.0, UpscaleOptions(tile=0), seen.append)
    assert (out.height, out.width) == (18, 30)
    assert out.alpha is not None and out.alpha.shape == (18, 30) and out.alpha[0, 0] == 0.0
    assert {p.stage.split(" ", 2)[1] for p in seen} == {"1/2", "2/2"}
