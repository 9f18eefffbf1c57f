"""Comparison plots (matplotlib, Agg backend), written atomically to PNG/SVG/PDF.

Each function takes engine results (no model knowledge beyond labels) and a path; axes are
labelled with their units. matplotlib is imported lazily, only here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from costsim.errors import CostsimError

_FORMATS = (".png", ".svg", ".pdf")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_output(path: Path | str) -> Path:
    """Validate an output path before any work: known suffix, existing directory."""
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise CostsimError(f"{path}: unknown plot format {path.suffix!r}: expected one of {', '.join(_FORMATS)}")
    from costsim.files import check_target

    return check_target(path, "plot")


def _save(fig, path: Path) -> None:
    """Save atomically (``costsim.files``): never a half-written plot."""
    from costsim.files import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight"), "plot")
    finally:
        _figure().close(fig)


def _finish(fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    """Label the axes (with units), grid, legend, then save atomically."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def throughput_latency(curves: list[dict], path: Path, title: str, slo_s: float | None = None) -> None:
    """Decode tokens/s per device against TPOT, one curve per model (each point a batch).

    ``curves``: dicts with ``label``, ``tpot_s`` and ``tokens_per_s_per_device`` arrays.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in curves:
        ax.plot(np.asarray(c["tpot_s"]) * 1e3, c["tokens_per_s_per_device"], marker=".", ms=3, label=c["label"])
    if slo_s:
        ax.axvline(slo_s * 1e3, color="grey", ls="--", lw=1, label=f"TPOT SLO {slo_s * 1e3:g} ms")
    _finish(fig, ax, path, title, "TPOT [ms per output token]", "decode throughput [tokens/s per device]")


def roofline(points: list[dict], peak_flops: float, bandwidth: float, path: Path, title: str) -> None:
    """Roofline (achievable FLOP/s vs arithmetic intensity) with one point per operator.

    ``points``: dicts with ``label``, ``intensity`` (FLOP/byte) and ``flops_per_s`` achieved.
    ``peak_flops`` and ``bandwidth`` are the achievable (efficiency-scaled) rates.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = np.logspace(-1, 4, 200)
    ax.loglog(xs, np.minimum(peak_flops, xs * bandwidth) / 1e12, color="black", lw=1.5, label="roofline (achievable)")
    for p in points:
        if p["intensity"] > 0 and p["flops_per_s"] > 0:
            ax.scatter(p["intensity"], p["flops_per_s"] / 1e12, s=18)
            ax.annotate(p["label"], (p["intensity"], p["flops_per_s"] / 1e12), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
    _finish(fig, ax, path, title, "arithmetic intensity [FLOP/byte]", "achieved [TFLOP/s]")


def kv_vs_context(series: list[dict], path: Path, title: str) -> None:
    """KV cache bytes against context length, one line per model (GB = 1e9 bytes)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in series:
        ax.plot(s["context"], np.asarray(s["kv_bytes"]) / 1e9, label=s["label"])
    _finish(fig, ax, path, title, "context [tokens]", "KV cache [GB = 1e9 bytes]")


def predicted_vs_measured(rows: list[dict], path: Path | str, title: str) -> None:
    """Log-log scatter of predicted against measured seconds per family, with y = x."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    meas = np.array([r["min_s"] for r in rows])
    pred = np.array([r["predicted_s"] for r in rows])
    for fam in dict.fromkeys(r["family"] for r in rows):
        m = np.array([r["family"] == fam for r in rows])
        ax.scatter(meas[m] * 1e6, pred[m] * 1e6, label=fam, s=18)
    lo, hi = min(meas.min(), pred.min()) * 1e6 / 2, max(meas.max(), pred.max()) * 1e6 * 2
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="y = x")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    _finish(fig, ax, path, title, "measured [us] (minimum of the runs)", "predicted [us]")
