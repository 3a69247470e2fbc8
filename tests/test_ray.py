"""`resshift batch --ray` and `resshift_cli.ray` on one local Ray runtime with 2 CPUs and the tiny model.

Every run is compared with the local batch over the same tree: the same files, byte for byte, and the
same JSON records (but "seconds"). One test really kills a worker process in the middle of a run; one
reads and writes s3:// through a local S3-protocol server (moto) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import corpus
from resshift_cli.cli import app
from resshift_cli.fileio import remove_stale_temporaries, temporary_sibling
from tiny import write_tiny_folder

try:
    import ray
    import ray.data
except ImportError:
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed (pip install 'resshift-cli[ray]')")

runner = CliRunner()
CPU = ("--device", "cpu", "--precision", "fp32")
GOOD = ["rgba.png", "sub/photo.jpg", "sub/deep16.tif"]
BAD = ["empty.png", "lies.jpg", "sub/truncated_rgba.png"]
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


POISON = "poison.png"
"""An input that kills the worker process reading it (see `ray_runtime`)."""


@pytest.fixture(scope="module")
def ray_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray runtime for the module (2 CPUs, no dashboard), its workers kept offline. In every
    worker, reading a file named `POISON` ends the process at once, as a crash in native code would."""
    home = tmp_path_factory.mktemp("ray-home")
    env = {"RESSHIFT_HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", **S3_ENV}

    def poison_reading() -> None:  # pickled by value into the workers
        import resshift_cli.jobs

        read = resshift_cli.jobs.read_picture

        def read_or_die(source: object, *args: object, **kwargs: object) -> object:
            if isinstance(source, Path) and source.name == POISON:
                os._exit(1)
            return read(source, *args, **kwargs)

        resshift_cli.jobs.read_picture = read_or_die

    runtime_env = {"env_vars": env, "worker_process_setup_hook": poison_reading}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_folder(tmp_path_factory.mktemp("models") / "tiny-v3", "v3")


def make_tree(root: Path) -> Path:
    """Three small images (RGBA PNG, JPEG, 16-bit TIFF, one per kind of writer) and three bad files."""
    (root / "sub").mkdir(parents=True)
    rgba = corpus.write_png(root, "rgba.png", corpus.sample_pixels(4, 8))
    corpus.write_jpeg(root / "sub", "photo.jpg", corpus.sample_pixels(seed=1))
    corpus.write_tiff(root / "sub", "deep16.tif", corpus.sample_pixels(3, 16))
    corpus.write_empty(root)
    corpus.write_text_file(root, "lies.jpg")
    corpus.write_truncated(root / "sub", rgba)
    return root


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def records(stdout: str, out: Path | None = None) -> dict[str, dict]:
    """JSON lines by input, without "seconds" (the one field that differs between two runs) and, with
    `out`, the output names relative to that folder."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len({r["input"] for r in lines}) == len(lines), "an input was reported twice"
    for line in lines:
        if out is not None:
            line["output"] = Path(line["output"]).relative_to(out).as_posix()
    return {r["input"]: {k: v for k, v in r.items() if k != "seconds"} for r in lines}


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden temporary files included) with its contents."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "in")


@pytest.fixture(scope="module")
def local_run(tree: Path, model_dir: Path):
    """The local batch over `tree`: what every Ray run must reproduce."""
    out = tree.parent / "local"
    result = invoke("batch", tree, "-o", out, "-r", "--json", "-m", model_dir, *CPU)
    return out, result


@needs_ray
@pytest.mark.parametrize("workers", [1, 2])
def test_ray_batch_gives_the_local_batch_files_records_and_exit_code(
    ray_runtime: None, tree: Path, model_dir: Path, local_run, workers: int
) -> None:
    local_out, local = local_run
    out = tree.parent / f"ray{workers}"
    result = invoke(
        "batch", tree, "-o", out, "-r", "--json", "-m", model_dir, *CPU, "--ray", "--workers", workers
    )
    assert local.exit_code == result.exit_code == 1  # the bad inputs failed
    assert files(out) == files(local_out)
    assert set(files(out)) == set(GOOD)  # no temporary file left
    assert records(result.stdout, out) == records(local.stdout, local_out)
    failed = {k for k, r in records(result.stdout).items() if r["status"] == "failed"}
    assert failed == {str(tree / name) for name in BAD}
    for name in BAD:
        assert f"error: {tree / name}: " in result.stderr
    assert result.stderr.splitlines()[-1].startswith("3 upscaled, 0 skipped, 3 failed")


@needs_ray
def test_ray_batch_resumes_with_skip_existing_and_refuses_to_overwrite(
    ray_runtime: None, tree: Path, local_run
) -> None:
    local_out, _ = local_run
    before = {p: p.stat().st_mtime_ns for p in local_out.rglob("*")}
    model = tree.parent / "no-model-needed"
    resumed = invoke("batch", tree, "-o", local_out, "-r", "--skip-existing", "--json", "-m", model, "--ray")
    statuses = {k: r["status"] for k, r in records(resumed.stdout).items()}
    assert {statuses[str(tree / name)] for name in GOOD} == {"skipped"}
    refused = invoke("batch", tree, "-o", local_out, "-r", "-q", "-m", model, "--ray")
    assert refused.exit_code == 1 and refused.stderr.count("already exists") == len(GOOD)
    assert {p: p.stat().st_mtime_ns for p in local_out.rglob("*")} == before


def _runjobs_actors() -> dict[str, dict]:
    """The live replicas of `batch --ray`, by actor id (GCS actor table: Ray's state API needs the
    dashboard, which the test runtime does not start)."""
    from ray._private import state

    return {
        actor_id: actor
        for actor_id, actor in state.actors().items()
        if "RunJobs" in actor["ActorClassName"] and actor["State"] == "ALIVE"
    }


def copies(root: Path, source: Path, names: list[str]) -> Path:
    """A new folder `root` holding `source`'s bytes under each of `names`."""
    root.mkdir()
    for name in names:
        (root / name).write_bytes(source.read_bytes())
    return root


