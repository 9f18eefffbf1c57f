"""``costsim report``: a design-review directory: every figure (PNG + SVG) and ``report.md``
(tables, figures, assumptions, each rate's provenance) that renders on GitHub.

The numbers come from the same engine entries the commands print (``scenario``, ``figures``);
this module only arranges them. Files are written atomically one by one, ``report.md`` last,
and it links only figures that were written. A new directory is built under a temporary name
beside it and renamed into place at the end, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from costsim.errors import CostsimError, FieldError


@dataclass
class ReportRequest:
    """What the report covers. Lengths in tokens, SLO in seconds; ``validation``: per hardware
    name, rows (``min_s``, ``predicted_s``, ``family``) and a title for the scatter."""

    models: list
    hardware: list
    layout: object  # LayoutRequest
    context: int = 4096
    output_len: int = 1024
    tpot_slo_s: float | None = None
    max_devices: int | None = None
    command: str = ""
    validation: dict = field(default_factory=dict)


ROOFLINE_BATCH = 64  # sequences in the report's roofline step (fewer when fewer fit)


def check_directory(path: Path | str, force: bool) -> Path:
    """The report directory, checked before any work: a new name in an existing directory,
    an empty directory, or (``force``) a directory whose files may be replaced."""
    path = Path(path)
    try:
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise CostsimError(f"{path}: exists and is not a directory; give a new directory for the report")
        if not path.exists() and not path.parent.is_dir():
            raise CostsimError(f"{path}: directory {path.parent} does not exist")
        if path.is_dir() and any(path.iterdir()) and not force:
            raise CostsimError(f"{path}: directory is not empty; give --force to replace the report's files in it")
    except OSError as e:
        raise CostsimError(f"{path}: cannot write the report ({e.strerror or e})") from None
    return path


def _md_table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _ms(v) -> str:
    return "–" if v is None else f"{v * 1e3:.3g}"


def _band(b) -> str:
    return "" if b is None else f" ({b[0] * 1e3:.3g}–{b[1] * 1e3:.3g})"


def _usd(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def _rate(key: str, v: float) -> str:
    """A profile rate with its unit."""
    if key.startswith("peak_flops"):
        return f"{v / 1e12:g} TFLOP/s"
    if key.endswith("bandwidth"):
        return f"{v / 1e9:g} GB/s"
    if key.endswith("latency") or key.endswith("overhead") and not key.endswith("comm_overhead"):
        return f"{v * 1e6:.3g} µs"
    return f"{v:.4g}"


class _Figures:
    """Writes each figure as PNG and SVG into ``root``; remembers what was written."""

    def __init__(self, root: Path):
        self.root, self.done, self.skipped = root, [], []

    def add(self, name: str, caption: str, draw) -> None:
        try:
            for ext in (".png", ".svg"):
                draw(self.root / f"{name}{ext}")
        except (CostsimError, FieldError) as e:
            self.skipped.append(f"{caption}: {e}")
            return
        self.done.append((name, caption))

    def each(self, caption: str, makers) -> list:
        """The data of one figure's curves: ``makers`` is (name, function) pairs; a curve whose
        function raises is left out and listed as not drawn (``caption (name): why``), so one
        model that does not fit does not take the others' curves with it."""
        out = []
        for name, make in makers:
            try:
                out.append(make())
            except (CostsimError, FieldError) as e:
                self.skipped.append(f"{caption} ({name}): {e}")
        return out


