"""Typed option aliases shared by `upscale` and `batch`, defined once (`Annotated[T, typer.Option(...)]`)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from resshift_cli.cli.errors import debug_option
from resshift_cli.colorfix import COLOR_FIXES
from resshift_cli.devices import DEVICE_ENV, PRECISIONS
from resshift_cli.images import OUTPUT_FORMATS

MODEL_PANEL = "Model"
OUTPUT_PANEL = "Output"
TILING_PANEL = "Tiling"
DEVICE_PANEL = "Device"
REPORT_PANEL = "Reporting"

MAX_SCALE = 16.0


def _choices(name: str, values: tuple[str, ...], doc: str) -> type[Enum]:
    """A str Enum whose members are `values` (member name = value), for Typer's choice options."""
    choices = Enum(name, {value: value for value in values}, type=str, module=__name__)  # type: ignore[misc]
    choices.__doc__ = doc
    return choices


OutputFormat = _choices("OutputFormat", OUTPUT_FORMATS, "File formats we write (`images.OUTPUT_FORMATS`).")
ColorFixChoice = _choices(
    "ColorFixChoice", COLOR_FIXES, "Colour corrections of the result (`colorfix.COLOR_FIXES`)."
)
Precision = _choices(
    "Precision",
    PRECISIONS,
    "Autocast precision of the networks (`devices.PRECISIONS`; auto: `resolve_precision`).",
)


AUTO = "auto"


def _check_overlap(value: str) -> str:
    """`auto` or a whole number of pixels >= 0, kept as text; `overlap_pixels` turns it into an int."""
    if value != AUTO and not (value.isdigit() and value.isascii()):
        raise typer.BadParameter(f"must be auto or a whole number >= 0, got {value!r}")
    return value


def overlap_pixels(value: str) -> int | None:
    """The --tile-overlap value as pixels, None for auto (`UpscaleOptions.overlap`)."""
    return None if value == AUTO else int(value)


def _check_bit_depth(value: int | None) -> int | None:
    if value not in (None, 8, 16):
        raise typer.BadParameter(f"must be 8 or 16, got {value}")
    return value


