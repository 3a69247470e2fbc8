"""README.md's `--help` blocks equal the real help (regenerate with `python scripts/render_help.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "render_help.py"
REQUIRED = ("upscale", "batch", "doctor")


def load_script():
    spec = importlib.util.spec_from_file_location("render_help", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_script()


def test_readme_help_blocks_match_the_cli() -> None:
    assert render.README.is_file(), "README.md is missing"
    current = render.blocks(render.README.read_text(encoding="utf-8"))
    missing = [name for name in REQUIRED if name not in current]
    assert not missing, f"README.md lacks <!-- help:NAME --> blocks for {missing}"
    stale = [name for name, body in current.items() if body != render.render_help(name)]
    assert not stale, f"README.md help for {stale} is stale: run `python scripts/render_help.py`"


@pytest.mark.parametrize("name", ["upscale", "batch", "doctor"])
def test_rendered_help_is_plain_and_fits_100_columns(name: str) -> None:
    text = render.render_help(name)
    assert text.startswith("```text\n") and text.endswith("\n```\n")
    assert f"Usage: resshift {name} [OPTIONS]" in text
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert all(line == line.rstrip() for line in text.splitlines())


def test_render_readme_rewrites_only_the_blocks(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- help:doctor -->\nold text\n<!-- /help:doctor -->\noutro\n", encoding="utf-8"
    )
    assert render.main([str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n<!-- help:doctor -->\n```text\n") and text.endswith(
        "<!-- /help:doctor -->\noutro\n"
    )
    assert render.blocks(text)["doctor"] == render.render_help("doctor")
    render.main([str(readme)])
    assert readme.read_text(encoding="utf-8") == text
