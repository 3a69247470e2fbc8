"""Shared fixtures: every test runs with its own cache folders, no user environment leaking in, and no way
to the internet: the release URL and the Hub endpoint point at a dead local port and offline mode is on.
Tests that serve files on 127.0.0.1 (or check what an unreachable server does) ask for `online`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from servers import HubServer

GOLDEN = Path(__file__).parent / "golden"
DEAD_URL = "http://127.0.0.1:9"
"""The discard port on this machine: nothing listens there, so a request fails at once."""

_CLEARED = (
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
    "HF_ENDPOINT",
    "RESSHIFT_RELEASE_URL",
    "RESSHIFT_DEVICE",
    "RESSHIFT_DEBUG",
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every cache at a fresh temporary folder, clear the variables users set, and go offline."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("RESSHIFT_HOME", str(home / "resshift"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESSHIFT_RELEASE_URL", DEAD_URL)
    monkeypatch.setenv("HF_ENDPOINT", DEAD_URL)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read once when huggingface_hub is imported


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow network access for a test that sets its own release URL or Hub endpoint (127.0.0.1)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden reference data copied from ../shared/golden."""
    return GOLDEN


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, online: None) -> Iterator[HubServer]:
    """A local server speaking the Hugging Face Hub download protocol, set as `HF_ENDPOINT`."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
