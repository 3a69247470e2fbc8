"""Weights from the network: the release download, the Hub, the cache, offline mode, failures and concurrency.

Every download goes to a real HTTP server on 127.0.0.1 started by the test (see `servers.py`).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import hf_hub_download, snapshot_download
from safetensors.torch import load_file

from resshift_cli import cache, hub, locations, registry
from resshift_cli.errors import DownloadError, ModelError, UsageError
from resshift_cli.loading import AUTOENCODER_FILE, CONFIG_FILE, UNET_FILE, load_model
from resshift_cli.manifest import MANIFEST_FILE, MODEL_FILES, read_manifest, verify_folder
from resshift_cli.progress import Progress
from resshift_cli.registry import HubLocation, ModelEntry
from resshift_cli.release import DOWNLOAD_ATTEMPTS, ENV_RELEASE_URL
from servers import AUTOENCODER_PTH, UNET_PTH, HubServer, ReleaseServer, tiny_release, torch_bytes

MODEL = "realsr-v3"


@pytest.fixture
def release(golden_dir: Path, monkeypatch: pytest.MonkeyPatch, online: None) -> Iterator[ReleaseServer]:
    """A release server with the tiny weights as `realsr-v3` (UNet DDP-wrapped), set as the release URL."""
    with ReleaseServer(tiny_release(golden_dir, "ddp")) as server:
        monkeypatch.setenv(ENV_RELEASE_URL, server.url)
        yield server


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, golden_dir: Path) -> Path:
    """A converted tiny model folder (what `resshift models export` uploads)."""
    root = tmp_path_factory.mktemp("tiny")
    files = tiny_release(golden_dir, "plain")
    for name, data in files.items():
        (root / name).write_bytes(data)
    folder = root / "model"
    cache.convert_to_folder(
        root / UNET_PTH, root / AUTOENCODER_PTH, folder, name=MODEL, diffusion=registry.preset(MODEL)
    )
    return folder


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# The official release ---------------------------------------------------------------------------------------


def test_first_download_converts_into_the_cache(release: ReleaseServer, golden_dir: Path) -> None:
    folder = cache.resolve_model(MODEL)
    assert folder == locations.cache_home() / "models" / MODEL
    assert sorted(p.name for p in folder.iterdir()) == sorted([*MODEL_FILES, MANIFEST_FILE])
    manifest = read_manifest(folder)
    assert manifest is not None
    assert [(s.file, s.sha256, s.url) for s in manifest.sources] == [
        (name, sha256(release.files[name]), f"{release.url}/{name}") for name in (UNET_PTH, AUTOENCODER_PTH)
    ]
    assert verify_folder(folder) == []
    assert (
        load_file(folder / AUTOENCODER_FILE).keys() == load_file(golden_dir / "tiny_vq_f4.safetensors").keys()
    )
    assert not list(locations.downloads_dir().glob("*.pth*")), "the pickles are deleted after conversion"


def test_download_progress_is_reported_not_drawn(
    release: ReleaseServer, capfd: pytest.CaptureFixture[str]
) -> None:
    reports: list[Progress] = []
    cache.resolve_model(MODEL, progress=reports.append)
    assert capfd.readouterr() == ("", ""), "library code draws nothing itself"
    assert {p.stage for p in reports} == {"download"}
    for name in (UNET_PTH, AUTOENCODER_PTH):
        done = [p.done for p in reports if p.detail == name]
        size = len(release.files[name])
        assert done[0] == 0 and done[-1] == size and done == sorted(done)
        assert {p.total for p in reports if p.detail == name} == {size}


def test_cached_second_run_makes_no_request(release: ReleaseServer) -> None:
    first = cache.resolve_model(MODEL)
    hits = len(release.hits)
    release.stop()
    assert cache.resolve_model(MODEL) == first
    assert len(release.hits) == hits


def test_offline_run_uses_the_cache(release: ReleaseServer, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = cache.resolve_model(MODEL)
    release.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cache.resolve_model(MODEL) == folder


def test_offline_with_nothing_cached(release: ReleaseServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        cache.resolve_model(MODEL)
    assert "HF_HUB_OFFLINE is set" in one_line(err)
    assert f"resshift models download {MODEL}" in str(err.value)
    assert "--model DIR" in str(err.value)
    assert release.hits == []


def test_no_network(monkeypatch: pytest.MonkeyPatch, online: None) -> None:
    monkeypatch.setenv(ENV_RELEASE_URL, closed_port_url())
    with pytest.raises(DownloadError, match=r"^cannot reach 127\.0\.0\.1:\d+ to fetch") as err:
        cache.resolve_model(MODEL)
    assert "resshift models download" in one_line(err)
    assert "--model DIR" in str(err.value)


def test_missing_release_file(release: ReleaseServer) -> None:
    del release.files[UNET_PTH]
    with pytest.raises(DownloadError, match=r"resshift_realsrx4_s4_v3\.pth: not found \(HTTP 404\)") as err:
        cache.resolve_model(MODEL)
    assert ENV_RELEASE_URL in one_line(err)


def test_not_enough_disk_space_is_caught_before_writing(release: ReleaseServer) -> None:
    release.claimed_length[UNET_PTH] = 10**18
    with pytest.raises(
        DownloadError, match=r"downloads: not enough disk space \(1000000000000 MB needed"
    ) as err:
        cache.resolve_model(MODEL)
    assert f"set {locations.ENV_HOME}" in one_line(err)
    assert not list(locations.downloads_dir().glob("*.part"))


def test_unwritable_cache_is_one_line(release: ReleaseServer, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(locations.ENV_HOME, str(tmp_path / "file" / "resshift"))
    with pytest.raises(ModelError, match="cannot write") as err:
        cache.resolve_model(MODEL)
    assert str(tmp_path / "file" / "resshift") in one_line(err)


def test_interrupted_transfer_resumes_in_the_same_run(release: ReleaseServer) -> None:
    release.interrupt[UNET_PTH] = [3_000_000]
    cache.resolve_model(MODEL)
    assert [h.range for h in release.downloads(UNET_PTH)] == [None, "bytes=3000000-"]


def test_interrupted_download_resumes_on_the_next_run(release: ReleaseServer) -> None:
    release.interrupt[UNET_PTH] = [1_000_000] * DOWNLOAD_ATTEMPTS
    with pytest.raises(
        DownloadError, match=r"interrupted at 3000000 of \d+ bytes; run the same command again to resume"
    ):
        cache.resolve_model(MODEL)
    assert (locations.downloads_dir() / f"{UNET_PTH}.part").stat().st_size == 3_000_000
    assert not (locations.models_dir() / MODEL).exists()

    folder = cache.resolve_model(MODEL)
    assert release.downloads(UNET_PTH)[-1].range == "bytes=3000000-"
    assert read_manifest(folder).sources[0].sha256 == sha256(release.files[UNET_PTH])


def test_stale_partial_larger_than_the_file_restarts(release: ReleaseServer) -> None:
    locations.downloads_dir().mkdir(parents=True)
    (locations.downloads_dir() / f"{UNET_PTH}.part").write_bytes(b"x" * (len(release.files[UNET_PTH]) + 10))
    folder = cache.resolve_model(MODEL)
    assert [h.range for h in release.downloads(UNET_PTH)][-1] is None
    assert verify_folder(folder) == []


def test_corrupt_download_is_refused_and_deleted(release: ReleaseServer, golden_dir: Path) -> None:
    good = release.files[UNET_PTH]
    release.files[UNET_PTH] = good[: len(good) // 2]
    with pytest.raises(ModelError, match="corrupt or truncated PyTorch checkpoint") as err:
        cache.resolve_model(MODEL)
    assert "deleted, run again to re-download" in one_line(err)
    assert not list(locations.downloads_dir().glob("*.pth"))
    assert not (locations.models_dir() / MODEL).exists()

    release.files[UNET_PTH] = good
    assert verify_folder(cache.resolve_model(MODEL)) == []


def test_html_page_instead_of_checkpoint(release: ReleaseServer) -> None:
    release.files[AUTOENCODER_PTH] = b"<html><body>Rate limit exceeded</body></html>"
    with pytest.raises(
        ModelError, match=r"autoencoder_vq_f4\.pth: not a PyTorch checkpoint \(an HTML/XML page\)"
    ):
        cache.resolve_model(MODEL)


def test_wrong_architecture_names_the_differing_keys(release: ReleaseServer, golden_dir: Path) -> None:
    unet = load_file(golden_dir / "tiny_unet.safetensors")
    unet["out.2.weight"] = torch.zeros(4, 32, 3, 3)
    del unet["time_embed.0.bias"]
    release.files[UNET_PTH] = torch_bytes(unet)
    with pytest.raises(ModelError) as err:
        cache.resolve_model(MODEL)
    assert "(unet): weights do not match the architecture: missing time_embed.0.bias" in one_line(err)
    assert "mis-shaped out.2.weight (4, 32, 3, 3) (expected (3, 32, 3, 3))" in str(err.value)
    assert not (locations.models_dir() / MODEL).exists()
    assert not list(locations.downloads_dir().glob("*.pth"))


def test_booby_trapped_pickle_never_runs(release: ReleaseServer, golden_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    unet = load_file(golden_dir / "tiny_unet.safetensors")
    release.files[UNET_PTH] = torch_bytes({"state_dict": {**unet, "ema_rate": Payload()}})
    with pytest.raises(ModelError, match=r"refused: .*exec.*nothing in it ran"):
        cache.resolve_model(MODEL)
    assert not marker.exists()
    assert not list(locations.downloads_dir().glob("*.pth"))
    assert not (locations.models_dir() / MODEL).exists()


def test_keep_pth_keeps_the_pickles_and_reuses_them(release: ReleaseServer) -> None:
    cache.resolve_model(MODEL, keep_pth=True)
    kept = sorted(p.name for p in locations.downloads_dir().glob("*.pth"))
    assert kept == sorted([UNET_PTH, AUTOENCODER_PTH])

    removed = cache.remove_cached(MODEL)
    assert locations.models_dir() / MODEL in removed
    assert locations.downloads_dir() / UNET_PTH in removed
    hits = len(release.downloads(AUTOENCODER_PTH))
    cache.resolve_model(MODEL)
    assert len(release.downloads(AUTOENCODER_PTH)) == hits, "the kept autoencoder is reused"
    assert len(release.downloads(UNET_PTH)) == 2


@pytest.mark.slow
def test_two_concurrent_first_runs(release: ReleaseServer) -> None:
    release.chunk_delay_s = 0.03
    script = "from resshift_cli.cli import main; main()"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, "models", "download", MODEL],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    folder = locations.models_dir() / MODEL
    assert [out.strip() for out, _ in outputs] == [str(folder)] * 2
    assert any("waiting for another resshift process" in err for _, err in outputs)
    assert len(release.downloads(UNET_PTH)) == len(release.downloads(AUTOENCODER_PTH)) == 1
    assert verify_folder(folder) == []
    assert not list(locations.models_dir().glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="uses RLIMIT_FSIZE to make writes fail")
def test_disk_full_is_one_line(release: ReleaseServer) -> None:
    limit = "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000)); "
    script = limit + "from resshift_cli.cli import main; main()"
    run = subprocess.run(
        [sys.executable, "-c", script, "models", "download", MODEL, "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert run.stderr.count("\n") == 1
    assert "disk full or file size limit reached" in run.stderr
    assert f"set {locations.ENV_HOME}" in run.stderr


def test_tests_are_offline_by_default() -> None:
    """Without the `online` fixture no test can fetch anything by accident (see conftest.py)."""
    assert os.environ[ENV_RELEASE_URL] == os.environ["HF_ENDPOINT"] == "http://127.0.0.1:9"
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set"):
        cache.resolve_model(MODEL)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set"):
        cache.resolve_model("hf://me/tiny")


# Model specs ------------------------------------------------------------------------------------------------


def test_folder_spec_is_used_as_is(tiny_folder: Path) -> None:
    assert cache.resolve_model(str(tiny_folder)) == tiny_folder


@pytest.mark.parametrize("spec", ["./no-such-folder", "a/b/c"])
def test_missing_folder_spec(spec: str) -> None:
    with pytest.raises(ModelError, match="not a model folder"):
        cache.resolve_model(spec)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown model 'realsr-v9'; known models: realsr-v1, realsr-v2"):
        cache.resolve_model("realsr-v9")


@pytest.mark.parametrize("spec", ["hf://just-a-name", "hf://a/b/c", "hf://a/b@", "hf://"])
def test_bad_hub_specs(spec: str) -> None:
    with pytest.raises(UsageError, match="expected hf://owner/name"):
        cache.resolve_model(spec)


def test_parse_hub_spec() -> None:
    assert hub.parse_hub_spec("hf://me/model@v1.0") == hub.HubSpec("me/model", "v1.0")
    assert str(hub.parse_hub_spec("hf://me/model")) == "hf://me/model"


# The Hub ----------------------------------------------------------------------------------------------------


def _upload(server: HubServer, folder: Path, repo_id: str = "me/tiny") -> str:
    return server.add_folder(repo_id, folder)


def test_hub_server_speaks_the_protocol_huggingface_hub_uses(
    hub_server: HubServer, tiny_folder: Path, tmp_path: Path
) -> None:
    commit = _upload(hub_server, tiny_folder)
    cache = tmp_path / "hf"
    snapshot = Path(snapshot_download("me/tiny", cache_dir=cache, endpoint=hub_server.url))
    assert snapshot.name == commit
    assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == {
        p.name: p.read_bytes() for p in tiny_folder.iterdir()
    }
    single = hf_hub_download("me/tiny", UNET_FILE, revision=commit, cache_dir=cache, endpoint=hub_server.url)
    assert Path(single) == snapshot / UNET_FILE


def test_hub_model_downloads_once_and_works_offline(
    hub_server: HubServer, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = _upload(hub_server, tiny_folder)
    folder = cache.resolve_model("hf://me/tiny")
    assert folder == Path(os.environ["HF_HOME"]) / "hub" / "models--me--tiny" / "snapshots" / commit
    assert (folder.parent.parent / "refs" / "main").read_text() == commit, "the resolved revision is pinned"
    assert load_model(folder).config.name == MODEL
    assert (folder / UNET_FILE).read_bytes() == (tiny_folder / UNET_FILE).read_bytes()

    hub_server.stop()
    assert cache.resolve_model("hf://me/tiny") == folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cache.resolve_model("hf://me/tiny") == folder


def test_hub_revision_pins_a_commit(hub_server: HubServer, tiny_folder: Path, tmp_path: Path) -> None:
    old = _upload(hub_server, tiny_folder)
    changed = {p.name: p.read_bytes() for p in tiny_folder.iterdir()} | {"README.md": b"# v2\n"}
    new = hub_server.add_commit("me/tiny", changed)
    assert cache.resolve_model(f"hf://me/tiny@{old}").name == old
    assert cache.resolve_model("hf://me/tiny").name == new


def test_hub_token_is_sent(hub_server: HubServer, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _upload(hub_server, tiny_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken")
    cache.resolve_model("hf://me/tiny")
    assert {h.authorization for h in hub_server.hits} == {"Bearer hf_testtoken"}


def test_registry_entry_with_a_hub_copy(
    hub_server: HubServer, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = _upload(hub_server, tiny_folder)
    entry = ModelEntry(
        "tiny-hub", "test", registry.preset(MODEL), "unused.pth", hub=HubLocation("me/tiny", commit)
    )
    monkeypatch.setitem(registry.MODELS, entry.name, entry)
    assert cache.cached_folder(entry) is None
    folder = cache.resolve_model("tiny-hub")
    assert folder.name == commit
    assert cache.cached_folder(entry) == folder
    assert not locations.models_dir().exists(), "Hub copies live in the Hugging Face cache only"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("hf://me/absent", "hf://me/absent: repository not found on http://127.0.0.1:"),
        ("hf://me/tiny@nope", "hf://me/tiny@nope: revision 'nope' not found on"),
        ("hf://me/partial", "hf://me/partial: the repository has no unet.safetensors"),
    ],
)
def test_hub_not_found_errors(hub_server: HubServer, tiny_folder: Path, spec: str, message: str) -> None:
    _upload(hub_server, tiny_folder)
    hub_server.add_commit("me/partial", {CONFIG_FILE: (tiny_folder / CONFIG_FILE).read_bytes()})
    with pytest.raises(DownloadError) as err:
        cache.resolve_model(spec)
    assert message in one_line(err)


def test_hub_offline_with_nothing_cached(hub_server: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        cache.resolve_model("hf://me/tiny")
    assert "is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in one_line(err)
    assert hub_server.hits == []


@pytest.mark.slow
def test_hub_unreachable(monkeypatch: pytest.MonkeyPatch, online: None) -> None:
    """Slow by nature: huggingface_hub retries a refused connection with back-off (about 20 s)."""
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    with pytest.raises(DownloadError, match=r"cannot be reached; on a connected machine run") as err:
        cache.resolve_model("hf://me/tiny")
    assert "--model DIR" in one_line(err)


def test_hub_repo_with_only_the_model_files(hub_server: HubServer, tiny_folder: Path) -> None:
    files = {name: (tiny_folder / name).read_bytes() for name in MODEL_FILES}
    commit = hub_server.add_commit("me/bare", files)
    folder = cache.resolve_model("hf://me/bare")
    assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)
    hub_server.stop()
    assert cache.resolve_model("hf://me/bare") == folder
    assert folder.name == commit
