"""Independent expected values for device memory, serving metrics and training cost.

Expected values are derived by hand below (weights per device from module shapes and the
sharding rules of DeepSeek-V2 §3.2 / Megatron-LM; roofline times on a round-number profile;
GPU-hours = tokens * FLOPs / (peak * MFU) / 3600), or are published figures.

Tiny specs as in tests/test_formulas_params_kv.py (GQA: 2792 params, of which 1600 embedding +
LM head, per layer attention 192 + FFN 384 + norms 16, final norm 8).
Tiny profile as in tests/test_formulas_roofline_parallel.py (5e8 B/s, 5e9 FLOP/s achievable,
1 us per kernel; NVLink 5e7 B/s, 1 us; 2 devices per node).
"""

from __future__ import annotations

import math

import pytest

from costsim.errors import CostsimError
from costsim.registry import load_hardware, load_model
from costsim.simulator.deployment import Deployment
from costsim.simulator.memory import (
    kv_bytes_per_device,
    memory_report,
    require_fit,
    weight_bytes_per_device,
    workspace_bytes,
)
from costsim.simulator.operators import StepShape
from costsim.simulator.serving import SLOError, decode, max_throughput, prefill, serve
from costsim.simulator.training import train_cost
from costsim.specs import ModelSpec
from costsim.units import FORMATS
from tiny import MEM, OVH, INTRA, INTRA_LAT, gqa, hw  # the hand-made spec and profile (tests/tiny.py)


def mla():
    return ModelSpec.model_validate(dict(
        name="tiny-mla", source="hand-made test spec", vocab_size=50, hidden_size=16, num_hidden_layers=2,
        attention=dict(kind="mla", num_attention_heads=2, q_lora_rank=4, kv_lora_rank=6, qk_rope_head_dim=2,
                       qk_nope_head_dim=3, v_head_dim=5),
        ffn=dict(kind="dense", intermediate_size=12)))


def moe(layers=3, **ffn):
    f = dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=4, n_shared_experts=1,
             first_k_dense_replace=1, dense_intermediate_size=12)
    f.update(ffn)
    return ModelSpec.model_validate(dict(
        name="tiny-moe", source="hand-made test spec", vocab_size=100, hidden_size=8, num_hidden_layers=layers,
        attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2), ffn=f))


# ============================================================== weights per device


def test_weights_tp1_are_all_params_in_bf16():
    # TP 1, bf16 everywhere: 2 B x 2792 parameters
    assert weight_bytes_per_device(gqa(), Deployment()) == 2 * 2792 == 5584


def test_weights_tp2():
    # per layer: (attention 192 + FFN 384) / 2 * 2 B = 576, norms 16 * 2 B (replicated) = 32
    # vocab-parallel embedding + LM head: 1600 / 2 * 2 B = 1600; final norm 16
    assert weight_bytes_per_device(gqa(), Deployment(devices=2, tp=2)) == 2 * (576 + 32) + 1600 + 16 == 2832


def test_weights_fp8_keep_embedding_norms_in_bf16():
    # fp8 matmul weights (1 B): 2 layers * (576 + 32); embedding + LM head + final norm stay bf16
    dep = Deployment(weight_format=FORMATS["fp8"])
    assert weight_bytes_per_device(gqa(), dep) == 2 * (576 + 32) + 3200 + 16 == 4432


def test_mla_down_projection_replicated_under_tp():
    # attention 498 = q 108 + kv 230 + o 160; W^DKV|W^KR [16 x 8] = 128 + kv_a_layernorm 6 = 134
    # stay whole on every TP rank: (498 - 134)/2 + 134 = 316. FFN 3*16*12/2 = 288.
    # per layer (316 + 288) * 2 B + norms 2*16*2 B = 1272; vocab 2*50*16 / 2 * 2 B = 1600; final norm 32
    assert weight_bytes_per_device(mla(), Deployment(devices=2, tp=2)) == 2 * 1272 + 1600 + 32 == 4176


