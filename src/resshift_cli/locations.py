"""Where resshift keeps its files, how concurrent processes take turns, and what a full disk says.

Cache layout (`$RESSHIFT_HOME`, default `$XDG_CACHE_HOME/resshift` or `~/.cache/resshift`):

    models/<name>/      config.json, unet.safetensors, autoencoder.safetensors, manifest.json
    downloads/          <file>.pth.part while a transfer runs (resumed with HTTP Range), <file>.pth when kept
    locks/              one lock per model and per download, so concurrent first runs wait for each other

`HF_HUB_OFFLINE` forbids network access to the Hub and to the official release alike.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from resshift_cli.errors import DownloadError, ModelError, ResshiftError
from resshift_cli.progress import WAIT, ProgressCallback, report

ENV_HOME = "RESSHIFT_HOME"

DISK_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
"""No space left, file size limit, disk quota (EDQUOT does not exist on Windows)."""
_LOCK_POLL_S = 0.2
_TRUE = ("1", "ON", "YES", "TRUE")


def cache_home() -> Path:
    """`$RESSHIFT_HOME`, else `$XDG_CACHE_HOME/resshift`, else `~/.cache/resshift`."""
    if home := os.environ.get(ENV_HOME):
        return Path(home).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "resshift"


def models_dir() -> Path:
    return cache_home() / "models"


def downloads_dir() -> Path:
    return cache_home() / "downloads"


def lock_path(name: str) -> Path:
    return cache_home() / "locks" / f"{name}.lock"


def offline() -> bool:
    """Whether `HF_HUB_OFFLINE` forbids network access (it applies to the release download too)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


@contextmanager
def locked(path: Path, waiting_for: str, progress: ProgressCallback | None = None) -> Iterator[None]:
    """Hold the file lock `path`; while another process has it, report a "wait" stage with `waiting_for`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=_LOCK_POLL_S)
    except Timeout:
        report(progress, WAIT, 0, 0, waiting_for)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def disk_error(err: OSError, where: Path) -> ResshiftError:
    """ENOSPC and friends become a one-line `DownloadError`; anything else a `ModelError`."""
    if err.errno in DISK_FULL:
        free = shutil.disk_usage(_existing_parent(where)).free
        return DownloadError(
            f"{where}: disk full or file size limit reached ({os.strerror(err.errno)}; {free / 1e6:.0f} MB "
            f"free); free some space or set {ENV_HOME} to a folder on a larger disk"
        )
    return ModelError(f"{where}: cannot write ({err.strerror or err}); check the folder's permissions")


def check_space(folder: Path, needed: int | None) -> None:
    """Refuse a download of `needed` bytes that cannot fit in `folder` (None: size unknown, no check)."""
    free = shutil.disk_usage(folder).free
    if needed is not None and needed > free:
        raise DownloadError(
            f"{folder}: not enough disk space ({needed / 1e6:.0f} MB needed, {free / 1e6:.0f} MB free); "
            f"free some space or set {ENV_HOME} to a folder on a larger disk"
        )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
