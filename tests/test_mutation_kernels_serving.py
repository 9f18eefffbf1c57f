"""Independent expected values for the kernel predictions (costsim.simulator.kernels), the serve
record's bookkeeping, the MLA crossover search, the rate provenance and PerfRecord.to_dict.

Profile and tiny specs as in tests/test_formulas_roofline_parallel.py: 5e8 B/s and 5e9 FLOP/s
achievable (bf16), 1 us per kernel; every operator below is memory-bound (intensity < 10
FLOP/B), so a kernel's time is bytes / 5e8 + 1 us per operator. Bytes are derived by hand
from the module shapes (weights N*K, activations M*K in and M*N out, 2 B each in bf16).
"""

from __future__ import annotations

import numpy as np
import pytest

from costsim.errors import CostsimError, FieldError
from costsim.simulator import kernels
from costsim.simulator.deployment import Deployment
from costsim.simulator.roofline import rate_provenance, time_step
from costsim.simulator.scenario import Scenario, perf
from costsim.simulator.serving import SLOError, max_throughput, mla_crossover, serve
from costsim.simulator.types import StepShape
from costsim.specs import ModelSpec

import tiny  # the hand-made spec and profile (tests/tiny.py)

MEM, OVH = 5e8, 1e-6


def hw(**kw):
    """tests/tiny.py's profile with an fp32 peak of 5e9 FLOP/s added."""
    return tiny.hw(**{"peak_flops": dict(bf16=1e10, fp8=2e10, fp32=5e9), **kw})


gqa = tiny.gqa


def moe(**ffn):
    f = dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=4, n_shared_experts=1,
             first_k_dense_replace=1, dense_intermediate_size=12)
    f.update(ffn)
    return ModelSpec.model_validate(dict(
        name="tiny-moe", source="hand-made test spec", vocab_size=100, hidden_size=8, num_hidden_layers=3,
        attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2), ffn=f))


def mla():
    return ModelSpec.model_validate(dict(
        name="tiny-mla", source="hand-made test spec", vocab_size=50, hidden_size=16, num_hidden_layers=2,
        attention=dict(kind="mla", num_attention_heads=2, q_lora_rank=4, kv_lora_rank=6, qk_rope_head_dim=2,
                       qk_nope_head_dim=3, v_head_dim=5),
        ffn=dict(kind="dense", intermediate_size=12)))


# ============================================================== kernels.attention


def test_attention_kernel_tp2_by_hand():
    # TP 2: per device 2 q heads, 1 kv head of dim 2; batch 1 at context 9 (10 keys)
    #   qkv [1x8]x[8x8]: flops 2*8*8 = 128; bytes 64*2 + 8*2 + 8*2 = 160
    #   core: flops 4 * 2 heads * 2 dim * 10 pairs = 160; read KV 10 * (1*2*2*2 = 8 B) + q 4*2 = 88,
    #         write KV 8 + out 8 = 16 -> 104
    #   o [1x4]x[4x8]: flops 2*8*4 = 64; bytes 32*2 + 4*2 + 8*2 = 88
    p = kernels.attention(gqa(), hw(), batch=1, context=9, tp=2)
    assert p.operators == ("attn.qkv_proj", "attn.core", "attn.o_proj") and p.kernel == "attention"
    assert p.flops == 128 + 160 + 64
    assert p.bytes == 160 + 104 + 88
    assert p.time_s == pytest.approx(352 / MEM + 3 * OVH)
    # fp8 KV cache: 4 B per token per device -> core reads 10*4 + 8, writes 4 + 8
    p = kernels.attention(gqa(), hw(), batch=1, context=9, tp=2, kv_dtype="fp8")
    assert p.bytes == 160 + (48 + 12) + 88
    # a window of 4 keys: pairs 4 -> core flops 64, reads 4*8 + 8, writes 16
    p = kernels.attention(gqa(), hw(), batch=1, context=9, tp=2, window=4)
    assert p.flops == 128 + 64 + 64 and p.bytes == 160 + 56 + 88
    # context 0 (prefill of one token) is valid: 1 pair; core reads 8 + 8, writes 16
    p = kernels.attention(gqa(), hw(), batch=1, context=0, tp=2)
    assert p.bytes == 160 + 32 + 88


