"""The `resshift` command: a Typer app whose commands are thin wrappers over library functions."""

from __future__ import annotations

from resshift_cli.cli.app import app, main

__all__ = ["app", "main"]
