"""``costsim plot throughput|roofline|kv``: comparison plots (matplotlib, Agg), written atomically."""

from __future__ import annotations

import sys

import typer

from costsim.cli import options as O
from costsim.cli.app import plot_app


@plot_app.command("throughput")
def plot_throughput_cmd(models: O.Models, hardware: O.Hardware, output: O.Output, devices: O.Devices = None,
                        context: O.Context = "4096",
                        tpot_slo: O.TpotSlo = None, weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                        sets: O.Sets = None, hw_sets: O.HwSets = None, force: O.Force = False):
    """Decode throughput per device against TPOT, batch swept up to the memory limit."""

    def go():
        from costsim.reports.plots import throughput_latency
        from costsim.simulator.scenario import throughput_curve

        path = O.check_plot_output(output, force)
        hw = O.hardware(hardware, hw_sets)
        ctx = O.count(context, "--context", minimum=1)
        slo = O.slo(tpot_slo)
        req = O.layout(devices, weight_dtype=weight_dtype, kv_dtype=kv_dtype)
        curves = [throughput_curve(O.model(m, sets), hw, req, ctx) for m in models]
        throughput_latency(curves, path, f"decode on {hw.name}, context {ctx}, weights {weight_dtype or 'as the checkpoint'}, KV {kv_dtype}", slo)
        print(f"wrote {path}", file=sys.stderr)

    O.run(go)


@plot_app.command("roofline")
def plot_roofline_cmd(model: O.Model, hardware: O.Hardware, output: O.Output, devices: O.Devices = None,
                      tp: O.TP = None, ep: O.EP = None, batch: O.Batch = "1", context: O.Context = "4096",
                      weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                      sets: O.Sets = None, hw_sets: O.HwSets = None, force: O.Force = False):
    """Operators of one decode step placed on the hardware's roofline."""

    def go():
        from costsim.reports.plots import roofline
        from costsim.simulator.scenario import decode_roofline

        path = O.check_plot_output(output, force)
        spec, hw = O.model(model, sets), O.hardware(hardware, hw_sets)
        b, ctx = O.count(batch, "--batch", minimum=1), O.count(context, "--context")
        r = decode_roofline(spec, hw, O.layout(devices, tp, ep, None, weight_dtype, kv_dtype), b, ctx)
        roofline(r["points"], r["peak_flops"], r["bandwidth"], path,
                 f"{spec.name} decode, batch {b}, context {ctx} on {hw.name} ({r['deployment'].weight_format.name})")
        print(f"wrote {path}", file=sys.stderr)

    O.run(go)


@plot_app.command("kv")
def plot_kv_cmd(models: O.Models, output: O.Output,
                max_context: str = typer.Option("128k", "--max-context", help="Largest context (k = 1024)."),
                batch: O.Batch = "1", kv_dtype: O.KVDtype = "bf16", sets: O.Sets = None,
                force: O.Force = False):
    """KV cache size against context length for several models."""

    def go():
        import numpy as np

        from costsim.reports.plots import kv_vs_context
        from costsim.simulator.scenario import kv_curve

        path = O.check_plot_output(output, force)
        top = O.count(max_context, "--max-context", minimum=1)
        b = O.count(batch, "--batch", minimum=1)
        ctx = np.linspace(0, top, 257)
        curves = [kv_curve(O.model(m, sets), kv_dtype, ctx, b) for m in models]
        kv_vs_context(curves, path, f"KV cache, batch {b}, {curves[0]['kv_dtype']}")
        print(f"wrote {path}", file=sys.stderr)

    O.run(go)
