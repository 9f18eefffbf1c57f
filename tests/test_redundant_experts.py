"""Redundant experts (EPLB; DeepSeek-V3 §3.4, Open-Infra Day 6: decode EP144 with 2 routed + 1
shared expert per GPU = 256 + 32 redundant slots). Expected values by hand."""

import pytest

from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
from costsim.errors import FieldError
from costsim.simulator.memory import weight_bytes_per_device
from costsim.simulator.operators import step_operators
from costsim.simulator.params import layer_params
from costsim.simulator.types import StepShape

V3, H800 = load_model("deepseek-v3"), load_hardware("h800")


def test_ep144_needs_the_redundant_slots():
    with pytest.raises(FieldError, match="redundant"):
        resolve_deployment(V3, H800, LayoutRequest(devices=144, tp=1, ep=144, weight_dtype="fp8"))
    with pytest.raises(FieldError, match="256 \\+ 16 redundant"):
        resolve_deployment(V3, H800, LayoutRequest(devices=144, tp=1, ep=144, weight_dtype="fp8", redundant_experts=16))
    with pytest.raises(FieldError, match="dense"):
        resolve_deployment(load_model("llama-3.1-8b"), H800, LayoutRequest(devices=8, redundant_experts=8))
    dep = resolve_deployment(V3, H800, LayoutRequest(devices=144, tp=1, ep=144, weight_dtype="fp8", redundant_experts=32))
    assert dep.expert_slots(V3) // dep.ep == 2  # Day 6: 2 routed experts per GPU


def test_each_rank_stores_its_slots_and_gets_an_even_share():
    plain = resolve_deployment(V3, H800, LayoutRequest(devices=32, tp=1, ep=32, weight_dtype="fp8"))
    extra = resolve_deployment(V3, H800, LayoutRequest(devices=32, tp=1, ep=32, weight_dtype="fp8", redundant_experts=32))
    # 58 MoE layers, each rank 9 instead of 8 experts of 3 x 7168 x 2048 FP8 bytes (+ fp32 block scales)
    routed = layer_params(V3, True, False)["routed"] / 256  # one expert's parameters
    assert routed == 3 * 7168 * 2048
    delta = weight_bytes_per_device(V3, extra) - weight_bytes_per_device(V3, plain)
    assert delta == pytest.approx(58 * routed * extra.expert_weights.bytes_per_element, rel=1e-12)
    # 4096 tokens x top-8 over 32 ranks: 1024 token-expert pairs per rank either way (EPLB
    # balances the copies); every one of a rank's 9 slots is busy at this many tokens
    ops = {o.name: o for o in step_operators(V3, extra, StepShape(4096, 1, 1000, 1))}
    up = ops["moe.experts.gate_up_proj"]
    assert float(up.shape["M"]) == 4096 * 8 / 32 and float(up.shape["groups"]) == pytest.approx(9.0, rel=1e-9)
