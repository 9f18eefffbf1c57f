"""Prefix caching (DeepSeek Open-Infra Day 6: 56.3% of input tokens hit the on-disk KV cache):
a cached prefix skips its prefill compute, not its KV memory. Expected values by hand."""

import numpy as np
import pytest
from typer.testing import CliRunner

from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
from costsim.cli import app
from costsim.simulator.memory import kv_bytes_per_device
from costsim.simulator.roofline import time_step
from costsim.simulator.serving import prefill, serve
from costsim.simulator.sweep import serve_grid
from costsim.simulator.types import StepShape


def test_cached_prefix_tokens():
    dep = resolve_deployment(load_model("llama-3.1-8b"), load_hardware("h100"), LayoutRequest(devices=1, prefix_hit=0.563))
    assert float(dep.cached_prefix(4096)) == 2306  # floor(0.563 x 4096) = floor(2306.0)
    assert float(dep.cached_prefix(1)) == 0  # the last token is always computed
    assert list(dep.cached_prefix(np.array([2, 10]))) == [1, 5]
    assert float(dep.with_(prefix_hit=0.0).cached_prefix(4096)) == 0


def test_prefill_computes_only_the_uncached_suffix_and_the_kv_is_whole():
    spec, h100 = load_model("llama-3.1-8b"), load_hardware("h100")
    plain = resolve_deployment(spec, h100, LayoutRequest(devices=1))
    hit = plain.with_(prefix_hit=0.5)
    # 8 prompts of 4096 tokens, half cached: one step of 2048 new tokens over 2048 cached ones
    t = float(time_step(spec, h100, hit, StepShape(8.0, 2048.0, 2048.0, 1)).time_s)
    p = prefill(spec, h100, hit, 8, 4096)
    assert float(p.time_s) == pytest.approx(t, rel=1e-12) and float(p.tokens) == 8 * 2048
    r0, r1 = serve(spec, h100, plain, 8, 4096, 16), serve(spec, h100, hit, 8, 4096, 16)
    assert r1.ttft_s < r0.ttft_s and r1.prefill_tokens_per_s == pytest.approx(8 * 4096 / r1.ttft_s)  # hits counted
    assert r1.tpot_s == r0.tpot_s  # decode reads the whole cache either way
    assert float(kv_bytes_per_device(spec, hit, 8, 4096)) == float(kv_bytes_per_device(spec, plain, 8, 4096))


def test_serve_grid_equals_serve_with_prefix_hits():
    spec, h100 = load_model("deepseek-v2-lite"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=1, prefix_hit=0.563))
    b, i, o = np.array([1.0, 16.0]), np.array([1.0, 7.0, 4096.0]), np.array([1.0, 100.0])
    g = serve_grid(spec, h100, dep, b[:, None, None], i[None, :, None], o[None, None, :])
    for x, bv in enumerate(b):
        for y, iv in enumerate(i):
            for z, ov in enumerate(o):
                r = serve(spec, h100, dep, int(bv), int(iv), int(ov))
                for k in ("ttft_s", "e2e_s", "prefill_tokens_per_s", "combined_tokens_per_s"):
                    assert np.broadcast_to(getattr(g, k), (2, 3, 2))[x, y, z] == pytest.approx(getattr(r, k), rel=1e-9)
                assert bool(np.broadcast_to(g.prefill_fits, (2, 3, 2))[x, y, z]) == r.prefill_fits


@pytest.mark.parametrize("value", ["1", "-0.1", "2"])
def test_cli_refuses_a_bad_hit_rate(value):
    r = CliRunner().invoke(app, ["perf", "llama-3.1-8b", "-H", "h100", "--prefix-hit", value])
    assert r.exit_code == 2 and "--prefix-hit" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
