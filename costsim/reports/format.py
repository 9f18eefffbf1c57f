"""Formatters: rich tables for people, JSON / CSV (SI units, raw numbers) for machines.

A formatter knows nothing about models: it gets records (dicts) and column descriptions.
Human units are converted here only, and every header names its unit (GB = 1e9 bytes,
GiB = 2**30 bytes, kB = 1e3 bytes).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from typing import Callable, Iterable

import numpy as np


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        return None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# ---- human number formatting ---------------------------------------------------------


def num(v, digits: int = 4) -> str:
    """Significant-digit formatting with thousands separators, '-' for None."""
    if v is None:
        return "-"
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    return f"{v:,.{max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))}f}"


def scaled(factor: float, digits: int = 4) -> Callable:
    return lambda v: "-" if v is None else num(float(v) / factor, digits)


def num_scaled_g(v) -> str:
    return scaled(1e9)(v)


def integer(v) -> str:
    return "-" if v is None else f"{int(round(float(v))):,}"


def ms(v) -> str:
    return "-" if v is None else num(float(v) * 1e3, 4)


def pct(v) -> str:
    return "-" if v is None else f"{float(v) * 100:.1f}%"


def text(v) -> str:
    return "-" if v is None else str(v)


Column = tuple[str, str, Callable]  # (key, header with unit, formatter)


_HUGE = 1e100  # no time, size or rate of this model comes near it: beyond it an input was absurd


def _non_finite(v) -> bool:
    """True if ``v`` holds an inf, a NaN or a number beyond 1e100 (nested dicts, lists, arrays)."""
    if isinstance(v, dict):
        return any(_non_finite(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_non_finite(x) for x in v)
    if isinstance(v, np.ndarray):
        return v.dtype.kind == "f" and not np.all(np.abs(v) < _HUGE)
    return isinstance(v, (float, np.floating)) and not abs(v) < _HUGE


def emit(records: list[dict], columns: list[Column], fmt: str = "table", title: str | None = None,
         payload: dict | list | None = None, notes: Iterable[str] = (), out=None) -> None:
    """Print records as a rich table (columns), JSON (``payload`` or the records) or CSV.

    Raises CostsimError rather than print an inf or a NaN (inputs beyond what the model can
    represent, e.g. an extreme --hw-set)."""
    from costsim.errors import CostsimError

    if _non_finite(records) or _non_finite(payload):
        raise CostsimError("a result is not finite (inf, NaN or beyond 1e100): the inputs are beyond what the model can "
                           "represent; check extreme --set / --hw-set values")
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps(_plain(payload if payload is not None else records), indent=2) + "\n")
        return
    if fmt == "csv":
        keys = list(dict.fromkeys(c[0] for c in columns))  # a key shown in two units is one CSV column

        def pair(v) -> bool:  # a (low, high) band: two CSV columns of raw numbers, not a list string
            return isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)

        pairs = {k for k in keys if any(pair(r.get(k)) for r in records)}
        fields = [f for k in keys for f in ((f"{k}_lo", f"{k}_hi") if k in pairs else (k,))]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in records:
            row = {}
            for k in keys:
                v = r.get(k)
                if k in pairs:
                    row[f"{k}_lo"], row[f"{k}_hi"] = (_plain(v[0]), _plain(v[1])) if pair(v) else (None, None)
                else:
                    row[k] = _plain(v)
            w.writerow(row)
        out.write(buf.getvalue())
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(header_style="bold")
    for key, header, _ in columns:
        left = key in ("name", "source", "note", "field", "op", "bound", "kind", "attention", "ffn", "experts", "full_name", "kv_dtype")
        table.add_column(escape(header), justify="left" if left else "right",
                         overflow="ellipsis" if key == "source" else "fold", no_wrap=key in ("op", "field", "name", "source"),
                         max_width=40 if key == "source" else None)
    for r in records:
        table.add_row(*[escape(f(r.get(k))) for k, _, f in columns])
    # a terminal gets its own width; files and pipes get a fixed, wide layout
    tty = out.isatty()
    console = Console(file=out, width=None if tty else 160, force_terminal=tty, color_system="auto" if tty else None)
    console.on_broken_pipe = _broken_pipe  # rich would exit 1; the CLI exits 0 when the reader left
    if title:
        console.print(escape(title), style="bold", highlight=False)
    console.print(table)
    for n in notes:
        console.print(escape(n), highlight=False)


def _broken_pipe() -> None:
    raise BrokenPipeError("stdout closed by its reader")


def transpose(records: list[dict], rows: list[Column]) -> tuple[list[dict], list[Column]]:
    """Turn per-model records into a field-per-row table (models as columns)."""
    out = []
    for key, header, f in rows:
        d = {"field": header}
        for r in records:
            d[r["name"]] = f(r.get(key))
        out.append(d)
    cols = [("field", "", text)] + [(r["name"], r["name"], text) for r in records]
    return out, cols
