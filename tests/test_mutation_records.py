"""Independent expected values for the engine's result records (costsim.simulator.scenario) and
the memory-only kernel prediction (costsim.simulator.kernels.elementwise).

Every expected number is derived by hand in the comments, from the tiny spec and round-number
profile of tests/test_formulas_roofline_parallel.py:
  profile: bf16 peak 1e10 FLOP/s, memory 1e9 B/s, efficiencies 0.5 -> 5e9 FLOP/s and 5e8 B/s
  achievable, 1 us per kernel; NVLink 1e8 B/s x 0.5, 1 us; 2 devices per node.
  tiny GQA: vocab 100, hidden 8, 2 layers, 4 q heads / 2 kv heads of dim 2, SwiGLU FFN 16
  (2792 params; a decode step at batch 1, context 9 moves 5304 B in 16 kernels).
"""

from __future__ import annotations

import numpy as np
import pytest

from costsim.errors import FieldError
from costsim.simulator import kernels
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import LayoutRequest
from costsim.simulator.roofline import time_step
from costsim.simulator.scenario import (
    decode_roofline,
    kv_curve,
    model_line,
    operator_rows,
    throughput_curve,
    train,
)
from costsim.simulator.types import StepShape
from costsim.specs import ModelSpec
from tiny import MEM, OVH, INTRA, INTRA_LAT, gqa, hw  # the hand-made spec and profile (tests/tiny.py)


def moe():
    return ModelSpec.model_validate(dict(
        name="tiny-moe", source="hand-made moe spec", vocab_size=100, hidden_size=8, num_hidden_layers=3,
        attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2),
        ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=4, n_shared_experts=1,
                 first_k_dense_replace=1, dense_intermediate_size=12)))


# ============================================================== model_line


def test_model_line_dense_and_moe():
    # params from tests/test_formulas_params_kv.py: dense 2792 total, 1992 active;
    # MoE 3544 total, 2360 active
    assert model_line(gqa()).to_dict() == dict(
        name="tiny-gqa", attention="gqa", ffn="dense", experts="", layers=2, hidden_size=8,
        params_total=2792, params_active=1992, source="hand-made test spec")
    assert model_line(moe()).to_dict() == dict(
        name="tiny-moe", attention="gqa", ffn="moe", experts="4 routed + 1 shared, top-2", layers=3,
        hidden_size=8, params_total=3544, params_active=2360, source="hand-made moe spec")


# ============================================================== train record


def test_train_record_by_hand():
    # tiny GQA at seq 4: 12,192 training FLOPs per token (tests/test_formulas_flops.py);
    # 3.6e6 tokens at MFU 0.5 of 1e10: 12192 * 3.6e6 / 5e9 s = 8.77824 s = 2.4384e-3 GPU-hours
    r = train(gqa(max_position_embeddings=2), hw(), seq_len=4, tokens=3.6e6, mfu=0.5)
    d = r.to_dict()
    warnings = d.pop("warnings")
    assert d == pytest.approx(dict(
        model="tiny-gqa", hardware="tiny-hw", seq_len=4, tokens=3.6e6, training_flops_per_token=12192,
        total_flops=12192 * 3.6e6, peak_flops=1e10, dtype="bf16", mfu=0.5, gpu_hours=2.4384e-3,
        gpu_hours_per_trillion_tokens=2.4384e-3 * 1e12 / 3.6e6, tokens_per_s_per_device=5e9 / 12192,
        mfu_given=True, attention_flops="causal"))
    # seq 4 > max_position_embeddings 2: one warning that names both numbers
    assert len(warnings) == 1 and "4 tokens" in warnings[0] and "(2)" in warnings[0]
    # the MFU implied by twice the GPU-hours: 0.25, not given; seq 4 within 4 positions: no warning
    r = train(gqa(max_position_embeddings=4), hw(), seq_len=4, tokens=3.6e6, gpu_hours=2 * 2.4384e-3, dtype="fp8")
    assert r.mfu == pytest.approx(0.125)  # fp8 peak 2e10 is twice bf16's
    assert r.mfu_given is False and r.dtype == "fp8" and r.peak_flops == 2e10 and r.warnings == ()
    assert r.gpu_hours == pytest.approx(2 * 2.4384e-3)