def test_attention_kernel_fp32_activations():
    # fp32 weights -> fp32 activations (4 B); TP 1, batch 1, context 0, bf16 KV (16 B per token):
    #   qkv [1x8]x[8x16]: 128*4 + 8*4 + 16*4 = 608; core: read KV 16 + q 8*4, write 16 + 8*4 -> 96
    #   o [1x8]x[8x8]: 64*4 + 32 + 32 = 320
    p = kernels.attention(gqa(), hw(), batch=1, context=0, weight_dtype="fp32")
    assert p.bytes == 608 + 96 + 320


def test_attention_kernel_mla_forms_differ():
    # tiny MLA (2 heads, d_c 6, d_r 2, d_n 3, d_v 5), one token at context 0 (1 pair):
    #   absorbed core FLOPs: 2*2*(6+2) + 2*2*6 = 56; naive core: 2*2*(3+2) + 2*2*5 = 40
    a = kernels.attention(mla(), hw(), batch=1, context=0, form="absorbed")
    n = kernels.attention(mla(), hw(), batch=1, context=0, form="naive")
    assert "attn.core(latent)" in a.operators and "attn.q_absorb(W_UK)" in a.operators
    assert "attn.core(mha)" in n.operators and "attn.kv_b_proj(decompress)" in n.operators
    core_a = 56
    core_n = 40
    # absorbed: q_a 2*4*16 = 128, q_b 2*10*4 = 80, kv_a 2*8*16 = 256, q_absorb 2*2*6*3 = 72,
    #           o_absorb 2*2*5*6 = 120, o 2*16*10 = 320
    assert a.flops == 128 + 80 + 256 + 72 + core_a + 120 + 320
    # naive: q_a 128, q_b 80, kv_a 256, kv_b (1 cached token) 2*16*6 = 192, o 320
    assert n.flops == 128 + 80 + 256 + 192 + core_n + 320


@pytest.mark.parametrize("kw,field", [
    (dict(batch=0), "batch"), (dict(new_tokens=0), "new_tokens"), (dict(context=-1), "context"),
    (dict(context=np.inf), "context"), (dict(weight_dtype="bf17"), "weight_dtype"),
    (dict(kv_dtype="bf17"), "kv_dtype"), (dict(form="fused"), "form"),
])
def test_attention_kernel_names_the_bad_argument(kw, field):
    args = dict(batch=1, context=9)
    args.update(kw)
    with pytest.raises(FieldError) as e:
        kernels.attention(gqa(), hw(), **args)
    assert e.value.field == field


# ============================================================== kernels.moe / dense_ffn / gemm


def test_moe_kernel_ep2_by_hand():
    # EP 2 on 2 devices (TP 1, 2 attention DP ranks): 4 tokens -> 2 per rank (router, shared);
    # routed: 4 tokens * top-2 / 2 ranks = 4 token-expert pairs on a rank; distinct experts
    # 4 * (1 - (1 - 2/4)^4) / 2 = 1.875 of the rank's 2
    #   router [2x8]x[8x4]: 128 FLOPs; 32*2 + 2*8*2 + 2*4*2 = 112 B
    #   shared gate_up [2x8]x[8x8]: 256; 128 + 32 + 32 = 192; down [2x4]x[4x8]: 128; 64 + 16 + 32 = 112
    #   experts gate_up N 8, K 8: 2*4*8*8 = 512; 1.875*128 + 4*8*2 + 4*8*2 = 368
    #   experts down N 8, K 4: 2*4*8*4 = 256; 1.875*64 + 4*4*2 + 4*8*2 = 216
    #   permute: read the rank's 2 routed tokens + write its 4 pairs, then back: 2 x (2 + 4) x 8 x 2 = 192
    p = kernels.moe(moe(), hw(), tokens=4, ep=2)
    assert p.kernel == "moe"
    assert p.operators == ("moe.router", "moe.shared.gate_up_proj", "moe.shared.down_proj", "moe.permute",
                           "moe.experts.gate_up_proj", "moe.experts.down_proj")
    assert p.flops == 128 + 256 + 128 + 512 + 256
    assert p.bytes == pytest.approx(112 + 192 + 112 + 192 + 368 + 216)
    assert p.time_s == pytest.approx(1192 / MEM + 6 * OVH)
    # every rank given all 4 tokens (TP attention, aiconfigurator's collector): the permute reads
    # and writes 4 tokens: 2 x (4 + 4) x 8 x 2 = 256 B
    q = kernels.moe(moe(), hw(), tokens=4, ep=2, routed_tokens=4)
    assert q.bytes == pytest.approx(p.bytes - 192 + 256)


