"""The official release download: resumable HTTP with Range requests into `<file>.part`.

A file is written under its final name only when complete. An interrupted transfer keeps what arrived in
`<file>.part` and the next attempt (in this run, or the next run) asks the server for the rest; a `.part`
the server no longer matches (HTTP 416) is discarded. The free space is checked before a transfer starts.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from resshift_cli import __version__, registry
from resshift_cli.errors import DownloadError
from resshift_cli.locations import check_space, disk_error, lock_path, locked
from resshift_cli.progress import DOWNLOAD, ProgressCallback, report

ENV_RELEASE_URL = "RESSHIFT_RELEASE_URL"
DOWNLOAD_ATTEMPTS = 3
"""Transfers per file and run; each retry resumes where the previous one stopped."""
TIMEOUT_S = 60.0
PART_SUFFIX = ".part"

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class _Interrupted(Exception):
    """A transfer stopped early; what arrived is kept in the `.part` file."""


def release_base_url() -> str:
    """Where the official `.pth` files are fetched from (`$RESSHIFT_RELEASE_URL` for mirrors)."""
    return (os.environ.get(ENV_RELEASE_URL) or registry.RELEASE_URL).rstrip("/")


def unreachable(host: str, reason: str, what: str) -> str:
    """The message for a server that cannot be reached, with the offline way round it."""
    return (
        f"cannot reach {host} to fetch {what} ({reason}); on a machine with network run "
        "`resshift models download NAME` and copy the folder it prints, or use --model DIR, "
        f"{registry.OFFLINE_HINT}"
    )


def fetch_release_file(url: str, dest: Path, *, progress: ProgressCallback | None = None) -> Path:
    """Download `url` to `dest` (written only when complete), resuming `dest.part` after an interruption.

    `progress` receives "download" reports (bytes of `dest.name`) and a "wait" report while another
    process downloads the same file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    with locked(lock_path(dest.name), f"to finish downloading {dest.name}", progress):
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
                raise disk_error(err, part) from None
    return dest


def _transfer(url: str, part: Path, progress: ProgressCallback | None) -> None:
    """One HTTP transfer into `part`, continuing from its current size when the server allows ranges."""
    offset = part.stat().st_size if part.is_file() else 0
    with _open(url, offset, part) as response:
        offset, total = _resume_point(response, offset, url)
        check_space(part.parent, None if total is None else total - offset)
        with part.open("r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            _copy(response, out, _Reporter(progress, part.name.removesuffix(PART_SUFFIX), offset, total))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Interrupted(f"transfer interrupted at {size} of {total} bytes")


class _Reporter:
    """Bytes so far of one file → "download" reports (total 0 when the size is unknown)."""

    def __init__(self, progress: ProgressCallback | None, name: str, done: int, total: int | None) -> None:
        self.progress, self.name, self.done, self.total = progress, name, done, total or 0
        report(progress, DOWNLOAD, done, self.total, name)

    def advance(self, n_bytes: int) -> None:
        self.done += n_bytes
        report(self.progress, DOWNLOAD, self.done, self.total, self.name)


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
        raise DownloadError(unreachable(urlsplit(url).netloc, str(reason), Path(url).name)) from None


def _http_message(url: str, code: int, reason: str) -> str:
    if code == 404:
        return f"{url}: not found (HTTP 404); check {ENV_RELEASE_URL} if you set it to a mirror"
    return f"{url}: the server answered HTTP {code} {reason}; try again later"


def _resume_point(response: http.client.HTTPResponse, offset: int, url: str) -> tuple[int, int | None]:
    """(first byte this response carries, full file size or None) after checking `Content-Range`."""
    length = response.headers.get("Content-Length")
    if response.status != 206:
        return 0, int(length) if length is not None else None
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match is None or int(match.group(1)) != offset:
        raise DownloadError(f"{url}: the server sent a different byte range than asked for; try again later")
    return offset, None if match.group(3) == "*" else int(match.group(3))


def _copy(response: http.client.HTTPResponse, out: BinaryIO, reporter: _Reporter) -> None:
    try:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            reporter.advance(len(chunk))
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as err:
        out.flush()
        raise _Interrupted(f"transfer interrupted ({type(err).__name__})") from None
