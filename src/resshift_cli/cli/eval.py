"""`resshift eval`: the paper's table (PSNR/SSIM on Y, bicubic baseline, perceptual metrics when available).

Reporting: the table (or one JSON object with --json) on stdout; one `error:` line on stderr per file that
could not be scored; a progress bar on stderr only when it is a terminal. Exit codes: 0 all pairs scored,
1 some pair failed or was unpaired, 2 usage error (bad options, empty folder).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from resshift_cli import metrics
from resshift_cli.cache import resolve_model
from resshift_cli.cli.downloads import download_progress
from resshift_cli.cli.errors import error_line
from resshift_cli.cli.options import (
    MODEL_PANEL,
    REPORT_PANEL,
    Debug,
    Device,
    Precision,
    PrecisionOption,
    Quiet,
    Seed,
)
from resshift_cli.devices import configure_threads, resolve_device, resolve_precision, resolve_winograd
from resshift_cli.errors import ModelError, UsageError
from resshift_cli.evaluate import (
    SCALE,
    Method,
    Pair,
    Problem,
    Report,
    bicubic_method,
    evaluate,
    match_pairs,
    model_method,
)
from resshift_cli.fileio import atomic_write
from resshift_cli.loading import LoadedModel, load_model
from resshift_cli.pipeline import DEFAULT_SEED, UpscaleOptions

EXIT_FAILED = 1
INPUT_PANEL = "Inputs"

LrDir = Annotated[
    Path | None,
    typer.Option(
        "--lr", help="Folder of low-resolution inputs (searched recursively).", rich_help_panel=INPUT_PANEL
    ),
]
SrDir = Annotated[
    Path | None,
    typer.Option(
        "--sr",
        help="Instead of --lr: folder of images already upscaled, scored as they are.",
        rich_help_panel=INPUT_PANEL,
    ),
]
GtDir = Annotated[
    Path,
    typer.Option(
        "--gt",
        help="Folder of ground-truth images, matched to the inputs by relative path without suffix.",
        show_default=False,
        rich_help_panel=INPUT_PANEL,
    ),
]
Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="A model to score (name, folder or hf://owner/name); repeat for several. Default: only the"
        " bicubic baseline.",
        metavar="NAME",
        show_default=False,
        rich_help_panel=MODEL_PANEL,
    ),
]
Crop = Annotated[
    int,
    typer.Option("--crop", min=0, help="Border pixels left out of PSNR/SSIM (the SR papers use the scale).",
                 rich_help_panel=REPORT_PANEL),
]  # fmt: skip
PerceptualOption = Annotated[
    bool,
    typer.Option(
        "--perceptual/--no-perceptual",
        help="LPIPS, CLIPIQA and MUSIQ through pyiqa (pip install 'resshift-cli\\[eval]') when its"
        " weights are on disk; reported as missing otherwise.",
        rich_help_panel=REPORT_PANEL,
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object instead of the table.", rich_help_panel=REPORT_PANEL),
]
CsvFile = Annotated[
    Path | None,
    typer.Option("--csv", help="Also write the scores to this CSV file.", dir_okay=False, show_default=False,
                 rich_help_panel=REPORT_PANEL),
]  # fmt: skip
PerImage = Annotated[
    bool, typer.Option("--per-image", help="Add one row per image and method.", rich_help_panel=REPORT_PANEL)
]

_ARROWS = {"psnr": "↑", "ssim": "↑", "lpips": "↓", "clipiqa": "↑", "musiq": "↑"}


# 1. Running ------------------------------------------------------------------------------------------------


def _loader(spec: str, device: torch.device, quiet: bool) -> Callable[[], LoadedModel]:
    def load() -> LoadedModel:
        with download_progress(not quiet) as progress:
            folder = resolve_model(spec, progress=progress)
        configure_threads()
        model = load_model(folder, device)
        if model.scale != SCALE:
            raise ModelError(f"{spec}: a ×{model.scale} model; eval scores ×{SCALE} models")
        return model

    return load


def _methods(
    models: Sequence[str], device: torch.device, options: UpscaleOptions, quiet: bool
) -> list[Method]:
    return [bicubic_method(SCALE)] + [model_method(m, _loader(m, device, quiet), options) for m in models]


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[str, str], None]]:
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )
    task = bars.add_task("scoring", total=total)
    with bars:
        yield lambda method, image: bars.update(task, advance=1, description=f"{method} · {image}")


def _check_inputs(lr: Path | None, sr: Path | None, models: Sequence[str]) -> tuple[Path, bool]:
    """(the input folder, SR mode?) or a UsageError for a wrong combination."""
    if (lr is None) == (sr is None):
        raise UsageError("pass exactly one of --lr (images to upscale) and --sr (images already upscaled)")
    if sr is not None and models:
        raise UsageError("--model needs --lr: with --sr the images are scored as they are")
    return (sr, True) if sr is not None else (lr, False)  # type: ignore[return-value]


# 2. Output -------------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "missing"
    return "inf" if math.isinf(value) else "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _columns(perceptual: Sequence[str]) -> list[str]:
    return ["psnr", "ssim", *perceptual]


def _summary_rows(report: Report, perceptual: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"method": m.method, "images": m.images, "psnr": m.psnr, "ssim": m.ssim}
        | {name: m.perceptual.get(name) for name in perceptual}
        for m in report.methods
    ]


def _image_rows(report: Report, perceptual: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"method": s.method, "image": s.image, "psnr": s.psnr, "ssim": s.ssim}
        | {name: s.perceptual.get(name) for name in perceptual}
        for s in report.images
    ]


def _table(title: str, rows: Sequence[dict[str, Any]], keys: Sequence[str], columns: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for key in keys:
        table.add_column(key)
    for column in columns:
        table.add_column(f"{column.upper()} {_ARROWS.get(column, '')}".strip(), justify="right")
    for row in rows:
        cells = [str(row[key]) for key in keys]
        table.add_row(*cells, *(_number(row[c], 2 if c == "psnr" else 4) for c in columns))
    return table


def _print_tables(report: Report, perceptual: Sequence[str], per_image: bool) -> None:
    console = Console(soft_wrap=False)
    columns = _columns(perceptual)
    protocol = f"Y channel (BT.601), {report.crop}-pixel border crop, 8-bit"
    console.print(_table(f"×{report.scale} · {protocol}", _summary_rows(report, perceptual),
                         ["method", "images"], columns))  # fmt: skip
    if per_image:
        console.print(_table("per image", _image_rows(report, perceptual), ["image", "method"], columns))
    for name, reason in report.missing.items():
        console.print(f"{name}: missing, {reason}", highlight=False, markup=False)


def _json_report(report: Report, perceptual: Sequence[str], per_image: bool) -> str:
    def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: _json_number(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows]

    data: dict[str, Any] = {
        "scale": report.scale,
        "protocol": {"channel": "Y (ITU-R BT.601, 16-235)", "crop": report.crop, "rounding": "8-bit"},
        "methods": clean(_summary_rows(report, perceptual)),
        "missing": report.missing,
        "failed": [{"image": p.name, "error": p.message} for p in report.failed],
    }
    if per_image:
        data["images"] = clean(_image_rows(report, perceptual))
    return json.dumps(data, ensure_ascii=False)


def _csv_text(report: Report, perceptual: Sequence[str], per_image: bool) -> str:
    """Mean rows (image "mean") then, with --per-image, one row per image and method."""
    fields = ["method", "image", "images", *_columns(perceptual)]
    rows = [row | {"image": "mean"} for row in _summary_rows(report, perceptual)]
    if per_image:
        rows += [row | {"images": 1} for row in _image_rows(report, perceptual)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; --csv needs a file name")
    try:
        with atomic_write(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"{path}: cannot write ({err.strerror or err})") from err


def _report_failures(failed: Sequence[Problem]) -> None:
    for problem in failed:
        error_line(problem.message)


# 3. The command --------------------------------------------------------------------------------------------


def eval_command(
    gt: GtDir,
    lr: LrDir = None,
    sr: SrDir = None,
    models: Models = None,
    seed: Seed = DEFAULT_SEED,
    device: Device = "auto",
    precision: PrecisionOption = Precision.auto,
    crop: Crop = SCALE,
    perceptual: PerceptualOption = True,
    json_output: JsonOption = False,
    csv_file: CsvFile = None,
    per_image: PerImage = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Score models against ground truth as SR papers do: mean PSNR and SSIM on the Y channel,
    bicubic ×4 as the baseline row, LPIPS/CLIPIQA/MUSIQ when pyiqa and its weights are there.

    Give LR images (--lr) to upscale with each --model, or images already upscaled (--sr).
    Pairs are matched by relative path without suffix; unpaired or mis-sized files get one
    error line each (exit code 1).
    """
    source, sr_mode = _check_inputs(lr, sr, models or [])
    pairs, problems = match_pairs(source, gt, "SR" if sr_mode else "LR")
    torch_device = resolve_device(device)
    options = UpscaleOptions(
        seed=seed,
        dtype=resolve_precision(precision.value, torch_device),
        winograd=resolve_winograd(precision.value, torch_device),
    )
    methods = (
        [Method(source.name or "sr", None)]
        if sr_mode
        else _methods(models or [], torch_device, options, quiet)
    )
    scorers = metrics.perceptual_metrics(torch_device) if perceptual else []
    report = _run(pairs, methods, crop, scorers, problems, quiet)
    _report_failures(report.failed)
    names = [p.name for p in scorers]
    if csv_file is not None:
        write_text_atomically(csv_file, _csv_text(report, names, per_image))
    if json_output:
        print(_json_report(report, names, per_image))
    else:
        _print_tables(report, names, per_image)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def _run(
    pairs: Sequence[Pair],
    methods: Sequence[Method],
    crop: int,
    scorers: Sequence[metrics.Perceptual],
    problems: Sequence[Problem],
    quiet: bool,
) -> Report:
    enabled = not quiet and Console(stderr=True).is_terminal
    with _progress(len(pairs) * len(methods), enabled) as advance:
        return evaluate(pairs, methods, crop=crop, perceptual=scorers, problems=problems, on_image=advance)