# ============================================================== operator_rows

# decode, batch 1, context 9, TP 1 (bytes per occurrence derived in
# tests/test_formulas_roofline_parallel.py::test_decode_step_time_by_hand); FLOPs per occurrence:
#   qkv [1x8]x[8x16]: 2*16*8 = 256; core: 4 heads * 2 dim * 4 * 10 pairs = 320; o: 2*8*8 = 128;
#   gate_up: 2*32*8 = 512; down: 2*8*16 = 256; lm_head: 2*100*8 = 1600; embedding/norms/act: 0
DECODE_ROWS = [  # op, kind, layer, count, flops, bytes per occurrence
    ("embedding", "elementwise", "once", 1, 0, 32),
    ("attn.qkv_proj", "gemm", "dense", 2, 256, 304),
    ("attn.core", "attention", "dense", 2, 320, 208),
    ("attn.o_proj", "gemm", "dense", 2, 128, 160),
    ("norms", "elementwise", "dense", 2, 0, 64),
    ("ffn.gate_up_proj", "gemm", "dense", 2, 512, 592),
    ("ffn.act", "elementwise", "dense", 2, 0, 96),
    ("ffn.down_proj", "gemm", "dense", 2, 256, 304),
    ("lm_head", "gemm", "once", 1, 1600, 1816),
]


def test_operator_rows_decode_by_hand():
    rows = operator_rows(time_step(gqa(), hw(), Deployment(), StepShape(1, 1, 9, 1)))
    assert [r["op"] for r in rows] == [x[0] for x in DECODE_ROWS]
    for r, (op, kind, layer, count, flops, nbytes) in zip(rows, DECODE_ROWS):
        # every operator is memory-bound: at most 1600/1816 FLOP/B against a ridge of 10
        assert r == pytest.approx(dict(
            op=op, kind=kind, layer=layer, count=count, time_s=count * (nbytes / MEM + OVH), flops=count * flops,
            bytes=count * nbytes, comm_bytes=0.0, intensity=flops / nbytes, bound="memory")), op
        assert isinstance(r["time_s"], float) and isinstance(r["intensity"], float)


def test_operator_rows_compute_bound_and_comm():
    # prefill of 64 tokens at TP 2 on a profile with a 1e8 FLOP/s peak (5e7 achievable): the LM head
    # [64 x 8] x [8 x 50] (one logit token: M = 1) ... use the FFN gate_up [64x8]x[8x16]:
    # 2*64*16*8 = 16384 FLOPs / 5e7 = 3.2768e-4 s; bytes 8*16*2 + 64*8*2 + 64*16*2 = 3328 B / 5e8 = 6.656e-6 s
    slow = hw(peak_flops=dict(bf16=1e8))
    rows = operator_rows(time_step(gqa(), slow, Deployment(devices=2, tp=2), StepShape(1, 64, 0, 1)))
    gu = next(r for r in rows if r["op"] == "ffn.gate_up_proj")
    assert gu["bound"] == "compute"
    assert gu["time_s"] == pytest.approx(2 * (16384 / 5e7 + OVH))
    assert gu["flops"] == 2 * 16384 and gu["bytes"] == 2 * 3328
    # the TP all-reduces: 2 per layer, each device sends 2(2-1)/2 * 64*8*2 B = 1024 B over NVLink,
    # 2 latency terms: 1024 / 5e7 + 2e-6 s per occurrence
    c, emb = [r for r in rows if r["kind"] == "comm"]
    assert c == pytest.approx(dict(op="comm.tp_allreduce", kind="comm", layer="dense", count=4,
                                   time_s=4 * (1024 / INTRA + 2 * INTRA_LAT), flops=0.0, bytes=0.0,
                                   comm_bytes=4 * 1024, intensity=None, bound="comm"))
    # and the vocab-parallel embedding's all-reduce of the same activation, once per step
    assert emb == pytest.approx(dict(op="comm.tp_allreduce[embedding]", kind="comm", layer="once", count=1,
                                     time_s=1024 / INTRA + 2 * INTRA_LAT, flops=0.0, bytes=0.0,
                                     comm_bytes=1024, intensity=None, bound="comm"))


