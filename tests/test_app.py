"""The app wraps every command for one-line errors where it is assembled, and `--debug` works before or
after the command name without leaking into the next run."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from resshift_cli.cli import app
from resshift_cli.errors import UsageError

runner = CliRunner()
BAD_TILE = ("upscale", "photo.png", "--tile", "100")


def commands(typer_app: typer.Typer) -> list[object]:
    found = [info.callback for info in typer_app.registered_commands]
    for group in typer_app.registered_groups:
        found += commands(group.typer_instance)
    return found


def test_every_command_reports_errors() -> None:
    callbacks = commands(app)
    assert len(callbacks) >= 13  # upscale, batch, doctor, train, degrade, eval and the seven models commands
    assert all(getattr(c, "__wrapped__", None) is not None for c in callbacks)


def test_debug_before_or_after_the_command_shows_the_exception_and_does_not_leak() -> None:
    for args in (["--debug", *BAD_TILE], [*BAD_TILE, "--debug"]):
        result = runner.invoke(app, args)
        assert isinstance(result.exception, UsageError), args
    plain = runner.invoke(app, list(BAD_TILE))
    assert plain.exit_code == 2
    assert plain.stderr.strip() == "error: --tile must be 0 or a multiple of 64, got 100"