def test_moe_weights_under_ep_and_tp():
    # EP 2 on 2 devices, TP 1: routed experts 4*96 split over 2 ranks; router 8*4 and norms bf16
    #   dense layer 0: (192 + 288) * 2 + 16 * 2                     = 992
    #   MoE layers:    (192 + shared 96 + 384/2) * 2 + (16 + 32) * 2 = 1056 (x2)
    assert weight_bytes_per_device(moe(), Deployment(devices=2, ep=2)) == 992 + 2 * 1056 + 3200 + 16 == 6320
    # TP 2 and EP 2 on 2 devices: attention, dense FFN and shared expert halved too
    #   dense: (96 + 144) * 2 + 32 = 512; MoE: (96 + 48 + 192) * 2 + 96 = 768
    assert weight_bytes_per_device(moe(), Deployment(devices=2, tp=2, ep=2)) == 512 + 2 * 768 + 1600 + 16 == 3664
    # EP 1 on 2 devices: each expert split in 2 (expert TP = 2): same expert share as EP 2
    assert weight_bytes_per_device(moe(), Deployment(devices=2, ep=1)) == 6320


def test_pp_weights_one_stage():
    # pp 2: each stage holds one layer (1184 B); costed with embedding + LM head + final norm
    assert weight_bytes_per_device(gqa(), Deployment(devices=2, pp=2)) == 1184 + 3200 + 16


def test_pp_busiest_stage_by_stored_weights():
    # 2 layers, pp 2: stage 0 = dense layer with FFN 3*8*25 = 600 -> 192 + 16 + 600 = 808 weights;
    # stage 1 = MoE layer storing 192 + 16 + 384 + 96 + 32 = 720 weights (its 2 active experts,
    # 192, are part of the 384, not extra). The busiest stage is the dense one:
    # (192 + 600) * 2 + 16 * 2 = 1616 B, + embedding, LM head, final norm 3216 B
    s = moe(layers=2, dense_intermediate_size=25)
    assert weight_bytes_per_device(s, Deployment(devices=2, pp=2)) == 1616 + 3216


def test_kv_bytes_per_device_dp_pp():
    # 4 devices, TP 2 -> 2 DP groups: 5 sequences -> ceil(5/2) = 3 on the busiest group;
    # TP 2 keeps 1 of 2 kv heads: 8 B per token per layer, 2 layers, context 10
    dep = Deployment(devices=4, tp=2)
    assert kv_bytes_per_device(gqa(attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2,
                                                  head_dim=2)), dep, 5, 10) == 3 * 10 * 8 * 2
    # pp 2 on 2 devices: each stage holds half the layers
    assert kv_bytes_per_device(gqa(), Deployment(devices=2, pp=2), 1, 10) == 10 * 16 * 2 / 2


def test_decode_workspace_by_hand():
    # batch 1 decode: largest GEMM activations = lm_head (8 in + 100 out) * 2 B = 216 B,
    # plus FP32 logits 100 * 4 B = 400 B
    assert workspace_bytes(gqa(), Deployment(), StepShape(1, 1, 9, 1)) == 216 + 400


def test_max_batch_kv_dominated():
    # usable = capacity (utilisation 1.0); weights 5584 B; per sequence at 1000 tokens:
    # KV 2 layers * 16 B * 1000 = 32,000 B (+ ~616 B workspace). Capacity for 10 and a bit.
    dep = Deployment(gpu_memory_utilization=1.0)
    cap = 5584 + 10 * 32_616 + 100
    r = memory_report(gqa(), hw(memory_capacity=cap), dep, 3, 1000)
    assert r.weight_bytes == 5584
    assert r.kv_bytes == 3 * 32_000
    assert int(r.max_batch) == 10  # floor((cap - weights) / per-sequence bytes)
    assert r.limit == "memory: KV cache"
    assert bool(r.fits)
    # with 11 sequences' worth minus a bit it is still 10, with 11 and a bit it is 11
    assert int(memory_report(gqa(), hw(memory_capacity=5584 + 11 * 32_616 - 50), dep, 3, 1000).max_batch) == 10
    assert int(memory_report(gqa(), hw(memory_capacity=5584 + 11 * 32_616 + 50), dep, 3, 1000).max_batch) == 11
    # 90 % utilisation: usable = 0.9 * capacity
    r = memory_report(gqa(), hw(memory_capacity=cap / 0.9), Deployment(), 3, 1000)
    assert r.usable_bytes == pytest.approx(cap)
    assert int(r.max_batch) == 10
    # 2 DP replicas (TP 1 on 2 devices): each device holds 10 -> 20 sequences per replica
    r = memory_report(gqa(), hw(memory_capacity=cap), Deployment(devices=2, gpu_memory_utilization=1.0), 3, 1000)
    assert int(r.max_batch) == 20
    # 4 sequences over 2 DP ranks: 2 per device
    r = memory_report(gqa(), hw(memory_capacity=cap), Deployment(devices=2, gpu_memory_utilization=1.0), 4, 1000)
    assert r.kv_bytes == 2 * 32_000