# ============================================================== decode_roofline


def test_decode_roofline_points_by_hand():
    # one device (TP 1): the decode step of DECODE_ROWS. Step time = 5304 / 5e8 + 16 us = 26.608 us.
    # Total time per operator (count x (bytes / 5e8 + 1 us)): lm_head 4.632 us, gate_up 4.368 us,
    # qkv 3.216 us, down 3.216 us, core 2.832 us, o 2.64 us. At min_share 0.15 (3.9912 us) only
    # lm_head and gate_up are shown.
    r = decode_roofline(gqa(), hw(), LayoutRequest(devices=1), batch=1, context=9, min_share=0.15)
    pts = {p["label"]: p for p in r["points"]}
    assert sorted(pts) == ["ffn.gate_up_proj", "lm_head"]
    assert pts["lm_head"]["intensity"] == pytest.approx(1600 / 1816)
    assert pts["lm_head"]["flops_per_s"] == pytest.approx(1600 / (1816 / MEM + OVH))  # per occurrence
    assert pts["ffn.gate_up_proj"]["intensity"] == pytest.approx(512 / 592)
    assert pts["ffn.gate_up_proj"]["flops_per_s"] == pytest.approx(512 / (592 / MEM + OVH))
    assert r["achievable"] == {"bf16": pytest.approx(5e9)} and r["bandwidth_achievable"] == pytest.approx(5e8)
    # numbered by share of the step: lm_head 4.632 us before gate_up 4.368 us
    assert [(p["number"], p["label"]) for p in r["points"]] == [(1, "lm_head"), (2, "ffn.gate_up_proj")]
    assert pts["lm_head"]["share"] == pytest.approx(4.632 / 26.608)
    assert (r["deployment"].devices, r["deployment"].tp) == (1, 1)
    # min_share 0: every operator with FLOPs (6 of the 9), none without
    r = decode_roofline(gqa(), hw(), LayoutRequest(devices=1), batch=1, context=9, min_share=0.0)
    assert sorted(p["label"] for p in r["points"]) == sorted(x[0] for x in DECODE_ROWS if x[4] > 0)
    shares = [p["share"] for p in r["points"]]
    assert shares == sorted(shares, reverse=True) and [p["number"] for p in r["points"]] == list(range(1, 7))


def test_decode_roofline_skips_comm_and_uses_the_policy_layout():
    # default request: one node of 2 devices -> TP 2 (largest in-node TP for a dense model); the
    # all-reduce is not a roofline point; fp8 weights -> the fp8 peak 2e10 x 0.5
    r = decode_roofline(gqa(), hw(), LayoutRequest(weight_dtype="fp8"), batch=2, context=9, min_share=0.0)
    assert r["deployment"].tp == 2
    assert all(not p["label"].startswith("comm") for p in r["points"])
    assert len(r["points"]) == 6
    assert r["achievable"]["fp8"] == pytest.approx(1e10) and r["roofs"]["fp8"] == pytest.approx(2e10)


def test_decode_roofline_rejects_bad_sizes():
    for kw, field in ((dict(batch=0), "batch"), (dict(context=-1), "context")):
        with pytest.raises(FieldError) as e:
            decode_roofline(gqa(), hw(), LayoutRequest(devices=1), **kw)
        assert e.value.field == field
    # 1 GB device: the weights (5.6 kB) fit; a 1 kB device does not hold them
    with pytest.raises(Exception):
        decode_roofline(gqa(), hw(memory_capacity=1e3), LayoutRequest(devices=1))


