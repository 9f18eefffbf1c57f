"""costsim command line: what-if queries on model specs and hardware profiles.

Thin by design: each command parses its flags (``options``), makes one engine call
(``costsim.simulator.scenario``) and hands the record to a view (``costsim.reports.views``).
User mistakes print one line on stderr and exit with code 2.

Modules: ``app`` (the typer apps), ``options`` (shared options, parsing, the error contract),
``query`` (models, hardware, show, kv, import-hf), ``serve`` (compare, perf, max-throughput,
train), ``plot`` (plot throughput|roofline|kv|kv-models|max-batch|frontier|cost), ``kernel`` (kernel gemm|attention|moe|ffn),
``calibrate`` (calibrate, validate; their --silicon halves in ``silicon``), ``whatif`` (whatif), ``reproduce`` (reproduce), ``sweep`` (sweep),
``plan`` (plan), ``disagg`` (disagg), ``report`` (report).
"""

from __future__ import annotations

import os
import sys

import typer

from costsim.cli import calibrate, disagg, kernel, plan, plot, query, report, reproduce, serve, sweep, whatif  # noqa: F401  (importing registers the commands)
from costsim.cli.app import app

_COMMAND_MODULES = (calibrate, disagg, kernel, plan, plot, query, report, reproduce, serve, sweep, whatif)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point: usage errors (missing option, bad integer, unknown
    command) are printed as one line on stderr with exit code 2, like every user mistake."""
    if sys.stdout is None:  # started with stdout closed (`costsim ... >&-`): write nowhere, quietly
        sys.stdout = open(os.devnull, "w")
    try:
        rv = app(standalone_mode=False, prog_name="costsim")  # also under `python -m costsim(.cli)`
    except BrokenPipeError:  # `costsim ... | head`: the reader left, nothing went wrong
        _quiet_stdout()
        sys.exit(0)
    except (KeyboardInterrupt, typer.Abort):  # Ctrl-C (click turns it into Abort)
        print("costsim: interrupted", file=sys.stderr)
        _quiet_stdout()
        sys.exit(130)
    except OSError as e:  # stdout on a full disk, etc.
        print(f"costsim: error: cannot write output: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # click/typer usage errors carry format_message() and exit_code
        if not hasattr(e, "format_message"):
            raise
        ctx = getattr(e, "ctx", None)
        path = ctx.command_path if ctx is not None else "costsim"
        cmd = path[len(path.split(" ")[0]):]  # " perf", " plot kv", or "" at the top level
        msg = e.format_message().replace("\n", " ").strip()
        if not msg:  # no arguments: the help was printed, nothing went wrong
            sys.exit(0)
        print(f"costsim{cmd}: error: {msg} (see costsim{cmd} --help)", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(rv if isinstance(rv, int) else 0)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        sys.stdout = open(os.devnull, "w")


if __name__ == "__main__":
    main()
