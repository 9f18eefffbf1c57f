"""``costsim kernel gemm|attention|moe|ffn``: predict one kernel at one shape on one profile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import kernel_app
from costsim.errors import CostsimError


def _show(recs: list[dict], fmt: O.Fmt, title: str) -> None:
    from costsim.reports import views

    views.kernels(recs, fmt.value, title)


def _rows(p, **shape) -> list[dict]:
    """One record per predicted row (arrays split), with the shape that produced it."""
    import numpy as np

    d = p.to_dict()
    n = int(np.size(d["time_s"]))
    keys = ("time_s", "compute_s", "memory_s", "extra_s", "flops", "bytes", "bound", "achieved_flops_per_s",
            "achieved_bytes_per_s")
    cols = {k: np.broadcast_to(np.asarray(d[k]), (n,)) for k in keys}
    sh = {k: np.broadcast_to(np.asarray(v), (n,)) for k, v in shape.items()}
    def plain(x):
        return x.item() if hasattr(x, "item") else x

    return [dict(kernel=p.kernel, **{k: plain(v[i]) for k, v in sh.items()},
                 **{k: (str(v[i]) if k == "bound" else float(v[i])) for k, v in cols.items()}) for i in range(n)]


def _shapes(path: Path, default_dtype: str) -> tuple:
    """m, n, k arrays and dtypes from a CSV with columns m, n, k (and optionally dtype)."""
    import pandas as pd

    from costsim.files import check_input

    check_input(path)
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(x.strip() for x in r)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise CostsimError(f"{path}: not a readable CSV ({e})") from None
    if not rows:
        raise CostsimError(f"{path}: empty; expected a header m, n, k [, dtype] and rows")
    names = [c.strip().lower() for c in rows[0]]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise CostsimError(f"{path}: column(s) {', '.join(dup)} given more than once")
    for i, r in enumerate(rows[1:]):
        if len(r) != len(names):
            raise CostsimError(f"{path}: row {i + 2} has {len(r)} values for {len(names)} columns")
    df = pd.DataFrame(rows[1:], columns=names, dtype=str)
    missing = [c for c in ("m", "n", "k") if c not in df.columns]
    if missing:
        raise CostsimError(f"{path}: missing column(s) {', '.join(missing)} (expected m, n, k and optionally dtype)")
    if df.empty:
        raise CostsimError(f"{path}: no rows")
    for c in ("m", "n", "k"):
        v = pd.to_numeric(df[c].str.strip(), errors="coerce")
        bad = v.isna() | (v < 1) | (v != v.round()) | (v > 2.0**53)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise CostsimError(f"{path}: row {i + 2}, column {c}: expected an integer from 1 to 2^53, "
                               f"got {df[c].iloc[i]!r}")
        df[c] = v.astype(float)
    dtypes = df["dtype"].str.strip().replace("", default_dtype) if "dtype" in df.columns else None
    return df, dtypes


@kernel_app.command("gemm")
def gemm_cmd(hardware: O.Hardware, m: Optional[int] = typer.Option(None, "--m", help="Rows (tokens)."),
             n: Optional[int] = typer.Option(None, "--n", help="Output columns."),
             k: Optional[int] = typer.Option(None, "--k", help="Inner dimension."),
             dtype: str = typer.Option("bf16", "--dtype", help="Weight format: bf16, fp8, int4-g32, ..."),
             shapes: Optional[Path] = typer.Option(None, "--shapes", help="CSV with columns m, n, k [, dtype]: "
                                                                         "one prediction per row."),
             hw_sets: O.HwSets = None, fmt: O.Format = O.Fmt.table):
    """One GEMM, (m x k) times (k x n): time, bound and terms (or every row of --shapes)."""

    def go():
        import numpy as np

        from costsim.simulator import kernels

        hw = O.hardware(hardware, hw_sets)
        if shapes is None:
            if None in (m, n, k):
                raise CostsimError("give --m, --n and --k, or --shapes FILE.csv")
            recs = _rows(kernels.gemm(hw, m, n, k, dtype), m=m, n=n, k=k, dtype=dtype)
        else:
            if any(v is not None for v in (m, n, k)):
                raise CostsimError("--shapes replaces --m/--n/--k: give one or the other")
            df, dtypes = _shapes(shapes, dtype)
            groups = [(dtype, df)] if dtypes is None else list(df.groupby(dtypes, sort=False))
            recs = []
            for dt, part in groups:
                try:
                    p = kernels.gemm(hw, part["m"].to_numpy(), part["n"].to_numpy(), part["k"].to_numpy(), dt)
                except O.FieldError as e:
                    raise CostsimError(f"{shapes}: column {e.field}: {e.reason} (got {e.value})") from None
                rows = _rows(p, m=part["m"].to_numpy(np.int64), n=part["n"].to_numpy(np.int64),
                             k=part["k"].to_numpy(np.int64), dtype=dt)
                recs += [dict(row=int(i) + 1, **r) for i, r in zip(part.index, rows)]
            recs.sort(key=lambda r: r["row"])
        _show(recs, fmt, f"GEMM on {hw.name}")

    O.run(go)


@kernel_app.command("attention")
def attention_cmd(model: O.Model, hardware: O.Hardware, batch: O.Batch = "1", context: O.Context = "4096",
                  new_tokens: str = typer.Option("1", "--new-tokens", help="Queries per sequence (1 = decode; "
                                                                           "prefill: the prompt with --context 0)."),
                  form: str = typer.Option("absorbed", "--form", help="MLA form: absorbed or naive."),
                  tp: int = typer.Option(1, "--tp", help="Tensor parallel degree (heads per device)."),
                  weight_dtype: O.WeightDtype = "bf16", kv_dtype: O.KVDtype = "bf16",
                  sets: O.Sets = None, hw_sets: O.HwSets = None, fmt: O.Format = O.Fmt.table):
    """One layer's attention block (projections and core) at one shape."""

    def go():
        from costsim.simulator import kernels

        spec, hw = O.model(model, sets), O.hardware(hardware, hw_sets)
        b, ctx = O.count(batch, "--batch", minimum=1), O.count(context, "--context")
        s = O.count(new_tokens, "--new-tokens", minimum=1)
        p = kernels.attention(spec, hw, b, ctx, s, form, tp, weight_dtype, kv_dtype)
        _show(_rows(p, model=spec.name, batch=b, context=ctx, new_tokens=s, form=form, tp=tp), fmt,
              f"{spec.name} attention on {hw.name}")
        from costsim.simulator.scenario import context_warnings

        return context_warnings(spec, ctx + s)

    O.run(go)


