"""The root Typer app, its global options and the console entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from resshift_cli import __version__
from resshift_cli.cli import degrade, doctor, models, train, upscale
from resshift_cli.cli import eval as evaluation
from resshift_cli.cli.errors import report_errors_of_every_command
from resshift_cli.cli.options import RootDebug

app = typer.Typer(
    name="resshift",
    help="Upscale images ×4 with ResShift, a residual-shifting diffusion model (Yue et al., NeurIPS 2023).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(upscale.upscale)
app.command()(upscale.batch)
app.add_typer(models.app)
app.command()(doctor.doctor)
app.command()(train.train)
app.command("degrade")(degrade.degrade_command)
app.command("eval")(evaluation.eval_command)
report_errors_of_every_command(app)


def _print_version(value: bool) -> None:
    if value:
        print(f"resshift-cli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: RootDebug = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Upscale images ×4 with ResShift."""


def main() -> None:
    """Console entry point (`resshift`)."""
    app()