# ============================================================== throughput_curve


def test_throughput_curve_first_point_by_hand():
    # 2 devices as 2 DP replicas of TP 1: at batch 1 one sequence on one device; TPOT at context 9
    # = 5304 / 5e8 + 16 us; tokens/s per device = 1 / TPOT / 2 devices
    c = throughput_curve(gqa(), hw(), LayoutRequest(devices=2, tp=1), context=9)
    assert c["label"] == "tiny-gqa (TP1 EP1 PP1)" and c["layout"].startswith("2 devices, TP1 EP1 PP1")
    t1 = 5304 / MEM + 16 * OVH
    assert c["tpot_s"][0] == pytest.approx(t1)
    assert c["tokens_per_s_per_device"][0] == pytest.approx(1 / t1 / 2)
    # batch 2: one sequence per replica, the same TPOT, twice the tokens
    assert c["tpot_s"][1] == pytest.approx(t1)
    assert c["tokens_per_s_per_device"][1] == pytest.approx(2 / t1 / 2)
    assert len(c["tpot_s"]) == len(c["tokens_per_s_per_device"]) > 2
    with pytest.raises(FieldError) as e:
        throughput_curve(gqa(), hw(), LayoutRequest(devices=2, tp=1), context=0)
    assert e.value.field == "context"


# ============================================================== kv_curve


def test_kv_curve_by_hand():
    # per token per layer: K and V of 2 kv heads x dim 2 in bf16 = 2*2*2*2 = 16 B; 2 layers -> 32 B;
    # batch 3 at contexts 1 and 10: 96 B and 960 B; fp8 halves it
    c = kv_curve(gqa(), "bf16", np.array([1, 10]), batch=3)
    assert c["label"] == "tiny-gqa" and c["kv_dtype"] == "bf16"
    assert list(c["context"]) == [1, 10]
    assert np.asarray(c["kv_bytes"]) == pytest.approx([96, 960])
    c = kv_curve(gqa(), "fp8", [1, 10], batch=1)
    assert c["kv_dtype"] == "fp8"
    assert np.asarray(c["kv_bytes"]) == pytest.approx([16, 160])
    with pytest.raises(FieldError) as e:  # an MLA cache layout on a GQA model
        kv_curve(gqa(), "flashmla-fp8", [1, 10])
    assert e.value.field == "kv_dtype"


# ============================================================== kernels.elementwise


def test_elementwise_kernel_by_hand():
    # read 1000 + write 500 bf16 elements: 3000 B / 5e8 = 6 us + 1 us overhead; no FLOPs
    p = kernels.elementwise(hw(), 1000, 500)
    assert p.time_s == pytest.approx(7e-6)
    assert p.memory_s == pytest.approx(6e-6) and p.compute_s == 0 and p.extra_s == pytest.approx(1e-6)
    assert p.bytes == 3000 and p.flops == 0
    assert p.bound == "memory" and p.operators == ("elementwise",) and p.kernel == "elementwise"
    # fp32: 4 B per element -> 6000 B -> 12 us + 1 us; arrays broadcast
    p = kernels.elementwise(hw(), np.array([1000, 2000]), 500, dtype="fp32")
    assert np.asarray(p.time_s) == pytest.approx([13e-6, 21e-6])


@pytest.mark.parametrize("args,field", [
    ((0, 500), "elements_in"), ((1000, 0), "elements_out"), ((1.5, 500), "elements_in"),
    ((1000, 2.5), "elements_out"), ((np.inf, 500), "elements_in"),
])
def test_elementwise_kernel_rejects(args, field):
    with pytest.raises(FieldError) as e:
        kernels.elementwise(hw(), *args)
    assert e.value.field == field


def test_elementwise_kernel_rejects_bad_dtype():
    with pytest.raises(FieldError) as e:
        kernels.elementwise(hw(), 10, 10, dtype="bf17")
    assert e.value.field == "dtype"
