"""Upscaling on a Ray cluster: a `map_batches` class for your own pipelines, and `resshift batch --ray`.

    import ray
    from resshift_cli.ray import UpscaleBytes

    images = ray.data.read_binary_files("s3://bucket/photos", include_paths=True)
    upscaled = images.map_batches(
        UpscaleBytes, fn_constructor_kwargs={"model": "realsr-v3"}, batch_size=1, num_gpus=1, concurrency=4
    )

Each replica (a Ray actor) loads the model once in its constructor; the per-batch call is bytes in, bytes
out. `run_batch` runs the jobs of `resshift batch` through the same `jobs.run_job` as the local batch, one
image per task, so the files are the same bytes; the driver holds only the job list and the records.

This module is `resshift_cli.ray`; it imports the Ray library by its absolute name (`import ray`), which
is installed with `pip install 'resshift-cli[ray]'`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from resshift_cli import errors, registry
from resshift_cli.api import Upscaler
from resshift_cli.colorfix import ColorFix
from resshift_cli.devices import available_cpus, resolve_device
from resshift_cli.errors import ResshiftError, UsageError, one_line
from resshift_cli.fileio import remove_stale_temporaries
from resshift_cli.images import DEFAULT_MAX_PIXELS, read_picture, write_picture
from resshift_cli.jobs import Job, LazyModel, Record, Settings, existing_outcome, run_job
from resshift_cli.pipeline import DEFAULT_SEED, DEFAULT_TILE, DEFAULT_TILE_BATCH
from resshift_cli.runner import Notice

TASK_RETRIES = 2
"""How often an image is tried again after the process running it died (then it is a failed record)."""

FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
"""Object-store settings of the driver that the workers get too (credentials stay where they are)."""

INSTALL_HINT = "--ray needs Ray; install it with: pip install 'resshift-cli[ray]'"


def import_ray() -> ModuleType:
    """The Ray library, or a UsageError that says how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise UsageError(INSTALL_HINT) from err
    return ray


# 1. The map_batches class for your own pipelines ------------------------------------------------------------


