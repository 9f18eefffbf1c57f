"""Sweeps as tidy pandas DataFrames: models x hardware x layouts x formats x batch x prompt x
output, one row per point, units in the column names; run here or on a Dask cluster.

The engine part (``costsim.simulator.sweep``) is pure numpy: one partition per model x
hardware x layout request (formats included) returns its rows as numpy columns. This module
runs the partitions, on this process or on the workers of a ``dask.distributed.Client``, and
assembles the frame; ``write`` stores it as CSV or Parquet, atomically.

Why Dask (not Ray): the partitions are independent pure-Python/numpy calls returning columns,
which is exactly ``client.map`` + ``gather``; Dask is pip-installable without a daemon, runs the
same code on a laptop (``LocalCluster``), an SSH cluster or Kubernetes/SLURM (dask-jobqueue),
and its scheduler is pure Python with no object store to size. Ray's actors, object store and
GPU scheduling are not needed here.
"""

from __future__ import annotations

from pathlib import Path

from costsim.errors import CostsimError
from costsim.simulator.sweep import BOUNDS, COLUMNS, REASONS, partitions, run_partition

INT_COLUMNS = ("devices", "tp", "ep", "pp", "dp")


def frame(columns: list[dict]):
    """One DataFrame (``COLUMNS`` + ``detail``) from partitions' columns (``run_partition``), in
    order. Layout integers are nullable Int64 (an invalid layout's unset TP is <NA>); the text
    columns (model, hardware, formats, reason, detail, bounds) are pandas categoricals, "" for
    a feasible point's reason and detail and an infeasible point's bounds."""
    import numpy as np
    import pandas as pd
    from pandas.api.types import union_categoricals

    def text(codes, names):
        return pd.Categorical.from_codes(codes, categories=list(names))

    out: dict = {k: [] for k in columns[0]}
    for c in columns:
        n = len(c["batch"])
        for k, v in c.items():
            if k in INT_COLUMNS:
                v = pd.arrays.IntegerArray(np.full(n, 0 if v is None else int(v), dtype=np.int64), np.full(n, v is None))
            elif k in ("prefill_bound", "decode_bound"):
                v = text(v + 1, ("",) + BOUNDS)
            elif k == "reason":
                v = text(v, REASONS)
            elif k == "detail":
                v = text((c["reason"] != 0).astype(np.int8), ["", v]) if v else text(np.zeros(n, np.int8), [""])
            elif np.ndim(v) == 0:
                v = text(np.zeros(n, np.int8), [str(v)])
            out[k].append(v)
    cols = {}
    for k, parts in out.items():
        if isinstance(parts[0], pd.Categorical):
            cols[k] = union_categoricals(parts)
        elif k in INT_COLUMNS:
            cols[k] = pd.concat([pd.Series(p) for p in parts], ignore_index=True).array
        else:
            cols[k] = np.concatenate(parts)
    return pd.DataFrame(cols)


def sweep(models, hardware, requests, batch, input_len, output_len, client=None, progress=None):
    """Every combination of ``models`` (ModelSpecs) x ``hardware`` (HardwareProfiles) x
    ``requests`` (``LayoutRequest``: devices, TP/EP/PP, formats) x ``batch`` x ``input_len``
    x ``output_len`` (iterables of ints >= 1, >= 1, >= 0) as one tidy DataFrame, rows in that
    order (columns: ``costsim.simulator.sweep.COLUMNS`` + ``detail``).

    Infeasible points stay, with ``feasible`` False, ``reason`` (``layout_invalid``,
    ``weights_do_not_fit``, ``kv_does_not_fit``), ``detail`` and NaN time/throughput metrics.
    ``client``: a ``dask.distributed.Client`` runs one partition (model x hardware x request)
    per task on its workers; None runs them here. ``progress(done, total)`` after each
    partition. Unset TP/EP follow the layout policy at the grid's smallest batch and context."""
    parts = partitions(models, hardware, requests, batch, input_len, output_len)
    if not parts:
        raise CostsimError("sweep: nothing to sweep (no model, hardware or layout)")
    out = []
    if client is None:
        results = (run_partition(p) for p in parts)
    else:
        results = (f.result() for f in client.map(run_partition, parts, pure=False))
    for k, cols in enumerate(results):
        out.append(cols)
        if progress:
            progress(k + 1, len(parts))
    return frame(out)


def check_path(path: Path) -> Path:
    """``path`` for ``write``: a .csv or .parquet file that may be created or replaced."""
    from costsim.files import check_target

    if Path(path).suffix.lower() not in (".csv", ".parquet"):
        raise CostsimError(f"-o {path}: expected a .csv or .parquet file name")
    return check_target(path, "sweep")


def write(df, path: Path) -> None:
    """Write ``df`` to ``path`` (.csv or .parquet) atomically: a temp file, then a rename."""
    from costsim.files import atomic_write

    check_path(path)
    if Path(path).suffix.lower() == ".csv":
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False), "sweep")
        return
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CostsimError(f"-o {path}: writing Parquet needs pyarrow (pip install pyarrow), or give a .csv") from None
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False), "sweep")


__all__ = ["COLUMNS", "check_path", "frame", "sweep", "write"]