Inputs = Annotated[
    list[str],
    typer.Argument(
        help="Image files, or - to read one image from stdin.", metavar="INPUT", show_default=False
    ),
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="One input: the output file, or - for stdout. Several inputs: a directory."
        " Default: <stem>_x4.<ext> beside each input.",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Suffix = Annotated[
    str | None,
    typer.Option(
        "--suffix",
        help="Added to the file stem of each output (default: _x<scale> beside the input, none in -o DIR).",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Folder = Annotated[
    str,
    typer.Argument(
        help="Folder of images to upscale: a path, or s3://BUCKET/PATH, gs://BUCKET/PATH.",
        metavar="FOLDER",
        show_default=False,
    ),
]
OutDir = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        help="Folder that receives the outputs, mirroring the input tree with the same file names"
        " (a path, or a folder in the same object store as FOLDER).",
        metavar="DIR",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Include images in sub-folders.")]
Glob = Annotated[
    str | None,
    typer.Option(
        "--glob",
        help="Only files whose name (or relative path, if the pattern has a /) matches, ignoring case,"
        ' e.g. "*.jpg". Default: every file with an image suffix.',
        show_default=False,
    ),
]
SkipExisting = Annotated[
    bool,
    typer.Option(
        "--skip-existing",
        help="Skip inputs whose output already exists (resume).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace outputs that already exist (default: such an input fails).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="A model name (see `resshift models list`), a model folder, or hf://owner/name\\[@revision].",
        rich_help_panel=MODEL_PANEL,
    ),
]
Scale = Annotated[
    float,
    typer.Option(
        "--scale",
        "-s",
        min=1.0,
        max=MAX_SCALE,
        help="Output size factor. Other than 4: the model runs ×4 (twice above 4), then a Lanczos"
        " resize gives the exact size.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Seed = Annotated[
    int, typer.Option("--seed", help="Noise seed (same seed, same image).", rich_help_panel=MODEL_PANEL)
]
Tile = Annotated[
    int,
    typer.Option(
        "--tile",
        min=0,
        help="Largest tile side in input pixels, a multiple of 64 (the side per axis that means the least"
        " work is used); 0 processes the whole image at once.",
        rich_help_panel=TILING_PANEL,
    ),
]
TileOverlap = Annotated[
    str,
    typer.Option(
        "--tile-overlap",
        callback=_check_overlap,
        metavar="N|auto",
        help="Input pixels shared by neighbouring tiles; auto: a quarter of the tile, at most 32"
        " (--official-tiling: a quarter).",
        rich_help_panel=TILING_PANEL,
    ),
]
TileBatch = Annotated[
    int,
    typer.Option(
        "--tile-batch",
        min=0,
        help="Denoiser tiles per network call (0 = auto: 4 on CUDA, 1 elsewhere).",
        rich_help_panel=TILING_PANEL,
    ),
]
OfficialTiling = Annotated[
    bool,
    typer.Option(
        "--official-tiling",
        help="Reproduce the official script's tiling (independent chains, equal-weight average).",
        rich_help_panel=TILING_PANEL,
    ),
]
Steps = Annotated[
    int | None,
    typer.Option(
        "--steps",
        min=1,
        help="Sampling steps, at most the model's trained steps (realsr-v1/v2: 15, realsr-v3/bicsr: 4):"
        " fewer is faster and softer (official timestep respacing). Default: the model's own (the trained"
        " steps, unless its config sets timestep_respacing, as lite does).",
        show_default=False,
        rich_help_panel=MODEL_PANEL,
    ),
]
ColorFix = Annotated[
    ColorFixChoice,
    typer.Option(
        "--color-fix",
        help="Pull the result's colours back to the input's: wavelet keeps the result's detail and takes"
        " the bicubic input's low frequencies; adain matches each channel's mean and spread. none ="
        " the model's output as is.",
        rich_help_panel=MODEL_PANEL,
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        envvar=DEVICE_ENV,
        help="auto, cpu, cuda, cuda:N or mps (auto: CUDA, then MPS, then CPU).",
        rich_help_panel=DEVICE_PANEL,
    ),
]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="auto: bf16 (or fp16) on CUDA; on CPUs Winograd convolutions with a float32 autoencoder and"
        " a bf16 denoiser where the CPU has native bf16, else float32 (1e-5 from the exact path);"
        " fp32: the exact path.",
        rich_help_panel=DEVICE_PANEL,
    ),
]
TrainPrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="auto: bf16 (or fp16) on CUDA, bf16 on CPUs with native bf16, else fp32 (the exact path).",
        rich_help_panel=DEVICE_PANEL,
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="Compile the denoiser with torch.compile: the first image of each size waits for the"
        " compiler (minutes on a CPU), later ones run a little faster. Falls back to normal mode, with a"
        " warning, if compiling fails.",
        rich_help_panel=DEVICE_PANEL,
    ),
]
Format = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format",
        help="Output format (default: the input's, PNG when it has none we write; PNG on stdout).",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Quality = Annotated[
    int,
    typer.Option(
        "--quality",
        min=1,
        max=100,
        help="JPEG/WebP quality (WebP 100 is lossless).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
BitDepth = Annotated[
    int | None,
    typer.Option(
        "--bit-depth",
        callback=_check_bit_depth,
        help="8 or 16 bits per channel (16: png and tiff only). Default: the input's, where the format"
        " holds it.",
        show_default=False,
        rich_help_panel=OUTPUT_PANEL,
    ),
]
MaxPixels = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse inputs with more pixels than this, before decoding them.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
Json = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON object per input on stdout (input, output, status, error, seconds, ...).",
        rich_help_panel=REPORT_PANEL,
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress bars and no summary; errors only.", rich_help_panel=REPORT_PANEL
    ),
]
_DEBUG_HELP = "Show full tracebacks on errors."
RAY_PANEL = "Ray"
UseRay = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Run on Ray: a local Ray runtime using this machine's GPUs (or CPUs), or the cluster at"
        " --ray-address. Needs pip install 'resshift-cli\\[ray]'.",
        rich_help_panel=RAY_PANEL,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Join this Ray cluster instead (auto, ray://HOST:10001, HOST:6379); implies --ray.",
        metavar="ADDRESS",
        show_default=False,
        rich_help_panel=RAY_PANEL,
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="With --ray: most model replicas (default: one per GPU; without GPUs one per node, using"
        " all of its CPUs).",
        show_default=False,
        rich_help_panel=RAY_PANEL,
    ),
]
RootDebug = Annotated[bool, typer.Option("--debug", help=_DEBUG_HELP, callback=debug_option)]
"""`resshift --debug COMMAND`: sets the traceback switch for the run (`cli.errors.debug_option`)."""
Debug = Annotated[
    bool, typer.Option("--debug", help=_DEBUG_HELP, callback=debug_option, rich_help_panel=REPORT_PANEL)
]
"""`resshift COMMAND --debug`: the same switch, offered again after the command for convenience."""
