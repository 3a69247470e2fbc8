"""`manifest.json`: what a model folder was made from, and the sha256 of every file it holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from resshift_cli import __version__
from resshift_cli.errors import ModelError
from resshift_cli.loading import AUTOENCODER_FILE, CONFIG_FILE, UNET_FILE

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "resshift-manifest"
MODEL_FILES = (CONFIG_FILE, UNET_FILE, AUTOENCODER_FILE)
"""The files of a model folder, in the order they are hashed and fetched."""

_CHUNK = 1 << 20


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
