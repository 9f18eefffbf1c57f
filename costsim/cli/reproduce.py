"""``costsim reproduce PAPER``: each quantitative claim of a paper beside costsim's value
(``costsim.simulator.reproduce``)."""

from __future__ import annotations

import typer

from costsim.cli import options as O
from costsim.cli.app import app


@app.command("reproduce")
def reproduce_cmd(paper: str = typer.Argument(..., help="deepseek-v2, deepseek-v3, isca25, day6, or all."),
                  fmt: O.Format = O.Fmt.table):
    """Each claim of DeepSeek-V2 (arXiv 2405.04434), the DeepSeek-V3 report (arXiv 2412.19437),
    ISCA 2025 (arXiv 2505.09343) or DeepSeek's Day-6 inference overview that costsim computes:
    paper value, costsim value, difference, tolerance (exact rows: the paper's printed
    precision; model rows: a band), the command that computes it and its assumptions. A paper
    number that cannot be reproduced is shown as a difference with a note."""

    def go():
        from costsim.registry import load_hardware, load_model
        from costsim.reports import views
        from costsim.simulator.reproduce import PAPERS, claims

        key = paper.strip().lower()
        if key not in (*PAPERS, "all"):
            raise O.CostsimError(f"reproduce {paper!r}: expected one of {', '.join(PAPERS)}, all")
        keys = list(PAPERS) if key == "all" else [key]
        views.reproduce([c.to_dict() for k in keys for c in claims(k, load_model, load_hardware)],
                        [PAPERS[k] for k in keys], fmt.value)

    O.run(go)
