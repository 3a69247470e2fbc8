"""Real HTTP servers on 127.0.0.1 for download tests: a GitHub release look-alike and a Hugging Face Hub one.

Both are context managers that serve from a background thread on a free port, record every request, and stop
when the `with` block ends (or, as a safety net, after `lifetime_s` seconds).

`HubServer` speaks the subset of the Hub protocol that `hf_hub_download` and `snapshot_download` use:
`HEAD/GET /{repo}/resolve/{revision}/{file}` (X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size,
Content-Length, Range), `GET /api/models/{repo}/revision/{revision}` (sha, siblings) and
`GET /api/models/{repo}/tree/{revision}` (file list with oid/size/lfs), with the Hub's error headers
(`X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

import torch
from safetensors.torch import load_file

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_SEND_CHUNK = 64 * 1024


@dataclass
class Response:
    """What a route answers; `cut_after` closes the connection after that many body bytes."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None


@dataclass(frozen=True)
class Hit:
    """One request the server received."""

    method: str
    path: str
    range: str | None
    authorization: str | None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    server_app: LocalServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""

    def _serve(self, method: str) -> None:
        app = self.server_app
        app.hits.append(Hit(method, self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        response = app.route(method, urlsplit(self.path).path, self.headers.get("Range"))
        self.send_response(response.status)
        for name, value in {"Content-Length": str(len(response.body)), **response.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if method == "GET":
            self._write(response.body[: response.cut_after], app.chunk_delay_s)
        if response.cut_after is not None:
            self.close_connection = True

    def _write(self, body: bytes, delay_s: float) -> None:
        for start in range(0, len(body), _SEND_CHUNK):
            self.wfile.write(body[start : start + _SEND_CHUNK])
            if delay_s:
                time.sleep(delay_s)
        self.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-answer (interrupted or refused downloads) are expected, not errors."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer(ABC):
    """An HTTP server on 127.0.0.1 (free port) running in a daemon thread while the `with` block lasts."""

    def __init__(self, lifetime_s: float = 300.0) -> None:
        self.hits: list[Hit] = []
        self.chunk_delay_s = 0.0
        handler = type("Handler", (_Handler,), {"server_app": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._watchdog = threading.Timer(lifetime_s, self.stop)
        self._watchdog.daemon = True
        self._stopped = threading.Event()

    @property
    def origin(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._watchdog.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    @abstractmethod
    def route(self, method: str, path: str, range_header: str | None) -> Response:
        """The answer to `method path` (the query string is ignored)."""


def ranged(body: bytes, range_header: str | None, headers: dict[str, str]) -> Response:
    """200 with the whole body, or 206/416 for a `Range: bytes=a-[b]` request."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    match = _RANGE.fullmatch(range_header or "")
    if match is None:
        return Response(200, headers, body)
    start = int(match.group(1))
    end = min(int(match.group(2) or len(body) - 1), len(body) - 1)
    if start >= len(body):
        return Response(416, {**headers, "Content-Range": f"bytes */{len(body)}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
    return Response(206, headers, body[start : end + 1])


class ReleaseServer(LocalServer):
    """Files served like a GitHub release: `{url}/{name}` redirects (302) to `/objects/{name}` (Range ok).

    `interrupt[name]` is a list of byte counts: each GET of that file sends the next count, then drops the
    connection (the list empties → full answers). `claimed_length[name]` replaces the Content-Length header.
    `files` may be changed while the server runs.
    """

    prefix = "/zsyOAOA/ResShift/releases/download/v2.0"

    def __init__(self, files: Mapping[str, bytes], lifetime_s: float = 300.0) -> None:
        super().__init__(lifetime_s)
        self.files = dict(files)
        self.interrupt: dict[str, list[int]] = {}
        self.claimed_length: dict[str, int] = {}

    @property
    def url(self) -> str:
        """The release base URL (what `RESSHIFT_RELEASE_URL` is set to)."""
        return self.origin + self.prefix

    def downloads(self, name: str) -> list[Hit]:
        """The GET requests that fetched bytes of `name`."""
        return [h for h in self.hits if h.method == "GET" and h.path == f"/objects/{name}"]

    def route(self, method: str, path: str, range_header: str | None) -> Response:
        name = path.rsplit("/", 1)[-1]
        if path == f"{self.prefix}/{name}" and name in self.files:
            return Response(302, {"Location": f"{self.origin}/objects/{name}"})
        if path != f"/objects/{name}" or name not in self.files:
            return Response(404, {"Content-Type": "text/plain"}, b"Not Found")
        body = self.files[name]
        response = ranged(body, range_header, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
        if name in self.claimed_length:
            response.headers["Content-Length"] = str(self.claimed_length[name])
        cuts = self.interrupt.get(name)
        if method == "GET" and cuts:
            response.cut_after = cuts.pop(0)
        return response


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


class HubServer(LocalServer):
    """A Hugging Face Hub look-alike for model repos; point `HF_ENDPOINT` at `.url`.

    Files ending in `.safetensors` are served like LFS files (ETag and X-Linked-Etag = sha256).
    """

    def __init__(self, lifetime_s: float = 300.0) -> None:
        super().__init__(lifetime_s)
        self.repos: dict[str, _Repo] = {}

    @property
    def url(self) -> str:
        return self.origin

    def add_commit(self, repo_id: str, files: Mapping[str, bytes], branch: str = "main") -> str:
        """Make `files` the content of a new commit on `branch` of `repo_id`; returns the commit sha."""
        repo = self.repos.setdefault(repo_id, _Repo())
        seed = json.dumps([repo_id, len(repo.commits), sorted(git_blob_sha1(v) for v in files.values())])
        commit = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        return commit

    def add_folder(self, repo_id: str, folder: Path, branch: str = "main") -> str:
        """Upload every file of `folder` (like `hf upload repo_id folder`)."""
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        return self.add_commit(repo_id, files, branch)

    def route(self, method: str, path: str, range_header: str | None) -> Response:
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path):
            return self._tree(match.group(1), unquote(match.group(2)))
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return self._info(match.group(1), unquote(match.group(2) or "main"))
        if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(
                match.group(1), unquote(match.group(2)), unquote(match.group(3)), range_header
            )
        return _error(404, "", "Not Found")

    def _lookup(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]] | Response:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", "Repository not found")
        commit = repo.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        return commit, repo.commits[commit]

    def _resolve(self, repo_id: str, revision: str, filename: str, range_header: str | None) -> Response:
        found = self._lookup(repo_id, revision)
        if isinstance(found, Response):
            return found
        commit, files = found
        if filename not in files:
            return _error(404, "EntryNotFound", f"{filename} does not exist on {revision}", commit)
        body = files[filename]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(body)}"'}
        if filename.endswith(".safetensors"):
            sha256 = hashlib.sha256(body).hexdigest()
            headers |= {
                "ETag": f'"{sha256}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(body)),
            }
        return ranged(body, range_header, headers)

    def _info(self, repo_id: str, revision: str) -> Response:
        found = self._lookup(repo_id, revision)
        if isinstance(found, Response):
            return found
        commit, files = found
        info = {
            "_id": commit[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": False,
            "lastModified": "2024-03-12T00:00:00.000Z",
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": name} for name in sorted(files)],
        }
        return _json(info)

    def _tree(self, repo_id: str, revision: str) -> Response:
        found = self._lookup(repo_id, revision)
        if isinstance(found, Response):
            return found
        return _json([_tree_entry(name, body) for name, body in sorted(found[1].items())])


def _tree_entry(name: str, body: bytes) -> dict[str, object]:
    entry: dict[str, object] = {"type": "file", "path": name, "size": len(body), "oid": git_blob_sha1(body)}
    if name.endswith(".safetensors"):
        entry["lfs"] = {"oid": hashlib.sha256(body).hexdigest(), "size": len(body), "pointerSize": 134}
    return entry


def _json(data: object) -> Response:
    return Response(200, {"Content-Type": "application/json"}, json.dumps(data).encode())


def _error(status: int, code: str, message: str, commit: str | None = None) -> Response:
    headers = {"Content-Type": "application/json", "X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    if commit:
        headers["X-Repo-Commit"] = commit
    return Response(status, headers, json.dumps({"error": message}).encode())


# Official-layout checkpoints of the tiny golden model -------------------------------------------------------

UNET_PTH = "resshift_realsrx4_s4_v3.pth"
AUTOENCODER_PTH = "autoencoder_vq_f4.pth"


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@lru_cache(maxsize=4)
def tiny_release(golden: Path, wrapping: str = "ddp") -> dict[str, bytes]:
    """`.pth` files of the tiny golden weights in the official layout, keyed by release file name.

    `wrapping`: "ddp" → UNet as `{"state_dict": {"module.<key>": ...}}`; "compiled" → flat
    `module._orig_mod.<key>`; "plain" → flat official keys. The autoencoder is always the flat 205-key dict.
    """
    unet = load_file(golden / "tiny_unet.safetensors")
    autoencoder = load_file(golden / "tiny_vq_f4.safetensors")
    wrapped = {
        "ddp": lambda: {"state_dict": {f"module.{k}": v for k, v in unet.items()}},
        "compiled": lambda: {f"module._orig_mod.{k}": v for k, v in unet.items()},
        "plain": lambda: unet,
    }[wrapping]()
    return {UNET_PTH: torch_bytes(wrapped), AUTOENCODER_PTH: torch_bytes(autoencoder)}
