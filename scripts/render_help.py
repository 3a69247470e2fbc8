"""Regenerate the `--help` blocks of README.md in place: `python scripts/render_help.py [README.md]`.

A block is everything between `<!-- help:NAME -->` and `<!-- /help:NAME -->`, where NAME is a command
path: `resshift` (the root), `upscale`, `batch`, `doctor`, `models download`, ... Its body becomes a
fenced text block holding that command's `--help`, rendered at a fixed width without colour so the
text is the same on every machine; tests/test_help.py checks that README.md is up to date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from typer.testing import CliRunner

from resshift_cli.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
ROOT = "resshift"
HELP_ENV = {
    "COLUMNS": "100",
    "LINES": "50",
    "NO_COLOR": "1",
    "TERM": "dumb",
    "RESSHIFT_DEVICE": None,
    "FORCE_COLOR": None,
    "PY_COLORS": None,
    "GITHUB_ACTIONS": None,
}
"""Environment for rendering: 100 columns, no colour, no user setting that shows up in the help."""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
"""Escape sequences Typer may still emit where it forces a terminal (GitHub Actions, FORCE_COLOR)."""

BLOCK = re.compile(
    r"(?P<open><!-- help:(?P<name>[\w -]+?) -->\n)(?P<body>.*?)(?P<close><!-- /help:(?P=name) -->)", re.S
)


def render_help(name: str) -> str:
    """The fenced `--help` text of command path `name` ("resshift" for the root)."""
    words = [] if name == ROOT else name.split()
    result = CliRunner().invoke(app, [*words, "--help"], env=HELP_ENV, prog_name=ROOT, color=False)
    if result.exit_code != 0:
        raise SystemExit(f"`{ROOT} {name} --help` failed: {result.output}")
    plain = ANSI.sub("", result.stdout)
    text = "\n".join(line.rstrip() for line in plain.splitlines()).strip("\n")
    return "```text\n" + text + "\n```\n"


def blocks(text: str) -> dict[str, str]:
    """NAME → current body of every help block in `text`."""
    return {match["name"]: match["body"] for match in BLOCK.finditer(text)}


def render_readme(text: str) -> str:
    """`text` with the body of every help block replaced by freshly rendered help."""
    return BLOCK.sub(lambda m: m["open"] + render_help(m["name"]) + m["close"], text)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else README
    old = path.read_text(encoding="utf-8")
    new = render_readme(old)
    if new != old:
        path.write_text(new, encoding="utf-8")
    names = ", ".join(blocks(new)) or "none"
    print(f"{path}: {'updated' if new != old else 'up to date'} (help blocks: {names})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