def test_moe_kernel_fp32_router_and_activations():
    # fp32 weights: router, weights and activations all 4 B; 1 token, EP 1: 2 pairs on 2 experts
    #   router 32*4 + 8*4 + 4*4 = 176; shared gate_up 64*4 + 32 + 32 = 320; down 32*4 + 16 + 32 = 176
    #   experts gate_up 2*64*4 + 2*8*4 + 2*8*4 = 640; down 2*32*4 + 2*4*4 + 2*8*4 = 352
    #   permute 2 x (1 token + 2 pairs) x 8 x 4 = 192 B
    p = kernels.moe(moe(), hw(), tokens=1, weight_dtype="fp32")
    assert p.bytes == pytest.approx(176 + 320 + 176 + 192 + 640 + 352)
    assert p.time_s == pytest.approx(1856 / MEM + 6 * OVH)


def test_moe_and_dense_ffn_kernel_arguments():
    with pytest.raises(FieldError) as e:
        kernels.moe(moe(), hw(), tokens=0)
    assert e.value.field == "tokens"
    with pytest.raises(FieldError) as e:
        kernels.dense_ffn(moe(), hw(), tokens=1.5)
    assert e.value.field == "tokens"
    with pytest.raises(FieldError) as e:  # an MoE model without dense layers
        kernels.dense_ffn(moe(first_k_dense_replace=0, dense_intermediate_size=None), hw(), tokens=1)
    assert e.value.field == "model"


def test_dense_ffn_kernel_by_hand():
    # the dense layer of the MoE model (intermediate 12), 2 tokens:
    #   gate_up [2x8]x[8x24]: 768 FLOPs; 192*2 + 32 + 96 = 512 B; act: 96 + 48 = 144; down [2x12]x[12x8]:
    #   384 FLOPs; 96*2 + 48 + 32 = 272 B
    p = kernels.dense_ffn(moe(), hw(), tokens=2)
    assert p.kernel == "dense_ffn" and p.operators == ("ffn.gate_up_proj", "ffn.act", "ffn.down_proj")
    assert p.flops == 768 + 384 and p.bytes == 512 + 144 + 272
    assert p.time_s == pytest.approx(928 / MEM + 3 * OVH)
    # TP 2 on the dense model, 1 token: 304 + 48 + 160 B (tests/test_formulas_roofline_parallel.py)
    p = kernels.dense_ffn(gqa(), hw(), tokens=1, tp=2)
    assert p.bytes == 304 + 48 + 160


def test_gemm_kernel_by_hand():
    # [1x8]x[8x4] bf16: 64 FLOPs; 32*2 + 8*2 + 4*2 = 88 B; fp32: 32*4 + 32 + 16 = 176 B
    p = kernels.gemm(hw(), 1, 4, 8)
    assert p.kernel == "gemm" and p.operators == ("gemm",)
    assert p.flops == 64 and p.bytes == 88 and p.time_s == pytest.approx(88 / MEM + OVH)
    assert kernels.gemm(hw(), 1, 4, 8, "fp32").bytes == 176
    for kw, field in ((dict(m=0), "m"), (dict(n=0), "n"), (dict(k=0), "k")):
        args = dict(m=1, n=4, k=8)
        args.update(kw)
        with pytest.raises(FieldError) as e:
            kernels.gemm(hw(), **args)
        assert e.value.field == field
    with pytest.raises(FieldError) as e:
        kernels.gemm(hw(), 1, 4, 8, "bf17")
    assert e.value.field == "dtype"
    with pytest.raises(FieldError) as e:  # a format whose peak the profile lacks
        kernels.gemm(hw(peak_flops=dict(bf16=1e10)), 1, 4, 8, "fp8")
    assert e.value.field == "dtype"


# ============================================================== serve bookkeeping


