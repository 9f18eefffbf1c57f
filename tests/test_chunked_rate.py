"""Issue 9: Sarathi-Serve chunked prefill (Agrawal et al., OSDI 2024, arXiv 2403.02310):
``rate.mixed_step`` (one step of B decode tokens + a prompt chunk, weights read once) and
``rate.at_rate_chunked`` / ``costsim rate --chunked-prefill T`` (a token budget per step)."""

from __future__ import annotations

import math

import pytest
from tiny import gqa, hw as tiny_hw
from typer.testing import CliRunner

from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
from costsim.cli.app import app
from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.rate import at_rate, at_rate_chunked, mixed_step
from costsim.simulator.roofline import time_step
from costsim.simulator.serving import decode
from costsim.simulator.types import StepShape


def _setup():
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    return spec, hw, resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8))


def test_mixed_step_reduces_to_decode_and_to_the_chunk_prefill():
    spec, hw, dep = _setup()
    for B, L in ((1, 100), (32, 3000), (300, 2303.5)):
        assert float(mixed_step(spec, hw, dep, B, L, 0, 0).time_s) == pytest.approx(
            float(decode(spec, hw, dep, B, L).time_s), rel=1e-12)
    for c, k, lg in ((512, 1024, 1), (2048, 0, 1), (100, 900, 0)):
        assert float(mixed_step(spec, hw, dep, 0, 0, c, k, lg).time_s) == pytest.approx(
            float(time_step(spec, hw, dep, StepShape(1, c, k, lg)).time_s), rel=1e-12)
    # the mixed step costs less than its two parts run apart (weights once) and more than either
    both = float(mixed_step(spec, hw, dep, 32, 3000, 512, 1024, 1).time_s)
    d = float(decode(spec, hw, dep, 32, 3000).time_s)
    p = float(time_step(spec, hw, dep, StepShape(1, 512, 1024, 1)).time_s)
    assert max(d, p) < both < d + p


def test_mixed_step_reads_the_weights_once():
    # tiny GQA (tests/tiny.py): h = 8, 2 layers, 4 heads of 2, 2 KV heads, SwiGLU 16, vocab 100,
    # bf16 (2 bytes). Weights per layer: qkv 8 x (4 + 2 x 2) x 2 = 128, o 8 x 8 = 64,
    # gate_up 8 x 32 = 256, down 16 x 8 = 128 -> 576 elements; 2 layers 1152; LM head 100 x 8 =
    # 800 -> 1952 elements = 3904 bytes. Every other byte (activations, KV, embedding rows) is
    # linear in the tokens or belongs to its own part, so decode + chunk apart move exactly
    # 3904 bytes more than the mixed step.
    spec, hw, dep = gqa(), tiny_hw(), Deployment()
    B, L, c, k = 3, 10, 5, 7
    mixed = float(mixed_step(spec, hw, dep, B, L, c, k, 1).bytes_moved)
    dec = float(time_step(spec, hw, dep, StepShape(B, 1, L, 1)).bytes_moved)
    chunk = float(time_step(spec, hw, dep, StepShape(1, c, k, 1)).bytes_moved)
    assert dec + chunk - mixed == pytest.approx(3904.0, rel=1e-12)
    # FLOPs are additive: nothing computed twice or dropped
    m = mixed_step(spec, hw, dep, B, L, c, k, 1)
    assert float(m.flops) == pytest.approx(float(time_step(spec, hw, dep, StepShape(B, 1, L, 1)).flops)
                                           + float(time_step(spec, hw, dep, StepShape(1, c, k, 1)).flops), rel=1e-12)
    assert [t.op.name for t in m.timings].count("attn.core.chunk") == 1


def test_chunked_steady_state_by_hand_and_against_prefill_first():
    spec, hw, dep = _setup()
    I, O, T = 2048, 512, 2048
    L = I + (O - 1) / 2
    for rate in (2.0, 5.0):
        r = at_rate_chunked(spec, hw, dep, rate, I, O, T)
        assert not r.saturated
        B, rho = r.batch, r.prefill_share
        spare = T - B
        c = rho * spare  # the chunk actually processed per step

        def s(b, cc):
            return float(mixed_step(spec, hw, dep, b, L, cc, (I - cc) / 2, cc / I).time_s)

        step = s(B, c)
        assert c == pytest.approx(rate * I * step, rel=1e-6)  # prefill balance: rate x I = c / s
        assert r.tpot_s == pytest.approx(step, rel=1e-12)  # TPOT: one mixed step, no stall
        assert B / step >= rate * O  # Little's law, the smallest such batch
        c1 = rate * I * s(B - 1, T - B + 1)  # at B - 1 the batch does not keep up: its own fixed point
        for _ in range(30):
            c1 = rate * I * s(B - 1, c1)
        assert c1 < T - B + 1 and (B - 1) / s(B - 1, c1) < rate * O
        S = math.ceil(I / spare) * s(B, spare)
        assert r.ttft_s == pytest.approx(S + rho * S / (2 * (1 - rho)) + step / 2, rel=1e-9)
        assert r.e2e_s == pytest.approx(r.ttft_s + (O - 1) * step, rel=1e-12)
        # Sarathi-Serve (§5, Fig. 1): mixing removes the decode stall, TPOT is lower at the same rate
        first = at_rate(spec, hw, dep, rate, I, O)
        assert r.tpot_s < first.tpot_s and r.batch <= first.batch
    # the values printed in README.md (Llama-3.1-70B, 8 x H100, TP 8): prefill first 37.89 ms -> 24.96 ms at 5 req/s
    assert at_rate(spec, hw, dep, 5.0, I, O).tpot_s == pytest.approx(37.89e-3, abs=0.01e-3)
    assert at_rate_chunked(spec, hw, dep, 5.0, I, O, T).tpot_s == pytest.approx(24.96e-3, abs=0.01e-3)
    sat = at_rate_chunked(spec, hw, dep, 10.0, I, O, T)
    assert sat.saturated and "spare budget" in sat.reason and sat.tpot_s is None


def test_bad_budgets_are_refused():
    spec, hw, dep = _setup()
    for bad in (0, -5, 1.5, True, "2048"):
        with pytest.raises(FieldError, match="chunked_prefill"):
            at_rate_chunked(spec, hw, dep, 1.0, 2048, 512, bad)
    with pytest.raises(FieldError, match="pp > 1"):
        at_rate_chunked(spec, hw, resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=4, pp=2)), 1.0, 2048, 512, 512)
    run = CliRunner().invoke
    for bad in ("0", "x", "-3", "1.5", ""):
        r = run(app, ["rate", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--rate", "2", "--chunked-prefill", bad])
        assert r.exit_code == 2 and "--chunked-prefill" in r.output and "Traceback" not in r.output, (bad, r.output)
    r = run(app, ["rate", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--pp", "2", "--rate", "2",
                  "--chunked-prefill", "512"])
    assert r.exit_code == 2 and "--chunked-prefill 512: is not modelled with pp > 1" in r.output
