"""``costsim sweep``: every combination of models x hardware x layouts x formats x batch x
context x output as one tidy table (CSV / Parquet with -o, a compact table without)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import app
from costsim.errors import CostsimError

_LIST = "comma-separated"


def _counts(text: str, flag: str, minimum: int = 1) -> list[int]:
    from costsim.simulator.scenario import MAX_COUNT, MAX_OUTPUT

    top = MAX_OUTPUT if flag == "--output" else MAX_COUNT
    out = list(dict.fromkeys(O.count(t, flag, minimum=minimum) for t in O.items(text, flag)))
    for v in out:
        if v > top:
            raise CostsimError(f"{flag} {v:,}: must be at most {top:,} (2^{top.bit_length() - 1})")
    return out


def _opt_counts(text: Optional[str], flag: str) -> list:
    return [None] if text is None else _counts(text, flag)


def _client(scheduler: Optional[str]):
    """A Dask client: ``local:N`` starts N local worker processes; else a scheduler address."""
    if scheduler is None:
        return None
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise CostsimError("--scheduler needs Dask: pip install 'costsim[distributed]'") from None
    if scheduler.startswith("local:"):
        n = O.count(scheduler[6:], "--scheduler local:N", minimum=1)
        return Client(LocalCluster(n_workers=n, threads_per_worker=1, processes=True))
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, ValueError, TimeoutError) as e:
        raise CostsimError(f"--scheduler {scheduler}: cannot connect ({e})") from None


def _run(parts_total: int, call):
    """``call(progress)`` with a rich progress bar on a terminal when there is more than one partition."""
    if parts_total < 2 or not sys.stderr.isatty():
        return call(None)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"sweeping {parts_total} model x hardware x layout partitions", total=parts_total)
        return call(lambda done, total: bar.update(task, completed=done))


@app.command("sweep")
def sweep_cmd(models: str = typer.Option(..., "--models", "-m", help=f"Models ({_LIST}): names, spec .yaml or config.json."),
              hardware: str = typer.Option(..., "--hardware", "-H", help=f"Hardware ({_LIST}): names or profile .yaml."),
              batch: str = typer.Option("1,8,64,256", "--batch", help=f"Concurrent sequences over all devices ({_LIST})."),
              context: str = typer.Option("4096", "--context", help=f"Prompt tokens ({_LIST}; k = 1024)."),
              output_len: str = typer.Option("1024", "--output", help=f"Generated tokens ({_LIST}; k = 1024)."),
              devices: Optional[str] = typer.Option(None, "--devices", help=f"Devices ({_LIST}; default one node)."),
              tp: Optional[str] = typer.Option(None, "--tp", help=f"TP degrees ({_LIST}; default the layout policy)."),
              ep: Optional[str] = typer.Option(None, "--ep", help=f"EP degrees ({_LIST}; default the layout policy)."),
              pp: str = typer.Option("1", "--pp", help=f"PP degrees ({_LIST})."),
              weight_dtype: Optional[str] = typer.Option(None, "--weight-dtype", help=f"Weight formats ({_LIST}; default "
                                                                                      "the checkpoint's)."),
              kv_dtype: str = typer.Option("bf16", "--kv-dtype", help=f"KV cache formats ({_LIST})."),
              mla_form: O.MLAForm = "auto", overlap: O.Overlap = False, ep_kernel: O.EPKernel = "normal",
              tbo: O.TBO = False, deepep_nvlink: O.DeepEPNVLink = False,
              out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write all rows to a .csv or .parquet file."),
              force: O.Force = False,
              scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run the partitions on Dask: a "
                                                      "scheduler address (tcp://host:8786) or local:N worker processes."),
              sets: O.Sets = None, hw_sets: O.HwSets = None):
    """Sweep serving (TTFT, mean TPOT, tokens/s, memory, fit) over every combination; infeasible
    points are kept with a reason. Units are in the column names (SI)."""

    def go():
        from costsim.reports import views
        from costsim.sweeps import check_path, sweep, write

        if out is not None:
            O.check_new(check_path(out), force, "sweep")
        from costsim.units import parse_format

        for flag, text in (("--weight-dtype", weight_dtype), ("--kv-dtype", kv_dtype)):
            for name in ([] if text is None else O.items(text, flag)):
                O.parse(parse_format, name, f"{flag} {name}")
        specs = [O.model(m, sets) for m in O.items(models, "--models")]
        hws = [O.hardware(h, hw_sets) for h in O.items(hardware, "--hardware")]
        grid = (_counts(batch, "--batch"), _counts(context, "--context"), _counts(output_len, "--output", minimum=0))
        reqs = [O.layout(d, t, e, p, w, k, mla_form, overlap=overlap, ep_kernel=ep_kernel, tbo=tbo,
                         deepep_nvlink=deepep_nvlink)
                for d in _opt_counts(devices, "--devices") for t in _opt_counts(tp, "--tp")
                for e in _opt_counts(ep, "--ep") for p in _counts(pp, "--pp")
                for w in ([None] if weight_dtype is None else O.items(weight_dtype, "--weight-dtype"))
                for k in O.items(kv_dtype, "--kv-dtype")]
        n_points = len(specs) * len(hws) * len(reqs) * len(grid[0]) * len(grid[1]) * len(grid[2])
        if n_points > 50_000_000:
            raise CostsimError(f"sweep: {n_points:,} points is more than the 50,000,000 one run holds; split it")
        client = _client(scheduler)
        try:
            df = _run(len(specs) * len(hws) * len(reqs),
                      lambda progress: sweep(specs, hws, reqs, *grid, client=client, progress=progress))
        finally:
            if client is not None:
                client.close()
        if out is not None:
            write(df, out)
            print(f"wrote {len(df):,} rows ({int(df['feasible'].sum()):,} feasible) to {out}", file=sys.stderr)
        else:
            views.sweep(df.to_dict("records"))
        from costsim.simulator.scenario import context_warnings

        return [w for s in specs for w in context_warnings(s, max(grid[1]) + max(grid[2]))]

    O.run(go)
