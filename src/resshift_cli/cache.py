"""The model cache: a model spec → a local model folder, and listing, removing and converting into it.

A spec is a registry name (fetched once from its Hub copy or the official release, converted, cached), a
model folder, or `hf://owner/name[@revision]` (see `hub`). Paths and locks are in `locations`, the HTTP
transfer in `release`, provenance in `manifest`. A model folder is built in `models/.<name>.<random>.tmp`
and renamed into place (`fileio.staged_folder`), so a folder that exists is complete.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from resshift_cli import registry
from resshift_cli.config import DiffusionConfig, ModelConfig
from resshift_cli.convert import convert_state_dicts, load_pth
from resshift_cli.errors import DownloadError, ModelError, UsageError
from resshift_cli.fileio import remove_stale_staging, staged_folder
from resshift_cli.hub import HUB_PREFIX, HubSpec, cached_hub_model, fetch_hub_model, parse_hub_spec
from resshift_cli.loading import write_model_folder
from resshift_cli.locations import (
    cache_home,
    disk_error,
    downloads_dir,
    lock_path,
    locked,
    models_dir,
    offline,
)
from resshift_cli.manifest import MANIFEST_FILE, MODEL_FILES, file_record, write_manifest
from resshift_cli.progress import ProgressCallback
from resshift_cli.registry import BuiltinModel, ModelEntry
from resshift_cli.release import PART_SUFFIX, fetch_release_file, release_base_url


def resolve_model(spec: str, *, keep_pth: bool = False, progress: ProgressCallback | None = None) -> Path:
    """A local model folder for a registry name, a folder path or `hf://owner/name[@revision]`.

    Downloads and converts on first use; later calls (and offline runs) use the cache only. A registry
    name wins over a folder of the same name (write `./name` for the folder). `progress` receives the
    download and lock-waiting reports.
    """
    if spec.startswith(HUB_PREFIX):
        return fetch_hub_model(parse_hub_spec(spec), progress=progress)
    if spec in registry.BUILTIN:
        return builtin_folder(registry.BUILTIN[spec])
    if spec in registry.MODELS:
        return named_model(registry.MODELS[spec], keep_pth=keep_pth, progress=progress)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists() or os.sep in spec or "/" in spec or spec.startswith("."):
        raise ModelError(f"{spec}: not a model folder (a folder with {', '.join(MODEL_FILES)})")
    return named_model(registry.get(spec), keep_pth=keep_pth, progress=progress)


# Named models ------------------------------------------------------------------------------------------


def builtin_folder(entry: BuiltinModel) -> Path:
    """The packaged folder of a built-in model (inside the installed package: read it, never write it)."""
    folder = Path(str(importlib.resources.files("resshift_cli") / registry.BUILTIN_DIR / entry.name))
    if not (folder / MANIFEST_FILE).is_file():
        raise ModelError(
            f"{folder}: the built-in model {entry.name} is missing from this installation; "
            "reinstall resshift-cli"
        )
    return folder


def _complete(folder: Path) -> bool:
    return (folder / MANIFEST_FILE).is_file()


def cached_folder(entry: ModelEntry) -> Path | None:
    """The folder of a named model if it is already on this machine (no network access)."""
    if entry.hub is not None:
        return cached_hub_model(HubSpec(entry.hub.repo_id, entry.hub.revision))
    folder = models_dir() / entry.name
    return folder if _complete(folder) else None


def named_model(
    entry: ModelEntry, *, keep_pth: bool = False, progress: ProgressCallback | None = None
) -> Path:
    """The cached folder of a registry model, fetched first if needed (Hub copy, else official release)."""
    if entry.hub is not None:
        return fetch_hub_model(HubSpec(entry.hub.repo_id, entry.hub.revision), progress=progress)
    folder = models_dir() / entry.name
    if _complete(folder):
        return folder
    if offline():
        raise DownloadError(
            f"{entry.name} is not in the cache ({folder}) and HF_HUB_OFFLINE is set; on a connected machine "
            f"run `resshift models download {entry.name}` and copy that folder here, or use --model DIR, "
            f"{registry.OFFLINE_HINT}"
        )
    try:
        with locked(lock_path(entry.name), f"to finish fetching {entry.name}", progress):
            if not _complete(folder):
                remove_stale_staging(folder)
                _download_and_convert(entry, folder, keep_pth=keep_pth, progress=progress)
    except OSError as err:
        raise disk_error(err, cache_home()) from None
    return folder


def _download_and_convert(
    entry: ModelEntry, folder: Path, *, keep_pth: bool, progress: ProgressCallback | None
) -> None:
    """Fetch both official `.pth` files, convert them into `folder`, then drop the pickles unless kept.

    Downloads that fail to convert (corrupt, unsafe, another architecture) are deleted, so a rerun or a
    corrected `RESSHIFT_RELEASE_URL` fetches them anew instead of failing on the same files again.
    """
    base = release_base_url()
    urls = (f"{base}/{entry.unet_file}", f"{base}/{entry.autoencoder_file}")
    paths = [fetch_release_file(url, downloads_dir() / Path(url).name, progress=progress) for url in urls]
    try:
        convert_to_folder(paths[0], paths[1], folder, name=entry.name, diffusion=entry.diffusion, urls=urls)
    except ModelError as err:
        _delete(paths)
        raise ModelError(f"{err} [downloaded from {base}; deleted, run again to re-download]") from None
    if not keep_pth:
        _delete(paths)


def _delete(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# Conversion into a folder, atomically ---------------------------------------------------------------------


def convert_to_folder(
    unet_pth: Path,
    autoencoder_pth: Path,
    dest: Path,
    *,
    name: str,
    diffusion: DiffusionConfig,
    urls: tuple[str | None, str | None] = (None, None),
) -> ModelConfig:
    """Convert an official `.pth` pair into the model folder `dest` (which must not exist) with a manifest.

    `urls` are recorded in the manifest as provenance. Nothing is written when a source is refused.
    """
    check_new_folder(dest)
    unet_state, autoencoder_state = load_pth(unet_pth), load_pth(autoencoder_pth)
    source = f"{unet_pth.name} + {autoencoder_pth.name}"
    converted = convert_state_dicts(unet_state, autoencoder_state, name, diffusion, source=source)
    sources = [file_record(unet_pth, urls[0]), file_record(autoencoder_pth, urls[1])]
    try:
        with staged_folder(dest) as staging:
            write_model_folder(
                staging, converted.config, converted.unet, converted.autoencoder, source=source
            )
            write_manifest(staging, name, sources)
    except OSError as err:
        raise disk_error(err, dest) from None
    return converted.config


def check_new_folder(dest: Path) -> None:
    """Refuse an output folder that exists and is not empty."""
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise UsageError(f"{dest}: already exists and is not an empty folder; choose another output folder")


# What is in the cache -------------------------------------------------------------------------------------


def cached_models() -> list[Path]:
    """Every complete model folder in the cache, sorted by name."""
    root = models_dir()
    return sorted(p for p in root.iterdir() if _complete(p)) if root.is_dir() else []


def folder_size(folder: Path) -> int:
    """Bytes used by the model files of `folder` (following Hub cache symlinks)."""
    return sum((folder / f).stat().st_size for f in (*MODEL_FILES, MANIFEST_FILE) if (folder / f).is_file())


def remove_cached(name: str, *, progress: ProgressCallback | None = None) -> list[Path]:
    """Delete a model from the cache (its folder and any kept or partial download); returns what went."""
    if name in registry.BUILTIN:
        raise UsageError(
            f"{name} is built into resshift-cli ({builtin_folder(registry.BUILTIN[name])}): it takes no "
            "cache space and cannot be removed"
        )
    entry = registry.MODELS.get(name)
    folder = models_dir() / name
    if not folder.is_dir() and entry is None:
        registry.get(name)
    with locked(lock_path(name), f"using {name}", progress):
        leftovers = [downloads_dir() / f"{entry.unet_file}{s}" for s in ("", PART_SUFFIX)] if entry else []
        removed = [p for p in (folder, *leftovers) if p.exists()]
        for path in removed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return removed
