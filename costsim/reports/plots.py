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

    plt.rcParams["svg.fonttype"] = "none"  # SVG text stays text: smaller, searchable

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


def _title(ax, title: str) -> None:
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=9)


def _plain_log_ticks(ax) -> None:
    """Log axes labelled 10, 20, 50 rather than 2x10^1."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(fmt)
            lo, hi = axis.get_view_interval()
            if 0 < lo and hi / lo < 100:  # few decades: label 2 and 5 too
                axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))


def label_offsets(px, py, gap: float = 9.0, near: float = 30.0) -> list[float]:
    """Upward shifts (display units) that keep labels of points at display coordinates
    ``px``, ``py`` at least ``gap`` apart vertically when the points are within ``near`` of
    each other horizontally: greedy, lowest point first. One shift per point, input order."""
    px, py = np.asarray(px, dtype=float), np.asarray(py, dtype=float)
    placed: list[tuple[float, float]] = []
    out = [0.0] * len(px)
    for i in np.lexsort((px, py)):
        if not (np.isfinite(px[i]) and np.isfinite(py[i])):
            continue
        pos = py[i]
        for _ in range(len(placed)):  # each pass clears one placed label: at most that many
            clash = [y for x, y in placed if abs(px[i] - x) < near and abs(pos - y) < gap]
            if not clash:
                break
            pos = max(max(clash) + gap, pos + gap)
        placed.append((px[i], pos))
        out[i] = pos - py[i]
    return out


def _finish(fig, ax, path: Path, title: str, xlabel: str, ylabel: str, handles=None) -> None:
    """Label the axes (with units), grid, legend, then save atomically."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, title)
    _plain_log_ticks(ax)
    ax.grid(alpha=0.3, which="both")
    if handles:
        ax.legend(fontsize=8, handles=handles)
    else:
        ax.legend(fontsize=8)
    _save(fig, path)


def throughput_latency(curves: list[dict], path: Path, title: str, slo_s: float | None = None) -> None:
    """Decode tokens/s per device against TPOT, one curve per model (each point a batch), from
    ``figures.throughput_curve``: the marked batches are labelled ``b=N`` and the last (the
    memory limit) is drawn as a cross."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    marks = []  # (batch, x, y) of every labelled mark, placed together below so labels do not overlap
    for c in curves:
        x, y = np.asarray(c["tpot_s"]) * 1e3, np.asarray(c["tokens_per_s_per_device"])
        (line,) = ax.plot(x, y, lw=1.5, label=c["label"])
        if "mark_batch" in c:
            mx, my = np.asarray(c["mark_tpot_s"]) * 1e3, np.asarray(c["mark_tokens_per_s_per_device"])
            ax.scatter(mx[:-1], my[:-1], s=14, color=line.get_color(), zorder=3)
            marks += list(zip(c["mark_batch"][:-1], mx, my))
            ax.scatter(mx[-1:], my[-1:], marker="X", s=50, color=line.get_color(), zorder=4)
            ax.annotate(f"memory limit b={c['max_batch']}", (mx[-1], my[-1]), fontsize=6, xytext=(4, 4),
                        textcoords="offset points")
    if slo_s:
        ax.axvline(slo_s * 1e3, color="grey", ls="--", lw=1, label=f"TPOT SLO {slo_s * 1e3:g} ms")
    ax.set_xscale("log")
    if marks:
        ax.autoscale_view()
        to_pt = 72.0 / fig.dpi
        disp = ax.transData.transform([(xi, yi) for _, xi, yi in marks])
        for (b, xi, yi), off in zip(marks, label_offsets(disp[:, 0], disp[:, 1], gap=8 / to_pt, near=24 / to_pt)):
            ax.annotate(f"b={b}", (xi, yi), fontsize=6, xytext=(3, -9 + off * to_pt), textcoords="offset points")
    _finish(fig, ax, path, title, "TPOT [ms per output token] (log)", "decode throughput [tokens/s per device]")


def roofline(r: dict, path: Path, title: str) -> None:
    """Roofline from ``figures.decode_roofline``: one datasheet roof per compute dtype the
    operators use (solid) and its achievable roof (x efficiency, dashed); each operator a
    numbered point, the numbers explained in a legend beside the plot (no overlapping labels)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(9.5, 5))
    pts = [p for p in r["points"] if p["intensity"] > 0 and p["flops_per_s"] > 0]
    lo = min([0.1] + [p["intensity"] / 3 for p in pts])
    hi = max([1e4] + [p["intensity"] * 3 for p in pts])
    xs = np.logspace(np.log10(lo), np.log10(hi), 300)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (d, peak) in enumerate(sorted(r["roofs"].items())):
        c = colours[k % len(colours)]
        ax.loglog(xs, np.minimum(peak, xs * r["bandwidth"]) / 1e12, color=c, lw=1.6,
                  label=f"{d} roof: {peak / 1e12:g} TFLOP/s, {r['bandwidth'] / 1e12:.3g} TB/s (datasheet)")
        ax.loglog(xs, np.minimum(r["achievable"][d], xs * r["bandwidth_achievable"]) / 1e12, color=c, lw=1, ls="--",
                  label=f"{d} achievable (x efficiency)")
    dc = {d: colours[k % len(colours)] for k, d in enumerate(sorted(r["roofs"]))}
    for p in pts:
        ax.scatter(p["intensity"], p["flops_per_s"] / 1e12, s=16, color=dc.get(p["dtype"], "black"), zorder=3)
    if pts:
        ax.autoscale_view()
        disp = ax.transData.transform([(p["intensity"], p["flops_per_s"] / 1e12) for p in pts])
        to_pt = 72.0 / fig.dpi
        for p, off in zip(pts, label_offsets(disp[:, 0], disp[:, 1], gap=9 / to_pt)):
            ax.annotate(str(p["number"]), (p["intensity"], p["flops_per_s"] / 1e12), fontsize=7,
                        xytext=(4, off * to_pt), textcoords="offset points", va="center",
                        arrowprops=dict(arrowstyle="-", lw=0.4, color="grey") if off else None)
    key = "\n".join(f"{p['number']:>2}  {p['label']} ({p['dtype']}, {p['share']:.0%})" for p in pts)
    if key:
        ax.text(1.02, 1.0, "operator (compute dtype, share of step)\n" + key, transform=ax.transAxes, fontsize=6.5,
                va="top", family="monospace")
    ax.set_xlabel("arithmetic intensity [FLOP/byte]")
    ax.set_ylabel("achieved [TFLOP/s = 1e12 FLOP/s]")
    _title(ax, title)
    _plain_log_ticks(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="lower right")
    _save(fig, path)


