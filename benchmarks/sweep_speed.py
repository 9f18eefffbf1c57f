"""Full serving points per second of the vectorised sweep engine (not a test).

    python benchmarks/sweep_speed.py [--points 1000000]

A point is one (batch, prompt, output) combination with its whole serving result: TTFT,
mean TPOT over the n - 1 decode steps (``costsim.simulator.sweep``), e2e, tokens/s, KV and
memory per device, the fit and the max batch (``serve_grid(..., bounds=False)``; the
compute/memory/comm labels are object arrays and are timed separately). The grid is
~cube-root(points) batches x prompts x outputs per model x hardware x layout; the best of 3
runs is reported (the machine is shared: load average printed beside it). The last line
times the whole ``costsim.sweeps.sweep`` (layout, engine, DataFrame assembly).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
    from costsim.simulator.sweep import serve_grid

    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    n = round(ap.parse_args().points ** (1 / 3))
    B = np.arange(1, n + 1, dtype=float)[:, None, None]
    I = np.round(np.linspace(128, 131072, n))[None, :, None]
    O = np.round(np.linspace(1, 8192, n))[None, None, :]
    points = B.size * I.size * O.size
    cases = [("llama-3.1-8b", "h100", LayoutRequest(devices=1)),
             ("llama-3.1-70b", "h100", LayoutRequest(devices=8)),
             ("deepseek-v3", "h200", LayoutRequest(devices=8, mla_form="absorbed")),
             ("deepseek-v3", "h800", LayoutRequest(devices=16, mla_form="auto", overlap_comm=True)),
             ("gpt-oss-120b", "h100", LayoutRequest(devices=2))]
    print(f"{points:,} points per model x hardware x layout ({B.size} batches x {I.size} prompts x {O.size} outputs); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for model, hw_name, req in cases:
        spec, hw = load_model(model), load_hardware(hw_name)
        dep = resolve_deployment(spec, hw, req)
        best = {}
        for bounds in (False, True):
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                serve_grid(spec, hw, dep, B, I, O, bounds=bounds)
                ts.append(time.perf_counter() - t)
            best[bounds] = min(ts)
        lay = f"{dep.devices} x tp{dep.tp} ep{dep.ep} pp{dep.pp} {dep.weights_name} {dep.mla_form}"
        print(f"{model:>14} on {hw_name:<5} {lay:<34} {points / best[False]:>12,.0f} points/s "
              f"({best[False] * 1e3:.0f} ms; with bound labels {points / best[True]:,.0f} points/s)")
    # end to end: partitions -> tidy DataFrame (costsim.sweeps.sweep), the layout resolved inside
    from costsim.sweeps import sweep

    g = [x.reshape(-1).astype(int).tolist() for x in (B, I, O)]
    args = ([load_model("llama-3.1-8b")], [load_hardware("h100")], [LayoutRequest(devices=1)], *g)
    sweep(*args)  # warm-up (imports)
    t = time.perf_counter()
    df = sweep(*args)
    dt = time.perf_counter() - t
    print(f"DataFrame end to end (costsim.sweeps.sweep, llama-3.1-8b on h100): {len(df) / dt:,.0f} rows/s "
          f"({len(df):,} rows in {dt * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
