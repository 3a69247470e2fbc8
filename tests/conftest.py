"""Shared fixtures: every test runs with its own cache folders and no user environment leaking in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import HubServer

GOLDEN = Path(__file__).parent / "golden"

_CLEARED = (
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
    "HF_ENDPOINT",
    "RESSHIFT_RELEASE_URL",
    "RESSHIFT_DEVICE",
    "RESSHIFT_DEBUG",
)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every cache at a fresh temporary folder and clear the variables users set."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("RESSHIFT_HOME", str(home / "resshift"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden reference data copied from ../shared/golden."""
    return GOLDEN


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A local server speaking the Hugging Face Hub download protocol, set as `HF_ENDPOINT`."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
