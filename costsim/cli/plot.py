"""``costsim plot ...``: comparison plots (matplotlib, Agg), written atomically. The data of each
comes from ``costsim.simulator.figures``; the drawing from ``costsim.reports.plots``."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import plot_app

HardwareList = typer.Option(..., "--hardware", "-H", help="Hardware (comma-separated): names or profile .yaml.")
MaxContext = typer.Option("128k", "--max-context", help="Largest context (k = 1024).")
MaxDevices = typer.Option(None, "--max-devices", help="Layouts on up to this many devices (default: one node).")


def _wrote(path):
    print(f"wrote {path}", file=sys.stderr)


@plot_app.command("throughput")
def plot_throughput_cmd(models: O.Models, hardware: O.Hardware, output: O.Output, devices: O.Devices = None,
                        tp: O.TP = None, ep: O.EP = None, pp: O.PP = None, context: O.Context = "4096",
                        tpot_slo: O.TpotSlo = None, weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                        ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, mtp: O.MTP = 0,
                        deepep_nvlink: O.DeepEPNVLink = False,
                        mtp_acceptance: O.MTPAcceptance = None, draft: O.Draft = None, sets: O.Sets = None, hw_sets: O.HwSets = None, force: O.Force = False):
    """Decode throughput per device against TPOT, batch swept up to the memory limit (marked)."""

    def go():
        from costsim.reports.plots import throughput_latency
        from costsim.simulator.figures import throughput_curve

        path = O.check_plot_output(output, force)
        hw = O.hardware(hardware, hw_sets)
        ctx = O.count(context, "--context", minimum=1)
        slo = O.slo(tpot_slo)
        req = O.layout(devices, tp, ep, pp, weight_dtype, kv_dtype, **_modes(ep_kernel, tbo, mtp, mtp_acceptance, draft, deepep_nvlink))
        curves = [throughput_curve(O.model(m, sets), hw, req, ctx, slo) for m in models]
        lays = sorted({c["layout"] for c in curves})
        throughput_latency(curves, path, f"decode on {hw.name}, context {ctx} tokens: {'; '.join(lays)}", slo)
        _wrote(path)

    O.run(go)


@plot_app.command("roofline")
def plot_roofline_cmd(model: O.Model, hardware: O.Hardware, output: O.Output, devices: O.Devices = None,
                      tp: O.TP = None, ep: O.EP = None, pp: O.PP = None, batch: O.Batch = "1",
                      context: O.Context = "4096", weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                      ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, mtp: O.MTP = 0,
                      deepep_nvlink: O.DeepEPNVLink = False,
                      mtp_acceptance: O.MTPAcceptance = None, draft: O.Draft = None, sets: O.Sets = None, hw_sets: O.HwSets = None, force: O.Force = False):
    """Operators of one decode step on the hardware's roofline, one roof per compute dtype."""

    def go():
        from costsim.reports.plots import roofline
        from costsim.simulator.figures import decode_roofline

        path = O.check_plot_output(output, force)
        spec, hw = O.model(model, sets), O.hardware(hardware, hw_sets)
        b, ctx = O.count(batch, "--batch", minimum=1), O.count(context, "--context", minimum=1)
        req = O.layout(devices, tp, ep, pp, weight_dtype, kv_dtype, **_modes(ep_kernel, tbo, mtp, mtp_acceptance, draft, deepep_nvlink))
        r = decode_roofline(spec, hw, req, b, ctx)
        roofline(r, path, f"{spec.name} decode step, batch {b}, context {ctx} on {hw.name}: {r['layout']}"
                          + ("" if r["fits"] else " (does not fit in memory)"))
        _wrote(path)

    O.run(go)


@plot_app.command("kv")
def plot_kv_cmd(models: O.Models, output: O.Output, max_context: str = MaxContext,
                hardware: Optional[str] = typer.Option(None, "--hardware", "-H", help="Draw these devices' memory "
                                                                                     "(comma-separated)."),
                batch: O.Batch = "1", kv_dtype: O.KVDtype = "bf16", sets: O.Sets = None, hw_sets: O.HwSets = None,
                force: O.Force = False):
    """KV cache size against context length for several models (and each device's memory)."""

    def go():
        import numpy as np

        from costsim.reports.plots import kv_vs_context
        from costsim.simulator.figures import kv_curve, memory_lines

        path = O.check_plot_output(output, force)
        top = O.count(max_context, "--max-context", minimum=1)
        b = O.count(batch, "--batch", minimum=1)
        hws = [] if hardware is None else [O.hardware(h, hw_sets) for h in O.items(hardware, "--hardware")]
        ctx = np.linspace(0, top, 257)
        curves = [kv_curve(O.model(m, sets), kv_dtype, ctx, b) for m in models]
        kv_vs_context(curves, path, f"KV cache of {b} sequence{'s' if b > 1 else ''}, {curves[0]['kv_dtype']}, "
                                    "whole model (not sharded)", memory_lines(hws))
        _wrote(path)

    O.run(go)


@plot_app.command("kv-models")
def plot_kv_models_cmd(models: O.Models, output: O.Output, kv_dtype: O.KVDtype = "bf16", sets: O.Sets = None,
                       force: O.Force = False):
    """KV cache per token across models, grouped by attention kind (MHA, GQA, MQA, MLA)."""

    def go():
        from costsim.reports.plots import kv_per_token as draw
        from costsim.simulator.figures import kv_per_token

        path = O.check_plot_output(output, force)
        rows = kv_per_token([O.model(m, sets) for m in models], kv_dtype)
        draw(rows, path, f"KV cache per token, {rows[0]['kv_dtype']}, all layers")
        _wrote(path)

    O.run(go)