def _figures(req: ReportRequest, fig: _Figures) -> None:
    from costsim.reports import plots as P
    from costsim.simulator import figures as F

    specs, hws, lay, ctx = req.models, req.hardware, req.layout, req.context
    fig.add("kv_per_token", "KV cache per token by attention kind",
            lambda p: P.kv_per_token(F.kv_per_token(specs, lay.kv_dtype), p, f"KV cache per token, {lay.kv_dtype}"))
    top = max(ctx + req.output_len, 2)
    grid = np.linspace(0, max(top, 131072), 257)
    fig.add("kv_vs_context", "KV cache of one sequence against context, with each device's memory",
            lambda p: P.kv_vs_context([F.kv_curve(s, lay.kv_dtype, grid) for s in specs], p,
                                      f"KV cache of one sequence, {lay.kv_dtype}, whole model", F.memory_lines(hws)))
    cgrid = np.unique(np.round(np.geomspace(512, max(top, 131072), 24)))
    cap = "Largest batch that fits against context"
    mb = fig.each(cap, [(f"{s.name} on {h.name}", lambda s=s, h=h: F.max_batch_curve(s, h, lay, cgrid))
                        for s in specs for h in hws])
    if mb:
        fig.add("max_batch", cap, lambda p: P.max_batch(mb, p, f"largest batch that fits, KV {lay.kv_dtype}"))
    decode_ctx = ctx + req.output_len // 2
    fronts = []
    for h in hws:
        cap = f"Decode throughput against TPOT on {h.name}"
        tc = fig.each(cap, [(s.name, lambda s=s, h=h: F.throughput_curve(s, h, lay, decode_ctx, req.tpot_slo_s))
                            for s in specs])
        if tc:
            fig.add(f"throughput_{h.name}", cap,
                    lambda p, h=h, tc=tc: P.throughput_latency(tc, p, f"decode on {h.name}, context {decode_ctx} "
                                                                      "tokens", req.tpot_slo_s))
        for s in specs:
            fronts_h = []
            try:
                fronts_h.append(F.frontier(s, h, lay, decode_ctx, req.max_devices))
            except (CostsimError, FieldError) as e:
                fig.skipped.append(f"frontier of {s.name} on {h.name}: {e}")
            fronts += fronts_h
        for s in specs:
            def roof(p, s=s, h=h):
                # a serving-like batch: 64 sequences, or as many as fit
                cap = F.max_batch_curve(s, h, lay, [decode_ctx])["max_batch"][0]
                b = int(max(1, min(ROOFLINE_BATCH, cap)))
                r = F.decode_roofline(s, h, lay, b, decode_ctx)
                P.roofline(r, p, f"{s.name} decode step, batch {b}, context {decode_ctx} on {h.name}: {r['layout']}"
                                 + ("" if r["fits"] else " (does not fit in memory)"))
            fig.add(f"roofline_{s.name}_{h.name}", f"Roofline of one decode step: {s.name} on {h.name}", roof)
    if fronts:
        fig.add("frontier", "Serving frontier: tokens/s per device against tokens/s per user",
                lambda p: P.frontier(fronts, p, f"decode frontier at context {decode_ctx} tokens"))
        priced = [f for f in fronts if f["price_usd_per_device_hour"] is not None]
        if priced:
            lo = min(float(f["tpot_s"].min()) for f in priced)
            slos = np.geomspace(lo, max(lo * 30, 0.2), 40)
            fig.add("cost_vs_slo", "USD per million output tokens against the TPOT SLO",
                    lambda p: P.cost_vs_slo([F.cost_vs_slo(f, slos) for f in priced], p,
                                            f"decode cost against TPOT SLO, context {decode_ctx} tokens"))
    for name, (rows, title) in req.validation.items():
        fig.add(f"validate_{name}", f"Predicted against measured kernel times on {name}",
                lambda p, rows=rows, title=title: P.predicted_vs_measured(rows, p, title))


SERVING_HEAD = ["model", "layout", "max-throughput batch", "TPOT (ms)", "tokens/s per device",
                "USD per 1M output tokens", "limit", "batch-1 TTFT (ms)", "batch-1 TPOT (ms)"]


