"""Decode attention whose query-head group exceeds the decode kernel's (``group_limit``) runs on
the fallback kernel: compute at ``group_compute`` of the peak and per-row work per query head
(not per KV head). Fitted on aiconfigurator's TensorRT-LLM tables, where 128 query heads over
one KV head at 4k context take 40 us per sequence against 0.65 us for 32 over one (H200)."""

from __future__ import annotations

import numpy as np
import pytest

from costsim.api import apply_sets, load_hardware
from costsim.calibration.silicon import _gqa_spec
from costsim.simulator.efficiency import operator_terms
from costsim.simulator.kernels import attention_core_operators

SETS = ["efficiency.families.attention_decode.compute=0.04", "efficiency.families.attention_decode.memory=0.66",
        "efficiency.families.attention_decode.per_row=1e-8", "efficiency.families.attention_decode.overhead=1e-5"]


def _terms(hw, heads, kv, batch=8, context=4095):
    op = attention_core_operators(_gqa_spec(heads, kv, 128), hw, batch, context)[0]
    return op, operator_terms(op, hw)


def test_groups_within_the_limit_are_unchanged_and_beyond_it_use_the_fallback():
    base = apply_sets(load_hardware("h200"), SETS, "--hw-set")
    hw = apply_sets(base, ["efficiency.families.attention_decode.group_limit=32",
                           "efficiency.families.attention_decode.group_compute=0.004"], "--hw-set")
    peak = hw.peak("bf16")
    for heads, kv in ((32, 1), (32, 8), (8, 8)):  # group <= 32: the grouped kernel, as without the fields
        (_, a), (_, b) = _terms(base, heads, kv), _terms(hw, heads, kv)
        assert float(a.time_s) == float(b.time_s)
    op, t = _terms(hw, 128, 1)  # group 128: compute at 0.004 of peak, rows = 8 x 128 query heads
    assert float(t.compute_s) == pytest.approx(float(op.flops) / (peak * 0.004), rel=1e-12)
    assert float(t.extra_s) == pytest.approx(1e-5 + 1e-8 * 8 * 128, rel=1e-12)
    _, t0 = _terms(base, 128, 1)
    assert float(t0.extra_s) == pytest.approx(1e-5 + 1e-8 * 8 * 1, rel=1e-12)  # per KV head without it
    assert float(t.time_s) > 5 * float(t0.time_s)


def test_shipped_h200_fit_has_the_fallback_and_orders_groups_as_measured():
    hw = load_hardware("h200-calibrated")
    f = hw.efficiency.families.attention_decode
    assert f.group_limit.value == 32 and f.group_compute.value < f.compute.value
    # per sequence at 4k context, batch 32: 128/1 slower than 32/1 by an order of magnitude, as measured
    t128 = float(_terms(hw, 128, 1, 32)[1].time_s)
    t32 = float(_terms(hw, 32, 1, 32)[1].time_s)
    assert t128 / t32 > 8


def test_grouped_gemm_narrow_expert_term():
    # n_half: an expert GEMM's compute efficiency x n / (n + n_half), n = min(N, K): an expert
    # split over moe_tp ranks is narrower (gate/up N = inter / moe_tp, down K = inter / moe_tp)
    from costsim.simulator.efficiency import FamilyRates, gemm_shape_efficiency

    r = FamilyRates(compute=0.5, memory=0.8, overhead_s=0.0, m_half=100.0, n_half=400.0)
    M, n = np.array([1.0, 300.0]), np.array([2048.0, 64.0])
    eff = gemm_shape_efficiency(r, M, n)
    assert eff[0] == 1.0  # one row: a gemv, no shape penalty
    assert eff[1] == pytest.approx(300 / 400 * 64 / 464, rel=1e-12)
    # moe_tp 8 of a 2048-wide expert: 256 columns -> 256 / 656 of the unsplit 2048 / 2448 ratio
    r0 = FamilyRates(compute=0.5, memory=0.8, overhead_s=0.0, m_half=0.0, n_half=400.0)
    assert float(gemm_shape_efficiency(r0, 512.0, 256.0)) == pytest.approx(256 / 656, rel=1e-12)


def test_shipped_fp8_gemm_fits_have_a_column_term():
    # fp8 GEMMs on the TRT-LLM tables: narrow N runs well below the wide-N rate (H200 fp8_block:
    # predicted / measured 0.63 at N <= 512 without the term); the fitted n_half carries it
    from costsim.simulator.efficiency import rates
    from costsim.simulator.types import Family

    for name in ("h200-calibrated", "h100-calibrated"):
        r = rates(load_hardware(name), Family.GEMM_FP8_BLOCK)
        assert r.n_half > 0
        from costsim.simulator.efficiency import gemm_shape_efficiency
        narrow, wide = (float(gemm_shape_efficiency(r, 4096.0, n)) for n in (256.0, 16384.0))
        assert narrow < 0.8 * wide
