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
