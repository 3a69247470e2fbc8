"""The only network code: Hub downloads, the official release download, the cache, offline mode and manifests.

Cache layout (`$RESSHIFT_HOME`, default `$XDG_CACHE_HOME/resshift` or `~/.cache/resshift`):

    models/<name>/      config.json, unet.safetensors, autoencoder.safetensors, manifest.json
    downloads/          <file>.pth.part while a transfer runs (resumed with HTTP Range), <file>.pth when kept
    locks/              one lock per model and per download, so concurrent first runs wait for each other

A model folder is built in `models/.<name>.<random>.tmp` and renamed into place, so a folder that exists is
complete. Hub models (`hf://owner/name[@revision]`) live in the Hugging Face cache (`HF_HOME`,
`HF_HUB_CACHE`); `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` are read when a model is resolved.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from resshift_cli import __version__, registry
from resshift_cli.config import DiffusionConfig, ModelConfig
from resshift_cli.convert import convert_state_dicts, load_pth
from resshift_cli.errors import DownloadError, ModelError, ResshiftError, UsageError, first_line
from resshift_cli.loading import AUTOENCODER_FILE, CONFIG_FILE, UNET_FILE, load_model
from resshift_cli.registry import ModelEntry

ENV_HOME = "RESSHIFT_HOME"
ENV_RELEASE_URL = "RESSHIFT_RELEASE_URL"
HUB_PREFIX = "hf://"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "resshift-manifest"
MODEL_FILES = (CONFIG_FILE, UNET_FILE, AUTOENCODER_FILE)
DOWNLOAD_ATTEMPTS = 3
"""Transfers per file and run; each retry resumes where the previous one stopped."""
TIMEOUT_S = 60.0
LICENSE_LINK = "https://github.com/sczhou/CodeFormer/blob/master/LICENSE"
"""The S-Lab License 1.0 text the ResShift README links to."""

_CHUNK = 1 << 20
_LOCK_POLL_S = 0.2
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
"""No space left, file size limit, disk quota (EDQUOT does not exist on Windows)."""
_NETWORK_MODULES = ("httpx", "httpx2", "requests", "urllib3")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_TRUE = ("1", "ON", "YES", "TRUE")


# 1. Where things live -----------------------------------------------------------------------------------


def cache_home() -> Path:
    """`$RESSHIFT_HOME`, else `$XDG_CACHE_HOME/resshift`, else `~/.cache/resshift`."""
    if home := os.environ.get(ENV_HOME):
        return Path(home).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "resshift"


def models_dir() -> Path:
    return cache_home() / "models"


def downloads_dir() -> Path:
    return cache_home() / "downloads"


def _lock_path(name: str) -> Path:
    return cache_home() / "locks" / f"{name}.lock"


def release_base_url() -> str:
    """Where the official `.pth` files are fetched from (`$RESSHIFT_RELEASE_URL` for mirrors)."""
    return (os.environ.get(ENV_RELEASE_URL) or registry.RELEASE_URL).rstrip("/")


def offline() -> bool:
    """Whether `HF_HUB_OFFLINE` forbids network access (it applies to the release download too)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def _hf_cache_dir() -> str | None:
    if cache := os.environ.get("HF_HUB_CACHE"):
        return cache
    home = os.environ.get("HF_HOME")
    return str(Path(home).expanduser() / "hub") if home else None


def _hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _console() -> Console:
    return Console(stderr=True)


# 2. Model specs -----------------------------------------------------------------------------------------


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


def resolve_model(spec: str, *, keep_pth: bool = False, progress: bool = True) -> Path:
    """A local model folder for a registry name, a folder path or `hf://owner/name[@revision]`.

    Downloads and converts on first use; later calls (and offline runs) use the cache only. A registry
    name wins over a folder of the same name (write `./name` for the folder).
    """
    if spec.startswith(HUB_PREFIX):
        return fetch_hub_model(parse_hub_spec(spec), progress=progress)
    if spec in registry.MODELS:
        return named_model(registry.MODELS[spec], keep_pth=keep_pth, progress=progress)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists() or os.sep in spec or "/" in spec or spec.startswith("."):
        raise ModelError(f"{spec}: not a model folder (a folder with {', '.join(MODEL_FILES)})")
    return named_model(registry.get(spec), keep_pth=keep_pth, progress=progress)