def test_weights_do_not_fit():
    r = memory_report(gqa(), hw(memory_capacity=5000), Deployment(gpu_memory_utilization=1.0), 1, 10)
    assert r.limit == "weights do not fit"
    assert int(r.max_batch) == 0
    assert not bool(r.fits)
    with pytest.raises(CostsimError):
        require_fit(gqa(), hw(memory_capacity=5000), Deployment(gpu_memory_utilization=1.0))
    require_fit(gqa(), hw(memory_capacity=5584), Deployment(gpu_memory_utilization=1.0))  # exactly fits


# ============================================================== serving


# decode step at context L, batch 1, TP 1 (tests/test_formulas_roofline_parallel.py): 5304 B at L = 9,
# each cached token 16 B per layer (2 layers): bytes(L) = 5304 + 32 * (L - 9); 16 kernels
def tpot(L):
    return (5304 + 32 * (L - 9)) / MEM + 16 * OVH


# prefill of a 4-token prompt, batch 1 (logits for the last token only):
#   embedding 64 + 64; per layer: qkv 256 + 64 + 128 = 448, core KV 4*16 + q 64, write 64 + 64 = 256,
#   o 128 + 64 + 64 = 256, norms 256, gate_up 512 + 64 + 256 = 832, act 256 + 128 = 384,
#   down 256 + 128 + 64 = 448 -> 2880; lm_head (1 token) 1600 + 16 + 200 = 1816
PREFILL_BYTES = 128 + 2 * 2880 + 1816
TTFT = PREFILL_BYTES / MEM + 16 * OVH


def test_prefill_ttft_by_hand():
    assert PREFILL_BYTES == 7704
    r = prefill(gqa(), hw(), Deployment(), 1, 4)
    assert float(r.time_s) == pytest.approx(TTFT)
    assert float(r.tokens_per_s) == pytest.approx(4 / TTFT)
    # MFU: prefill FLOPs 11456 (tests/test_formulas_flops.py) over TTFT at the 1e10 peak
    assert float(r.mfu) == pytest.approx(11456 / (TTFT * 1e10))
    assert float(r.mbu) == pytest.approx(PREFILL_BYTES / (TTFT * 1e9))


def test_decode_tpot_and_tokens_per_s():
    r = decode(gqa(), hw(), Deployment(), 1, 9)
    assert float(r.time_s) == pytest.approx(tpot(9))
    assert float(r.tokens_per_s) == pytest.approx(1 / tpot(9))
    # 2 DP replicas on 2 devices, batch 2: each device runs one sequence in the same time
    r = decode(gqa(), hw(), Deployment(devices=2), 2, 9)
    assert float(r.time_s) == pytest.approx(tpot(9))
    assert float(r.tokens_per_s) == pytest.approx(2 / tpot(9))
    assert float(r.tokens_per_s_per_device) == pytest.approx(1 / tpot(9))


def test_pipeline_prefill_and_decode():
    # pp 2 on 2 devices, batch 2 -> micro-batches of 1; a stage = 1 layer + embedding + LM head
    # (costed on the busiest stage) + PP send of [4 x 8] bf16 = 64 B over NVLink (stage of 1
    # device inside a 2-device node)
    stage = (128 + 2880 + 1816) / MEM + 9 * OVH + 64 / INTRA + INTRA_LAT
    r = prefill(gqa(), hw(), Deployment(devices=2, pp=2), 2, 4)
    assert float(r.time_s) == pytest.approx((2 * 2 - 1) * stage)  # pipeline fill: 2 pp - 1 stages
    # one sequence is one micro-batch: it passes the 2 stages once (pp stage times, sends included)
    r = prefill(gqa(), hw(), Deployment(devices=2, pp=2), 1, 4)
    assert float(r.time_s) == pytest.approx(2 * stage)
    # decode in steady state: a token passes pp = 2 stages
    stage_d = (32 + 1728 + 1816) / MEM + 9 * OVH + 16 / INTRA + INTRA_LAT
    r = decode(gqa(), hw(), Deployment(devices=2, pp=2), 2, 9)
    assert float(r.time_s) == pytest.approx(2 * stage_d)
    assert float(r.tokens_per_s) == pytest.approx(2 / (2 * stage_d))


