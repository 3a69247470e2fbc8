"""`resshift train`: fine-tune a model (or train a preset architecture) on a folder of HR images.

Progress (a bar with the loss and the speed) goes to stderr when it is a terminal and -q is not given;
errors are one line; Ctrl-C saves `RUN_DIR/last` and exits with 130. Under torchrun only rank 0 draws.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as Bars

from resshift_cli.cache import resolve_model
from resshift_cli.cli.downloads import download_progress
from resshift_cli.cli.errors import EXIT_INTERRUPTED, error_line
from resshift_cli.cli.options import Debug, Device, Precision, Quiet, TrainPrecisionOption
from resshift_cli.config import AutoencoderConfig
from resshift_cli.degrade import DEGRADATIONS
from resshift_cli.devices import configure_threads, resolve_device, resolve_precision
from resshift_cli.errors import UsageError
from resshift_cli.loading import LoadedModel, load_model
from resshift_cli.presets import PRESETS, fresh_model, get
from resshift_cli.train.data import PairOptions, TrainPairs, check_crop, check_degradation, scan
from resshift_cli.train.loop import (
    DEFAULT_WARMUP,
    DTYPES,
    LAST,
    LR_SCHEDULES,
    TrainEvent,
    TrainOptions,
    fit,
    resume_model,
)
from resshift_cli.train.perceptual import load_lpips
from resshift_cli.train.validate import ValidationSet

MODEL_PANEL = "Model"
OPTIM_PANEL = "Optimisation"
DATA_PANEL = "Data"
RUN_PANEL = "Run"


def _opt(*names: str, panel: str, **kwargs: object) -> typer.models.OptionInfo:
    return typer.Option(*names, rich_help_panel=panel, **kwargs)  # type: ignore[arg-type]


def _starting_model(
    run_dir: Path,
    resume: bool,
    source: str | None,
    arch: str | None,
    autoencoder: str | None,
    seed: int,
    quiet: bool,
) -> LoadedModel:
    """The weights to start from: the checkpoint (--resume), a model (--from) or a fresh preset (--arch)."""
    if resume:
        return resume_model(run_dir)
    if (source is None) == (arch is None):
        raise UsageError("pass exactly one of --from MODEL (fine-tune) and --arch PRESET (new model)")
    if source is not None:
        return _load(source, quiet)
    config = get(arch or "")
    if autoencoder is None and isinstance(config.autoencoder, AutoencoderConfig):
        raise UsageError(f"--arch {arch} needs --autoencoder MODEL: the VQ autoencoder is not trained here")
    return fresh_model(config, seed, None if autoencoder is None else _load(autoencoder, quiet))


def _load(spec: str, quiet: bool) -> LoadedModel:
    """A model from a name, folder or hf:// spec, downloading it (with a progress bar) if needed."""
    with download_progress(not quiet) as progress:
        return load_model(resolve_model(spec, progress=progress))


class TrainBar:
    """One rich bar on stderr: iterations, loss, it/s, time left (drawn only when enabled); a line per
    validation unless `report` is off (-q)."""

    def __init__(self, enabled: bool, report: bool) -> None:
        self.report = report
        self.bars = Bars(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[speed]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            transient=True,
        )
        self.task = self.bars.add_task("train", total=None, loss="-", speed="")
        self.first: tuple[int, float] | None = None
        self.last: TrainEvent | None = None

    def __call__(self, event: TrainEvent) -> None:
        self.last = event
        if event.validation is not None and self.report:
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in event.validation.items())
            self.bars.console.print(f"iteration {event.iteration}: {metrics}")
        if event.validation is not None and event.iteration == 0:
            return
        self.first = self.first or (event.iteration - 1, event.seconds)
        done, elapsed = event.iteration - self.first[0], event.seconds - self.first[1]
        speed = f"{done / elapsed:.2f} it/s" if elapsed > 0 else ""
        fields = {"loss": f"{event.loss:.4f}", "speed": speed}
        self.bars.update(self.task, completed=event.iteration, total=event.iterations, **fields)


