"""`resshift upscale` and `resshift batch`: plan the jobs, run them one by one, report every input.

Reporting: stdout carries data only (the image with `-o -`, or one JSON line per input with --json).
Progress bars go to stderr, only when stderr is a terminal and -q is not given; errors are always one
line each on stderr; with several inputs a summary line ends the run (unless -q).
Exit codes: 0 every input done or skipped, 1 some input failed, 2 usage error, 130 interrupted.
`batch --ray` runs the same jobs on Ray (`resshift_cli.ray`) and reports them the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TextIO

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as Bars

from resshift_cli import registry
from resshift_cli.api import Upscaler
from resshift_cli.cli.downloads import download_progress
from resshift_cli.cli.errors import EXIT_INTERRUPTED, debug_enabled, error_line
from resshift_cli.cli.options import (
    AUTO,
    BitDepth,
    ColorFix,
    ColorFixChoice,
    Compile,
    Debug,
    Device,
    Folder,
    Format,
    Glob,
    Inputs,
    Json,
    MaxPixels,
    Model,
    OfficialTiling,
    OutDir,
    Output,
    OutputFormat,
    Overwrite,
    Precision,
    PrecisionOption,
    Quality,
    Quiet,
    RayAddress,
    Recursive,
    Scale,
    Seed,
    SkipExisting,
    Steps,
    Suffix,
    Tile,
    TileBatch,
    TileOverlap,
    UseRay,
    Workers,
    overlap_pixels,
)
from resshift_cli.devices import resolve_device, resolve_precision, resolve_winograd
from resshift_cli.errors import UsageError, one_line
from resshift_cli.images import DEFAULT_MAX_PIXELS
from resshift_cli.jobs import (
    Existing,
    Job,
    LazyModel,
    Record,
    Settings,
    check_formats,
    find_collisions,
    plan_folder,
    plan_upscale,
    run_job,
)
from resshift_cli.pipeline import DEFAULT_SEED, DEFAULT_TILE, DEFAULT_TILE_BATCH, UpscaleOptions, check_tiling
from resshift_cli.progress import Progress, ProgressCallback

EXIT_FAILED = 1


@dataclass(frozen=True)
class Run:
    """What every job of one command shares besides `Settings`: the model, the device and the reporting."""

    model: str
    device: torch.device
    compiled: bool
    json_lines: bool
    quiet: bool


class ProgressBars:
    """Rich bars on stderr: the current image (denoiser steps × tiles) and, with several inputs, the files."""

    def __init__(self, files: int, enabled: bool, console: Console | None = None) -> None:
        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
            redirect_stdout=False,
            transient=True,
        )
        self._files = self.bars.add_task("files", total=files) if files > 1 else None
        self._image = self.bars.add_task("", visible=False)

    def __enter__(self) -> ProgressBars:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def image(self, name: str) -> ProgressCallback:
        """A pipeline progress callback that shows `name` and its stage."""
        self.bars.reset(self._image, description=name, total=None, visible=True)
        return lambda p: self._update(name, p)

    def _update(self, name: str, progress: Progress) -> None:
        description = f"{name} · {progress.stage}"
        self.bars.update(self._image, description=description, completed=progress.done, total=progress.total)

    def file_done(self) -> None:
        self.bars.update(self._image, visible=False)
        if self._files is not None:
            self.bars.advance(self._files)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hide the bars while something else draws its own (a model download)."""
        self.bars.stop()
        try:
            yield
        finally:
            self.bars.start()


def _existing_policy(skip_existing: bool, overwrite: bool) -> Existing:
    if skip_existing and overwrite:
        raise UsageError("--skip-existing and --overwrite exclude each other; pick one")
    return "skip" if skip_existing else "overwrite" if overwrite else "fail"


def _check_stdout(jobs: Sequence[Job], json_lines: bool) -> None:
    """Image data on stdout must go to a pipe or file, and cannot share stdout with JSON lines."""
    if not any(job.target is None for job in jobs):
        return
    if json_lines:
        raise UsageError("--json and -o - both write to stdout; write the image to a file")
    if sys.stdout.isatty():
        raise UsageError("refusing to write image data to a terminal; redirect stdout or pass -o FILE")


def _load(run: Run, dtype: torch.dtype, bars: ProgressBars) -> Upscaler:
    with bars.paused(), download_progress(not run.quiet) as progress:
        return Upscaler.from_pretrained(
            run.model, device=run.device, precision=dtype, compile=run.compiled, progress=progress
        )


def _emit(record: Record, run: Run, out: TextIO) -> None:
    """One JSON line on stdout (--json) and, for a failure, one error line on stderr."""
    if run.json_lines:
        out.write(record.to_json() + "\n")
        out.flush()
    if record.status == "failed" and record.error:
        error_line(record.error)
        if debug_enabled() and record.exception is not None:
            traceback.print_exception(record.exception, file=sys.stderr)


