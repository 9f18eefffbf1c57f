"""Independent expected values for roofline timing and communication.

A tiny hardware profile with round numbers makes the roofline arithmetic short:
  bf16 peak 1e10 FLOP/s (fp8 2e10), memory 1e9 B/s, compute and memory efficiency 0.5
  (-> 5e9 FLOP/s, 5e8 B/s achievable), kernel overhead 1 us;
  intra-node link 1e8 B/s x 0.5, latency 1 us; NIC 1e7 B/s x 0.25, latency 5 us; 2 devices/node.
Roofline (Williams, Waterman & Patterson 2009): per occurrence max(FLOPs/compute rate,
bytes/memory rate) + overhead, summed x count. Ring all-reduce (Patarasuk & Yuan 2009):
2(TP-1)/TP * bytes sent and 2(TP-1) latency terms. EP destinations: counted by enumerating
every expert choice (independent of the engine's hypergeometric formula).

Tiny GQA model (vocab 100, hidden 8, 2 layers, 4 q heads / 2 kv heads of dim 2, gated FFN 16).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from costsim.errors import CostsimError
from costsim.simulator.deployment import Deployment
from costsim.simulator.operators import StepShape, step_operators
from costsim.simulator.parallel import ep_alltoall_seconds, ep_destinations
from costsim.simulator.roofline import per_layer_seconds, rate_provenance, time_operator, time_step
from costsim.specs import ModelSpec
from tiny import MEM, OVH, INTRA, INTRA_LAT, INTER, INTER_LAT, gqa, hw  # the hand-made spec and profile (tests/tiny.py)


def moe(E=4, k=2, layers=3, **ffn):
    f = dict(kind="moe", n_routed_experts=E, num_experts_per_tok=k, moe_intermediate_size=4, n_shared_experts=1,
             first_k_dense_replace=1, dense_intermediate_size=12)
    f.update(ffn)
    return ModelSpec.model_validate(dict(
        name="tiny-moe", source="hand-made test spec", vocab_size=100, hidden_size=8, num_hidden_layers=layers,
        attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2), ffn=f))


def comm_ops(timing):
    return [t for t in timing.timings if t.op.kind == "comm"]


# ============================================================== roofline


def test_time_operator_takes_the_max_plus_overhead():
    op = step_operators(gqa(), Deployment(), StepShape(1, 1, 0, 1), include_comm=False)[1]  # a GEMM
    h = hw()
    # compute-bound: 1e6 FLOPs / 5e9 = 2e-4 s > 1e4 B / 5e8 = 2e-5 s
    t = time_operator(dataclasses.replace(op, flops=1e6, bytes_read=6e3, bytes_written=4e3, dtype="bf16"), h, gqa(), Deployment())
    assert float(t.time_s) == pytest.approx(2e-4 + OVH)
    assert float(t.compute_s) == pytest.approx(2e-4) and float(t.memory_s) == pytest.approx(2e-5)
    assert t.bound == "compute"
    # memory-bound: 1e5 FLOPs -> 2e-5 s < 1e5 B -> 2e-4 s
    t = time_operator(dataclasses.replace(op, flops=1e5, bytes_read=6e4, bytes_written=4e4, dtype="bf16"), h, gqa(), Deployment())
    assert float(t.time_s) == pytest.approx(2e-4 + OVH)
    assert t.bound == "memory"
    # fp8 runs on the fp8 peak: 1e6 / (2e10 * 0.5) = 1e-4 s
    t = time_operator(dataclasses.replace(op, flops=1e6, bytes_read=0.0, bytes_written=0.0, dtype="fp8"), h, gqa(), Deployment())
    assert float(t.time_s) == pytest.approx(1e-4 + OVH)
    # count multiplies the per-occurrence time
    t = time_operator(dataclasses.replace(op, flops=1e6, bytes_read=0.0, bytes_written=0.0, count=3), h, gqa(), Deployment())
    assert float(np.sum(t.total_s)) == pytest.approx(3 * (2e-4 + OVH))


def test_decode_step_time_by_hand():
    # decode, batch 1, context 9, bf16, TP 1. Bytes per operator (weights + activations + KV):
    #   embedding        read 8*2 + write 8*2                              =   32   (x1)
    #   qkv_proj [8x16]  weights 128*2 + in 8*2 + out 16*2                 =  304   (x2 layers)
    #   attention core   KV read 10 tokens*16 B + q 16; write KV 16 + out 16 = 208  (x2)
    #   o_proj [8x8]     128 + 16 + 16                                     =  160   (x2)
    #   norms            2 norms * (read 16 + write 16)                    =   64   (x2)
    #   gate_up [8x32]   256*2 + 16 + 32*2                                 =  592   (x2)
    #   act (SwiGLU)     read 32*2 + write 16*2                            =   96   (x2)
    #   down [16x8]      128*2 + 16*2 + 8*2                                =  304   (x2)
    #   lm_head [8x100]  800*2 + 16 + 100*2                                = 1816   (x1)
    # every operator is memory-bound (intensity < 10 FLOP/B), 16 operator occurrences
    nbytes = 32 + 2 * (304 + 208 + 160 + 64 + 592 + 96 + 304) + 1816
    assert nbytes == 5304
    t = time_step(gqa(), hw(), Deployment(), StepShape(1, 1, 9, 1))
    assert float(t.time_s) == pytest.approx(nbytes / MEM + 16 * OVH)
    assert float(t.bytes_moved) == pytest.approx(nbytes)
    assert float(t.flops) == 4544  # decode FLOPs at context 9, derived in tests/test_formulas_flops.py
    assert float(t.comm_part_s) == 0


def test_tp2_step_with_and_without_overlap():
    # TP 2 on 2 devices (one node): per device 2 q heads, 1 kv head, FFN 8, LM head 50 rows.
    #   qkv [8 x (2+2)*2]: 64*2 + 16 + 16 = 160; core: KV 10*8 + q 8, write 8 + 8 = 104
    #   o [4 x 8]: 64 + 8 + 16 = 88; norms 64; gate_up [8 x 16]: 256 + 16 + 32 = 304
    #   act 32 + 16 = 48; down [8 x 8]: 128 + 16 + 16 = 160; embedding 32; lm_head 800 + 16 + 100 = 916
    nbytes = 32 + 2 * (160 + 104 + 88 + 64 + 304 + 48 + 160) + 916
    compute_part = nbytes / MEM + 16 * OVH
    # 2 all-reduces per layer of [1 x 8] bf16: 2*(2-1)/2 * 16 B = 16 B over NVLink + 2 latencies,
    # and one after the vocab-parallel embedding (Megatron-LM §3): 2 L + 1 = 5 per step
    allreduce = 16 / INTRA + 2 * INTRA_LAT
    comm_part = (2 * 2 + 1) * allreduce
    dep = Deployment(devices=2, tp=2)
    t = time_step(gqa(), hw(), dep, StepShape(1, 1, 9, 1))
    assert float(t.compute_part_s) == pytest.approx(compute_part)
    assert float(t.comm_part_s) == pytest.approx(comm_part)
    assert float(t.time_s) == pytest.approx(compute_part + comm_part)
    t = time_step(gqa(), hw(), dep.with_(overlap_comm=True), StepShape(1, 1, 9, 1))
    assert float(t.time_s) == pytest.approx(max(compute_part, comm_part))
    # a slow link makes the communication the longer part: overlap takes it, not the sum
    slow = hw(intra_node_bandwidth=dict(value=1e6, direction="unidirectional"))
    comm_slow = 5 * (16 / 5e5 + 2 * INTRA_LAT)
    t = time_step(gqa(), slow, dep.with_(overlap_comm=True), StepShape(1, 1, 9, 1))
    assert float(t.time_s) == pytest.approx(max(compute_part, comm_slow)) == pytest.approx(comm_slow)


def test_time_step_vectorises_over_context():
    t = time_step(gqa(), hw(), Deployment(), StepShape(1, 1, np.array([4, 9]), 1))
    # each extra cached token adds 16 B of KV read per layer
    assert np.asarray(t.time_s) == pytest.approx([(5304 - 2 * 16 * 5) / MEM + 16e-6, 5304 / MEM + 16e-6])


def test_per_layer_seconds_split():
    t = time_step(gqa(), hw(), Deployment(), StepShape(1, 1, 9, 1))
    per = per_layer_seconds(t, gqa())
    # one layer: 7 operators, 1728 B; once per step: embedding + LM head, 1848 B, 2 operators
    assert per["dense"] == pytest.approx(1728 / MEM + 7 * OVH)
    assert per["once"] == pytest.approx((32 + 1816) / MEM + 2 * OVH)


def test_rate_provenance_lists_the_rates():
    r = rate_provenance(hw(), "bf16")
    assert r["peak_flops.bf16"]["value"] == 1e10
    assert r["memory_bandwidth"]["value"] == 1e9
    assert r["efficiency.inter_node"]["value"] == 0.25


# ============================================================== TP all-reduce and links


@pytest.mark.parametrize("tp,dpn,bw,lat", [
    (2, 2, INTRA, INTRA_LAT),  # group of 2 fits in a 2-device node: NVLink
    (4, 2, INTER, INTER_LAT),  # TP 4 spans 2 nodes: NIC
    (4, 4, INTRA, INTRA_LAT),  # 4 devices per node: NVLink again
])
def test_tp_allreduce_time_and_link(tp, dpn, bw, lat):
    # ring all-reduce of [T=3 x 8] bf16 = 48 B: each device sends 2(TP-1)/TP * 48 B, 2(TP-1) latency terms
    sent = 2 * (tp - 1) / tp * 3 * 8 * 2
    dep = Deployment(devices=tp, tp=tp)
    t = time_step(gqa(), hw(devices_per_node=dpn), dep, StepShape(3, 1, 9, 1))
    c, emb = comm_ops(t)
    assert float(c.op.comm_bytes) == pytest.approx(sent)
    assert c.op.count == 2 * 2  # 2 all-reduces per layer (Megatron-LM §3), 2 layers
    assert float(c.time_s) == pytest.approx(sent / bw + 2 * (tp - 1) * lat)
    # the vocab-parallel embedding's all-reduce of the same [3 x 8] activation, once per step
    assert emb.op.name == "comm.tp_allreduce[embedding]" and emb.op.count == 1
    assert float(emb.time_s) == pytest.approx(float(c.time_s))
    assert float(t.comm_part_s) == pytest.approx(5 * (sent / bw + 2 * (tp - 1) * lat))


def test_no_comm_without_parallelism():
    t = time_step(gqa(), hw(), Deployment(devices=2), StepShape(2, 1, 9, 1))  # 2 DP replicas of TP 1
    assert comm_ops(t) == []


def test_missing_link_is_an_error():
    h = hw(inter_node_bandwidth=None)
    with pytest.raises(CostsimError):
        time_step(gqa(), h, Deployment(devices=4, tp=4), StepShape(1, 1, 9, 1))


# ============================================================== PP send link choice


@pytest.mark.parametrize("devices,dpn,bw,lat", [
    (2, 2, INTRA, INTRA_LAT),  # a stage is 1 device of a 2-device node: next stage on the same node
    (4, 2, INTER, INTER_LAT),  # a stage is 2 devices = one whole node: next stage on another node
    (8, 2, INTER, INTER_LAT),  # a stage spans 2 nodes
    (4, 4, INTRA, INTRA_LAT),  # 2 stages of 2 inside one 4-device node
])
def test_pp_send_link(devices, dpn, bw, lat):
    # pp 2; each stage sends its [T x 8] bf16 activation once per step: T = 1 -> 16 B
    dep = Deployment(devices=devices, pp=2)
    t = time_step(gqa(), hw(devices_per_node=dpn), dep, StepShape(1, 1, 9, 1))
    (c,) = comm_ops(t)
    assert c.op.count == 1
    assert float(c.op.comm_bytes) == pytest.approx(16)
    assert float(c.time_s) == pytest.approx(16 / bw + lat)


# ============================================================== EP destinations


def remote_units_by_enumeration(E, k, units, groups=None, topk_group=None):
    """Expected number of units (ranks or nodes, E/units consecutive experts each) other than
    the token's own that hold one of its k experts; every expert set equally likely, the own
    unit uniform. With group-limited routing, the k experts come from topk_group of the
    groups (consecutive experts), each admissible set equally likely."""
    per = E // units
    sets = list(itertools.combinations(range(E), k))
    if groups:
        g = E // groups
        sets = [s for s in sets if len({e // g for e in s}) <= topk_group]
    tot = 0.0
    for s in sets:
        hit = {e // per for e in s}
        for own in range(units):
            tot += len(hit - {own})
    return tot / (len(sets) * units)


def test_ep_destinations_uniform():
    s = moe()
    # EP 2: each rank holds 2 of 4 experts; P(a rank misses both of a token's 2 experts) = C(2,2)/C(4,2) = 1/6
    # -> 2 * 5/6 ranks hit, the own one with probability 1/2 -> 5/6 remote ranks
    ranks, nodes = ep_destinations(s, Deployment(devices=2, ep=2), 2)
    assert ranks == pytest.approx(5 / 6) == pytest.approx(remote_units_by_enumeration(4, 2, 2))
    assert nodes == 0  # one node
    # EP 4 over 2 nodes of 2: 1 expert per rank -> 2 hit, 3/4 remote = 1.5; nodes as for EP 2 above
    ranks, nodes = ep_destinations(s, Deployment(devices=4, ep=4), 2)
    assert ranks == pytest.approx(1.5) == pytest.approx(remote_units_by_enumeration(4, 2, 4))
    assert nodes == pytest.approx(5 / 6)


@pytest.mark.parametrize("E,k,ep", [(8, 2, 2), (8, 2, 4), (8, 3, 8), (6, 2, 3)])
def test_ep_destinations_match_enumeration(E, k, ep):
    s = moe(E=E, k=k)
    ranks, _ = ep_destinations(s, Deployment(devices=ep, ep=ep), 64)
    assert ranks == pytest.approx(remote_units_by_enumeration(E, k, ep))


def test_node_limited_routing_caps_destinations():
    # 8 experts in 2 groups of 4, top-2 from topk_group = 1 group (DeepSeek-V3 §2.1.2 style):
    # with EP 2 each rank holds one group, so a token's experts all sit on one rank,
    # remote with probability 1/2
    s = moe(E=8, k=2, n_group=2, topk_group=1)
    ranks, _ = ep_destinations(s, Deployment(devices=2, ep=2), 2)
    assert ranks == pytest.approx(0.5) == pytest.approx(remote_units_by_enumeration(8, 2, 2, 2, 1))
    # EP 4 over 2 nodes: each node holds one group -> 0.5 remote nodes
    _, nodes = ep_destinations(s, Deployment(devices=4, ep=4), 2)
    assert nodes == pytest.approx(0.5)
    # topk_group = n_group is no limit: the uniform value
    s = moe(E=8, k=2, n_group=2, topk_group=2)
    ranks, _ = ep_destinations(s, Deployment(devices=2, ep=2), 2)
    assert ranks == pytest.approx(remote_units_by_enumeration(8, 2, 2))


def test_ep_alltoall_seconds_formula():
    # 10 tokens * 1.5 destinations * 8 hidden * 2 B / 1e3 B/s + 1 ms
    assert ep_alltoall_seconds(10, 1.5, 8, 2, 1e3, 1e-3) == pytest.approx(0.24 + 1e-3)


def test_ep_alltoall_in_a_node_by_time():
    # EP 2 on one 2-device node, 2 MoE layers; one token: dispatch bf16 (2 B) and combine bf16
    # 8 hidden * 2 B * 5/6 remote ranks over NVLink + one latency each
    dep = Deployment(devices=2, ep=2)
    t = time_step(moe(), hw(), dep, StepShape(1, 1, 0, 1))
    one = 16 * (5 / 6) / INTRA + INTRA_LAT
    assert float(t.comm_part_s) == pytest.approx(2 * 2 * one)
    # FP8 dispatch (1 B per element), BF16 combine
    t = time_step(moe(), hw(), dep.with_(dispatch_bytes=1.0), StepShape(1, 1, 0, 1))
    assert float(t.comm_part_s) == pytest.approx(2 * (8 * 5 / 6 / INTRA + INTRA_LAT) + 2 * one)
    # imbalance 1.5 scales the busiest rank's bytes
    t = time_step(moe(), hw(), dep.with_(imbalance=1.5), StepShape(1, 1, 0, 1))
    assert float(t.comm_part_s) == pytest.approx(4 * (1.5 * 16 * 5 / 6 / INTRA + INTRA_LAT))


def test_ep_alltoall_across_nodes_by_time():
    # EP 4 over 2 nodes of 2: the NIC carries one copy per remote node: 5/6 nodes (see above)
    dep = Deployment(devices=4, ep=4)
    t = time_step(moe(), hw(), dep, StepShape(4, 1, 0, 1))  # 4 DP ranks, 1 sequence each
    one = 16 * (5 / 6) / INTER + INTER_LAT
    assert float(t.comm_part_s) == pytest.approx(2 * 2 * one)


def test_moe_expert_tp_gather_scatter():
    # devices 2, EP 1: each expert split over moe_tp = 2 devices while attention runs TP 1 (2 DP
    # ranks). Per MoE layer: ring all-gather of the tokens + reduce-scatter of the outputs over
    # g = 2 groups: 2*(g-1) * T*h*2 B = 32 B, 2*(g-1) = 2 latency terms, over NVLink
    dep = Deployment(devices=2, ep=1)
    t = time_step(moe(), hw(), dep, StepShape(2, 1, 0, 1))
    assert float(t.comm_part_s) == pytest.approx(2 * (32 / INTRA + 2 * INTRA_LAT))


def test_moe_expert_tp_gather_scatter_four_groups_over_the_nic():
    # devices 4, EP 1, TP 1: moe_tp = 4, g = 4 attention groups; per MoE layer each device
    # sends 2*(g-1) * T*h*2 B = 6 * 16 = 96 B with 2*(g-1) = 6 latency terms; a group of 4
    # spans two 2-device nodes -> NIC
    dep = Deployment(devices=4, ep=1)
    t = time_step(moe(), hw(), dep, StepShape(4, 1, 0, 1))
    assert float(t.comm_part_s) == pytest.approx(2 * (96 / INTER + 6 * INTER_LAT))
