"""Performance engine: published acceptance figures and invariants.

Times are models: the tolerances are bands, and each test states its assumptions.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costsim.errors import CostsimError
from costsim.registry import apply_sets, load_hardware, load_model
from costsim.simulator.deployment import Deployment
from costsim.simulator.memory import memory_report, weight_bytes_per_device
from costsim.simulator.operators import StepShape, expected_distinct_experts, step_operators
from costsim.simulator.parallel import ep_alltoall_seconds
from costsim.simulator.roofline import time_step
from costsim.simulator.serving import decode, max_throughput, mla_crossover, prefill, serve
from costsim.simulator.training import train_cost
from costsim.units import FORMATS, parse_format

H800 = load_hardware("h800")


def M(name):
    return load_model(name)


# ---------------------------------------------------------------- ISCA 2025 EP estimate


def test_isca_ep_alltoall_tpot_bound():
    """ISCA 2025 "Insights into DeepSeek-V3" (arXiv 2505.09343) §2.3.2: with EP over 400 Gb/s
    InfiniBand (50 GB/s), 32 tokens per device per micro-batch, 9 destinations (8 routed +
    1 shared expert, one expert per GPU), FP8 dispatch (1 B) + BF16 combine (2 B), hidden
    "7K", computation fully overlapped, no latency: 120.96 us per micro-batch, 2 x 120.96 us
    per layer (dual micro-batch), x 61 layers = 14.76 ms TPOT (67 tokens/s)."""
    bw = 50e9
    one_mb = ep_alltoall_seconds(32, 9, 7000, 1, bw) + ep_alltoall_seconds(32, 9, 7000, 2, bw)
    assert one_mb == pytest.approx(120.96e-6, rel=1e-12)
    tpot = 2 * one_mb * 61
    assert tpot == pytest.approx(14.76e-3, rel=0.001)
    # With DeepSeek-V3's real hidden size 7168 (the paper's "7K" is 7000): 15.1 ms, within 5%.
    v3 = M("deepseek-v3")
    real = 2 * 61 * (ep_alltoall_seconds(32, 9, v3.hidden_size, 1, bw) + ep_alltoall_seconds(32, 9, v3.hidden_size, 2, bw))
    assert real == pytest.approx(14.76e-3, rel=0.05)
    assert 1 / real == pytest.approx(67, rel=0.05)


def test_isca_ep_through_the_engine():
    """The same estimate through the operator model: DeepSeek-V3 decode, 64 tokens per device
    (2 micro-batches of 32), EP over 256 devices (one expert per GPU), on a what-if H800 whose
    NIC runs at line rate (efficiency 1, latency 0, as ISCA assumes). The engine sends each
    token once per remote *node* (DeepEP forwards inside a node over NVLink) and node-limited
    routing caps that at 4 nodes (DeepSeek-V3 §2.1.2), so its bound must be below ISCA's
    9-destination figure but of the same order."""
    v3 = M("deepseek-v3")
    hw = apply_sets(H800, ["efficiency.inter_node=1.0", "inter_node_latency=0"], "--hw-set")
    dep = Deployment(devices=256, ep=256, tp=1, weight_format=FORMATS["fp8"], dispatch_bytes=1, combine_bytes=2)
    t = time_step(v3, hw, dep, StepShape(batch=64 * 256, new_tokens=1, context=4096))
    comm = sum(x.total_s for x in t.timings if x.op.kind == "comm")
    isca = 2 * 61 * 120.96e-6 * 7168 / 7000 * 58 / 61  # per MoE layer (58 of 61) at hidden 7168
    assert 0.3 * isca < comm < isca


def test_all_to_all_zero_at_ep1():
    spec = M("deepseek-v2-lite")
    ops = step_operators(spec, Deployment(devices=1), StepShape(8, 1, 1024))
    assert not [o for o in ops if o.kind == "comm"]
    ops8 = step_operators(spec, Deployment(devices=8, ep=8), StepShape(8, 1, 1024))
    assert {o.name for o in ops8 if o.kind == "comm"} == {"comm.ep_dispatch", "comm.ep_combine"}


# ---------------------------------------------------------------- DeepSeek-V2 serving claim


def _v2_vs_67b(context, slo):
    v2 = max_throughput(M("deepseek-v2"), H800,
                        Deployment(devices=8, tp=1, ep=8, weight_format=FORMATS["fp8"], kv_format=parse_format(6),
                                   dispatch_bytes=1, combine_bytes=2), context, slo)
    best67 = max((max_throughput(M("deepseek-llm-67b"), H800, Deployment(devices=8, tp=tp), context, slo)
                  for tp in (4, 8)), key=lambda r: r.tokens_per_s)
    return v2, best67


def test_deepseek_v2_generation_throughput_vs_67b():
    """DeepSeek-V2 (arXiv 2405.04434) §3.2.3 / Fig. 1b: on one 8xH800 node, FP8 weights and
    ~6-bit KV, V2's maximum generation throughput exceeds 50K tokens/s, 5.76x DeepSeek 67B.

    Assumptions: every sequence at 2,048 cached tokens (the paper measures on the length
    distribution of the 67B service, which it does not publish; 2K is a typical chat prompt
    plus reply of that era, where 67B's context limit was 4K); TPOT SLO 50 ms (20 tokens/s
    per user, the Day-6 overview's observed 20-22 tokens/s output speed); V2 as
    DP-attention + EP8; 67B in BF16 (weights and KV) at its better of TP4xDP2 and TP8.
    Acceptance: ratio in [4, 8], V2 absolute within 2x of 50K tokens/s."""
    v2, b67 = _v2_vs_67b(2048, 0.050)
    ratio = v2.tokens_per_s / b67.tokens_per_s
    assert 4 <= ratio <= 8
    assert 25_000 <= v2.tokens_per_s <= 100_000
    assert v2.tpot_s <= 0.050


# ---------------------------------------------------------------- MoE regimes


def test_moe_decode_small_batch_memory_bound_large_batch_cheap():
    spec = M("deepseek-v3")
    dep = Deployment(devices=64, ep=64, weight_format=FORMATS["fp8"])
    small = time_step(spec, H800, dep, StepShape(64, 1, 4096))  # one sequence per device
    large = time_step(spec, H800, dep, StepShape(64 * 256, 1, 4096))
    up_small = small.by_name("moe.experts.gate_up_proj")
    up_large = large.by_name("moe.experts.gate_up_proj")
    assert up_small.bound == "memory"
    # per token the expert weights are amortised: large batch is > 20x cheaper per token
    per_tok_small = float(up_small.total_s) / 64
    per_tok_large = float(up_large.total_s) / (64 * 256)
    assert per_tok_small > 20 * per_tok_large


def test_expected_distinct_experts():
    # uniform routing: E (1 - (1 - k/E)^T); one token hits exactly k experts
    assert expected_distinct_experts(256, 8, 1) == pytest.approx(8)
    assert expected_distinct_experts(256, 8, 10_000) == pytest.approx(256)
    assert expected_distinct_experts(160, 6, 32) == pytest.approx(160 * (1 - (1 - 6 / 160) ** 32))


def test_imbalance_scales_busiest_rank():
    spec = M("deepseek-v3")
    base = Deployment(devices=32, ep=32, weight_format=FORMATS["fp8"])
    t1 = time_step(spec, H800, base, StepShape(32 * 64, 1, 2048))
    t2 = time_step(spec, H800, base.with_(imbalance=1.5), StepShape(32 * 64, 1, 2048))
    f1 = t1.by_name("moe.experts.gate_up_proj").op.flops
    f2 = t2.by_name("moe.experts.gate_up_proj").op.flops
    assert f2 == pytest.approx(1.5 * f1)
    c1 = t1.by_name("comm.ep_dispatch").op.comm_bytes
    assert t2.by_name("comm.ep_dispatch").op.comm_bytes == pytest.approx(1.5 * c1)


# ---------------------------------------------------------------- MLA forms


def test_mla_crossover_prefill_naive_decode_absorbed():
    # Per cached token naive decompresses d_c n_h (d_h + d_h^v) MACs once per step but saves
    # n_h (2 d_c + d_h^R - d_h - d_h^R - d_h^v) MACs per query: FLOPs break even at
    # s = d_c (d_h + d_h^v) / (2 d_c - d_h - d_h^v) = 512*256/768 = 170.7 query tokens (V2 shapes).
    r = mla_crossover(M("deepseek-v2"), H800, Deployment(devices=8, ep=8), batch=64, context=32768)
    assert r.decode_absorbed_s < r.decode_naive_s
    assert 150 <= r.chunk_tokens <= 190


# ---------------------------------------------------------------- memory and layouts


def test_weights_per_device_sharding():
    v2 = M("deepseek-v2")
    one = weight_bytes_per_device(v2, Deployment(devices=1))
    assert one == pytest.approx(2 * 235.74e9, rel=0.001)  # BF16, everything on one device
    fp8 = weight_bytes_per_device(v2, Deployment(devices=1, weight_format=FORMATS["fp8"]))
    assert 0.5 * one < fp8 < 0.52 * one  # embedding/head/norms/router stay BF16


def test_max_batch_limited_by_kv():
    spec = M("llama-3.1-8b")
    dep = Deployment(devices=1)
    r = memory_report(spec, H800, dep, 1, 8192)
    assert r.limit == "memory: KV cache"
    # 0.9 x 80 GB minus 16 GB of BF16 weights, / (131,072 B/token x 8192 tokens) ~ 52 sequences
    assert 45 <= r.max_batch <= 53
    r2 = memory_report(spec, H800, dep, r.max_batch, 8192)
    assert r2.fits
    r3 = memory_report(spec, H800, dep, r.max_batch + 1, 8192)
    assert not r3.fits


@pytest.mark.parametrize("kw,match", [
    (dict(devices=8, tp=3), "tp"),
    (dict(devices=8, ep=3), "ep"),
    (dict(devices=8, tp=16), "tp"),
])
def test_infeasible_layouts_rejected(kw, match):
    with pytest.raises(CostsimError, match=match):
        Deployment(**kw).check(M("deepseek-v2"))


def test_model_that_does_not_fit_is_an_error():
    with pytest.raises(CostsimError, match="does not fit"):
        serve(M("llama-3.1-405b"), H800, Deployment(devices=1), 1, 128, 16)


def test_ep_on_dense_model_rejected():
    with pytest.raises(CostsimError, match="dense"):
        Deployment(devices=8, ep=8).check(M("llama-3.1-8b"))


# ---------------------------------------------------------------- serving metrics


def test_serve_metrics_consistent():
    spec = M("llama-3.1-8b")
    r = serve(spec, H800, Deployment(devices=1), 16, 1024, 128)
    assert r.e2e_s == pytest.approx(r.ttft_s + r.tpot_s * 127)  # 127 decode steps after the prefill's token
    assert r.decode_tokens_per_s == pytest.approx(16 / r.tpot_s)
    assert r.prefill_tokens_per_s == pytest.approx(16 * 1024 / r.ttft_s)
    assert r.tpot_last_s >= r.decode_first.time_s


def test_compute_bound_prefill_scales_with_flops():
    spec = M("llama-3.1-70b")
    dep = Deployment(devices=8, tp=8)
    p1 = prefill(spec, H800, dep, 8, 4096)
    p2 = prefill(spec, H800, dep, 16, 4096)
    assert p1.timing.by_name("ffn.gate_up_proj").bound == "compute"
    ratio_t = float(p2.timing.compute_part_s) / float(p1.timing.compute_part_s)
    ratio_f = float(p2.timing.flops) / float(p1.timing.flops)
    assert ratio_t == pytest.approx(ratio_f, rel=0.02)


def test_v3_implied_mfu_from_published_gpu_hours():
    """DeepSeek-V3 tech report Table 1: 2.788M H800 GPU-hours for 14.8T tokens. With 250.5
    GFLOP/token (ISCA Table 2 method, seq 4096) on 989 TFLOP/s BF16 this implies ~37% MFU
    (the total includes context extension and post-training; ISCA Table 4 reports 38.94%
    causal MFU for pre-training alone)."""
    r = train_cost(M("deepseek-v3"), H800, seq_len=4096, tokens=14.8e12, gpu_hours=2.788e6)
    assert r.mfu == pytest.approx(0.373, abs=0.005)


def test_v2_gpu_hours_per_trillion_tokens():
    """DeepSeek-V2 §3.2.3: 172.8K H800 GPU-hours per trillion tokens; implied MFU ~25% and
    GPU-hours round-trip through --mfu."""
    r = train_cost(M("deepseek-v2"), H800, seq_len=4096, tokens=1e12, gpu_hours=172.8e3)
    assert r.mfu == pytest.approx(0.2525, abs=0.003)
    back = train_cost(M("deepseek-v2"), H800, seq_len=4096, tokens=1e12, mfu=r.mfu)
    assert back.gpu_hours == pytest.approx(172.8e3)


# ---------------------------------------------------------------- invariants (hypothesis)

MODELS = ["deepseek-v2-lite", "llama-3.1-8b", "mixtral-8x7b", "gpt-oss-120b"]


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(MODELS), batch=st.integers(1, 512), ctx=st.integers(0, 65536),
       db=st.integers(1, 64), dc=st.integers(1, 4096))
def test_decode_time_non_decreasing_in_context_and_batch(name, batch, ctx, db, dc):
    spec = M(name)
    dep = Deployment(devices=1, weight_format=FORMATS["fp8"])
    t = lambda b, c: float(decode(spec, H800, dep, b, c).time_s)  # noqa: E731
    base = t(batch, ctx)
    assert t(batch, ctx + dc) >= base
    assert t(batch + db, ctx) >= base


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(MODELS), batch=st.integers(1, 64), ctx=st.integers(0, 32768),
       factor=st.floats(1.0, 4.0))
def test_more_bandwidth_never_slower(name, batch, ctx, factor):
    spec = M(name)
    faster = apply_sets(H800, [f"memory_bandwidth={H800.memory_bandwidth.value * factor}"], "--hw-set")
    dep = Deployment(devices=1)
    assert float(decode(spec, faster, dep, batch, ctx).time_s) <= float(decode(spec, H800, dep, batch, ctx).time_s)


def test_decode_vectorised_matches_scalar():
    spec = M("deepseek-v2-lite")
    dep = Deployment(devices=1)
    ctx = np.array([128, 1024, 8192])
    vec = decode(spec, H800, dep, 4, ctx).time_s
    for c, v in zip(ctx, vec):
        assert float(decode(spec, H800, dep, 4, int(c)).time_s) == pytest.approx(float(v), rel=1e-12)


def test_node_limited_routing_caps_nodes_per_token():
    """DeepSeek-V3 §2.1.2: node-limited routing sends each token to at most M = 4 nodes
    (topk_group = 4 of n_group = 8). With EP64 over 8 nodes (one group per node) a token's
    experts lie in exactly 4 groups, so it reaches 4 x 7/8 = 3.5 remote nodes on average;
    uniform routing over 8 nodes would reach 8 (1 - C(224,8)/C(256,8)) x 7/8 = 4.633."""
    from costsim.simulator.parallel import ep_destinations

    v3 = M("deepseek-v3")
    ranks, nodes = ep_destinations(v3, Deployment(devices=64, ep=64), devices_per_node=8)
    assert nodes == pytest.approx(3.5)
    free = apply_sets(v3, ["ffn.n_group=null", "ffn.topk_group=null"], "--set")
    _, nodes_free = ep_destinations(free, Deployment(devices=64, ep=64), devices_per_node=8)
    assert nodes_free == pytest.approx(4.6328, abs=1e-4)


def test_per_layer_seconds_add_up_to_the_step():
    from costsim.simulator.roofline import per_layer_seconds

    for name, dep in (("deepseek-v3", Deployment(devices=32, ep=32, weight_format=FORMATS["fp8"])),
                      ("llama-3.1-70b", Deployment(devices=8, tp=8))):
        spec = M(name)
        t = time_step(spec, H800, dep, StepShape(256, 1, 4096))
        per = per_layer_seconds(t, spec)
        total = per.get("dense", 0) * spec.n_dense_layers + per.get("moe", 0) * spec.n_moe_layers + per["once"]
        assert total == pytest.approx(float(t.time_s), rel=1e-9)


def test_experts_split_beyond_attention_tp_pay_communication():
    # EP=8 over 32 devices splits each expert 4 ways (moe_tp = 4) while attention is TP=1:
    # tokens must be gathered / outputs reduce-scattered across the 4 attention groups, over IB
    v3 = M("deepseek-v3")
    dep = Deployment(devices=32, tp=1, ep=8, weight_format=FORMATS["fp8"])
    t = time_step(v3, H800, dep, StepShape(256, 4096, 0))
    g = t.by_name("comm.moe_tp_gather_scatter")
    assert g.op.count == 58 and float(g.time_s) > 0
    # splitting experts over 4 nodes must not beat EP over all 32 devices
    full = time_step(v3, H800, dep.with_(ep=32), StepShape(256, 4096, 0))
    assert float(full.time_s) < float(t.time_s)


def test_pipeline_prefill_pays_the_fill():
    spec = M("llama-3.1-8b")
    one = prefill(spec, H800, Deployment(devices=1), 4, 8192)
    pp4 = prefill(spec, H800, Deployment(devices=4, pp=4), 4, 8192)
    # 4 micro-batches of 1 sequence through 4 stages: 7 stage times of ~1/16 of the work each
    assert float(pp4.time_s) == pytest.approx(7 / 16 * float(one.time_s), rel=0.1)


def test_pipeline_weights_follow_the_busiest_stage():
    # DeepSeek-V3 over pp=2: stage 0 holds layers 0-30 (3 dense + 28 MoE), stage 1 layers 31-60
    # (30 MoE): the second holds more weights and is the one costed
    from costsim.simulator.params import layer_params, param_counts

    v3 = M("deepseek-v3")
    two = Deployment(devices=2, ep=1, pp=2)
    dense, moe = layer_params(v3, False), layer_params(v3, True)
    vocab = 2 * 129280 * 7168 * 2 + 7168 * 2  # embedding + LM head + final norm, BF16
    keys = ("attention", "dense_ffn", "routed", "shared", "norms", "router")
    stage = sum(30 * moe[k] for k in keys)
    assert weight_bytes_per_device(v3, two) == pytest.approx(stage * 2 + vocab)
    layers_total = param_counts(v3).total - 2 * 129280 * 7168 - 7168
    assert stage > layers_total / 2  # the busiest stage, not an even 1/pp split