def _serving_rows(req: ReportRequest, h) -> list[list]:
    from costsim.simulator.scenario import Scenario, max_throughput_record, perf

    rows = []
    for s in req.models:
        try:
            m = max_throughput_record(s, h, req.layout, req.context + req.output_len // 2, req.tpot_slo_s)
            p = perf(Scenario(s, h, req.layout, 1, req.context, req.output_len))
        except (CostsimError, FieldError) as e:
            rows.append([s.name, f"not served: {e}"] + [""] * 7)
            continue
        rows.append([s.name, f"{m.devices}× TP{m.tp} EP{m.ep} PP{m.pp}, {m.weight_dtype}/{m.kv_dtype}", m.batch,
                     _ms(m.tpot_s) + _band(m.tpot_band_s), f"{m.tokens_per_s_per_device:,.0f}",
                     _usd(m.usd_per_million_output_tokens), m.limit,
                     _ms(p.ttft_s) + _band(p.ttft_band_s), _ms(p.tpot_s) + _band(p.tpot_band_s)])
    return rows


def _markdown(req: ReportRequest, fig: _Figures) -> str:
    from costsim import __version__
    from costsim.simulator.roofline import rate_provenance
    from costsim.simulator.scenario import model_line

    names = ", ".join(s.name for s in req.models)
    hwn = ", ".join(h.name for h in req.hardware)
    out = [f"# costsim report: {names} on {hwn}", "",
           f"Written by costsim {__version__} on {_dt.date.today().isoformat()}"
           + (f" with `{req.command}`." if req.command else "."), "",
           "Parameters, KV cache and FLOPs are exact arithmetic. Times are a roofline model of each operator "
           "(the larger of compute and memory time, plus per-launch and communication terms, with the profile's "
           "efficiencies): bands in brackets are the p10–p90 of measured/predicted time on held-out kernels "
           "where the profile is calibrated; without a band the time rests on the profile's stated efficiencies "
           "and can be several times off (see *Assumptions*).", "",
           "## Models (exact)", ""]
    rows = []
    for s in req.models:
        m = model_line(s)
        from costsim.simulator.figures import kv_per_token
        kv = kv_per_token([s], req.layout.kv_dtype)[0]["kv_bytes_per_token"]
        rows.append([s.name, m.attention.upper(), m.ffn, m.experts or "–", m.layers, f"{m.params_total / 1e9:.2f}",
                     f"{m.params_active / 1e9:.2f}", f"{kv / 1024:,.1f}", m.source])
    out += [_md_table(["model", "attention", "FFN", "experts", "layers", "params total (B = 1e9)", "active (B)",
                       f"KV per token (KiB, {req.layout.kv_dtype})", "source"], rows), ""]
    slo = "" if req.tpot_slo_s is None else f", TPOT SLO {req.tpot_slo_s * 1e3:g} ms"
    out += [f"## Serving: {req.context} prompt tokens → {req.output_len} output tokens{slo}", "",
            f"Max throughput: the decode batch (sequences per replica at context {req.context + req.output_len // 2}) "
            "with the most tokens/s under memory and the SLO, over every TP of the layout. Batch 1: one request "
            "end to end. Times in ms.", ""]
    for h in req.hardware:
        price = "no price" if h.price_per_device_hour is None else \
            f"{h.price_per_device_hour.value:g} USD per device-hour ({h.price_per_device_hour.source})"
        out += [f"### {h.name} ({h.devices_per_node} per node, {h.memory_capacity.value / 1e9:g} GB each; {price})", "",
                _md_table(SERVING_HEAD, _serving_rows(req, h)), ""]
    out += ["## Figures", ""]
    for name, caption in fig.done:
        if (fig.root / f"{name}.png").is_file():
            out += [f"### {caption}", "", f"![{caption}]({name}.png)", "", f"[SVG]({name}.svg)", ""]
    if fig.skipped:
        out += ["Not drawn:", ""] + [f"- {s}" for s in fig.skipped] + [""]
    out += ["## Accuracy", ""]
    for h in req.hardware:
        if h.residuals:
            rows = [[k, f"{v.p10:.2f}", f"{v.p90:.2f}", v.rows, v.source] for k, v in sorted(h.residuals.items())]
            out += [f"{h.name}: measured / predicted time on held-out kernels, per family.", "",
                    _md_table(["family", "p10", "p90", "rows", "source"], rows), ""]
        else:
            out += [f"{h.name}: not calibrated (no held-out residuals); its times rest on the efficiencies below.", ""]
    out += ["## Assumptions and provenance", "",
            "- One multiply-add = 2 FLOPs; causal attention counts the lower triangle; MLA decode absorbed, "
            "prefill naive (`--mla-form auto`).",
            "- Decode at a constant context (prompt + half the output); every sequence of a batch alike; MoE "
            "routing balanced (imbalance 1.0) unless set; 90% of device memory usable.",
            "- Weights, KV cache and workspace per device decide what fits; communication over NVLink/NIC at "
            "the rates below.", ""]
    for h in req.hardware:
        dt = req.layout.weight_dtype or "bf16"
        rows = [[k, _rate(k, v["value"]), v["provenance"], v.get("source") or ""]
                for k, v in rate_provenance(h, "fp8" if dt.startswith("fp8") else "bf16").items()]
        out += [f"<details><summary>{h.name}: rates and their provenance</summary>", "",
                _md_table(["rate", "value", "provenance", "source"], rows), "", "</details>", ""]
    return "\n".join(out)


def write_report(req: ReportRequest, directory: Path | str, force: bool = False) -> list[Path]:
    """Write every figure and ``report.md`` into ``directory``; returns the files written.
    Raises CostsimError (one line) for a bad directory or a model/hardware the engine refuses."""
    from costsim.files import atomic_write

    target = check_directory(directory, force)
    fresh = not target.exists()
    root = Path(tempfile.mkdtemp(prefix=f".{target.name[:64]}.costsim-", dir=target.parent)) if fresh else target
    try:
        fig = _Figures(root)
        _figures(req, fig)
        text = _markdown(req, fig)
        atomic_write(root / "report.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), "report")
        if fresh:
            os.chmod(root, 0o777 & ~_umask())
            os.rename(root, target)
    except BaseException:
        if fresh:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return sorted(p for p in target.iterdir() if p.is_file())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
