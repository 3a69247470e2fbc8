"""Writing files and folders so that a reader never sees a partial one.

`atomic_write` gives a temporary path beside the target, makes its contents durable (fsync) and renames it
over the target; `staged_folder` does the same for a whole folder. On any failure (KeyboardInterrupt
included) the temporary file or folder is removed and the target is left as it was. Temporary names start
with a dot and end in `.tmp`, so a folder listing can tell them apart and `remove_stale_staging` can clear
those a killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")
"""The name `temporary_sibling` gives, with the target's (cut) name as "name"."""


def temporary_sibling(target: Path) -> Path:
    """A fresh hidden name beside `target`: `.<name>.<random>.tmp` (the name cut to 64 characters)."""
    return target.with_name(f".{target.name[:64]}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[Path]:
    """Yield a new, empty temporary file beside `target` to write; on success fsync it and rename it over
    `target`. On any exception the temporary file is deleted and `target` is untouched.

    Raises OSError when the temporary file cannot be created (missing folder, no permission).
    """
    temporary = temporary_sibling(target)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    os.close(descriptor)
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_directory(target.parent)


@contextlib.contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """Yield a new temporary sibling folder of `dest` to fill; on success it is renamed to `dest` (which
    must not exist or be an empty folder), on failure it is deleted with everything in it."""
    staging = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir(parents=True)
    try:
        yield staging
        if dest.is_dir():
            dest.rmdir()
        os.replace(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sync_directory(dest.parent)


def remove_stale_staging(dest: Path) -> None:
    """Delete staging folders of `dest` left by a killed process (call it only while holding a lock that
    keeps other writers of `dest` out)."""
    for stale in dest.parent.glob(f".{dest.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def remove_stale_temporaries(targets: Iterable[Path]) -> None:
    """Delete the temporary files of `targets` that a killed writer left behind (call it only when no
    other writer of these targets is running). Each folder is listed once."""
    names: dict[Path, set[str]] = defaultdict(set)
    for target in targets:
        names[target.parent].add(target.name[:64])
    for folder, wanted in names.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            found = _TEMPORARY.fullmatch(entry)
            if found is not None and found["name"] in wanted:
                (folder / entry).unlink(missing_ok=True)


def sync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable where the platform allows syncing a directory."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())