def _warning_line(message: str) -> None:
    """Print `warning: <message>` as one line on stderr (retries that change how an image is made)."""
    print(f"warning: {one_line(message)}", file=sys.stderr)


def _summary(records: Sequence[Record], started: float) -> str:
    counts = {status: sum(r.status == status for r in records) for status in ("ok", "skipped", "failed")}
    return (
        f"{counts['ok']} upscaled, {counts['skipped']} skipped, {counts['failed']} failed"
        f" in {time.perf_counter() - started:.1f} s"
    )


def _silence_closed_stdout() -> None:
    """After a reader closed our stdout pipe, point stdout at /dev/null so exiting does not complain."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _report_collisions(jobs: Sequence[Job], run: Run) -> list[Record]:
    """A failed record, reported at once, for every job that `find_collisions` rules out."""
    records = [
        Record(job.input_name, job.output_name, "failed", reason)
        for job, reason in find_collisions(jobs).items()
    ]
    for record in records:
        _emit(record, run, sys.stdout)
    return records


Runner = Callable[[Sequence[Job], Settings, Run, ProgressBars], Iterator[Record]]
"""Runs the jobs that passed the collision check and yields their records as they finish."""


def _run_here(jobs: Sequence[Job], settings: Settings, run: Run, bars: ProgressBars) -> Iterator[Record]:
    """One job after the other in this process, the model loaded at the first job that needs it."""
    notice = None if run.quiet else _warning_line
    model = LazyModel(lambda: _load(run, settings.options.dtype, bars))
    for job in jobs:
        name = job.source.name if job.source is not None else "<stdin>"
        streams = {
            "stdin": sys.stdin.buffer if job.source is None else None,
            "stdout": sys.stdout.buffer if job.target is None else None,
        }
        yield run_job(job, settings, model, progress=bars.image(name), notice=notice, **streams)


def _run_jobs(jobs: Sequence[Job], settings: Settings, run: Run, runner: Runner) -> list[Record]:
    """Report collisions, then run the other jobs (KeyboardInterrupt propagates)."""
    records = _report_collisions(jobs, run)
    ruled_out = {record.input for record in records}
    runnable = [job for job in jobs if job.input_name not in ruled_out]
    enabled = not run.quiet and Console(stderr=True).is_terminal
    out = sys.stdout  # the runner may point sys.stdout elsewhere while it runs
    with ProgressBars(len(runnable), enabled) as bars:
        for record in runner(runnable, settings, run, bars):
            records.append(record)
            _emit(record, run, out)
            bars.file_done()
    return records


def _on_ray(address: str | None, workers: int | None, device: str, precision: str) -> Runner:
    """A runner that sends the jobs to Ray (`resshift_cli.ray.run_batch`); UsageError without Ray."""
    from resshift_cli.ray import Replica, import_ray, run_batch

    import_ray()
    for name in ("ray", "ray.data"):  # stderr keeps our lines: Ray's own only when they are errors
        logging.getLogger(name).setLevel(logging.ERROR)

    def runner(jobs: Sequence[Job], settings: Settings, run: Run, _bars: ProgressBars) -> Iterator[Record]:
        replica = Replica(run.model, device, precision, run.compiled)
        notice = None if run.quiet else _warning_line
        with contextlib.redirect_stdout(sys.stderr):  # Ray prints its workers' errors on sys.stdout
            yield from run_batch(jobs, settings, replica, address=address, workers=workers, notice=notice)

    return runner


def _execute(jobs: Sequence[Job], settings: Settings, run: Run, runner: Runner = _run_here) -> None:
    """Run every job, print the summary, and leave with the exit code that sums up the records."""
    started = time.perf_counter()
    check_formats(jobs, settings.bit_depth)
    _check_stdout(jobs, run.json_lines)
    try:
        records = _run_jobs(jobs, settings, run, runner)
    except KeyboardInterrupt:
        error_line("interrupted; no partial file was left; rerun with --skip-existing to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if len(jobs) > 1 and not run.quiet:
        print(_summary(records, started), file=sys.stderr)
    if any(r.status == "failed" for r in records):
        if any(job.target is None for job in jobs):
            _silence_closed_stdout()
        raise typer.Exit(EXIT_FAILED)


@dataclass(frozen=True)
class Shared:
    """The options `upscale` and `batch` share, as given on the command line."""

    fmt: OutputFormat | None
    quality: int
    bit_depth: int | None
    skip_existing: bool
    overwrite: bool
    max_pixels: int
    model: str
    scale: float
    seed: int
    tile: int
    tile_overlap: str
    tile_batch: int
    official_tiling: bool
    steps: int | None
    color_fix: ColorFixChoice
    device: str
    precision: Precision
    compiled: bool
    json_lines: bool
    quiet: bool

    @classmethod
    def pick(cls, params: Mapping[str, object]) -> Shared:
        """The shared options out of a command's parameters (its `locals()`)."""
        return cls(**{field.name: params[field.name] for field in fields(cls)})

    @property
    def format_name(self) -> str | None:
        return self.fmt.value if self.fmt is not None else None

    def settings(self, device: torch.device) -> Settings:
        """Checked settings: tiling sizes, --skip-existing/--overwrite, precision resolved for `device`."""
        overlap = overlap_pixels(self.tile_overlap)
        check_tiling(self.tile, overlap, names=("--tile", "--tile-overlap"))
        options = UpscaleOptions(
            seed=self.seed,
            dtype=resolve_precision(self.precision.value, device),
            tile=self.tile,
            tile_overlap=overlap,
            tile_batch=self.tile_batch,
            official_tiling=self.official_tiling,
            steps=self.steps,
            color_fix=self.color_fix.value,
            winograd=resolve_winograd(self.precision.value, device),
        )
        return Settings(
            scale=self.scale,
            options=options,
            quality=self.quality,
            bit_depth=self.bit_depth,
            max_pixels=self.max_pixels,
            existing=_existing_policy(self.skip_existing, self.overwrite),
        )

    def execute(self, jobs: Sequence[Job]) -> None:
        """Resolve the device and precision, then run the jobs (see `_execute`)."""
        device = resolve_device(self.device)
        settings = self.settings(device)
        _execute(jobs, settings, Run(self.model, device, self.compiled, self.json_lines, self.quiet))

    def execute_on_ray(self, jobs: Sequence[Job], address: str | None, workers: int | None) -> None:
        """Run the jobs on Ray; each replica resolves the device and precision on its own machine."""
        runner = _on_ray(address, workers, self.device, self.precision.value)
        settings = self.settings(torch.device("cpu"))
        run = Run(self.model, torch.device("cpu"), self.compiled, self.json_lines, self.quiet)
        _execute(jobs, settings, run, runner)