# 3. Named models ------------------------------------------------------------------------------------------


def _complete(folder: Path) -> bool:
    return (folder / MANIFEST_FILE).is_file()


def cached_folder(entry: ModelEntry) -> Path | None:
    """The folder of a named model if it is already on this machine (no network access)."""
    if entry.hub is not None:
        return _cached_hub_model(HubSpec(entry.hub.repo_id, entry.hub.revision))
    folder = models_dir() / entry.name
    return folder if _complete(folder) else None


def named_model(entry: ModelEntry, *, keep_pth: bool = False, progress: bool = True) -> Path:
    """The cached folder of a registry model, fetched first if needed (Hub copy, else official release)."""
    if entry.hub is not None:
        return fetch_hub_model(HubSpec(entry.hub.repo_id, entry.hub.revision), progress=progress)
    folder = models_dir() / entry.name
    if _complete(folder):
        return folder
    if offline():
        raise DownloadError(
            f"{entry.name} is not in the cache ({folder}) and HF_HUB_OFFLINE is set; on a connected machine "
            f"run `resshift models download {entry.name}` and copy that folder here, or use --model DIR"
        )
    try:
        with _locked(_lock_path(entry.name), f"to finish fetching {entry.name}", progress):
            if not _complete(folder):
                _remove_stale_staging(folder)
                _download_and_convert(entry, folder, keep_pth=keep_pth, progress=progress)
    except OSError as err:
        raise _disk_error(err, cache_home()) from None
    return folder


def _download_and_convert(entry: ModelEntry, folder: Path, *, keep_pth: bool, progress: bool) -> None:
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


# 4. Conversion into a folder, atomically ----------------------------------------------------------------


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
    _check_new_folder(dest)
    unet_state, autoencoder_state = load_pth(unet_pth), load_pth(autoencoder_pth)
    sources = [file_record(unet_pth, urls[0]), file_record(autoencoder_pth, urls[1])]
    try:
        with _staging(dest) as staging:
            source = f"{unet_pth.name} + {autoencoder_pth.name}"
            config = convert_state_dicts(
                unet_state, autoencoder_state, staging, name, diffusion, source=source
            )
            write_manifest(staging, name, sources)
    except OSError as err:
        raise _disk_error(err, dest) from None
    return config


