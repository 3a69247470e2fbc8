"""`resshift models …`: list, fetch, convert, export, inspect, verify and remove model weights."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from resshift_cli import cache, card, hub, locations, manifest, registry, release
from resshift_cli.cli.downloads import download_progress
from resshift_cli.config import DiffusionConfig, ModelConfig
from resshift_cli.errors import ModelError
from resshift_cli.loading import CONFIG_FILE, UNET_FILE
from resshift_cli.registry import ModelEntry

app = typer.Typer(
    name="models",
    help="List, download, convert, export and check model weights (cache: $RESSHIFT_HOME).",
    no_args_is_help=True,
)

APPROX_RELEASE_BYTES = 477_939_489 + 221_364_650
"""fp32 `torch.save` sizes of the released UNet and autoencoder (docs/official-behaviour.md §1), shown
before a first download."""

ModelSpec = Annotated[
    str,
    typer.Argument(
        help="A model name (see `resshift models list`), a model folder, or hf://owner/name\\[@revision].",
        show_default=False,
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
KeepPth = Annotated[bool, typer.Option("--keep-pth", help="Keep the official .pth files in the cache.")]
PthFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, show_default=False)]


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


@app.command("list")
def list_models() -> None:
    """List the named models: sampling steps, size, whether they are cached (or built in), license."""
    caption = f"cache: {locations.models_dir()}"
    table = Table("name", "steps", "size", "cached", "license", caption=caption)
    for entry in registry.MODELS.values():
        folder = cache.cached_folder(entry)
        size = (
            _megabytes(cache.folder_size(folder))
            if folder
            else f"~{_megabytes(APPROX_RELEASE_BYTES)} to fetch"
        )
        name = entry.name + (" (default)" if entry.name == registry.DEFAULT_MODEL else "")
        table.add_row(name, str(entry.steps), size, "yes" if folder else "no", entry.license)
    for builtin in registry.BUILTIN.values():
        size = f"{_megabytes(cache.folder_size(cache.builtin_folder(builtin)))}, built in"
        table.add_row(builtin.name, str(builtin.steps), size, "yes", builtin.license)
    Console().print(table)


@app.command()
def download(model: ModelSpec, keep_pth: KeepPth = False, quiet: Quiet = False) -> None:
    """Fetch a model into the cache for later (and offline) use; prints its folder."""
    with download_progress(not quiet) as progress:
        folder = cache.resolve_model(model, keep_pth=keep_pth, progress=progress)
    print(folder)


@app.command()
def convert(
    unet_pth: PthFile,
    autoencoder_pth: PthFile,
    preset: Annotated[
        str,
        typer.Option(
            "--preset",
            help="The named model these weights are (it supplies the diffusion settings).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Model folder to create.", show_default=False)
    ],
) -> None:
    """Convert official .pth files fetched by hand into a model folder (offline; nothing in them is run)."""
    entry = registry.get(preset)
    cache.convert_to_folder(unet_pth, autoencoder_pth, output, name=entry.name, diffusion=entry.diffusion)
    print(output)


@app.command()
def export(
    model: ModelSpec,
    directory: Annotated[Path, typer.Argument(help="New folder to write.", show_default=False)],
    quiet: Quiet = False,
) -> None:
    """Write a Hub-ready folder (model files, manifest, README.md model card) for `hf upload`."""
    with download_progress(not quiet) as progress:
        folder = card.export_model(model, directory, progress=progress)
    print(folder)
    print(f"upload it with: hf upload OWNER/NAME {folder}", file=sys.stderr)


def _entry_lines(entry: ModelEntry) -> list[str]:
    base = release.release_base_url()
    origin = str(hub.HubSpec(entry.hub.repo_id, entry.hub.revision)) if entry.hub else None
    return [
        f"name: {entry.name}",
        f"description: {entry.description}",
        f"license: {registry.LICENSE_NOTE if entry.license == registry.LICENSE else entry.license}",
        f"source: {origin or f'{base}/{entry.unet_file} + {base}/{entry.autoencoder_file}'}",
    ]


def _sampling(diffusion: DiffusionConfig) -> str:
    """What `models info` adds to the steps line: the prediction and a default respacing, where not the
    released models' (x₀, every trained step)."""
    notes = [] if diffusion.prediction == "x0" else [f"predicts the {diffusion.prediction}"]
    if diffusion.timestep_respacing is not None:
        notes.append(f"samples {diffusion.timestep_respacing} of them unless --steps")
    return "".join(f"; {note}" for note in notes)