def test_serve_end_to_end_by_hand():
    r = serve(gqa(), hw(), Deployment(), 1, 4, 2)
    # the prefill produces output token 1; token 2 is one decode step at context 4
    # (vLLM's benchmark convention: TPOT = (e2e - TTFT) / (n - 1))
    assert r.ttft_s == pytest.approx(TTFT)
    assert r.e2e_s == pytest.approx(TTFT + tpot(4))
    assert r.tpot_s == pytest.approx(tpot(4))
    assert r.tpot_last_s == pytest.approx(tpot(4))
    assert r.decode_tokens_per_s == pytest.approx(1 / tpot(4))
    assert r.combined_tokens_per_s == pytest.approx(2 / (TTFT + tpot(4)))
    assert r.prefill_tokens_per_s == pytest.approx(4 / TTFT)
    assert float(r.decode_first.time_s) == pytest.approx(tpot(4))
    assert r.prefill_fits


def test_serve_one_output_token_is_the_prefill_alone():
    r = serve(gqa(), hw(), Deployment(), 1, 4, 1)
    assert r.e2e_s == pytest.approx(TTFT)
    # no decode step runs; TPOT reports the step that would come next (context 4)
    assert r.tpot_s == pytest.approx(tpot(4)) and r.tpot_last_s == pytest.approx(tpot(4))
    assert r.combined_tokens_per_s == pytest.approx(1 / TTFT)


def test_serve_batch_scales_tokens():
    r = serve(gqa(), hw(), Deployment(devices=2), 2, 4, 3)  # 2 DP replicas, one sequence each
    # 3 output tokens: the prefill's, then decode steps at contexts 4 and 5
    assert r.ttft_s == pytest.approx(TTFT)
    assert r.e2e_s == pytest.approx(TTFT + tpot(4) + tpot(5))
    assert r.tpot_s == pytest.approx((tpot(4) + tpot(5)) / 2)
    assert r.tpot_last_s == pytest.approx(tpot(5))
    assert r.decode_tokens_per_s == pytest.approx(2 * 2 / (tpot(4) + tpot(5)))
    assert r.decode_tokens_per_s_per_device == pytest.approx(2 / (tpot(4) + tpot(5)))
    assert r.prefill_tokens_per_s_per_device == pytest.approx(4 / TTFT)
    assert r.combined_tokens_per_s == pytest.approx(2 * 3 / (TTFT + tpot(4) + tpot(5)))


def test_serve_rejects_bad_layout_and_no_fit():
    with pytest.raises(CostsimError):
        serve(gqa(), hw(), Deployment(devices=3, tp=3), 1, 4, 2)  # tp 3 on 4 heads
    with pytest.raises(CostsimError):
        serve(gqa(), hw(memory_capacity=1000), Deployment(), 1, 4, 2)


def test_max_throughput_memory_and_slo_limits():
    dep = Deployment(gpu_memory_utilization=1.0)
    h = hw(memory_capacity=5584 + 10 * 32_616 + 100)  # 10 sequences of 1000 tokens fit
    r = max_throughput(gqa(), h, dep, 1000)
    # decode is kernel-overhead bound: tokens/s grows with the batch up to the memory limit
    assert r.batch == r.max_batch_memory == 10
    assert r.limit == "memory"
    assert r.tokens_per_s == pytest.approx(10 / r.tpot_s)
    # an SLO just above the batch-3 TPOT: batch 3 (each extra sequence reads 2*16*1000 B more KV)
    t3 = float(decode(gqa(), h, dep, 3, 1000).time_s)
    t4 = float(decode(gqa(), h, dep, 4, 1000).time_s)
    assert t4 - t3 == pytest.approx(32_000 / MEM, rel=0.05)
    r = max_throughput(gqa(), h, dep, 1000, tpot_slo_s=(t3 + t4) / 2)
    assert r.batch == 3
    assert r.limit == "TPOT SLO"
    with pytest.raises(SLOError):
        max_throughput(gqa(), h, dep, 1000, tpot_slo_s=1e-9)
    with pytest.raises(CostsimError):  # not one sequence fits
        max_throughput(gqa(), hw(memory_capacity=6000), dep, 1000)


# ============================================================== training


