"""The typer application the command modules register on (no commands here)."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="costsim: analytical cost-and-memory simulator for LLMs (MLA, MoE, roofline, parallelism).")
plot_app = typer.Typer(no_args_is_help=True, help="Comparison plots (PNG, SVG or PDF; matplotlib).")
app.add_typer(plot_app, name="plot")
kernel_app = typer.Typer(no_args_is_help=True, help="Predict one kernel at one shape on one profile (time, bound, terms).")
app.add_typer(kernel_app, name="kernel")


def _version(value: bool):
    if value:
        from costsim import __version__

        print(f"costsim {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """costsim: analytical cost-and-memory simulator for LLMs (MLA, MoE, roofline, parallelism)."""