class UpscaleBytes:
    """A `Dataset.map_batches` callable class: encoded images in, upscaled encoded images out.

    Input batches (`batch_format="numpy"`, the default) need a `column` of file contents (what
    `ray.data.read_binary_files` gives as "bytes"); a "path" column, when present, names each image in
    error messages. The result has the same columns, `column` replaced by the upscaled file in `fmt`
    (provenance written in, as `resshift upscale` writes it), plus "error": "" for an image that worked,
    else the one-line reason (its bytes are then empty), so one bad image does not stop the pipeline.

    The constructor loads the model once per replica (`Upscaler.from_pretrained`); the other options are
    those of `Upscaler.__call__`, the same defaults and the same pixels.
    """

    def __init__(
        self,
        model: str = registry.DEFAULT_MODEL,
        *,
        fmt: str = "png",
        quality: int = 95,
        device: str = "auto",
        precision: str = "auto",
        scale: float | None = None,
        seed: int = DEFAULT_SEED,
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
        steps: int | None = None,
        color_fix: ColorFix = "none",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        column: str = "bytes",
    ) -> None:
        self.upscaler = Upscaler.from_pretrained(model, device=device, precision=precision)
        self.options = self.upscaler.options(
            seed=seed,
            tile=tile,
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            steps=steps,
            color_fix=color_fix,
        )
        self.scale = float(self.upscaler.scale) if scale is None else scale
        self.provenance = self.upscaler.provenance(self.options, self.scale).text()
        self.fmt, self.quality, self.max_pixels, self.column = fmt, quality, max_pixels, column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{column: (B,) file contents, ...} → {column: (B,) upscaled files, "error": (B,) str, ...}."""
        names = batch.get("path", [f"<image {i}>" for i in range(len(batch[self.column]))])
        results = [
            self._one(bytes(data), str(name)) for data, name in zip(batch[self.column], names, strict=True)
        ]
        return {
            **batch,
            self.column: np.array([data for data, _ in results], dtype=object),
            "error": np.array([error for _, error in results], dtype=object),
        }

    def _one(self, data: bytes, name: str) -> tuple[bytes, str]:
        try:
            picture = read_picture(data, name=name, max_pixels=self.max_pixels)
            result = self.upscaler.upscale_picture(picture, self.options, self.scale)
            encoded = io.BytesIO()
            write_picture(result, encoded, self.fmt, self.quality, None, self.provenance)
        except Exception as err:
            message = str(err) if isinstance(err, ResshiftError) else f"{name}: {type(err).__name__}: {err}"
            return b"", one_line(message)
        return encoded.getvalue(), ""


# 2. The replica behind `batch --ray` ------------------------------------------------------------------------


@dataclass(frozen=True)
class Replica:
    """How each replica loads the model: name or folder, device ("cpu", "cuda", "mps", "auto"),
    precision name ("auto" is resolved on the replica's device), torch.compile, and CPU threads: the
    driver's OMP_NUM_THREADS when the user set it, else None (every core of the replica's node)."""

    model: str
    device: str
    precision: str
    compiled: bool
    threads: int | None = field(default_factory=lambda: _user_threads(os.environ))

    def load(self) -> Upscaler:
        """The model on this replica's device. On CPU it computes with the threads the local batch would
        use on that node (not those of its Ray CPU share): the thread count changes the rounding of the
        networks' sums, and the outputs must be the local batch's, byte for byte."""
        where = resolve_device(self.device)
        if where.type == "cpu":
            torch.set_num_threads(self.threads or available_cpus())
        return Upscaler.from_pretrained(
            self.model, device=where, precision=self.precision, compile=self.compiled
        )


def _user_threads(environ: Mapping[str, str]) -> int | None:
    value = environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


class RunJobs:
    """`map_batches` class of `run_batch`: rows naming jobs → rows holding each job's `Record` as JSON.

    Runs `jobs.run_job` (the local batch's own code) with the model loaded once, in the driver's working
    folder (relative paths mean the same on a shared filesystem). An error that concerns every input
    (the model cannot be loaded, --steps beyond the trained steps) comes back as a "fatal" row instead.
    """

    def __init__(self, replica: Replica, settings: Settings, cwd: str) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        self.settings = settings
        self.model = LazyModel(replica.load)
        self.fatal: ResshiftError | None = None
        try:
            upscaler = self.model.get()  # "auto" precision resolved for this replica's device
        except ResshiftError as err:
            self.fatal = err
        else:
            options = replace(settings.options, dtype=upscaler.dtype, winograd=upscaler.winograd)
            self.settings = replace(settings, options=options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{"source", "target", "fmt", "scheme"}: (B,) str → {"record", "fatal", "notices"}: (B,) str."""
        rows = [
            self._one(*fields)
            for fields in zip(*(batch[k] for k in ("source", "target", "fmt", "scheme")), strict=True)
        ]
        return {key: np.array([row[i] for row in rows], dtype=object) for i, key in enumerate(_OUT_COLUMNS)}

    def _one(self, source: str, target: str, fmt: str, scheme: str) -> tuple[str, str, str]:
        if self.fatal is not None:
            return "", _fatal_text(self.fatal), ""
        notices: list[str] = []
        job = Job(Path(source), Path(target), str(fmt), str(scheme))
        try:
            record = run_job(job, self.settings, self.model, notice=notices.append)
        except ResshiftError as err:
            return "", _fatal_text(err), ""
        return record.to_json(), "", "\n".join(notices)


_OUT_COLUMNS = ("record", "fatal", "notices")


def _fatal_text(err: ResshiftError) -> str:
    return f"{type(err).__name__}: {one_line(str(err))}"


def _raise_fatal(text: str) -> None:
    """Raise again, in the driver, the error a replica sent as "ClassName: message"."""
    name, _, message = text.partition(": ")
    kind = getattr(errors, name, None)
    raise (kind if isinstance(kind, type) and issubclass(kind, ResshiftError) else ResshiftError)(message)


# 3. The driver ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[ModuleType]:
    """Ray, connected: as the caller already set it up, or a new local runtime (`address` None), or the
    cluster at `address` ("auto", "ray://host:10001", "host:6379"); a connection made here is closed on
    the way out (which ends this run's workers)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as err:
        raise UsageError(
            f"--ray-address {address}: cannot connect to a Ray cluster ({one_line(str(err))})"
        ) from err
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Placement:
    """How many replicas, and what each one asks Ray for."""

    replicas: int
    gpus: int
    cpus: int


def placement(ray: ModuleType, device: str, workers: int | None) -> Placement:
    """One replica per GPU (device auto or cuda on a cluster with GPUs), else one per node with all of
    that node's CPUs; `workers` bounds the replicas (on CPUs at most one per CPU, shared out evenly)."""
    resources = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    gpus = int(resources.get("GPU", 0))
    if device.startswith("cuda") or (device == "auto" and gpus > 0):
        if gpus == 0:
            raise UsageError(f"--device {device}: the Ray cluster has no GPU")
        return Placement(min(workers or gpus, gpus), 1, 1)
    cpus = int(resources.get("CPU", 1))
    replicas = min(workers or max(1, len(nodes)), max(1, cpus))
    per_node = min(int(n["Resources"].get("CPU", 1)) for n in nodes) if nodes else cpus
    return Placement(replicas, 0, max(1, min(per_node, cpus // replicas)))


def replica_device(device: str, where: Placement) -> str:
    """What each replica passes to `resolve_device`: "cuda" for the GPU Ray gave it, else `device`."""
    if where.gpus:
        return "cuda"
    return "cpu" if device == "auto" else device


def _forwarded_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def _job_rows(jobs: Sequence[Job]) -> list[dict[str, str]]:
    return [
        {"source": str(job.source), "target": str(job.target), "fmt": job.fmt, "scheme": job.scheme}
        for job in jobs
    ]


def _dataset(
    ray: ModuleType, jobs: Sequence[Job], replica: Replica, settings: Settings, where: Placement
) -> Any:
    """One image per block and per task, on `where.replicas` actors that are restarted when they die; a
    task whose actor died more than `TASK_RETRIES` times is dropped (and reported by the driver)."""
    rows = ray.data.from_items(_job_rows(jobs), override_num_blocks=len(jobs))
    context = rows.context  # this dataset's own copy of the DataContext
    context.max_errored_blocks = -1
    context.enable_progress_bars = False
    context.enable_auto_log_stats = False
    with warnings.catch_warnings():
        # max_restarts and max_task_retries have no named parameter yet (Ray 2.60)
        warnings.simplefilter("ignore", DeprecationWarning)
        return rows.map_batches(
            RunJobs,
            fn_constructor_kwargs={"replica": replica, "settings": settings, "cwd": os.getcwd()},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=where.replicas, max_tasks_in_flight_per_actor=2),
            num_gpus=where.gpus or None,
            num_cpus=where.cpus,
            runtime_env={"env_vars": _forwarded_env()},
            max_restarts=-1,
            max_task_retries=TASK_RETRIES,
        )


def _lost(job: Job) -> Record:
    reason = f"{job.input_name}: the Ray worker running it died {TASK_RETRIES + 1} times; not written"
    return Record(job.input_name, job.output_name, "failed", reason)


def run_batch(
    jobs: Sequence[Job],
    settings: Settings,
    replica: Replica,
    *,
    address: str | None = None,
    workers: int | None = None,
    notice: Notice | None = None,
) -> Iterator[Record]:
    """Run the jobs (collisions already set aside) on Ray and yield each one's Record as it finishes.

    Existing outputs are handled here first (skipped or failed, as the local batch does), so a task that
    Ray retries overwrites only its own, identical output. Every job gives exactly one record: an image
    whose worker kept dying is a failed one. Errors that concern every input are raised (ModelError,
    UsageError). On the way out (done, error or Ctrl-C) temporary files of dead workers are removed.
    `notice` hears the replicas' retry notices, each prefixed with its input's name.
    """
    todo = []
    for job in jobs:
        outcome = existing_outcome(job, settings)
        if outcome is None:
            todo.append(job)
        else:
            yield Record(job.input_name, job.output_name, *outcome)
    if not todo:
        return
    try:
        yield from _run_on_ray(
            todo, replace(settings, existing="overwrite"), replica, address, workers, notice
        )
    finally:
        remove_stale_temporaries(job.target for job in todo if not job.scheme and job.target is not None)


def _run_on_ray(
    jobs: Sequence[Job],
    settings: Settings,
    replica: Replica,
    address: str | None,
    workers: int | None,
    notice: Notice | None,
) -> Iterator[Record]:
    pending = {job.input_name: job for job in jobs}
    with connected(address) as ray:
        where = placement(ray, replica.device, workers)
        replica = replace(replica, device=replica_device(replica.device, where))
        for row in _dataset(ray, jobs, replica, settings, where).iter_rows():
            if row["fatal"]:
                _raise_fatal(row["fatal"])
            record = Record.from_json(row["record"])
            if pending.pop(record.input, None) is None:
                continue
            if notice is not None:
                for line in filter(None, row["notices"].split("\n")):
                    notice(line)
            yield record
    yield from (_lost(job) for job in pending.values())


__all__ = ["Replica", "UpscaleBytes", "run_batch"]