@kernel_app.command("moe")
def moe_cmd(model: O.Model, hardware: O.Hardware,
            tokens: str = typer.Option("64", "--tokens", help="Tokens routed through the layer (all EP ranks)."),
            ep: int = typer.Option(1, "--ep", help="Expert parallel degree (the busiest rank is costed)."),
            weight_dtype: O.WeightDtype = "bf16", sets: O.Sets = None, hw_sets: O.HwSets = None,
            fmt: O.Format = O.Fmt.table):
    """One MoE FFN layer (router, shared and routed experts) for a number of tokens."""

    def go():
        from costsim.simulator import kernels

        spec, hw = O.model(model, sets), O.hardware(hardware, hw_sets)
        t = O.count(tokens, "--tokens", minimum=1)
        p = kernels.moe(spec, hw, t, ep, weight_dtype)
        _show(_rows(p, model=spec.name, tokens=t, ep=ep), fmt, f"{spec.name} MoE layer on {hw.name}")

    O.run(go)


@kernel_app.command("ffn")
def ffn_cmd(model: O.Model, hardware: O.Hardware,
            tokens: str = typer.Option("64", "--tokens", help="Tokens through the layer."),
            tp: int = typer.Option(1, "--tp", help="Tensor parallel degree."),
            weight_dtype: O.WeightDtype = "bf16", sets: O.Sets = None, hw_sets: O.HwSets = None,
            fmt: O.Format = O.Fmt.table):
    """One dense FFN layer (SwiGLU when gated) for a number of tokens."""

    def go():
        from costsim.simulator import kernels

        spec, hw = O.model(model, sets), O.hardware(hardware, hw_sets)
        t = O.count(tokens, "--tokens", minimum=1)
        p = kernels.dense_ffn(spec, hw, t, tp, weight_dtype)
        _show(_rows(p, model=spec.name, tokens=t, tp=tp), fmt, f"{spec.name} dense FFN on {hw.name}")

    O.run(go)