def train(
    hr_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder of HR training images (recursive).",
            metavar="HR_DIR",
            file_okay=False,
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Run folder: last/, final/, log.jsonl.", show_default=False)
    ],
    source: Annotated[
        str | None,
        _opt(
            "--from",
            panel=MODEL_PANEL,
            help="Fine-tune this model (name, folder or hf://...).",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        _opt(
            "--arch", panel=MODEL_PANEL, help=f"Train a new UNet: {', '.join(PRESETS)}.", show_default=False
        ),
    ] = None,
    autoencoder: Annotated[
        str | None,
        _opt(
            "--autoencoder",
            panel=MODEL_PANEL,
            help="With --arch: the model whose VQ autoencoder is used.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, _opt("--resume", panel=RUN_PANEL, help="Continue the run in -o from last/.")
    ] = False,
    iterations: Annotated[
        int, _opt("--iterations", panel=OPTIM_PANEL, min=0, help="Optimiser updates.")
    ] = 1000,
    batch_size: Annotated[
        int, _opt("--batch-size", panel=OPTIM_PANEL, min=1, help="Global batch (over all processes).")
    ] = 8,
    micro_batch: Annotated[
        int,
        _opt(
            "--micro-batch",
            panel=OPTIM_PANEL,
            min=0,
            help="Samples per forward pass and process; gradients accumulate (0 = whole batch).",
        ),
    ] = 0,
    learning_rate: Annotated[
        float, _opt("--learning-rate", panel=OPTIM_PANEL, min=0.0, help="AdamW rate.")
    ] = 5e-5,
    warmup: Annotated[
        int | None,
        _opt(
            "--warmup",
            panel=OPTIM_PANEL,
            min=0,
            help=f"Linear warm-up iterations (default: {DEFAULT_WARMUP}, at most a tenth of --iterations).",
            show_default=False,
        ),
    ] = None,
    lr_schedule: Annotated[
        str, _opt("--lr-schedule", panel=OPTIM_PANEL, help=f"After warm-up: {' or '.join(LR_SCHEDULES)}.")
    ] = "constant",
    lr_floor: Annotated[float, _opt("--lr-floor", panel=OPTIM_PANEL, help="Final rate of cosine.")] = 2e-5,
    weight_decay: Annotated[
        float, _opt("--weight-decay", panel=OPTIM_PANEL, min=0.0, help="AdamW decay.")
    ] = 0.0,
    ema_rate: Annotated[
        float, _opt("--ema-rate", panel=OPTIM_PANEL, min=0.0, max=1.0, help="EMA decay (the EMA is saved).")
    ] = 0.999,
    lpips_weight: Annotated[
        float,
        _opt(
            "--lpips-weight",
            panel=OPTIM_PANEL,
            min=0.0,
            help="Add LPIPS(VGG) of the decoded prediction (v3: 1); needs lpips and its weights.",
        ),
    ] = 0.0,
    grad_checkpoint: Annotated[
        bool, _opt("--grad-checkpoint", panel=OPTIM_PANEL, help="Recompute activations: less memory.")
    ] = False,
    crop: Annotated[int, _opt("--crop", panel=DATA_PANEL, help="HR crop side in pixels.")] = 256,
    degradation: Annotated[
        str, _opt("--degradation", panel=DATA_PANEL, help=f"How LR is made: {' or '.join(DEGRADATIONS)}.")
    ] = "realesrgan",
    paired_lr: Annotated[
        Path | None,
        _opt(
            "--paired-lr",
            panel=DATA_PANEL,
            file_okay=False,
            show_default=False,
            help="Read each HR image's LR from this folder (same relative name) instead.",
        ),
    ] = None,
    val: Annotated[
        Path | None,
        _opt(
            "--val",
            panel=DATA_PANEL,
            file_okay=False,
            show_default=False,
            help="Held-out HR folder: validation loss and PSNR(Y) (centre crops, --degradation).",
        ),
    ] = None,
    val_every: Annotated[
        int, _opt("--val-every", panel=RUN_PANEL, min=0, help="Validate every N (and at the start and end).")
    ] = 1000,
    save_every: Annotated[
        int, _opt("--save-every", panel=RUN_PANEL, min=0, help="Checkpoint every N.")
    ] = 1000,
    workers: Annotated[int, _opt("--workers", panel=RUN_PANEL, min=0, help="Data loading processes.")] = 2,
    seed: Annotated[int, _opt("--seed", panel=RUN_PANEL, min=0, help="Seed of data, noise and init.")] = 0,
    device: Device = "auto",
    precision: TrainPrecisionOption = Precision.auto,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Fine-tune a model (--from) or train a new one (--arch) on HR_DIR; writes model folders to -o.

    Each random crop's LR is made on the fly (--degradation) or read from --paired-lr.

    RUN_DIR/last (every --save-every) and RUN_DIR/final are model folders for upscale --model.

    Several GPUs: the same command under torchrun. Ctrl-C saves last/; --resume continues it.
    """
    run_device = resolve_device(device)
    dtype = resolve_precision(precision.value, run_device)
    configure_threads()
    model = _starting_model(output, resume, source, arch, autoencoder, seed, quiet)
    check_crop(crop, model)
    pairs = PairOptions(crop, model.config.scale, degradation)
    if paired_lr is None or val is not None:
        check_degradation(pairs)
    data = TrainPairs(scan(hr_dir, pairs, paired_lr), pairs, seed)
    validation = ValidationSet.make(scan(val, pairs), pairs, seed) if val is not None else None
    options = TrainOptions(
        iterations=iterations,
        batch_size=batch_size,
        micro_batch=micro_batch,
        learning_rate=learning_rate,
        warmup=warmup,
        lr_schedule=lr_schedule,
        lr_floor=lr_floor,
        weight_decay=weight_decay,
        ema_rate=ema_rate,
        seed=seed,
        precision=next(name for name, d in DTYPES.items() if d == dtype),
        grad_checkpoint=grad_checkpoint,
        lpips_weight=lpips_weight,
        val_every=val_every,
        save_every=save_every,
        workers=workers,
        data={
            "crop": crop,
            "degradation": degradation,
            "paired": paired_lr is not None,
            "scale": pairs.scale,
        },
    )
    bar = TrainBar(not quiet and Console(stderr=True).is_terminal, report=not quiet)
    try:
        with bar.bars:
            final = fit(model, data, output, options, run_device, validation, load_lpips, resume, bar)
    except KeyboardInterrupt:
        done = bar.last.iteration if bar.last is not None else "the start"
        error_line(f"interrupted; checkpoint {output / LAST} saved at iteration {done}; rerun with --resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not quiet and os.environ.get("RANK", "0") == "0":
        print(f"trained {iterations} iterations: {final}", file=sys.stderr)
