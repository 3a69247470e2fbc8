"""Turning library exceptions into one-line messages and exit codes, for every command."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from resshift_cli.errors import ResshiftError, one_line

P = ParamSpec("P")
R = TypeVar("R")

EXIT_INTERRUPTED = 130


class _DebugState:
    """Whether tracebacks are wanted: `--debug` on the command line or `RESSHIFT_DEBUG=1`."""

    enabled = False


def set_debug(enabled: bool) -> None:
    _DebugState.enabled = enabled


def debug_option(ctx: typer.Context, value: bool) -> bool:
    """The callback of every `--debug` option: the root's sets the state for this run (so one in-process
    run does not leak into the next); a command's can only turn it on (`resshift --debug upscale` and
    `resshift upscale --debug` both work)."""
    if ctx.parent is None:
        set_debug(value)
    elif value:
        set_debug(True)
    return value


def debug_enabled() -> bool:
    return _DebugState.enabled or os.environ.get("RESSHIFT_DEBUG", "") not in ("", "0")


def error_line(message: str) -> None:
    """Print `error: <message>` as one line on stderr."""
    print(f"error: {one_line(message)}", file=sys.stderr)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Decorate a Typer command so a `ResshiftError` becomes one stderr line and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ResshiftError as err:
            if debug_enabled():
                raise
            error_line(str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            error_line("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def report_errors_of_every_command(app: typer.Typer) -> None:
    """Wrap every command registered on `app` and its sub-apps with `reports_errors`, once, where the
    app is put together, so that no command can forget it."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = reports_errors(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            report_errors_of_every_command(group.typer_instance)