def test_serve_record_fields_and_prefill_fit_boundary():
    # batch 1, prompt 4, 2 output tokens on one device (weights 2792 * 2 = 5584 B)
    #   KV at 4 + 2 = 6 tokens: 6 * 32 B = 192; prompt KV 4 * 32 = 128
    #   prefill workspace: the largest operator's activations, ffn.act 4*32*2 + 4*16*2 = 384, plus
    #   FP32 logits of the last token 100 * 4 = 400 -> 784
    #   prefill needs 5584 + 128 + 784 = 6496 B
    dep = Deployment(gpu_memory_utilization=1.0)
    r = serve(gqa(), hw(memory_capacity=6496), dep, 1, 4, 2)
    assert (r.batch, r.input_len, r.output_len, r.devices, r.devices_per_node) == (1, 4, 2, 1, 2)
    assert r.prefill_workspace_bytes == 784
    assert float(r.memory.kv_bytes) == 192
    assert r.prefill_fits is True
    assert r.prefill_chunk_tokens is None
    # one byte less: the one-step prefill no longer fits, so it is chunked: 3 tokens per chunk
    # (ffn.act 3 * (32 + 16) * 2 = 288 + logits 400 = 688 B; 4 tokens would need 784)
    r = serve(gqa(), hw(memory_capacity=6495), dep, 1, 4, 2)
    assert (r.prefill_fits, r.prefill_chunk_tokens, r.prefill_workspace_bytes) == (True, 3, 688)
    # chunks of 1 or 2 tokens need 616 B (their largest operator is not the FFN's), so below
    # 5584 + 128 + 616 = 6328 B nothing fits, and at 6328 B the largest chunk is 2 tokens
    from costsim.simulator.serving import prefill_workspace

    assert [float(prefill_workspace(gqa(), dep, 1, c, 4)) for c in (1, 2, 3, 4)] == [616, 616, 688, 784]
    r = serve(gqa(), hw(memory_capacity=6327), dep, 1, 4, 2)
    assert (r.prefill_fits, r.prefill_chunk_tokens) == (False, None)
    assert serve(gqa(), hw(memory_capacity=6328), dep, 1, 4, 2).prefill_chunk_tokens == 2


def test_serve_prefill_workspace_per_micro_batch():
    # pp 2, batch 4: micro-batches of 2 prompts of 4 tokens; ffn.act 8 tokens * (32 + 16) * 2 = 768,
    # logits of 2 sequences 2 * 100 * 4 = 800 -> 1568
    r = serve(gqa(), hw(), Deployment(devices=2, pp=2), 4, 4, 1)
    assert r.prefill_workspace_bytes == 768 + 800


def test_serve_without_output_tokens():
    # output 0: no decode time; TPOT reported as the step at the prompt's context (4)
    r = serve(gqa(), hw(), Deployment(), 1, 4, 0)
    tpot4 = (5304 + 32 * (4 - 9)) / MEM + 16 * OVH
    ttft = 7704 / MEM + 16 * OVH
    assert r.tpot_s == pytest.approx(tpot4) and r.tpot_last_s == pytest.approx(tpot4)
    assert r.decode_tokens_per_s == 0.0 and r.combined_tokens_per_s == 0.0
    assert r.e2e_s == pytest.approx(ttft)


# ============================================================== SLOError


def test_slo_error_carries_the_field_and_fastest_time():
    tpot9 = 5304 / MEM + 16 * OVH
    with pytest.raises(SLOError) as e:
        max_throughput(gqa(), hw(), Deployment(), 9, tpot_slo_s=1e-6)
    assert e.value.field == "tpot_slo_s" and e.value.value == 1e-6
    assert e.value.fastest_s == pytest.approx(tpot9)


# ============================================================== MLA crossover


def first_naive_win_by_loop(spec, h, dep, batch, context, chunks):
    for s in chunks:
        t = {f: float(time_step(spec, h, dep.with_(mla_form=f), StepShape(batch, s, context, 1)).time_s)
             for f in ("absorbed", "naive")}
        if t["naive"] <= t["absorbed"]:
            return s
    return None


