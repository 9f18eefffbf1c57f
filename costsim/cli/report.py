"""``costsim report``: a design-review directory of figures (PNG + SVG) and ``report.md``
(``costsim.reports.report``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import app


def _validation(hws, backend: str) -> dict:
    """Predicted vs measured rows per hardware that NVIDIA's silicon tables cover (needs the
    ``silicon`` extra; a hardware without tables is left out)."""
    from costsim.calibration import silicon as S
    from costsim.calibration import silicon_fit as F

    out = {}
    for h in hws:
        base = h.name.removesuffix("-calibrated")
        system = next((k for k, v in S.SYSTEMS.items() if v == base), None)
        if system is None:
            continue
        res = F.validate(system, h, backend)
        frame = res["frame"]
        out[h.name] = (F.scatter_rows(frame), f"{h.name} on {system} ({backend}) tables: MAPE {res['overall']['mape']:.1%} "
                             f"over {len(frame):,} rows")
    return out


@app.command("report")
def report_cmd(models: O.Models,
               hardware: str = typer.Option(..., "--hardware", "-H", help="Hardware (comma-separated): names or "
                                                                         "profile .yaml."),
               out: Path = typer.Option(..., "--out", "-o", help="Report directory (new or empty; --force reuses "
                                                                 "one)."),
               context: str = typer.Option("4096", "--context", help="Prompt tokens (k = 1024)."),
               output_len: O.OutputLen = "1024", tpot_slo: O.TpotSlo = None,
               devices: O.Devices = None, weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
               max_devices: Optional[int] = typer.Option(None, "--max-devices", help="Frontier: layouts on up to "
                                                                                    "this many devices (default: "
                                                                                    "one node)."),
               validate: bool = typer.Option(False, "--validate", help="Add predicted-vs-measured scatters from "
                                                                       "NVIDIA's kernel tables (silicon extra; "
                                                                       "about 30 s per GPU)."),
               price: O.Price = None, sets: O.Sets = None, hw_sets: O.HwSets = None, force: O.Force = False):
    """Write a design-review report: figures (PNG and SVG) and report.md with the models' exact
    figures, serving tables per hardware, accuracy bands, assumptions and rate provenance."""

    def go():
        from costsim.reports.report import ReportRequest, check_directory, write_report

        check_directory(out, force)
        specs = [O.model(m, sets) for m in models]
        hws = [O.priced(O.hardware(h, hw_sets), price) for h in O.items(hardware, "--hardware")]
        ctx = O.count(context, "--context", minimum=1)
        olen = O.count(output_len, "--output")
        from costsim.simulator.layout import MAX_COUNT

        if ctx + olen > MAX_COUNT:  # every figure and table runs at context + output tokens
            raise O.CostsimError(f"--context {context} + --output {output_len}: {ctx + olen:,} tokens; the report "
                                 f"needs at most {MAX_COUNT:,} (2^24) together")
        n = None if max_devices is None else O.count(str(max_devices), "--max-devices", minimum=1)
        req = ReportRequest(specs, hws, O.layout(devices, None, None, None, weight_dtype, kv_dtype), ctx, olen,
                            O.slo(tpot_slo), n, "costsim " + shlex.join(sys.argv[1:]),
                            _validation(hws, "trtllm") if validate else {})
        files = write_report(req, out, force)
        print(f"wrote {len(files)} files to {out}/ (open {out}/report.md)", file=sys.stderr)

    O.run(go)
