"""Folders on object storage (`s3://bucket/photos`, `gs://bucket/photos`) through pyarrow's filesystems.

`ObjectStore.for_uri` opens the store of a URI and gives the path inside it ("bucket/photos"); paths are
`PurePosixPath`s in that store's own spelling, and `name` turns one back into the URI a user reads. Writes
are a single upload that the store makes visible only when it completes, so a reader never sees a partial
object. Settings come from the environment: AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) names an
S3-protocol server other than AWS; region and credentials are read by pyarrow as the AWS tools read them
(GOOGLE_APPLICATION_CREDENTIALS for gs://). pyarrow is imported on first use: only `batch --ray` needs it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, TypeVar

from resshift_cli.errors import ImageError, UsageError

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

T = TypeVar("T")

SCHEMES = ("s3", "gs")
"""URI schemes of the object stores we read and write."""


def is_uri(location: str) -> bool:
    """True for "s3://…" and "gs://…"; plain paths (and file://) are local folders."""
    return location.split("://", 1)[0] in SCHEMES and "://" in location


def split_uri(uri: str) -> tuple[str, PurePosixPath]:
    """("s3", "bucket/photos") for "s3://bucket/photos/"; UsageError without a bucket."""
    scheme, _, rest = uri.partition("://")
    path = PurePosixPath(rest.strip("/"))
    if scheme not in SCHEMES or not rest.strip("/"):
        raise UsageError(f"{uri}: expected s3://BUCKET/PATH or gs://BUCKET/PATH")
    return scheme, path


ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where an S3-protocol server other than AWS is named ("http://127.0.0.1:9000"), as the AWS tools read it."""


def s3_endpoint() -> dict[str, str]:
    """pyarrow's S3FileSystem arguments for the endpoint named in `ENDPOINT_ENV` (none: AWS itself)."""
    url = next((os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)), None)
    if url is None:
        return {}
    scheme, _, host = url.rpartition("://")
    return {"endpoint_override": host.rstrip("/"), "scheme": scheme or "https"}


@functools.lru_cache(maxsize=4)
def _filesystem(scheme: str, endpoint: tuple[tuple[str, str], ...]) -> FileSystem:
    """One pyarrow filesystem per scheme, endpoint and process (it keeps the connection pool)."""
    from pyarrow import fs

    if scheme == "s3":
        return fs.S3FileSystem(**dict(endpoint))
    return fs.GcsFileSystem()


@dataclass(frozen=True)
class ObjectStore:
    """An object store named by its URI scheme ("s3", "gs")."""

    scheme: str

    @classmethod
    def for_uri(cls, uri: str) -> tuple[ObjectStore, PurePosixPath]:
        scheme, path = split_uri(uri)
        return cls(scheme), path

    @property
    def filesystem(self) -> FileSystem:
        endpoint = tuple(sorted(s3_endpoint().items())) if self.scheme == "s3" else ()
        return _filesystem(self.scheme, endpoint)

    def name(self, path: PurePosixPath) -> str:
        """The URI of `path`: "s3://bucket/photos/a.png"."""
        return f"{self.scheme}://{path.as_posix()}"

    def files(self, folder: PurePosixPath, recursive: bool) -> Iterator[PurePosixPath]:
        """Every object under `folder` (one level, or all with `recursive`), sorted."""
        from pyarrow.fs import FileSelector, FileType

        selector = FileSelector(folder.as_posix(), recursive=recursive, allow_not_found=True)
        infos = self._call(lambda: self.filesystem.get_file_info(selector), folder)
        yield from sorted(PurePosixPath(i.path) for i in infos if i.type == FileType.File)

    def exists(self, path: PurePosixPath) -> bool:
        from pyarrow.fs import FileType

        info = self._call(lambda: self.filesystem.get_file_info(path.as_posix()), path)
        return info.type != FileType.NotFound

    def read(self, path: PurePosixPath) -> bytes:
        """The whole object; ImageError naming its URI when it is missing or cannot be read."""
        try:
            with self.filesystem.open_input_stream(path.as_posix()) as stream:
                return stream.read()
        except FileNotFoundError as err:
            raise ImageError(f"{self.name(path)}: no such file") from err
        except OSError as err:
            raise ImageError(f"{self.name(path)}: cannot read ({err})") from err

    def write(self, path: PurePosixPath, data: bytes) -> None:
        """Upload `data` as one object (visible only once complete); ImageError naming its URI on failure."""
        try:
            with self.filesystem.open_output_stream(path.as_posix()) as stream:
                stream.write(data)
        except OSError as err:
            raise ImageError(f"{self.name(path)}: cannot write ({err})") from err

    def _call(self, fetch: Callable[[], T], path: PurePosixPath) -> T:
        """`fetch()`, its OSError turned into a UsageError naming `path` (listing concerns every input)."""
        try:
            return fetch()
        except OSError as err:
            raise UsageError(f"{self.name(path)}: cannot list ({err})") from err
