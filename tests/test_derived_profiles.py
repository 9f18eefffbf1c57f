"""H800 and H20 calibrated profiles derived from the H100 fit (issue 7, item 4): the shipped
files are what benchmarks/derive_profiles.py writes, keep their own datasheet peaks, memory and
links, take H100's fitted per-family parameters, and say so in every derived value's provenance."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from costsim.registry import load_hardware

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("derive_profiles", ROOT / "benchmarks" / "derive_profiles.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


@pytest.mark.parametrize("target", ["h800", "h20"])
def test_shipped_derived_profile_is_the_scripts_output(target):
    shipped = (ROOT / "costsim" / "hardware_profiles" / f"{target}-calibrated.yaml").read_text()
    assert shipped == _script().derived_text(target)


@pytest.mark.parametrize("target", ["h800", "h20"])
def test_derived_profile_keeps_its_datasheet_and_takes_h100s_fit(target):
    d, own, fit = load_hardware(f"{target}-calibrated"), load_hardware(target), load_hardware("h100-calibrated")
    assert d.peak_flops == own.peak_flops and d.memory_bandwidth == own.memory_bandwidth
    assert d.intra_node_bandwidth == own.intra_node_bandwidth and d.memory_capacity == own.memory_capacity
    assert d.efficiency.compute == own.efficiency.compute
    g, h = d.efficiency.families.gemm, fit.efficiency.families.gemm
    assert g.compute.value == h.compute.value and g.compute.provenance == "derived"
    assert "h100-calibrated" in g.compute.source and f"not fitted on {target}" in g.compute.source
    ar = d.efficiency.collectives.all_reduce
    assert ar.latency.value == fit.efficiency.collectives.all_reduce.latency.value and ar.latency.provenance == "derived"
    assert set(d.residuals) == set(fit.residuals)
    assert d.efficiency.kernel_overhead == own.efficiency.kernel_overhead  # assumed on both: not relabelled


def test_day6_on_the_derived_h800_profile():
    # DeepSeek Day-6 overview (V3 on H800): prefill on 4 nodes at EP32 with 56.3% cache hits,
    # 73.7K input tokens/s per node; decode on 18 nodes at EP144, 14.8K output tokens/s per node.
    # DeepSeek's matmuls are FP8 with 128 x 128 weight-block scales (V3 report §3.3): fp8-b128, the
    # block-scaled GEMM families. On h800-calibrated (H100's silicon fit), without two-batch
    # overlap: prefill 84-88K (+15-19%; 79-81K before the GEMM epilogue term, which predicts the
    # tables' V3-shaped fp8-block MoE rows at 4k+ tokens 0.99 of measured instead of 1.07);
    # decode with the low-latency kernels 10.4K (-29%, outside; 11.8K before the GEMM K-loop term,
    # which the tables' small-M fp8-block GEMMs carry). Per-tensor fp8 would give 102K (+39%) and 10.8K (-27%). With the overview's two-batch
    # overlap: tests/test_reproduce.py. On h800 (FlashMLA/DeepEP-measured factors): prefill 117K,
    # decode 16.1K (tests/test_ep_kernels.py).
    from costsim.api import LayoutRequest, load_model
    from costsim.simulator.scenario import Scenario, max_throughput_record, perf

    spec, hw = load_model("deepseek-v3"), load_hardware("h800-calibrated")
    for b, expect in ((32, 84_474), (128, 87_634)):
        req = LayoutRequest(devices=32, ep=32, tp=1, weight_dtype="fp8-b128", redundant_experts=32, prefix_hit=0.563)
        per_node = perf(Scenario(spec, hw, req, b, 4096, 1)).prefill_tokens_per_s / 4
        assert per_node == pytest.approx(expect, rel=0.01)
        assert 73.7e3 < per_node < 1.2 * 73.7e3  # above the day's average (README: a fleet average)
    req = LayoutRequest(devices=144, ep=144, tp=1, weight_dtype="fp8-b128", redundant_experts=32, mtp_depth=1,
                        ep_kernel="auto")
    node = max_throughput_record(spec, hw, req, 4989, 0.0476).tokens_per_s_per_node
    assert node == pytest.approx(10_446, rel=0.01)
    assert not node == pytest.approx(14.8e3, rel=0.15)  # not met: the fit's decode is slow
