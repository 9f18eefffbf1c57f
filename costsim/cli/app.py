"""The typer application the command modules register on (no commands here)."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="costsim: analytical cost-and-memory simulator for LLMs (MLA, MoE, roofline, parallelism).")
plot_app = typer.Typer(no_args_is_help=True, help="Comparison plots (PNG, SVG or PDF; matplotlib).")
app.add_typer(plot_app, name="plot")
kernel_app = typer.Typer(no_args_is_help=True, help="Predict one kernel at one shape on one profile (time, bound, terms).")
app.add_typer(kernel_app, name="kernel")
