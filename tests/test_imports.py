"""Imports point one way: cli → api/jobs → runner → pipeline/train → sampler/tiling/nets/loading.
Read from the source with `ast`, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "resshift_cli"

CORE = ("pipeline", "sampler", "schedule", "tiling", "nets", "loading", "colorfix", "config")
"""The tensor side: it works on tensors and modules, never on files, pictures or the command line."""
ABOVE_CORE = ("api", "jobs", "runner", "images", "cli", "cache", "hub", "release")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every resshift_cli module `path` imports (`from resshift_cli import api`: resshift_cli.api)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("resshift_cli.")}


GRAPH = {module_name(path): imported(path) for path in PACKAGE.rglob("*.py")}


def under(name: str, top: str) -> bool:
    return name == f"resshift_cli.{top}" or name.startswith(f"resshift_cli.{top}.")


def test_the_graph_was_read() -> None:
    assert "resshift_cli.api" in GRAPH["resshift_cli.cli.upscale"]
    assert "resshift_cli.sampler" in GRAPH["resshift_cli.pipeline"]


def test_nothing_outside_the_cli_imports_it() -> None:
    """Except `python -m resshift_cli`, whose whole job is to start it."""
    offenders = {
        module: sorted(n for n in names if under(n, "cli"))
        for module, names in GRAPH.items()
        if not under(module, "cli") and module != "resshift_cli.__main__"
    }
    assert not {m: n for m, n in offenders.items() if n}


@pytest.mark.parametrize("core", CORE)
def test_the_tensor_side_does_not_import_the_layers_above_it(core: str) -> None:
    offenders = {
        module: sorted(n for n in names if any(under(n, top) for top in ABOVE_CORE))
        for module, names in GRAPH.items()
        if under(module, core)
    }
    assert not {m: n for m, n in offenders.items() if n}


def test_only_the_front_ends_import_the_api() -> None:
    users = {module for module, names in GRAPH.items() if "resshift_cli.api" in names}
    front_ends = {"resshift_cli", "resshift_cli.jobs", "resshift_cli.ray"}  # ray: the Ray front end
    assert users <= front_ends | {m for m in GRAPH if under(m, "cli")}


def test_the_runner_is_not_imported_by_the_tensor_side_or_the_trainer() -> None:
    users = {module for module, names in GRAPH.items() if "resshift_cli.runner" in names}
    assert not {m for m in users if any(under(m, top) for top in (*CORE, "train"))}
