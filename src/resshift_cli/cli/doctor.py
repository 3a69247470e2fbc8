"""`resshift doctor`: what this machine offers (devices, precisions, versions) and what the cache holds."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

from resshift_cli import __version__, cache, locations, registry
from resshift_cli.devices import (
    DEVICE_ENV,
    PRECISIONS,
    available_cpus,
    cpu_class,
    cpu_class_caps,
    cpu_hardware_class,
    memory_format,
    mps_available,
    precision_label,
    resolve_device,
    resolve_precision,
    resolve_winograd,
)
from resshift_cli.errors import ResshiftError
from resshift_cli.pipeline import tile_batch_for

_DTYPES = {name: resolve_precision(name, torch.device("cpu")) for name in PRECISIONS if name != "auto"}


def _runs_in(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a small matmul under this precision's autocast runs on `device` (measured, not assumed)."""
    try:
        x = torch.ones(8, 8, device=device)
        if dtype == torch.float32:
            return bool(torch.isfinite(x @ x).all())
        with torch.autocast(device_type=device.type, dtype=dtype):
            return bool(torch.isfinite(x @ x).all())
    except (RuntimeError, TypeError, ValueError, AssertionError):
        return False


def _precisions(device: torch.device) -> str:
    working = [name for name, dtype in _DTYPES.items() if _runs_in(device, dtype)]
    auto = precision_label(resolve_precision("auto", device), resolve_winograd("auto", device))
    return f"precisions {', '.join(working) or 'none'} (auto: {auto})"


def _cuda_lines() -> list[str]:
    if not torch.cuda.is_available():
        built = (
            f"torch built with CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch build"
        )
        return [f"  cuda: not available ({built})"]
    lines = []
    for index in range(torch.cuda.device_count()):
        device = torch.device("cuda", index)
        props = torch.cuda.get_device_properties(index)
        memory = f"{props.total_memory / 2**30:.1f} GiB"
        lines.append(
            f"  {device}: {props.name}, {memory}, compute {props.major}.{props.minor}; {_precisions(device)}"
        )
    return lines


def _cpu_class_lines() -> list[str]:
    """The CPU class (hardware, lowered by any instruction-set caps) and what the defaults pick on it."""
    cpu, caps = torch.device("cpu"), cpu_class_caps()
    capped = f", capped by {', '.join(caps)}" if caps else ""
    torch_says = f"torch capability {torch.backends.cpu.get_cpu_capability()}"
    auto = resolve_precision("auto", cpu)
    layout = "channels-last" if memory_format(cpu, auto) == torch.channels_last else "contiguous"
    fast = resolve_winograd("auto", cpu)
    convolutions = (
        "Winograd 3×3 convolutions (NNPACK), autoencoder float32"
        if fast
        else "direct convolutions (no NNPACK for this CPU)"
    )
    threads = (
        f"{torch.get_num_threads()} threads (OMP_NUM_THREADS)"
        if "OMP_NUM_THREADS" in os.environ
        else f"{available_cpus()} threads"
    )
    return [
        f"  cpu class: {cpu_class()} (hardware {cpu_hardware_class()}{capped}; {torch_says})",
        f"  cpu defaults: precision auto → {precision_label(auto, fast)}"
        f" ({convolutions}), {layout} memory format, {threads}, denoiser tile batch {tile_batch_for(cpu)}",
    ]


def _device_lines() -> list[str]:
    cpu = torch.device("cpu")
    lines = [
        "devices:",
        f"  cpu: {torch.get_num_threads()} threads; {_precisions(cpu)}",
        *_cpu_class_lines(),
        *_cuda_lines(),
    ]
    mps = f"available; {_precisions(torch.device('mps'))}" if mps_available() else "not available"
    lines.append(f"  mps: {mps}")
    try:
        chosen = str(resolve_device(None))
    except ResshiftError as err:
        chosen = f"error: {err}"
    source = f"{DEVICE_ENV}={os.environ[DEVICE_ENV]}" if os.environ.get(DEVICE_ENV) else "auto"
    lines.append(f"  default ({source}): {chosen}")
    return lines


def _version_lines() -> list[str]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [
        f"resshift-cli {__version__}",
        f"python {platform.python_version()} ({sys.platform}, {platform.machine()})",
        f"torch {torch.__version__}; CUDA {torch.version.cuda or 'none'}; cuDNN {cudnn or 'none'};"
        f" MPS built: {'yes' if torch.backends.mps.is_built() else 'no'}",
    ]


def _cached_folders() -> list[Path]:
    """Complete model folders: named models (in our cache or the Hub cache) and other cached folders."""
    folders = {*cache.cached_models()}
    folders.update(folder for entry in registry.MODELS.values() if (folder := cache.cached_folder(entry)))
    return sorted(folders)


def _cache_lines() -> list[str]:
    lines = [f"cache: {locations.cache_home()} (set {locations.ENV_HOME} to move it)"]
    folders = _cached_folders()
    lines += [f"  model: {folder} ({cache.folder_size(folder) / 1e6:,.0f} MB)" for folder in folders]
    if not folders:
        lines.append("  no models yet (`resshift models download NAME` fetches one)")
    downloads = locations.downloads_dir()
    leftovers = sorted(downloads.iterdir()) if downloads.is_dir() else []
    lines += [
        f"  download: {path} ({path.stat().st_size / 1e6:,.0f} MB)" for path in leftovers if path.is_file()
    ]
    lines.append(f"offline (HF_HUB_OFFLINE): {'yes' if locations.offline() else 'no'}")
    return lines


def doctor() -> None:
    """Show devices, precision support, torch/CUDA/MPS versions, and the model cache."""
    print("\n".join([*_version_lines(), *_device_lines(), *_cache_lines()]))