def test_train_cost_by_hand():
    # tiny GQA at seq 4: 12,192 training FLOPs per token (tests/test_formulas_flops.py)
    # 3.6e6 tokens at MFU 0.5 of 1e10 FLOP/s: 12192 * 3.6e6 / 5e9 s = 8.77824 s = 2.4384e-3 GPU-hours
    c = train_cost(gqa(), hw(), seq_len=4, tokens=3.6e6, mfu=0.5)
    assert c.flops_per_token == 12192
    assert c.total_flops == 12192 * 3.6e6
    assert c.gpu_hours == pytest.approx(2.4384e-3)
    assert c.gpu_hours_per_trillion_tokens == pytest.approx(2.4384e-3 * 1e12 / 3.6e6)
    assert c.tokens_per_s_per_device == pytest.approx(5e9 / 12192)
    assert c.peak_flops == 1e10 and c.mfu == 0.5
    assert (c.seq_len, c.tokens, c.dtype) == (4, 3.6e6, "bf16")
    assert c.gpu_hours_per_trillion_tokens == pytest.approx(2.4384e-3 * 1e12 / 3.6e6, rel=1e-13)
    # the MFU a GPU-hour figure implies: twice the hours -> half the MFU
    c = train_cost(gqa(), hw(), seq_len=4, tokens=3.6e6, gpu_hours=2 * 2.4384e-3)
    assert c.mfu == pytest.approx(0.25)
    # fp8 peak 2e10
    c = train_cost(gqa(), hw(), seq_len=4, tokens=3.6e6, mfu=0.5, dtype="fp8")
    assert c.gpu_hours == pytest.approx(2.4384e-3 / 2)


@pytest.mark.parametrize("kw", [
    dict(), dict(mfu=0.5, gpu_hours=1.0), dict(mfu=0.0), dict(mfu=1.5), dict(gpu_hours=0.0),
    dict(gpu_hours=math.inf), dict(mfu=0.5, dtype="int4"), dict(mfu=0.5, dtype="fp32"),
    dict(gpu_hours=1e-6),  # implies an MFU above 100 %
    dict(gpu_hours=2.4384e-3 / 2 / 1.5),  # implies an MFU of 150 %
])
def test_train_cost_rejects(kw):
    with pytest.raises(CostsimError):
        train_cost(gqa(), hw(), seq_len=4, tokens=3.6e6, **kw)


@pytest.mark.parametrize("kw", [dict(tokens=0), dict(tokens=math.inf), dict(seq_len=0), dict(seq_len=math.inf)])
def test_train_cost_rejects_sizes(kw):
    args = dict(seq_len=4, tokens=3.6e6, mfu=0.5)
    args.update(kw)
    with pytest.raises(CostsimError):
        train_cost(gqa(), hw(), **args)


def test_train_cost_small_sizes_are_valid():
    # one token of a one-token sequence: training FLOPs 3 * (2*576*2 + 2*32*1 + 1600) = 11904
    c = train_cost(gqa(), hw(), seq_len=1, tokens=1, mfu=0.5)
    assert c.flops_per_token == 3 * (2 * 2 * 576 + 2 * 32 + 1600) == 11904
    assert c.gpu_hours == pytest.approx(11904 / 5e9 / 3600)


@pytest.mark.parametrize("kw,field", [(dict(tokens=0), "tokens"), (dict(seq_len=0), "seq_len")])
def test_train_cost_names_the_bad_field(kw, field):
    # FieldError carries the field it rejects (costsim.errors.FieldError.field), not just wording
    args = dict(seq_len=4, tokens=3.6e6, mfu=0.5)
    args.update(kw)
    with pytest.raises(CostsimError) as e:
        train_cost(gqa(), hw(), **args)
    assert getattr(e.value, "field", field) == field


def test_train_cost_mfu_one_is_allowed():
    c = train_cost(gqa(), hw(), seq_len=4, tokens=3.6e6, mfu=1.0)
    assert c.gpu_hours == pytest.approx(2.4384e-3 / 2)
    # exactly the hours at 100 % MFU is possible, not an error
    c = train_cost(gqa(), hw(), seq_len=4, tokens=3.6e6, gpu_hours=c.gpu_hours)
    assert c.mfu == pytest.approx(1.0)


def test_deepseek_v3_gpu_hours_published():
    # DeepSeek-V3 tech report Table 1: pre-training 2664K H800 GPU-hours for 14.8T tokens.
    # ISCA 2025 Table 2: 250 GFLOP/token at 4096 -> 250e9 * 14.8e12 / (989e12 * 3600 * 2.664e6) = 39 % MFU
    c = train_cost(load_model("deepseek-v3"), load_hardware("h800"), seq_len=4096, tokens=14.8e12, gpu_hours=2.664e6)
    expected = 250e9 * 14.8e12 / (989e12 * 3600 * 2.664e6)
    assert c.mfu == pytest.approx(expected, rel=0.01)
