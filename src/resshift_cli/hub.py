"""The Hugging Face Hub: `hf://owner/name[@revision]` model specs and their download into the Hub cache.

The only code that imports huggingface_hub, and it does so where it is used: with its HTTP client it costs
every start 0.15 s, and most runs (a cached named model, a model folder) never talk to the Hub. Hub models
live in the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`); `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`
are read when a model is resolved. huggingface_hub's exceptions become one-line `DownloadError`s here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from resshift_cli.errors import DownloadError, ResshiftError, UsageError, first_line
from resshift_cli.locations import DISK_FULL, disk_error, offline
from resshift_cli.manifest import MANIFEST_FILE, MODEL_FILES
from resshift_cli.progress import ProgressCallback
from resshift_cli.registry import OFFLINE_HINT
from resshift_cli.release import unreachable

HUB_PREFIX = "hf://"

_NETWORK_MODULES = ("httpx", "httpx2", "requests", "urllib3")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _hf_cache_dir() -> str | None:
    if cache := os.environ.get("HF_HUB_CACHE"):
        return cache
    home = os.environ.get("HF_HOME")
    return str(Path(home).expanduser() / "hub") if home else None


def _hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


@dataclass(frozen=True)
class HubSpec:
    """A model folder in a Hub repository, optionally at a branch, tag or commit."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HUB_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_spec(spec: str) -> HubSpec:
    """Parse `hf://owner/name[@revision]`; anything else is a `UsageError`."""
    body = spec.removeprefix(HUB_PREFIX)
    repo_id, _, revision = body.partition("@")
    if not spec.startswith(HUB_PREFIX) or not _REPO_ID.fullmatch(repo_id) or body.endswith("@"):
        raise UsageError(f"{spec!r} is not a Hub model: expected hf://owner/name or hf://owner/name@revision")
    return HubSpec(repo_id, revision or None)


@contextmanager
def _hub_progress(enabled: bool) -> Iterator[None]:
    """Silence huggingface_hub's own progress bars for the duration, unless `enabled`."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    silence = not enabled and not are_progress_bars_disabled()
    if silence:
        disable_progress_bars()
    try:
        yield
    finally:
        if silence:
            enable_progress_bars()


def _hub_file(spec: HubSpec, filename: str, revision: str | None, local_only: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError

    try:
        path = hf_hub_download(
            spec.repo_id,
            filename,
            revision=revision,
            cache_dir=_hf_cache_dir(),
            endpoint=_hf_endpoint(),
            local_files_only=local_only,
        )
    except (HfHubHTTPError, EntryNotFoundError) as err:
        raise _hub_error(err, spec, filename) from None
    except Exception as err:
        mapped = _transfer_error(err, spec, filename)
        if mapped is None:
            raise
        raise mapped from None
    return Path(path)


def _transfer_error(err: Exception, spec: HubSpec, filename: str) -> ResshiftError | None:
    """Connection failures of the HTTP client huggingface_hub uses, and local write errors; None otherwise."""
    if type(err).__module__.split(".")[0] in _NETWORK_MODULES:
        return DownloadError(unreachable(_hf_endpoint(), type(err).__name__, str(spec)))
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return disk_error(err, Path(_hf_cache_dir() or "~/.cache/huggingface").expanduser())
    if isinstance(err, OSError):
        return DownloadError(f"{spec}: fetching {filename} failed ({first_line(err)}); run the command again")
    return None


def _hub_error(err: Exception, spec: HubSpec, filename: str) -> ResshiftError:
    """One-line messages for huggingface_hub's exceptions (most specific first)."""
    from huggingface_hub.utils import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = _hf_endpoint()
    if isinstance(err, RevisionNotFoundError):
        return DownloadError(
            f"{spec}: revision {spec.revision!r} not found on {endpoint}; check the @revision"
        )
    if isinstance(err, RepositoryNotFoundError):
        return DownloadError(
            f"{spec}: repository not found on {endpoint} (private or gated repos need HF_TOKEN)"
        )
    if isinstance(err, LocalEntryNotFoundError):
        reason = "HF_HUB_OFFLINE is set" if offline() else f"{endpoint} cannot be reached"
        return DownloadError(
            f"{spec}: {filename} is not in the Hugging Face cache and {reason}; on a connected machine run "
            f"`resshift models export {spec} DIR`, copy DIR here and use --model DIR, {OFFLINE_HINT}"
        )
    if isinstance(err, EntryNotFoundError):
        return DownloadError(f"{spec}: the repository has no {filename} (is it a resshift model folder?)")
    return DownloadError(f"{spec}: the Hub refused the download ({first_line(err)})")


def fetch_hub_model(
    spec: HubSpec, *, progress: ProgressCallback | None = None, files: Sequence[str] = MODEL_FILES
) -> Path:
    """The snapshot folder of a Hub model, downloading `files` into the Hugging Face cache if needed.

    The first file pins the commit the revision points to; the others are fetched at that commit. When
    weights are being downloaded, the repository's `manifest.json` (provenance) comes along if it has one.
    huggingface_hub shows its own per-file bars when `progress` is given, and stays silent otherwise.
    """
    with _hub_progress(progress is not None):
        folder = _hub_file(spec, files[0], spec.revision, offline()).parent
        downloading = not all((folder / f).is_file() for f in files[1:])
        for filename in files[1:]:
            _hub_file(spec, filename, folder.name, offline())
        if downloading:
            with suppress(DownloadError):
                _hub_file(spec, MANIFEST_FILE, folder.name, offline())
    return folder


def cached_hub_model(spec: HubSpec) -> Path | None:
    """The snapshot folder of a Hub model when all its files are in the Hugging Face cache (no network)."""
    try:
        first = _hub_file(spec, MODEL_FILES[0], spec.revision, local_only=True)
        for filename in MODEL_FILES[1:]:
            _hub_file(spec, filename, first.parent.name, local_only=True)
    except DownloadError:
        return None
    return first.parent