def _check_new_folder(dest: Path) -> None:
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise UsageError(f"{dest}: already exists and is not an empty folder; choose another output folder")


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A temporary sibling of `dest` that is renamed to `dest` on success and deleted on failure."""
    staging = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    try:
        yield staging
        if dest.is_dir():
            dest.rmdir()
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(folder: Path) -> None:
    """Delete staging folders left by a killed process (only called while holding the model's lock)."""
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def _locked(path: Path, waiting_for: str, progress: bool) -> Iterator[None]:
    """Hold the file lock `path`, saying so on stderr when another process has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=_LOCK_POLL_S)
    except Timeout:
        if progress:
            _console().print(f"waiting for another resshift process {waiting_for} …")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _disk_error(err: OSError, where: Path) -> ResshiftError:
    """ENOSPC and friends become a one-line `DownloadError`; anything else a `ModelError`."""
    if err.errno in _DISK_FULL:
        free = shutil.disk_usage(_existing_parent(where)).free
        return DownloadError(
            f"{where}: disk full or file size limit reached ({os.strerror(err.errno)}; {free / 1e6:.0f} MB "
            f"free); free some space or set {ENV_HOME} to a folder on a larger disk"
        )
    return ModelError(f"{where}: cannot write ({err.strerror or err}); check the folder's permissions")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


# 5. The official release download ----------------------------------------------------------------------


class _Interrupted(Exception):
    """A transfer stopped early; what arrived is kept in the `.part` file."""


def fetch_release_file(url: str, dest: Path, *, progress: bool = True) -> Path:
    """Download `url` to `dest` (written only when complete), resuming `dest.part` after an interruption."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _locked(_lock_path(dest.name), f"to finish downloading {dest.name}", progress):
        attempt = 0
        while not dest.is_file():
            attempt += 1
            try:
                _transfer(url, part, progress)
                os.replace(part, dest)
            except _Interrupted as err:
                if attempt >= DOWNLOAD_ATTEMPTS:
                    raise DownloadError(f"{url}: {err}; run the same command again to resume") from None
            except OSError as err:
                raise _disk_error(err, part) from None
    return dest


def _transfer(url: str, part: Path, progress: bool) -> None:
    """One HTTP transfer into `part`, continuing from its current size when the server allows ranges."""
    offset = part.stat().st_size if part.is_file() else 0
    with _open(url, offset, part) as response:
        offset, total = _resume_point(response, offset, url)
        _check_space(part.parent, None if total is None else total - offset)
        with part.open("r+b" if offset else "wb") as out, _bar(progress, part, total, offset) as advance:
            out.seek(offset)
            out.truncate()
            _copy(response, out, advance)
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Interrupted(f"transfer interrupted at {size} of {total} bytes")


def _open(url: str, offset: int, part: Path) -> http.client.HTTPResponse:
    """GET `url` (from byte `offset`); errors become `DownloadError`, a stale `.part` is discarded."""
    headers = {"User-Agent": f"resshift-cli/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as err:
        if err.code == 416 and offset:
            part.unlink()
            raise _Interrupted("the partial download no longer matches the server's file") from None
        raise DownloadError(_http_message(url, err.code, str(err.reason))) from None
    except (URLError, ConnectionError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(_unreachable(urlsplit(url).netloc, str(reason), Path(url).name)) from None


def _http_message(url: str, code: int, reason: str) -> str:
    if code == 404:
        return f"{url}: not found (HTTP 404); check {ENV_RELEASE_URL} if you set it to a mirror"
    return f"{url}: the server answered HTTP {code} {reason}; try again later"


def _unreachable(host: str, reason: str, what: str) -> str:
    return (
        f"cannot reach {host} to fetch {what} ({reason}); on a machine with network run "
        "`resshift models download NAME` and copy the folder it prints, or use --model DIR"
    )


def _resume_point(response: http.client.HTTPResponse, offset: int, url: str) -> tuple[int, int | None]:
    """(first byte this response carries, full file size or None) after checking `Content-Range`."""
    length = response.headers.get("Content-Length")
    if response.status != 206:
        return 0, int(length) if length is not None else None
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != offset:
        raise DownloadError(f"{url}: the server sent a different byte range than asked for; try again later")
    return offset, None if match.group(3) == "*" else int(match.group(3))


def _check_space(folder: Path, needed: int | None) -> None:
    free = shutil.disk_usage(folder).free
    if needed is not None and needed > free:
        raise DownloadError(
            f"{folder}: not enough disk space ({needed / 1e6:.0f} MB needed, {free / 1e6:.0f} MB free); "
            f"free some space or set {ENV_HOME} to a folder on a larger disk"
        )


@contextmanager
def _bar(enabled: bool, part: Path, total: int | None, done: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (a no-op when disabled); yields `advance(n_bytes)`."""
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=_console(), disable=not enabled) as bar:
        task = bar.add_task(part.name.removesuffix(".part"), total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def _copy(response: http.client.HTTPResponse, out: BinaryIO, advance: Callable[[int], None]) -> None:
    try:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            advance(len(chunk))
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as err:
        out.flush()
        raise _Interrupted(f"transfer interrupted ({type(err).__name__})") from None


# 6. The Hugging Face Hub --------------------------------------------------------------------------------
# huggingface_hub is imported where it is used: with its HTTP client it costs every start 0.15 s, and
# most runs (a cached named model, a model folder) never talk to the Hub.


@contextmanager
def _hub_progress(enabled: bool) -> Iterator[None]:
    """Silence huggingface_hub's own progress bars for the duration, when asked to."""
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
        return DownloadError(_unreachable(_hf_endpoint(), type(err).__name__, str(spec)))
    if isinstance(err, OSError) and err.errno in _DISK_FULL:
        return _disk_error(err, Path(_hf_cache_dir() or "~/.cache/huggingface").expanduser())
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
            f"`resshift models export {spec} DIR`, copy DIR here and use --model DIR"
        )
    if isinstance(err, EntryNotFoundError):
        return DownloadError(f"{spec}: the repository has no {filename} (is it a resshift model folder?)")
    return DownloadError(f"{spec}: the Hub refused the download ({first_line(err)})")


def fetch_hub_model(spec: HubSpec, *, progress: bool = True, files: Sequence[str] = MODEL_FILES) -> Path:
    """The snapshot folder of a Hub model, downloading `files` into the Hugging Face cache if needed.

    The first file pins the commit the revision points to; the others are fetched at that commit. When
    weights are being downloaded, the repository's `manifest.json` (provenance) comes along if it has one.
    """
    with _hub_progress(progress):
        folder = _hub_file(spec, files[0], spec.revision, offline()).parent
        downloading = not all((folder / f).is_file() for f in files[1:])
        for filename in files[1:]:
            _hub_file(spec, filename, folder.name, offline())
        if downloading:
            with suppress(DownloadError):
                _hub_file(spec, MANIFEST_FILE, folder.name, offline())
    return folder


def _cached_hub_model(spec: HubSpec) -> Path | None:
    try:
        first = _hub_file(spec, MODEL_FILES[0], spec.revision, local_only=True)
        for filename in MODEL_FILES[1:]:
            _hub_file(spec, filename, first.parent.name, local_only=True)
    except DownloadError:
        return None
    return first.parent


# 7. Manifests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """One file's provenance entry: name, size in bytes, sha256 and (for downloads) where it came from."""

    file: str
    size: int
    sha256: str
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileRecord:
        return cls(str(data["file"]), int(data["size"]), str(data["sha256"]), data.get("url"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path, url: str | None = None) -> FileRecord:
    return FileRecord(path.name, path.stat().st_size, sha256_file(path), url)


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`: what a model folder was made from and the hashes of what it holds."""

    name: str
    created: str
    tool: str
    sources: tuple[FileRecord, ...]
    files: tuple[FileRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": 1,
            "name": self.name,
            "created": self.created,
            "tool": self.tool,
            "sources": [s.to_dict() for s in self.sources],
            "files": [f.to_dict() for f in self.files],
        }


def write_manifest(folder: Path, name: str, sources: Sequence[FileRecord]) -> Manifest:
    """Hash the model files in `folder` and write `manifest.json` beside them."""
    manifest = Manifest(
        name=name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tool=f"resshift-cli {__version__}",
        sources=tuple(sources),
        files=tuple(file_record(folder / f) for f in MODEL_FILES),
    )
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=1) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of `folder`, None when it has none; an unreadable one is a `ModelError`."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}")
        return Manifest(
            name=str(data["name"]),
            created=str(data["created"]),
            tool=str(data["tool"]),
            sources=tuple(FileRecord.from_dict(s) for s in data["sources"]),
            files=tuple(FileRecord.from_dict(f) for f in data["files"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelError(f"{path}: not a valid resshift manifest ({err})") from None


def verify_folder(folder: Path) -> list[str]:
    """Re-hash every file the manifest lists; returns one line per problem (empty when all match)."""
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder}: no {MANIFEST_FILE} to check against"]
    problems = []
    for record in manifest.files:
        path = folder / record.file
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (actual := sha256_file(path)) != record.sha256:
            problems.append(
                f"{path}: sha256 {actual[:16]}… differs from the manifest's {record.sha256[:16]}…"
            )
    return problems


def cached_models() -> list[Path]:
    """Every complete model folder in the cache, sorted by name."""
    root = models_dir()
    return sorted(p for p in root.iterdir() if _complete(p)) if root.is_dir() else []


def folder_size(folder: Path) -> int:
    """Bytes used by the model files of `folder` (following Hub cache symlinks)."""
    return sum((folder / f).stat().st_size for f in (*MODEL_FILES, MANIFEST_FILE) if (folder / f).is_file())


def remove_cached(name: str) -> list[Path]:
    """Delete a model from the cache (its folder and any kept or partial download); returns what went."""
    entry = registry.MODELS.get(name)
    folder = models_dir() / name
    if not folder.is_dir() and entry is None:
        registry.get(name)
    with _locked(_lock_path(name), f"using {name}", progress=True):
        leftovers = [downloads_dir() / f"{entry.unet_file}{s}" for s in ("", ".part")] if entry else []
        removed = [p for p in (folder, *leftovers) if p.exists()]
        for path in removed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return removed


# 8. Export for the Hub ----------------------------------------------------------------------------------

_CITATION = """@inproceedings{yue2023resshift,
  title={ResShift: Efficient Diffusion Model for Image Super-resolution by Residual Shifting},
  author={Yue, Zongsheng and Wang, Jianyi and Loy, Chen Change},
  booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
  year={2023}
}"""


def export_model(spec: str, dest: Path, *, progress: bool = True) -> Path:
    """Write a Hub-ready copy of a model (resolved like `--model`) into the new folder `dest`.

    The copy holds the three model files, a fresh `manifest.json` (keeping the recorded sources) and a
    `README.md` model card with license metadata and provenance hashes, ready for `hf upload`.
    """
    _check_new_folder(dest)
    source = resolve_model(spec, progress=progress)
    previous = read_manifest(source)
    if previous is not None and (problems := verify_folder(source)):
        raise ModelError(f"{problems[0]}; remove and download the model again before exporting")
    config = load_model(source).config
    try:
        with _staging(dest) as staging:
            for filename in MODEL_FILES:
                shutil.copyfile(source / filename, staging / filename)
            manifest = write_manifest(staging, config.name, previous.sources if previous else ())
            (staging / "README.md").write_text(model_card(config, manifest), encoding="utf-8")
    except OSError as err:
        raise _disk_error(err, dest) from None
    return dest


def _card_metadata(entry: ModelEntry | None) -> str:
    """The YAML front matter the Hub reads (license, library, task, tags)."""
    license_lines = (
        f"license: other\nlicense_name: s-lab-license-1.0\nlicense_link: {LICENSE_LINK}\n"
        if entry is not None
        else "license: other\nlicense_name: unknown\n"
    )
    tags = "\n".join(f"- {tag}" for tag in ("super-resolution", "resshift", "diffusion", "safetensors"))
    return (
        f"---\n{license_lines}library_name: resshift-cli\npipeline_tag: image-to-image\ntags:\n{tags}\n---\n"
    )


def _provenance_rows(manifest: Manifest) -> str:
    rows = [
        f"| source | `{s.file}` | {s.size} | `{s.sha256}` | {s.url or 'local file'} |"
        for s in manifest.sources
    ]
    rows += [f"| converted | `{f.file}` | {f.size} | `{f.sha256}` | |" for f in manifest.files]
    return "| role | file | bytes | sha256 | from |\n|---|---|---|---|---|\n" + "\n".join(rows)


def model_card(config: ModelConfig, manifest: Manifest) -> str:
    """The `README.md` of an exported model folder."""
    entry = registry.MODELS.get(config.name)
    about = entry.description if entry is not None else "A ResShift model folder."
    license_text = (
        f"{registry.LICENSE_NOTE}. Keep the copyright notice; see {LICENSE_LINK} and "
        "https://github.com/zsyOAOA/ResShift."
        if entry is not None
        else "Not recorded by resshift-cli: state the license of these weights here before sharing them."
    )
    diffusion = config.diffusion
    origin = " from the authors' pickled `.pth` release" if manifest.sources else ""
    return f"""{_card_metadata(entry)}
# ResShift {config.name}

{about}. ×{config.scale} super-resolution in {diffusion.steps} sampling steps (κ = {diffusion.kappa}).

These are the weights of ResShift (Zongsheng Yue, Jianyi Wang, Chen Change Loy; NeurIPS 2023) in the
resshift-cli model-folder layout: `config.json`, `unet.safetensors` and `autoencoder.safetensors` with the
official parameter names, written by {manifest.tool}{origin}. The tensors are unchanged; only the container
differs from a pickle (safetensors cannot run code when loaded).

## Use

```sh
pip install resshift-cli
resshift upscale photo.jpg --model hf://OWNER/NAME
```

## License

{license_text}

## Provenance

{_provenance_rows(manifest)}

## Citation

```bibtex
{_CITATION}
```
"""