def kv_per_token(rows: list[dict], path: Path, title: str) -> None:
    """Horizontal bars of KV cache per token (KiB = 1024 bytes, all layers) per model,
    coloured and grouped by attention kind (``figures.kv_per_token``)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(rows)))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    kinds = list(dict.fromkeys(r["attention"] for r in rows))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        ax.barh(yi, r["kv_bytes_per_token"] / 1024, color=colours[kinds.index(r["attention"]) % len(colours)])
        ax.annotate(f"{r['kv_bytes_per_token'] / 1024:,.1f}", (r["kv_bytes_per_token"] / 1024, yi), fontsize=6.5,
                    xytext=(3, -2), textcoords="offset points")
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=7)
    from matplotlib.patches import Patch

    ax.margins(x=0.15)
    handles = [Patch(color=colours[i % len(colours)], label=k.upper()) for i, k in enumerate(kinds)]
    _finish(fig, ax, path, title, "KV cache per token [KiB = 1024 bytes, all layers]", "model", handles)


def kv_vs_context(series: list[dict], path: Path, title: str, memory: list[dict] | None = None) -> None:
    """KV cache bytes against context length, one line per model (GB = 1e9 bytes), and each
    hardware's device memory as a horizontal line (``figures.memory_lines``)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in series:
        ax.plot(np.asarray(s["context"]) / 1024, np.asarray(s["kv_bytes"]) / 1e9, label=s["label"])
    for m in memory or []:
        ax.axhline(m["memory_bytes"] / 1e9, ls=":", lw=1, color="grey")
        ax.annotate(f"{m['label']} ({m['memory_bytes'] / 1e9:g} GB)", (0, m["memory_bytes"] / 1e9), fontsize=6,
                    xytext=(2, 2), textcoords="offset points", color="dimgrey")
    _finish(fig, ax, path, title, "context [k tokens, k = 1024]", "KV cache [GB = 1e9 bytes]")


def max_batch(curves: list[dict], path: Path, title: str) -> None:
    """Largest batch that fits (sequences per replica) against context, log-log, one line
    per model x hardware (``figures.max_batch_curve``); 0 (nothing fits) is not drawn."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in curves:
        b = np.asarray(c["max_batch"], dtype=float)
        ax.loglog(np.asarray(c["context"])[b > 0], b[b > 0], marker=".", label=c["label"])
    _finish(fig, ax, path, title, "context [tokens] (log)", "max batch [sequences per replica] (log)")


def frontier(fronts: list[dict], path: Path, title: str) -> None:
    """Serving frontier (``figures.frontier``): tokens/s per device against tokens/s per user,
    every layout x batch as a faint dot, the Pareto points joined and marked."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for f in fronts:
        u, d, p = f["tokens_per_s_per_user"], f["tokens_per_s_per_device"], f["pareto"]
        (line,) = ax.plot([], [])
        ax.scatter(u, d, s=3, alpha=0.25, color=line.get_color())
        o = np.argsort(u[p])
        ax.plot(u[p][o], d[p][o], marker="o", ms=3, lw=1.4, color=line.get_color(), label=f"{f['label']} (Pareto)")
    ax.set(xscale="log", yscale="log")
    _finish(fig, ax, path, title, "tokens/s per user [output tokens/s] (log)", "tokens/s per device (log)")


def cost_vs_slo(series: list[dict], path: Path, title: str) -> None:
    """USD per million output tokens against the TPOT SLO (``figures.cost_vs_slo``)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in series:
        y = np.asarray(s["usd_per_million_output_tokens"])
        ax.plot(np.asarray(s["tpot_slo_s"]) * 1e3, y, marker=".", label=s["label"])
    ax.set(xscale="log", yscale="log")
    _finish(fig, ax, path, title, "TPOT SLO [ms per output token] (log)", "USD per 1M output tokens (log)")


def predicted_vs_measured(rows: list[dict], path: Path | str, title: str) -> None:
    """Log-log scatter of predicted against measured seconds per family, with y = x."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    meas = np.array([r["min_s"] for r in rows])
    pred = np.array([r["predicted_s"] for r in rows])
    fams = list(dict.fromkeys(r["family"] for r in rows))
    # one colour per family: tab10 up to 10 families, tab20 beyond (the silicon tables have 16)
    cmap = plt.get_cmap("tab10" if len(fams) <= 10 else "tab20")
    for i, fam in enumerate(fams):
        m = np.array([r["family"] == fam for r in rows])
        ax.scatter(meas[m] * 1e6, pred[m] * 1e6, label=fam, s=18 if len(fams) <= 10 else 8,
                   color=cmap(i % cmap.N))
    lo, hi = min(meas.min(), pred.min()) * 1e6 / 2, max(meas.max(), pred.max()) * 1e6 * 2
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="y = x")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
    _finish(fig, ax, path, title, "measured [us] (minimum of the runs)", "predicted [us]")