@needs_ray
def test_a_worker_killed_mid_run_loses_no_image_and_leaves_no_partial_file(
    ray_runtime: None, tmp_path: Path, model_dir: Path, tree: Path, local_run
) -> None:
    """Five copies of one image on one replica; its process is SIGKILLed once the first output exists."""
    local_out, _ = local_run
    names = [f"img{i}.png" for i in range(5)]
    root = copies(tmp_path / "in", tree / "rgba.png", names)
    out = tmp_path / "out"
    killed: list[tuple[int, int]] = []

    def kill_once_an_image_is_done() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = [n for n in (os.listdir(out) if out.is_dir() else []) if not n.startswith(".")]
            actors = _runjobs_actors()
            if done and actors:
                pid = next(iter(actors.values()))["Pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, len(done)))
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_once_an_image_is_done, daemon=True)
    killer.start()
    result = invoke("batch", root, "-o", out, "--json", "-m", model_dir, *CPU, "--ray", "--workers", "1")
    killer.join()
    assert killed, "no worker was killed"
    pid, done_at_kill = killed[0]
    assert done_at_kill < len(names), "the kill came after the last image"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert result.exit_code == 0, result.stderr
    assert {r["status"] for r in records(result.stdout).values()} == {"ok"}
    assert set(records(result.stdout)) == {str(root / name) for name in names}
    expected = (local_out / "rgba.png").read_bytes()
    assert files(out) == dict.fromkeys(names, expected)  # every image once, whole; no temporary file


@needs_ray
def test_an_image_that_kills_its_worker_every_time_is_one_failed_record(
    ray_runtime: None, tmp_path: Path, model_dir: Path, tree: Path, local_run
) -> None:
    local_out, _ = local_run
    root = copies(tmp_path / "in", tree / "rgba.png", ["good.png", POISON])
    out = tmp_path / "out"
    result = invoke("batch", root, "-o", out, "--json", "-m", model_dir, *CPU, "--ray", "--workers", "1")
    assert result.exit_code == 1
    got = records(result.stdout)
    assert got[str(root / "good.png")]["status"] == "ok"
    poisoned = got[str(root / POISON)]
    assert poisoned["status"] == "failed"
    assert poisoned["error"] == f"{root / POISON}: the Ray worker running it died 3 times; not written"
    assert files(out) == {"good.png": (local_out / "rgba.png").read_bytes()}


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local S3-protocol server (moto) on 127.0.0.1 with one bucket; yields its endpoint URL."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    from pyarrow import fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    s3 = fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", allow_bucket_creation=True)
    s3.create_dir("photos")
    try:
        yield endpoint
    finally:
        server.stop()