def upscale(
    inputs: Inputs,
    output: Output = None,
    suffix: Suffix = None,
    fmt: Format = None,
    quality: Quality = 95,
    bit_depth: BitDepth = None,
    skip_existing: SkipExisting = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    model: Model = registry.DEFAULT_MODEL,
    scale: Scale = 4,
    seed: Seed = DEFAULT_SEED,
    steps: Steps = None,
    color_fix: ColorFix = ColorFixChoice.none,
    tile: Tile = DEFAULT_TILE,
    tile_overlap: TileOverlap = AUTO,
    tile_batch: TileBatch = DEFAULT_TILE_BATCH,
    official_tiling: OfficialTiling = False,
    device: Device = "auto",
    precision: PrecisionOption = Precision.auto,
    compiled: Compile = False,
    json_lines: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Upscale photos ×4 (or --scale): files, or - to read one image from stdin.

    Without -o each result is written beside its input as <stem>_x4.<ext>. An existing output is never
    replaced unless you pass --overwrite.
    """
    shared = Shared.pick(locals())
    shared.execute(plan_upscale(inputs, output, shared.format_name, suffix, scale))


def batch(
    folder: Folder,
    output: OutDir,
    recursive: Recursive = False,
    glob: Glob = None,
    fmt: Format = None,
    quality: Quality = 95,
    bit_depth: BitDepth = None,
    skip_existing: SkipExisting = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    model: Model = registry.DEFAULT_MODEL,
    scale: Scale = 4,
    seed: Seed = DEFAULT_SEED,
    steps: Steps = None,
    color_fix: ColorFix = ColorFixChoice.none,
    tile: Tile = DEFAULT_TILE,
    tile_overlap: TileOverlap = AUTO,
    tile_batch: TileBatch = DEFAULT_TILE_BATCH,
    official_tiling: OfficialTiling = False,
    device: Device = "auto",
    precision: PrecisionOption = Precision.auto,
    compiled: Compile = False,
    json_lines: Json = False,
    quiet: Quiet = False,
    debug: Debug = False,
    ray: UseRay = False,
    ray_address: RayAddress = None,
    workers: Workers = None,
) -> None:
    """Upscale every image in FOLDER into the -o folder, mirroring its tree with the same file names.

    A file that fails does not stop the others. Inputs that would write the same output are reported
    before any work and left out. Ctrl-C stops cleanly; rerun with --skip-existing to resume.

    FOLDER and -o may be s3:// or gs:// folders. On a Ray cluster (--ray) the same jobs give the same
    files, with one model per GPU.
    """
    shared = Shared.pick(locals())
    jobs = plan_folder(folder, output, shared.format_name, recursive, glob)
    if ray or ray_address is not None:
        shared.execute_on_ray(jobs, ray_address, workers)
    elif workers is not None:
        raise UsageError("--workers needs --ray")
    else:
        shared.execute(jobs)
