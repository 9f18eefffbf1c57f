"""Speed checks for costsim (not tests): prints times and ratios.

    python benchmarks/bench_engine.py

- CLI start-up + one query (`costsim kv deepseek-v2`), median of 5 runs, against the bare
  import cost of the libraries the CLI needs (python + pydantic + numpy + yaml + typer + rich).
- Vectorised engine vs a Python loop over 1,024 decode contexts (the numpy broadcasting path
  should be >= 20x faster).
- One `max_throughput` search and one `serve` with 1,024 output tokens.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import numpy as np


def wall(cmd: list[str], n: int = 5) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def timed(fn, n: int = 3) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    from costsim.registry import load_hardware, load_model
    from costsim.simulator.deployment import Deployment
    from costsim.simulator.serving import decode, max_throughput, serve
    from costsim.units import FORMATS

    cli = wall(["costsim", "kv", "deepseek-v2"])
    base = wall([sys.executable, "-c", "import pydantic, numpy, yaml, typer, rich.console, rich.table"])
    print(f"CLI query `costsim kv deepseek-v2`: {cli * 1e3:.0f} ms (library imports alone: {base * 1e3:.0f} ms)")

    spec, hw = load_model("deepseek-v2"), load_hardware("h800")
    dep = Deployment(devices=8, ep=8, weight_format=FORMATS["fp8"])
    ctx = np.arange(1024, 2048, dtype=float)
    vec = timed(lambda: decode(spec, hw, dep, 64, ctx))
    loop = timed(lambda: [decode(spec, hw, dep, 64, float(c)) for c in ctx], n=1)
    print(f"decode over 1,024 contexts: vectorised {vec * 1e3:.1f} ms, loop {loop * 1e3:.0f} ms, ratio {loop / vec:.0f}x")
    mt = timed(lambda: max_throughput(spec, hw, dep, 4096, 0.05))
    print(f"max_throughput search: {mt * 1e3:.0f} ms")
    sv = timed(lambda: serve(spec, hw, dep, 64, 4096, 1024))
    print(f"serve (4096 in, 1024 out): {sv * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