@needs_ray
def test_ray_batch_reads_and_writes_s3(
    ray_runtime: None, s3_server: str, tree: Path, model_dir: Path, local_run
) -> None:
    from pyarrow import fs

    local_out, local = local_run
    host_port = s3_server.removeprefix("http://")
    s3 = fs.S3FileSystem(endpoint_override=host_port, scheme="http")
    for name in [*GOOD, "empty.png"]:
        with s3.open_output_stream(f"photos/in/{name}") as stream:
            stream.write((tree / name).read_bytes())
    result = invoke(
        "batch", "s3://photos/in", "-o", "s3://photos/out", "-r", "--json", "-m", model_dir, *CPU, "--ray"
    )
    assert result.exit_code == 1  # empty.png
    got = records(result.stdout)
    expected = records(local.stdout)
    for name in GOOD:
        record = got[f"s3://photos/in/{name}"]
        assert record["status"] == "ok" and record["output"] == f"s3://photos/out/{name}"
        assert record["width"] == expected[str(tree / name)]["width"]
        with s3.open_input_stream(f"photos/out/{name}") as stream:
            assert stream.read() == (local_out / name).read_bytes()
    assert got["s3://photos/in/empty.png"]["error"].startswith("s3://photos/in/empty.png: ")
    listed = s3.get_file_info(fs.FileSelector("photos/out", recursive=True))
    assert sorted(i.path for i in listed if i.type == fs.FileType.File) == sorted(
        f"photos/out/{name}" for name in GOOD
    )
    model = tree.parent / "no-model-needed"  # without Ray: the same listing and existence checks
    resumed = invoke(
        "batch", "s3://photos/in", "-o", "s3://photos/out", "-r", "--skip-existing", "--json", "-m", model
    )
    statuses = {k: r["status"] for k, r in records(resumed.stdout).items()}
    assert statuses == {
        **{f"s3://photos/in/{n}": "skipped" for n in GOOD},
        "s3://photos/in/empty.png": "failed",
    }


@needs_ray
def test_upscale_bytes_in_a_ray_data_pipeline(
    ray_runtime: None, tree: Path, model_dir: Path, local_run
) -> None:
    """The documented map_batches class: the same bytes as the local batch; a bad image is an error row."""
    from resshift_cli.ray import UpscaleBytes

    local_out, _ = local_run
    rows = [
        {"bytes": (tree / "rgba.png").read_bytes(), "path": "rgba.png"},
        {"bytes": b"not an image", "path": "junk.png"},
    ]
    upscaled = ray.data.from_items(rows).map_batches(
        UpscaleBytes,
        fn_constructor_kwargs={"model": str(model_dir), "device": "cpu", "precision": "fp32"},
        batch_size=2,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    out = {row["path"]: row for row in upscaled.take_all()}
    assert (
        out["rgba.png"]["error"] == "" and out["rgba.png"]["bytes"] == (local_out / "rgba.png").read_bytes()
    )
    assert out["junk.png"]["bytes"] == b"" and out["junk.png"]["error"].startswith("junk.png: not an image")


# -- no Ray runtime needed ----------------------------------------------------------------------------------


def test_without_ray_installed_ray_says_how_to_get_it(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = invoke("batch", tree, "-o", tmp_path / "out", "-r", "--ray")
    assert result.exit_code == 2
    assert "pip install 'resshift-cli[ray]'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_ray_options_usage_errors(tree: Path, tmp_path: Path) -> None:
    alone = invoke("batch", tree, "-o", tmp_path / "out", "--workers", "2")
    assert alone.exit_code == 2 and "--workers needs --ray" in alone.stderr
    mixed = invoke("batch", tree, "-o", "s3://bucket/out")
    assert mixed.exit_code == 2 and "same object store" in mixed.stderr


def test_stale_temporaries_of_the_targets_are_removed_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    stale = temporary_sibling(target)
    stale.write_bytes(b"partial")
    other = temporary_sibling(tmp_path / "b.png")
    other.write_bytes(b"someone else's")
    (tmp_path / ".a.png.notes").write_bytes(b"keep")
    remove_stale_temporaries([target, tmp_path / "missing" / "c.png"])
    assert not stale.exists() and other.exists() and (tmp_path / ".a.png.notes").exists()