def _folder_lines(folder: Path) -> list[str]:
    config = ModelConfig.read(folder / CONFIG_FILE)
    diffusion, unet, autoencoder = config.diffusion, config.unet, config.autoencoder
    lines = [
        f"folder: {folder}",
        f"config name: {config.name}",
        f"scale: ×{config.scale}",
        f"steps: {diffusion.steps} (kappa {diffusion.kappa}, min_noise_level {diffusion.min_noise_level})"
        + _sampling(diffusion),
        f"widths: unet {unet.model_channels}, swin {unet.swin_embed_dim}, {autoencoder.summary()}",
    ]
    if not (folder / UNET_FILE).is_file():
        return [*lines, "weights: not downloaded"]
    lines.append(f"size: {_megabytes(cache.folder_size(folder))}")
    recorded = manifest.read_manifest(folder)
    for record in recorded.sources if recorded else ():
        lines.append(f"converted from: {record.url or record.file} (sha256 {record.sha256})")
    return lines


def _builtin_lines(builtin: registry.BuiltinModel) -> list[str]:
    """What a built-in model is, its folder, then its model card."""
    folder = cache.builtin_folder(builtin)
    lines = [
        f"name: {builtin.name}",
        f"description: {builtin.description}",
        f"license: {builtin.license_note}",
        "source: built into resshift-cli (no download)",
        *_folder_lines(folder),
    ]
    card_path = folder / builtin.card
    return [*lines, "", card_path.read_text(encoding="utf-8").rstrip()] if card_path.is_file() else lines


def _info_lines(spec: str) -> list[str]:
    if spec.startswith(hub.HUB_PREFIX):
        parsed = hub.parse_hub_spec(spec)
        return [
            f"source: {parsed}",
            *_folder_lines(hub.fetch_hub_model(parsed, files=(CONFIG_FILE,))),
        ]
    if spec in registry.BUILTIN:
        return _builtin_lines(registry.BUILTIN[spec])
    if spec not in registry.MODELS and Path(spec).expanduser().is_dir():
        return _folder_lines(Path(spec).expanduser())
    entry = registry.get(spec)
    folder = cache.cached_folder(entry)
    if folder is None:
        return [*_entry_lines(entry), f"cached: no (`resshift models download {entry.name}` fetches it)"]
    return [*_entry_lines(entry), *_folder_lines(folder)]


@app.command()
def info(model: ModelSpec) -> None:
    """Show what a model is, where its weights come from and whether they are cached."""
    print("\n".join(_info_lines(model)))


@app.command()
def verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="Cached models to check (default: all).", show_default=False)
    ] = None,
) -> None:
    """Re-hash cached models (or a built-in one by name) against their manifests (exit 1 when any changed)."""
    folders = [_verify_folder(name) for name in names] if names else cache.cached_models()
    if not folders:
        print(f"no models in the cache ({locations.models_dir()})")
    failed = [folder.name for folder in folders if not _report_verification(folder)]
    if failed:
        raise ModelError(
            f"verification failed for {', '.join(failed)}; `resshift models remove NAME` and fetch again"
        )


def _verify_folder(name: str) -> Path:
    """The folder `models verify NAME` checks: the packaged one for a built-in model, else the cache's."""
    builtin = registry.BUILTIN.get(name)
    return cache.builtin_folder(builtin) if builtin else locations.models_dir() / name


def _report_verification(folder: Path) -> bool:
    """Print `ok NAME` or `FAILED NAME` plus one indented line per problem; True when all files match."""
    problems = manifest.verify_folder(folder) if folder.is_dir() else [f"{folder.name}: not in the cache"]
    print(f"{'FAILED' if problems else 'ok'} {folder.name}")
    for problem in problems:
        print(f"  {problem}")
    return not problems


@app.command()
def remove(name: Annotated[str, typer.Argument(help="A cached model name.", show_default=False)]) -> None:
    """Delete a model from the cache (with any kept or partial download); built-in models stay."""
    with download_progress(True) as progress:
        removed = cache.remove_cached(name, progress=progress)
    if not removed:
        raise ModelError(f"{name} is not in the cache ({locations.models_dir()}); nothing to remove")
    print(f"removed {name}: {', '.join(str(p) for p in removed)}")
