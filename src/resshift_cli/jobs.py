"""Upscale jobs: where each output goes, which inputs collide, and running one input to one record.

Nothing here parses options or prints. A front end plans the jobs (`plan_upscale`, `plan_batch`),
sets aside the ones `find_collisions` reports, runs the rest with `run_job` (each gives a `Record`, also
when it fails) and reports the records. A job's paths are local files, or objects in an `ObjectStore`
(`Job.scheme` says which store); `batch --ray` runs the same jobs through the same `run_job` on Ray.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from resshift_cli.api import Provenance, Upscaler, write_output
from resshift_cli.errors import ImageError, ResshiftError, UsageError, one_line
from resshift_cli.images import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    Picture,
    check_bit_depth,
    format_for,
    read_picture,
    write_picture,
)
from resshift_cli.pipeline import UpscaleOptions, schedule_for
from resshift_cli.progress import ProgressCallback
from resshift_cli.storage import ObjectStore, is_uri

STDIO = "-"
"""Stands for stdin as an input and for stdout as an output."""

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".tga"}
)
"""Suffixes (lower case) that `plan_batch` picks up when no --glob is given."""

Existing = Literal["fail", "skip", "overwrite"]
"""What to do when an output already exists: fail that input, skip it, or replace the file."""


@dataclass(frozen=True)
class Job:
    """One input and where its result goes: `source` None reads stdin, `target` None writes stdout.

    fmt: output format name ("png", "jpg", "webp", "tiff").
    scheme: "" for local files; "s3" or "gs" when both paths are objects in that store ("bucket/key").
    """

    source: Path | None
    target: Path | None
    fmt: str
    scheme: str = ""

    @property
    def store(self) -> ObjectStore | None:
        return ObjectStore(self.scheme) if self.scheme else None

    @property
    def input_name(self) -> str:
        return self._name(self.source)

    @property
    def output_name(self) -> str:
        return self._name(self.target)

    def _name(self, path: Path | None) -> str:
        if path is None:
            return STDIO
        return f"{self.scheme}://{path.as_posix()}" if self.scheme else str(path)


@dataclass(frozen=True)
class Settings:
    """How every job of one command runs.

    scale: output size / input size, 1..16 (the model's ×4 passes, then a resize to the exact size).
    existing: what to do with outputs that are already there.
    """

    scale: float = 4.0
    options: UpscaleOptions = field(default_factory=UpscaleOptions)
    quality: int = 95
    bit_depth: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    existing: Existing = "fail"


@dataclass
class Record:
    """The outcome of one job. status: "ok" | "skipped" | "failed"; error: one line, or None."""

    input: str
    output: str
    status: str
    error: str | None = None
    seconds: float = 0.0
    size: tuple[int, int] | None = None
    provenance: Provenance | None = None
    exception: BaseException | None = field(default=None, repr=False)

    def fields(self) -> dict[str, object]:
        """input, output, status, error, seconds, width, height, then the provenance's fields."""
        width, height = self.size or (None, None)
        data = {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "width": width,
            "height": height,
        }
        return {**data, **(self.provenance.fields() if self.provenance else {})}

    def to_json(self) -> str:
        """`fields` as one JSON object."""
        return json.dumps(self.fields(), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Record:
        """The record `to_json` wrote (seconds rounded to ms; no exception)."""
        data = json.loads(line)
        size = (data["width"], data["height"]) if data["width"] is not None else None
        made = {k: v for k, v in data.items() if k not in _RECORD_KEYS}
        provenance = Provenance(**made) if made else None
        return cls(
            data["input"], data["output"], data["status"], data["error"], data["seconds"], size, provenance
        )


_RECORD_KEYS = frozenset({"input", "output", "status", "error", "seconds", "width", "height"})


class LazyModel:
    """An `Upscaler` built on first use, once: bad inputs fail before any weights are read or fetched."""

    def __init__(self, load: Callable[[], Upscaler]) -> None:
        self._load = load
        self._model: Upscaler | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> Upscaler:
        if self._model is None:
            self._model = self._load()
        return self._model


# 1. Output paths -------------------------------------------------------------------------------------------


def scale_suffix(scale: float) -> str:
    """The default output suffix: "_x4" for 4, "_x2" for 2.0, "_x1.5" for 1.5."""
    return f"_x{scale:g}"


def output_extension(source: Path | None, fmt: str | None) -> str:
    """The output suffix without the dot: the --format name, else the input's own suffix when we write
    that format (its spelling kept, e.g. "JPG"), else "png"."""
    if fmt is not None:
        return format_for(Path(STDIO), fmt)
    suffix = source.suffix.lstrip(".") if source is not None else ""
    return suffix if suffix.lower() in FORMATS else "png"


def _named_job(source: Path, folder: Path, stem: str, fmt: str | None, scheme: str = "") -> Job:
    name = f"{stem}.{output_extension(source, fmt)}"
    return Job(source, folder / name, format_for(Path(name), None), scheme)


def _file_job(source: Path | None, target: Path, fmt: str | None) -> Job:
    """`-o FILE`: the format from --format, else from the file's suffix; the two must agree."""
    written = format_for(target, fmt)
    named = FORMATS.get(target.suffix.lstrip(".").lower())
    if fmt is not None and named is not None and named != written:
        raise UsageError(f"{target}: the suffix says {named} but --format is {written}; make them agree")
    return Job(source, target, written)


def _unique_inputs(inputs: Sequence[str]) -> list[Path | None]:
    """Inputs in order, a file named twice kept once; "-" (stdin) only as the single input."""
    if STDIO in inputs and len(inputs) > 1:
        raise UsageError("- (stdin) must be the only input")
    seen: set[str] = set()
    unique: list[Path | None] = []
    for raw in inputs:
        key = _path_key(Path(raw)) if raw != STDIO else STDIO
        if key not in seen:
            seen.add(key)
            unique.append(None if raw == STDIO else Path(raw))
    return unique


def _into_folder(sources: list[Path | None], folder: Path, fmt: str | None, suffix: str) -> list[Job]:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: is a file; with several inputs -o names a folder")
    if None in sources:
        raise UsageError("stdin has no file name to use in a folder; pass -o FILE or -o - with -")
    return [_named_job(src, folder, src.stem + suffix, fmt) for src in sources if src is not None]


def _beside_inputs(sources: list[Path | None], fmt: str | None, suffix: str) -> list[Job]:
    """`<stem><suffix>.<ext>` in each input's folder; stdin goes to stdout (PNG unless --format)."""
    return [
        Job(None, None, format_for(Path(STDIO), fmt or "png"))
        if src is None
        else _named_job(src, src.parent, src.stem + suffix, fmt)
        for src in sources
    ]


def plan_upscale(
    inputs: Sequence[str], output: str | None, fmt: str | None, suffix: str | None, scale: float
) -> list[Job]:
    """Jobs for `resshift upscale INPUT... [-o OUTPUT]`.

    No -o: `<stem><suffix>.<ext>` beside each input (suffix default `_x<scale>`); stdin goes to stdout.
    -o -: stdout (one input). -o DIR (several inputs, an existing folder, or a path ending in /): the
    inputs' own file names (plus --suffix when given) in DIR. Else -o is the output file.
    """
    sources = _unique_inputs(inputs)
    if output is None:
        return _beside_inputs(sources, fmt, scale_suffix(scale) if suffix is None else suffix)
    if output == STDIO:
        if len(sources) > 1:
            raise UsageError("-o - (stdout) takes one input; use -o DIR for several")
        return [Job(sources[0], None, format_for(Path(STDIO), fmt or "png"))]
    target = Path(output)
    if len(sources) > 1 or target.is_dir() or output.endswith(("/", os.sep)):
        return _into_folder(sources, target, fmt, suffix or "")
    return [_file_job(sources[0], target, fmt)]


# 2. Finding a folder's images ------------------------------------------------------------------------------


def _pattern_matcher(pattern: str | None) -> Callable[[Path], bool]:
    """Relative path → wanted? No pattern: an image suffix. A pattern matches the file name, or the
    relative path when it contains "/"; case is ignored either way."""
    if pattern is None:
        return lambda rel: rel.suffix.lower() in IMAGE_SUFFIXES
    regex = re.compile(translate(pattern), re.IGNORECASE)
    if "/" in pattern:
        return lambda rel: regex.match(rel.as_posix()) is not None
    return lambda rel: regex.match(rel.name) is not None


def _walk(folder: Path, recursive: bool, skip: str) -> Iterator[Path]:
    """Files under `folder` in sorted order; hidden files and folders and the folder keyed `skip` left out."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        kept = [d for d in dirs if recursive and not d.startswith(".") and _path_key(here / d) != skip]
        dirs[:] = sorted(kept)
        yield from (here / name for name in sorted(files) if not name.startswith("."))


def _walk_store(store: ObjectStore, folder: Path, recursive: bool, skip: Path | None) -> Iterator[Path]:
    """`_walk` for an object store: objects under `folder`, hidden names and the folder `skip` left out."""
    for path in store.files(PurePosixPath(folder), recursive):
        relative = path.relative_to(folder)
        inside_skip = skip is not None and (skip == Path(path) or skip in Path(path).parents)
        if not inside_skip and not any(part.startswith(".") for part in relative.parts):
            yield Path(path)


def find_images(
    folder: Path,
    recursive: bool = False,
    pattern: str | None = None,
    skip: Path | None = None,
    store: ObjectStore | None = None,
) -> list[Path]:
    """The images `plan_batch` picks up, sorted; the folder `skip` (the output folder) is never entered.
    With `store`, the paths are objects in it ("bucket/folder")."""
    wanted = _pattern_matcher(pattern)
    if store is not None:
        listing = _walk_store(store, folder, recursive, skip)
    else:
        listing = _walk(folder, recursive, _path_key(skip) if skip is not None else "")
    return [path for path in listing if wanted(path.relative_to(folder))]


def plan_batch(
    folder: Path,
    outdir: Path,
    fmt: str | None = None,
    recursive: bool = False,
    pattern: str | None = None,
    store: ObjectStore | None = None,
) -> list[Job]:
    """Jobs for `resshift batch`: OUTDIR mirrors the input tree with the same file names (the suffix
    changes only with --format, or to .png for formats we read but do not write). With `store`, both
    folders are in that object store ("bucket/folder")."""
    if path_key(folder, store) == path_key(outdir, store):
        raise UsageError(f"{outdir}: the output folder must differ from the input folder")
    sources = find_images(folder, recursive, pattern, skip=outdir, store=store)
    if not sources:
        what = f'matching "{pattern}"' if pattern else "with an image suffix"
        hint = "" if recursive else "; add --recursive to look in sub-folders"
        shown = store.name(PurePosixPath(folder)) if store is not None else str(folder)
        raise UsageError(f"{shown}: no files {what}{hint}")
    scheme = store.scheme if store is not None else ""
    jobs = []
    for source in sources:
        relative = source.relative_to(folder)
        jobs.append(_named_job(source, outdir / relative.parent, relative.stem, fmt, scheme))
    return jobs


def plan_folder(
    folder: str, outdir: str, fmt: str | None = None, recursive: bool = False, pattern: str | None = None
) -> list[Job]:
    """`plan_batch` for folders as given on the command line: two local paths, or two folders in one
    object store ("s3://bucket/in", "s3://bucket/out")."""
    if is_uri(folder) != is_uri(outdir):
        raise UsageError(
            f"{folder} and {outdir}: FOLDER and -o must be two local folders or two folders in the same"
            " object store"
        )
    if is_uri(folder):
        store, source = ObjectStore.for_uri(folder)
        out_store, target = ObjectStore.for_uri(outdir)
        if out_store != store:
            raise UsageError(f"{outdir}: the output folder must be in the same object store as {folder}")
        return plan_batch(Path(source), Path(target), fmt, recursive, pattern, store)
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: no such folder")
    if Path(outdir).exists() and not Path(outdir).is_dir():
        raise UsageError(f"{outdir}: is a file; -o names the output folder")
    return plan_batch(Path(folder), Path(outdir), fmt, recursive, pattern)


# 3. Collisions ---------------------------------------------------------------------------------------------


def _path_key(path: Path) -> str:
    """A comparable name for a path: absolute, links resolved, case folded (so that two outputs that
    differ only in case count as one, as they do on macOS and Windows)."""
    return str(path.expanduser().resolve()).casefold()


def path_key(path: Path, store: ObjectStore | None = None) -> str:
    """`_path_key` for a local path; for an object, its name case folded (the same outputs collide on
    every filesystem)."""
    return _path_key(path) if store is None else path.as_posix().casefold()


def find_collisions(jobs: Sequence[Job]) -> dict[Job, str]:
    """Jobs that must not run, with the one-line reason: several inputs would write the same output,
    or an output would replace one of the inputs."""
    by_target: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.target is not None:
            by_target[path_key(job.target, job.store)].append(job)
    inputs = {path_key(job.source, job.store): job for job in jobs if job.source is not None}
    problems: dict[Job, str] = {}
    for key, group in by_target.items():
        if len(group) > 1:
            names = " and ".join(job.input_name for job in group)
            for job in group:
                problems[job] = (
                    f"{job.input_name}: {names} would all write {job.output_name}; none of them was written"
                )
        elif key in inputs:
            job = group[0]
            problems[job] = (
                f"{job.input_name}: its output {job.output_name} would replace the input"
                f" {inputs[key].input_name}; not written"
            )
    return problems


def check_formats(jobs: Sequence[Job], bit_depth: int | None) -> None:
    """Refuse, before any work, a 16-bit request for an output format that holds 8 bits."""
    for job in jobs:
        check_bit_depth(job.fmt, bit_depth, job.output_name, "--bit-depth 16")


# 4. Running one job ----------------------------------------------------------------------------------------


def _exists(job: Job) -> bool:
    if job.target is None:
        return False
    store = job.store
    if store is not None:
        return store.exists(PurePosixPath(job.target))
    return job.target.exists() or job.target.is_symlink()


def existing_outcome(job: Job, settings: Settings) -> tuple[str, str | None] | None:
    """("skipped", None) or ("failed", reason) when the output is already there; None to go ahead."""
    if settings.existing == "overwrite" or not _exists(job):
        return None
    if settings.existing == "skip":
        return "skipped", None
    return (
        "failed",
        f"{job.output_name}: already exists; pass --overwrite to replace it or --skip-existing to keep it",
    )


def _read(job: Job, max_pixels: int, stdin: BinaryIO | None) -> Picture:
    store = job.store
    if store is not None and job.source is not None:
        data = store.read(PurePosixPath(job.source))
        return read_picture(data, name=job.input_name, max_pixels=max_pixels)
    if job.source is not None:
        return read_picture(job.source, max_pixels=max_pixels)
    if stdin is None:
        raise UsageError("reading from stdin needs a stdin stream")
    return read_picture(stdin.read(), name="<stdin>", max_pixels=max_pixels)


def _write(picture: Picture, job: Job, settings: Settings, made: Provenance, stdout: BinaryIO | None) -> None:
    store = job.store
    if store is not None and job.target is not None:
        encoded = io.BytesIO()
        write_picture(picture, encoded, job.fmt, settings.quality, settings.bit_depth, made.text())
        store.write(PurePosixPath(job.target), encoded.getvalue())
        return
    if job.target is not None:
        write_output(picture, job.target, job.fmt, settings.quality, settings.bit_depth, made)
        return
    if stdout is None:
        raise UsageError("writing to stdout needs a stdout stream")
    try:
        write_picture(picture, stdout, job.fmt, settings.quality, settings.bit_depth, made.text())
    except BrokenPipeError as err:
        raise ImageError("<stdout>: the reading program closed the pipe") from err


def _failure(job: Job, err: BaseException, started: float) -> Record:
    message = (
        str(err)
        if isinstance(err, ResshiftError)
        else f"{job.input_name}: unexpected {type(err).__name__}: {err}"
    )
    return Record(
        job.input_name,
        job.output_name,
        "failed",
        one_line(message),
        time.perf_counter() - started,
        exception=err,
    )


def run_job(
    job: Job,
    settings: Settings,
    model: LazyModel,
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    progress: ProgressCallback | None = None,
    notice: Callable[[str], None] | None = None,
) -> Record:
    """Read, upscale and write one input; every problem of this input becomes a failed Record.

    Errors of the model itself (it cannot be fetched or loaded, or has fewer steps than --steps) are raised:
    they concern every input.
    `notice` hears about retries, prefixed with the input's name.
    """
    started = time.perf_counter()
    outcome = existing_outcome(job, settings)
    if outcome is not None:
        status, reason = outcome
        return Record(job.input_name, job.output_name, status, reason, time.perf_counter() - started)
    try:
        picture = _read(job, settings.max_pixels, stdin)
    except Exception as err:
        return _failure(job, err, started)
    upscaler = model.get()
    schedule_for(upscaler.runtime, settings.options)  # --steps beyond the trained steps concerns every input
    try:
        told = None if notice is None else lambda message: notice(f"{job.input_name}: {message}")
        result = upscaler.upscale_picture(picture, settings.options, settings.scale, progress, told)
        made = upscaler.provenance(settings.options, settings.scale)
        _write(result, job, settings, made, stdout)
    except Exception as err:
        return _failure(job, err, started)
    size = (result.width, result.height)
    return Record(job.input_name, job.output_name, "ok", None, time.perf_counter() - started, size, made)
