"""`python -m resshift_cli` runs the `resshift` command."""

from __future__ import annotations

from resshift_cli.cli import main

main()