@plot_app.command("max-batch")
def plot_max_batch_cmd(models: O.Models, output: O.Output, hardware: str = HardwareList,
                       max_context: str = MaxContext, devices: O.Devices = None, tp: O.TP = None, ep: O.EP = None,
                       pp: O.PP = None, weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                       ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, mtp: O.MTP = 0,
                       deepep_nvlink: O.DeepEPNVLink = False,
                       mtp_acceptance: O.MTPAcceptance = None, draft: O.Draft = None, sets: O.Sets = None, hw_sets: O.HwSets = None, force: O.Force = False):
    """The largest batch that fits in memory against context, per model and hardware."""

    def go():
        import numpy as np

        from costsim.reports.plots import max_batch
        from costsim.simulator.figures import max_batch_curve

        path = O.check_plot_output(output, force)
        top = O.count(max_context, "--max-context", minimum=2)
        hws = [O.hardware(h, hw_sets) for h in O.items(hardware, "--hardware")]
        req = O.layout(devices, tp, ep, pp, weight_dtype, kv_dtype, **_modes(ep_kernel, tbo, mtp, mtp_acceptance, draft, deepep_nvlink))
        ctx = np.unique(np.round(np.geomspace(min(512, top // 2), top, 24)))
        curves = [max_batch_curve(O.model(m, sets), h, req, ctx) for m in models for h in hws]
        max_batch(curves, path, f"largest batch that fits, KV {kv_dtype}")
        _wrote(path)

    O.run(go)


def _modes(ep_kernel, tbo, mtp, mtp_acceptance, draft, deepep_nvlink=False) -> dict:
    """The serving-mode flags (the same options as perf's) as ``O.layout`` keywords."""
    return dict(mtp=mtp, mtp_acceptance=mtp_acceptance, ep_kernel=ep_kernel, tbo=tbo, draft=draft,
                deepep_nvlink=deepep_nvlink)


def _fronts(models, hardware, context, max_devices, weight_dtype, kv_dtype, sets, hw_sets, price=None, modes=None):
    from costsim.simulator.figures import frontier

    hws = [O.priced(O.hardware(h, hw_sets), price) for h in O.items(hardware, "--hardware")]
    ctx = O.count(context, "--context", minimum=1)
    req = O.layout(None, None, None, None, weight_dtype, kv_dtype, **(modes or {}))
    n = None if max_devices is None else O.count(str(max_devices), "--max-devices", minimum=1)
    return [frontier(O.model(m, sets), h, req, ctx, n) for m in models for h in hws], ctx


@plot_app.command("frontier")
def plot_frontier_cmd(models: O.Models, output: O.Output, hardware: str = HardwareList,
                      context: O.Context = "4096", max_devices: Optional[int] = MaxDevices,
                      weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                      ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, mtp: O.MTP = 0,
                      deepep_nvlink: O.DeepEPNVLink = False,
                      mtp_acceptance: O.MTPAcceptance = None, draft: O.Draft = None, sets: O.Sets = None,
                      hw_sets: O.HwSets = None, force: O.Force = False):
    """Serving frontier of decode: tokens/s per device against tokens/s per user over layouts
    and batches, the Pareto points joined."""

    def go():
        from costsim.reports.plots import frontier

        path = O.check_plot_output(output, force)
        fronts, ctx = _fronts(models, hardware, context, max_devices, weight_dtype, kv_dtype, sets, hw_sets,
                              modes=_modes(ep_kernel, tbo, mtp, mtp_acceptance, draft, deepep_nvlink))
        frontier(fronts, path, f"decode frontier at context {ctx} tokens (every TP/EP layout, batch 1 to the "
                               "memory limit)")
        _wrote(path)

    O.run(go)


@plot_app.command("cost")
def plot_cost_cmd(models: O.Models, output: O.Output, hardware: str = HardwareList,
                  context: O.Context = "4096", max_devices: Optional[int] = MaxDevices,
                  weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16", price: O.Price = None,
                  ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, mtp: O.MTP = 0,
                  deepep_nvlink: O.DeepEPNVLink = False,
                  mtp_acceptance: O.MTPAcceptance = None, draft: O.Draft = None, sets: O.Sets = None, hw_sets: O.HwSets = None, force: O.Force = False):
    """USD per million output tokens against the TPOT SLO (the cheapest layout and batch that
    meets each SLO, at the profile's price per device-hour)."""

    def go():
        import numpy as np

        from costsim.reports.plots import cost_vs_slo as draw
        from costsim.simulator.figures import cost_vs_slo

        path = O.check_plot_output(output, force)
        fronts, ctx = _fronts(models, hardware, context, max_devices, weight_dtype, kv_dtype, sets, hw_sets, price,
                              _modes(ep_kernel, tbo, mtp, mtp_acceptance, draft, deepep_nvlink))
        lo = min(float(f["tpot_s"].min()) for f in fronts)
        slos = np.geomspace(lo, max(lo * 30, 0.2), 40)
        series = [cost_vs_slo(f, slos) for f in fronts]
        for f, c in zip(fronts, series):  # a log axis draws nothing at 0 USD: say so instead of an empty plot
            if not np.any(np.asarray(c["usd_per_million_output_tokens"]) > 0):
                p = f["price_usd_per_device_hour"]
                raise O.CostsimError(f"{f['label']}: price {'none' if p is None else f'{p:g} USD/h'}: the cost plot "
                                     "needs a price > 0 per device-hour (give --price, e.g. 2USD/h)")
        draw(series, path, f"decode cost against TPOT SLO, context {ctx} tokens")
        _wrote(path)

    O.run(go)