def test_mla_crossover_matches_a_loop_over_chunk_sizes():
    # geomspace(1, 64, 200) rounded holds every integer 1..64, so the search must return the
    # first chunk size a plain loop finds
    spec, h, dep = mla(), hw(), Deployment()
    x = mla_crossover(spec, h, dep, batch=2, context=50, max_tokens=64)
    assert x.chunk_tokens == first_naive_win_by_loop(spec, h, dep, 2, 50, range(1, 65))
    assert (x.context, x.batch) == (50, 2)
    one = {f: float(time_step(spec, h, dep.with_(mla_form=f), StepShape(2, 1, 50, 1)).time_s)
           for f in ("absorbed", "naive")}
    assert x.decode_absorbed_s == pytest.approx(one["absorbed"])
    assert x.decode_naive_s == pytest.approx(one["naive"])
    # a search capped at 1 token (decode only) finds no crossover when naive decode is slower
    assert one["naive"] > one["absorbed"]
    assert mla_crossover(spec, h, dep, batch=2, context=50, max_tokens=1).chunk_tokens is None
    with pytest.raises(CostsimError):
        mla_crossover(gqa(), h, dep, batch=1, context=1)


# ============================================================== rate provenance


def test_rate_provenance_keys_values_and_sources():
    h = hw(efficiency=dict(compute=dict(value=0.5, provenance="measured", source="bench A"), memory=0.5,
                           intra_node=0.5, inter_node=0.25, kernel_overhead=1e-6,
                           families=dict(gemm=dict(m_half=dict(value=64, provenance="calibrated", source="fit B")),
                                         elementwise=dict(memory=0.75))))
    r = rate_provenance(h, "bf16")
    assert set(r) == {"peak_flops.bf16", "memory_bandwidth", "efficiency.compute", "efficiency.memory",
                      "efficiency.kernel_overhead", "intra_node_bandwidth", "efficiency.intra_node",
                      "inter_node_bandwidth", "efficiency.inter_node", "intra_node_latency", "inter_node_latency",
                      "efficiency.families.gemm.m_half", "efficiency.families.elementwise.memory"}
    assert r["efficiency.compute"] == dict(value=0.5, provenance="measured", source="bench A")
    assert r["efficiency.families.gemm.m_half"] == dict(value=64, provenance="calibrated", source="fit B")
    assert r["efficiency.families.elementwise.memory"]["value"] == 0.75
    expected = {"memory_bandwidth": 1e9, "efficiency.memory": 0.5, "efficiency.kernel_overhead": 1e-6,
                "intra_node_bandwidth": 1e8, "efficiency.intra_node": 0.5, "inter_node_bandwidth": 1e7,
                "efficiency.inter_node": 0.25, "intra_node_latency": 1e-6, "inter_node_latency": 5e-6}
    for k, v in expected.items():
        assert r[k]["value"] == pytest.approx(v), k
        assert r[k]["provenance"] == "assumed" and isinstance(r[k]["source"], str), k
    # a dtype the profile has no peak for reports the bf16 peak under its own key
    r = rate_provenance(hw(peak_flops=dict(bf16=1e10)), "fp8")
    assert r["peak_flops.fp8"]["value"] == 1e10
    # a missing link is left out
    assert "inter_node_bandwidth" not in rate_provenance(hw(inter_node_bandwidth=None), "bf16")


# ============================================================== PerfRecord.to_dict


def test_perf_record_dict_keys():
    # GQA: no MLA crossover keys, and no operator tables without breakdown
    d = perf(Scenario(gqa(), hw(), Deployment(), batch=1, input_len=4, output_len=2)).to_dict()
    for k in ("mla_naive_faster_from_chunk_tokens", "mla_decode_step_absorbed_s", "prefill_operators",
              "decode_operators"):
        assert k not in d, k
    # 2 output tokens: the prefill's and one decode step at context 4 (5 keys)
    assert d["tpot_s"] == pytest.approx((5304 - 5 * 32) / MEM + 16 * OVH)
    # MLA: the crossover keys are there (the chunk may be None: it is still reported)
    d = perf(Scenario(mla(), hw(), Deployment(), batch=1, input_len=4, output_len=1)).to_dict()
    assert "mla_naive_faster_from_chunk_tokens" in d and "mla_decode_step_absorbed_s" in d
    with pytest.raises(FieldError) as e:
        perf(Scenario(gqa(), hw(), Deployment(), batch=0))
    assert e.value.field == "batch"
