"""Per-family time models (costsim.simulator.efficiency), each checked against a value worked
out by hand in the test on a round-number profile."""

import numpy as np
import pytest

from costsim.simulator.efficiency import gemm_shape_efficiency, operator_terms, rates
from costsim.simulator.types import Family, LayerType, OpGroup, OpKind, Operator
from costsim.specs import HardwareProfile


def profile(**families) -> HardwareProfile:
    """1e12 FLOP/s bf16, 1e11 B/s; profile-wide compute 0.5, memory 0.8, 1 us per launch."""
    return HardwareProfile.model_validate(dict(
        name="round", source="test", peak_flops={"bf16": 1e12}, memory_capacity="80GB", memory_bandwidth=1e11,
        efficiency=dict(compute=0.5, memory=0.8, intra_node=1.0, inter_node=1.0, kernel_overhead="1us",
                        families=families)))


def gemm(M, N, K, kind=OpKind.GEMM, **shape):
    flops = 2.0 * M * N * K
    return Operator(name="g", kind=kind, group=OpGroup.FFN, layer=LayerType.DENSE, count=1, flops=flops,
                    bytes_read=2.0 * (N * K + M * K), bytes_written=2.0 * M * N, dtype="bf16",
                    shape=dict(M=M, N=N, K=K, **shape))


def test_families_fall_back_to_the_profile_wide_factors():
    r = rates(profile(), Family.GEMM)
    assert (r.compute, r.memory, r.overhead_s, r.m_half, r.per_group_overhead_s) == (0.5, 0.8, 1e-6, 0.0, 0.0)
    r = rates(profile(gemm=dict(compute=0.9, overhead="4us")), Family.GEMM)
    assert (r.compute, r.memory, r.overhead_s) == (0.9, 0.8, 4e-6)


def test_large_gemm_is_compute_bound_by_hand():
    # 4096^3: 2 x 4096^3 = 1.374e11 FLOPs at 1e12 x 0.5 = 0.2749 s; bytes 3 x 2 x 4096^2 = 1.007e8
    # at 0.8e11 B/s = 1.26 ms; time = 0.27488 s + 1 us
    t = operator_terms(gemm(4096, 4096, 4096), profile())
    assert float(t.compute_s) == pytest.approx(2 * 4096**3 / 0.5e12, rel=1e-12)
    assert float(t.memory_s) == pytest.approx(6 * 4096**2 / 0.8e11, rel=1e-12)
    assert float(t.time_s) == pytest.approx(2 * 4096**3 / 0.5e12 + 1e-6, rel=1e-12)


def test_small_m_gemm_compute_efficiency_halves_at_m_half():
    hw = profile(gemm=dict(m_half=64))
    # M = 64 = m_half: efficiency 0.5 x 64 / (64 + 64) = 0.25
    t = operator_terms(gemm(64, 8192, 8192), hw)
    assert float(t.compute_s) == pytest.approx(2 * 64 * 8192 * 8192 / (1e12 * 0.25), rel=1e-12)
    # M = 192: 192 / 256 = 0.75 of 0.5
    assert float(gemm_shape_efficiency(rates(hw, Family.GEMM), 192, 8192)) == pytest.approx(0.75)
    # M = 1 is a matrix-vector product: no small-M penalty (1 / 65 would make it compute-bound)
    assert float(gemm_shape_efficiency(rates(hw, Family.GEMM), 1, 8192)) == 1.0


def test_tile_and_wave_quantisation_by_hand():
    hw = profile(gemm=dict(tile_m=128, tile_n=128, units=4))
    r = rates(hw, Family.GEMM)
    # M = 200, N = 256: tiles 2 x 2 = 4, one full wave of 4 units; padding 200*256 / (256*256) = 0.78125
    assert float(gemm_shape_efficiency(r, 200, 256)) == pytest.approx(200 * 256 / (256 * 256))
    # M = 129, N = 640: 2 x 5 = 10 tiles -> 3 waves of 4 (12 slots): 10/12; padding 129*640/(256*640)
    assert float(gemm_shape_efficiency(r, 129, 640)) == pytest.approx(129 / 256 * 10 / 12)


def test_tile_parameters_go_together():
    with pytest.raises(ValueError, match="go together"):
        profile(gemm=dict(tile_m=128))


def test_grouped_gemm_pays_per_busy_expert():
    hw = profile(grouped_gemm=dict(per_group_overhead="2us", m_half=16))
    # 8 busy experts, 16 rows each (M = 128 pairs): overhead 1 us + 8 x 2 us = 17 us;
    # compute at 0.5 x 16 / (16 + 16) = 0.25 of peak
    op = gemm(128, 1024, 2048, kind=OpKind.GROUPED_GEMM, groups=8.0, tokens_per_expert=16.0)
    t = operator_terms(op, hw)
    assert float(t.extra_s) == pytest.approx(17e-6)
    assert float(t.compute_s) == pytest.approx(2 * 128 * 1024 * 2048 / 0.25e12, rel=1e-12)


def attention(q_len, scores, flops=0.0, nbytes=8e6):
    return Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                    flops=flops, bytes_read=nbytes, dtype="bf16", shape=dict(q_len=q_len, scores=scores))


def test_attention_decode_and_prefill_have_their_own_parameters():
    hw = profile(attention_decode=dict(memory=0.5, per_element="1ns"),
                 attention_prefill=dict(compute=0.25, overhead="10us"))
    # decode: 8e6 B at 0.5 x 1e11 = 160 us; 1e5 scores x 1 ns = 100 us; + 1 us
    d = operator_terms(attention(1, 1e5), hw)
    assert float(d.time_s) == pytest.approx(160e-6 + 100e-6 + 1e-6, rel=1e-12)
    # prefill: 1e9 FLOPs at 0.25 x 1e12 = 4 ms > 8e6 B at 0.8e11 = 100 us; no per-element term; + 10 us
    p = operator_terms(attention(512, 1e5, flops=1e9), hw)
    assert float(p.time_s) == pytest.approx(4e-3 + 10e-6, rel=1e-12)
    # an array of query lengths splits per element
    both = operator_terms(attention(np.array([1.0, 512.0]), 1e5, flops=np.array([0.0, 1e9])), hw)
    assert np.allclose(both.time_s, [261e-6, 4.01e-3], rtol=1e-12)


def test_operator_family_follows_kind_and_query_length():
    assert attention(1, 0).family is Family.ATTENTION_DECODE
    assert attention(2, 0).family is Family.ATTENTION_PREFILL
    assert gemm(1, 1, 1).family is Family.GEMM
    assert gemm(1, 1, 1, kind=OpKind.GROUPED_GEMM).family is Family.GROUPED_GEMM


def test_elementwise_is_bytes_over_bandwidth_plus_launch():
    hw = profile(elementwise=dict(memory=0.4, overhead="2us"))
    op = Operator(name="e", kind=OpKind.ELEMENTWISE, group=OpGroup.FFN, layer=LayerType.DENSE, count=1,
                  bytes_read=4e6, bytes_written=4e6, dtype="")
    # 8e6 B at 0.4 x 1e11 = 200 us + 2 us
    assert float(operator_terms(op, hw).time_s) == pytest.approx(202e-6, rel=1e-12)


def test_gemv_rows_extends_the_matrix_vector_regime():
    hw = profile(gemm=dict(m_half=32, gemv_rows=3))
    r = rates(hw, Family.GEMM)
    assert r.gemv_rows == 3.0 and rates(profile(gemm=dict(m_half=32)), Family.GEMM).gemv_rows == 1.0
    # M = 3 <= gemv_rows: streams its weights, no m_half penalty; M = 4: 4 / (4 + 32) = 1/9 of 0.5
    assert float(gemm_shape_efficiency(r, 3, 4096)) == 1.0
    assert float(gemm_shape_efficiency(r, 4, 4096)) == pytest.approx(4 / 36)
    # M = 3, 4096 x 4096: memory 2 x (4096^2 + 3 x 4096 + 3 x 4096) B at 0.8e11 B/s = 420.1 us beats
    # compute 2 x 3 x 4096^2 / 0.5e12 = 201 us; time = memory + 1 us
    t = operator_terms(gemm(3, 4096, 4096), hw)
    assert float(t.time_s) == pytest.approx(2 * (4096**2 + 6 * 4096) / 0.8e11 + 1e-6, rel=1e-12)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="gemv_rows"):
            profile(gemm=dict(gemv_rows=bad))


def test_group_reread_charges_the_kv_per_further_query_head():
    hw = profile(attention_decode=dict(memory=0.5, group_reread=0.25))
    # group of 16 query heads per KV head, 4e6 B of KV read of 8e6 B moved:
    # (8e6 + 4e6 x 0.25 x 15) B = 2.3e7 B at 0.5 x 1e11 B/s = 460 us, + 1 us launch
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=8e6, dtype="bf16", shape=dict(q_len=1, scores=0.0, group=16.0, kv_read=4e6))
    assert float(operator_terms(op, hw).time_s) == pytest.approx(460e-6 + 1e-6, rel=1e-12)
    # an MHA core (group 1) and a profile without the field pay nothing extra: 8e6 / 0.5e11 = 160 us
    mha = Operator(**{**op.__dict__, "shape": dict(q_len=1, scores=0.0, group=1.0, kv_read=4e6)})
    assert float(operator_terms(mha, hw).time_s) == pytest.approx(161e-6, rel=1e-12)
    assert float(operator_terms(op, profile(attention_decode=dict(memory=0.5))).time_s) == pytest.approx(161e-6)
    with pytest.raises(ValueError):
        profile(attention_prefill=dict(group_reread=0.5))  # a decode-kernel parameter only
    # 0 (a kernel that loads a KV head once per group, as GPU ones do) is a valid value, and a
    # fit that ends on its lower bound writes a profile that loads; above 1 is refused
    assert float(operator_terms(op, profile(attention_decode=dict(memory=0.5, group_reread=0.0))).time_s) == \
        pytest.approx(161e-6)
    with pytest.raises(ValueError, match="share from 0 to 1"):
        profile(attention_decode=dict(group_reread=1.5))


def test_split_decode_row_adds_one_chunk_streamed_by_one_block():
    # FlashDecoding / TensorRT-LLM multi-block decode: a row's cache in chunks of split_tokens,
    # the step waits for one chunk at split_memory of the bandwidth (specs.KernelFamily)
    hw = profile(attention_decode=dict(memory=0.5, split_tokens=1024, split_memory=0.01))
    shape = dict(q_len=1, scores=0.0, kv_len=16384.0, row_bytes=512.0)  # one KV head, d 128, BF16 K+V
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=8e6, dtype="bf16", shape=shape)
    # 8e6 B at 0.5 x 1e11 = 160 us; one chunk: 1024 x 512 B at 0.01 x 1e11 = 524.288 us; + 1 us
    assert float(operator_terms(op, hw).time_s) == pytest.approx(160e-6 + 524.288e-6 + 1e-6, rel=1e-12)
    # a row shorter than a chunk is one chunk of its own length: 100 x 512 B / 1e9 B/s = 51.2 us
    short = Operator(**{**op.__dict__, "shape": {**shape, "kv_len": 100.0}})
    assert float(operator_terms(short, hw).time_s) == pytest.approx(160e-6 + 51.2e-6 + 1e-6, rel=1e-12)
    # without split_memory (every profile before the fit) no chunk term; prefill never has one
    assert float(operator_terms(op, profile(attention_decode=dict(memory=0.5))).time_s) == pytest.approx(161e-6)
    pre = Operator(**{**op.__dict__, "shape": {**shape, "q_len": 512}})
    assert float(operator_terms(pre, hw).time_s) == pytest.approx(8e6 / 0.8e11 + 1e-6, rel=1e-12)
    with pytest.raises(ValueError):
        profile(attention_prefill=dict(split_memory=0.01))  # a decode-kernel parameter only


def test_engine_decode_core_carries_the_row_of_its_kv_head():
    # Llama-3.1-8B decode core (meta-llama/Llama-3.1-8B config.json: num_key_value_heads 8,
    # head_dim 128): 8 KV heads x 128 x 2 (K, V) x 2 B = 4,096 B per token per layer,
    # so a (sequence, KV head) row is 512 B per token; kv_len = context + the new token
    from costsim.registry import load_hardware, load_model
    from costsim.simulator.kernels import attention_core_operators

    (core,) = attention_core_operators(load_model("llama-3.1-8b"), load_hardware("h100"), 4, 1023)
    assert core.shape["row_bytes"] == 512.0 and float(core.shape["kv_len"]) == 1024.0
    (mla,) = attention_core_operators(load_model("deepseek-v3"), load_hardware("h100"), 4, 1023)
    # one latent row per sequence: d_c + d_h^R = 512 + 64 (deepseek-ai/DeepSeek-V3 config.json
    # kv_lora_rank, qk_rope_head_dim), BF16
    assert mla.shape["row_bytes"] == (512 + 64) * 2


def test_fp8_expert_gemms_have_their_own_families_falling_back_to_grouped_gemm():
    fp8 = Operator(name="g", kind=OpKind.GROUPED_GEMM, group=OpGroup.FFN, layer=LayerType.MOE, count=1,
                   flops=2.0 * 128 * 1024 * 2048, bytes_read=2048.0 * 1024, dtype="fp8",
                   shape=dict(M=128, N=1024, K=2048, groups=8.0, tokens_per_expert=16.0, format="fp8"))
    block = Operator(**{**fp8.__dict__, "shape": {**fp8.shape, "format": "fp8-block"}})
    assert (fp8.family, block.family) == (Family.GROUPED_GEMM_FP8, Family.GROUPED_GEMM_FP8_BLOCK)
    # DeepSeek-V3's checkpoint format fp8-b128 is the same 128 x 128 block scaling (units.FORMATS)
    b128 = Operator(**{**fp8.__dict__, "shape": {**fp8.shape, "format": "fp8-b128"}})
    assert b128.family is Family.GROUPED_GEMM_FP8_BLOCK
    assert gemm(4, 8, 8, format="fp8-b128").family is Family.GEMM  # a BF16-compute op stays BF16
    g = Operator(**{**gemm(4, 8, 8, format="fp8-b128").__dict__, "dtype": "fp8"})
    assert g.family is Family.GEMM_FP8_BLOCK
    hw = profile(grouped_gemm=dict(compute=0.4, overhead="3us"), grouped_gemm_fp8=dict(compute=0.2))
    hw = HardwareProfile.model_validate({**hw.model_dump(mode="json", exclude_none=True),
                                         "peak_flops": {"bf16": 1e12, "fp8": 2e12}})
    # fp8: its own compute 0.2 of the 2e12 fp8 peak, grouped_gemm's 3 us launch; block: fp8's
    r = rates(hw, Family.GROUPED_GEMM_FP8_BLOCK)
    assert (r.compute, r.overhead_s) == (0.2, 3e-6)
    t = operator_terms(block, hw)
    assert float(t.compute_s) == pytest.approx(2.0 * 128 * 1024 * 2048 / (2e12 * 0.2), rel=1e-12)
    # per_slot_overhead: every expert slot on the rank, busy or not: 1 us + 8 busy x 0 + 64 slots
    # x 0.1 us = 7.4 us (an operator without a ``slots`` shape pays none)
    slotted = profile(grouped_gemm=dict(per_slot_overhead="0.1us"))
    op = gemm(128, 1024, 2048, kind=OpKind.GROUPED_GEMM, groups=8.0, tokens_per_expert=16.0, slots=64.0)
    assert float(operator_terms(op, slotted).extra_s) == pytest.approx(7.4e-6, rel=1e-12)
    assert float(operator_terms(gemm(128, 1024, 2048, kind=OpKind.GROUPED_GEMM, groups=8.0, tokens_per_expert=16.0),
                                slotted).extra_s) == pytest.approx(1e-6, rel=1e-12)
    # MXFP4 experts (W4A16: BF16 compute) have their own family, falling back to grouped_gemm
    mx = Operator(**{**fp8.__dict__, "dtype": "bf16", "shape": {**fp8.shape, "format": "mxfp4"}})
    assert mx.family is Family.GROUPED_GEMM_MXFP4
    assert rates(hw, Family.GROUPED_GEMM_MXFP4).compute == 0.4
    # a BF16 expert GEMM stays in grouped_gemm
    bf = Operator(**{**fp8.__dict__, "dtype": "bf16", "shape": {**fp8.shape, "format": "bf16"}})
    assert bf.family is Family.GROUPED_GEMM


def test_engine_expert_gemm_carries_the_slots_of_its_rank():
    # DeepSeek-V3 on EP32 with 32 redundant experts: (256 + 32) / 32 = 9 slots per rank (the Day-6
    # prefill layout: "each GPU holds 9 routed experts"); without redundancy 256 / 32 = 8
    from costsim.registry import load_hardware, load_model
    from costsim.simulator.kernels import moe_operators

    spec, hw = load_model("deepseek-v3"), load_hardware("h800")
    ops = {o.name: o for o in moe_operators(spec, hw, 64, ep=32)}
    assert ops["moe.experts.gate_up_proj"].shape["slots"] == 8.0


def test_split_tokens_is_a_token_count():
    for bad in (0.5, 2.0**41):
        with pytest.raises(ValueError, match="split_tokens"):
            profile(attention_decode=dict(split_tokens=bad, split_memory=0.01))


def test_one_token_on_an_empty_cache_is_a_prefill():
    # a decode step has one query per sequence over a cache (kv_len > 1); a one-token prompt on an
    # empty cache (kv_len = q_len = 1) runs the context kernel (aiconfigurator's context tables
    # have isl = 1 rows, timed by TensorRT-LLM's context FMHA)
    hw = profile(attention_decode=dict(memory=0.5), attention_prefill=dict(memory=0.25, overhead="10us"))
    first = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                     flops=0.0, bytes_read=8e6, dtype="bf16", shape=dict(q_len=1, kv_len=1.0))
    step = Operator(**{**first.__dict__, "shape": dict(q_len=1, kv_len=2.0)})
    assert (first.family, step.family) == (Family.ATTENTION_PREFILL, Family.ATTENTION_DECODE)
    # prefill: 8e6 B at 0.25 x 1e11 = 320 us + 10 us; decode: 8e6 B at 0.5 x 1e11 = 160 us + 1 us
    assert float(operator_terms(first, hw).time_s) == pytest.approx(330e-6, rel=1e-12)
    assert float(operator_terms(step, hw).time_s) == pytest.approx(161e-6, rel=1e-12)
    # without kv_len (an operator that gives none) the query length alone decides, as before
    bare = Operator(**{**first.__dict__, "shape": dict(q_len=1)})
    assert bare.family is Family.ATTENTION_DECODE


def test_grouped_decode_kernel_rows_cost_per_row_group():
    # TensorRT-LLM's decode tables (H200, BF16 KV, context <= 31, batch >= 512): a GQA kernel's
    # (sequence, KV head) row costs 36-60 ns at groups 2-32, an MHA row 11-18 ns: per_row_group
    # prices a row of a grouped kernel (group > 1), per_row the others
    hw = profile(attention_decode=dict(memory=0.5, per_row="10ns", per_row_group="40ns", group_limit=32,
                                       group_compute=0.01))
    shape = dict(q_len=1, scores=0.0, rows=8192.0, decode_rows=1024.0, group=8.0, kv_read=0.0)
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=5e6, dtype="bf16", shape=shape)
    # 5e6 B at 0.5 x 1e11 = 100 us; 1,024 KV rows x 40 ns = 40.96 us; + 1 us
    assert float(operator_terms(op, hw).time_s) == pytest.approx(100e-6 + 40.96e-6 + 1e-6, rel=1e-12)
    # MHA (group 1): its 1,024 rows at per_row, 10.24 us
    mha = Operator(**{**op.__dict__, "shape": {**shape, "rows": 1024.0, "group": 1.0}})
    assert float(operator_terms(mha, hw).time_s) == pytest.approx(100e-6 + 10.24e-6 + 1e-6, rel=1e-12)
    # a group beyond group_limit falls back to the per-query-head kernel: 8,192 query rows at
    # per_row = 81.92 us (and its compute at group_compute; no FLOPs here)
    big = Operator(**{**op.__dict__, "shape": {**shape, "group": 64.0}})
    assert float(operator_terms(big, hw).time_s) == pytest.approx(100e-6 + 81.92e-6 + 1e-6, rel=1e-12)
    # without per_row_group every row is per_row (profiles before the field)
    plain = profile(attention_decode=dict(memory=0.5, per_row="10ns"))
    assert float(operator_terms(op, plain).time_s) == pytest.approx(100e-6 + 10.24e-6 + 1e-6, rel=1e-12)
    with pytest.raises(ValueError):
        profile(attention_prefill=dict(per_row_group="40ns"))  # a decode-kernel parameter only


def test_fp8_kv_grouped_decode_has_its_own_family_falling_back_to_attention_decode():
    # an 8-bit KV cache under a grouped kernel runs TensorRT-LLM's FP8 XQA path (a 5.4 us floor
    # against 8.4 us in BF16, H200 tables): attention_decode_fp8, absent fields attention_decode's
    shape = dict(q_len=1, scores=0.0, rows=64.0, decode_rows=8.0, group=8.0, kv_read=0.0, kv8=True)
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=1e6, dtype="bf16", shape=shape)
    assert op.family is Family.ATTENTION_DECODE_FP8
    hw = profile(attention_decode=dict(memory=0.5, overhead="8us"), attention_decode_fp8=dict(overhead="5us"))
    # 1e6 B at attention_decode's 0.5 x 1e11 = 20 us, + the fp8 family's 5 us
    assert float(operator_terms(op, hw).time_s) == pytest.approx(25e-6, rel=1e-12)
    bf16 = Operator(**{**op.__dict__, "shape": {**shape, "kv8": False}})
    assert bf16.family is Family.ATTENTION_DECODE and float(operator_terms(bf16, hw).time_s) == pytest.approx(28e-6)
    # an MHA decode (group 1) over the 8-bit cache keeps attention_decode (the tables: its times
    # equal the BF16 ones); a prefill over it takes attention_prefill_fp8, an MLA prefill
    # attention_mla_prefill_fp8, each falling back to its BF16 family
    mha = Operator(**{**op.__dict__, "shape": {**shape, "group": 1.0}})
    assert mha.family is Family.ATTENTION_DECODE
    pre = Operator(**{**op.__dict__, "shape": {**shape, "q_len": 64}})
    assert pre.family is Family.ATTENTION_PREFILL_FP8
    mla = Operator(**{**op.__dict__, "shape": dict(q_len=64, rows=64.0, mla=True, kv_len=64.0, kv8=True)})
    assert mla.family is Family.ATTENTION_MLA_PREFILL_FP8
    hw = profile(attention_prefill=dict(memory=0.5, overhead="8us"), attention_prefill_fp8=dict(overhead="5us"))
    assert float(operator_terms(pre, hw).time_s) == pytest.approx(25e-6, rel=1e-12)
    assert float(operator_terms(Operator(**{**pre.__dict__, "shape": {**pre.shape, "kv8": False}}), hw).time_s) == \
        pytest.approx(28e-6, rel=1e-12)


def test_engine_marks_the_fp8_decode_family_only_under_a_grouped_kernel():
    # Llama-3.1-8B (meta-llama config.json: 32 query / 8 KV heads) with an fp8 cache: the fp8
    # decode family; an MHA model's fp8 decode (DeepSeek-LLM-7B, 30 layers of 32 / 32 heads)
    # times as the BF16 kernels do in the tables (8/8 heads d128 at batch 1024: 92 vs 99 us):
    # attention_decode
    from costsim.api import LayoutRequest, load_hardware, resolve_deployment
    from costsim.registry import load_model
    from costsim.simulator.operators import attention_operators
    from costsim.simulator.types import StepShape

    h100 = load_hardware("h100")
    for name, kv, fam in (("llama-3.1-8b", "fp8", Family.ATTENTION_DECODE_FP8),
                          ("llama-3.1-8b", "bf16", Family.ATTENTION_DECODE),
                          ("deepseek-llm-7b", "fp8", Family.ATTENTION_DECODE)):
        spec = load_model(name)
        dep = resolve_deployment(spec, h100, LayoutRequest(devices=1, kv_dtype=kv), 1, 1024)
        ops = attention_operators(spec, dep, StepShape(4, 1, 1023, 1), 1, None, "absorbed", "", LayerType.DENSE)
        (c,) = [o for o in ops if o.kind is OpKind.ATTENTION]
        assert c.family is fam, (name, kv)


def test_prefill_kernel_pays_per_block_of_q_tile_queries():
    # a context kernel runs one block per (sequence, query head, q_tile queries): TensorRT-LLM's
    # tables (H200, 32 heads) charge a one-token prefill 0.7 us per sequence at batch 256
    hw = profile(attention_prefill=dict(memory=0.5, per_tile="20ns", q_tile=64))
    # 4 sequences x 100 queries x 8 heads = 3,200 rows; ceil(100 / 64) = 2 tiles per (sequence, head)
    shape = dict(q_len=100.0, scores=0.0, rows=3200.0, kv_len=100.0)
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=5e6, dtype="bf16", shape=shape)
    # 5e6 B at 0.5 x 1e11 = 100 us; 4 x 8 x 2 = 64 blocks x 20 ns = 1.28 us; + 1 us
    assert float(operator_terms(op, hw).time_s) == pytest.approx(100e-6 + 1.28e-6 + 1e-6, rel=1e-12)
    # one query per sequence on an empty cache (a prefill): 32 blocks
    one = Operator(**{**op.__dict__, "shape": dict(q_len=1.0, scores=0.0, rows=32.0, kv_len=1.0)})
    assert float(operator_terms(one, hw).time_s) == pytest.approx(100e-6 + 0.64e-6 + 1e-6, rel=1e-12)
    # q_tile defaults to 64; a decode step never pays it; decode kernels refuse the field
    assert rates(profile(attention_prefill=dict(per_tile="20ns")), Family.ATTENTION_PREFILL).q_tile == 64
    dec = Operator(**{**op.__dict__, "shape": dict(q_len=1.0, scores=0.0, rows=32.0, kv_len=100.0)})
    assert float(operator_terms(dec, hw).time_s) == pytest.approx(5e6 / 0.8e11 + 1e-6, rel=1e-12)
    for bad in (dict(attention_decode=dict(per_tile="20ns")), dict(attention_prefill=dict(q_tile=0.5))):
        with pytest.raises(ValueError):
            profile(**bad)


def test_gemm_pays_its_k_loop_up_to_k_split():
    # a GEMM of few output tiles waits for one block's serial loop over K: per_k per reduction
    # element, held at k_split by split-K (the H200 tables at M = 8, N = 32: 2.5 us at K = 32,
    # 5.3 us at K = 2,048, ~5.7 us from 3,072 to 16,384)
    hw = profile(gemm=dict(per_k="1ns", k_split=2048, overhead="2us"))
    small = gemm(8, 32, 1024)  # 8 x 32 x 1024: 0.5 MFLOP, 82 kB: both terms under 1 us
    c, m = 2 * 8 * 32 * 1024 / 0.5e12, (2.0 * (32 * 1024 + 8 * 1024) + 2.0 * 8 * 32) / 0.8e11
    assert float(operator_terms(small, hw).time_s) == pytest.approx(max(c, m) + 2e-6 + 1024e-9, rel=1e-12)
    big_k = gemm(8, 32, 16384)  # the loop is held at 2,048 elements: + 2.048 us
    c, m = 2 * 8 * 32 * 16384 / 0.5e12, (2.0 * (32 * 16384 + 8 * 16384) + 2.0 * 8 * 32) / 0.8e11
    assert float(operator_terms(big_k, hw).time_s) == pytest.approx(max(c, m) + 2e-6 + 2048e-9, rel=1e-12)
    # without k_split the whole loop; without per_k none (every profile before the field)
    assert float(operator_terms(big_k, profile(gemm=dict(per_k="1ns", overhead="2us"))).time_s) == \
        pytest.approx(max(c, m) + 2e-6 + 16384e-9, rel=1e-12)
    assert float(operator_terms(big_k, profile(gemm=dict(overhead="2us"))).time_s) == pytest.approx(max(c, m) + 2e-6)
    # gemm_fp8 falls back to gemm's; attention refuses the fields; k_split is a length
    assert rates(hw, Family.GEMM_FP8).per_k_s == 1e-9
    for bad in (dict(attention_prefill=dict(per_k="1ns")), dict(gemm=dict(k_split=0.5))):
        with pytest.raises(ValueError):
            profile(**bad)


def test_gemm_overlap_p_blends_compute_and_memory():
    # (c^p + m^p)^(1/p) instead of max(c, m): 8192 x 8192 x 256 on the round profile: c = 2 x
    # 8192^2 x 256 / 0.5e12 = 68.72 ms, m = 2 x (8192 x 256 x 2 + 8192^2) B / 0.8e11 = 1.7826 ms
    op = gemm(8192, 8192, 256)
    c, m = 2.0 * 8192 * 8192 * 256 / 0.5e12, 2.0 * (8192 * 256 * 2 + 8192 * 8192) / 0.8e11
    for p in (1.0, 2.0):
        hw = profile(gemm=dict(overlap_p=p))
        assert float(operator_terms(op, hw).time_s) == pytest.approx((c ** p + m ** p) ** (1 / p) + 1e-6, rel=1e-12)
    # p = 1 is the sum (no overlap); without the field the max
    assert float(operator_terms(op, profile()).time_s) == pytest.approx(max(c, m) + 1e-6, rel=1e-12)
    for bad in (dict(gemm=dict(overlap_p=0.5)), dict(attention_prefill=dict(overlap_p=2))):
        with pytest.raises(ValueError):
            profile(**bad)


def test_gemm_epilogue_pays_per_output_for_each_output_element():
    # an output-bound GEMM's epilogue (scale, convert, store each output element) does not hide
    # behind a short K loop: TensorRT-LLM's fp8 block-scale GEMM at K = 128, M = 16,384, N =
    # 65,536 takes 1,372 us (H200 tables), 3.1x the 447 us its 2.1 GB BF16 output takes at the
    # datasheet's 4.8 TB/s; per_output x M x N is added to the roofline (not overlapped)
    op = gemm(8192, 8192, 256)
    c, m = 2.0 * 8192 * 8192 * 256 / 0.5e12, 2.0 * (8192 * 256 * 2 + 8192 * 8192) / 0.8e11
    assert float(operator_terms(op, profile(gemm=dict(per_output=1e-12))).time_s) == \
        pytest.approx(max(c, m) + 1e-6 + 8192 * 8192 * 1e-12, rel=1e-12)
    # gemm_fp8_block's own value: a BF16 GEMM does not pay it (nor any profile before the field)
    hw = profile(gemm_fp8_block=dict(per_output=1e-12))
    assert rates(hw, Family.GEMM_FP8_BLOCK).per_output_s == 1e-12 and rates(hw, Family.GEMM).per_output_s == 0.0
    assert float(operator_terms(op, hw).time_s) == pytest.approx(max(c, m) + 1e-6, rel=1e-12)
    # a grouped GEMM: every expert's output rows (M = token-expert pairs on the rank)
    g = gemm(64, 4096, 2048, kind=OpKind.GROUPED_GEMM, groups=4.0, tokens_per_expert=16.0, slots=8.0)
    base = float(operator_terms(g, profile()).time_s)
    assert float(operator_terms(g, profile(grouped_gemm=dict(per_output=1e-12))).time_s) == \
        pytest.approx(base + 64 * 4096 * 1e-12, rel=1e-12)
    for bad in (dict(attention_decode=dict(per_output=1e-12)), dict(gemm=dict(per_output=2.0))):
        with pytest.raises(ValueError):
            profile(**bad)


def test_grouped_decode_row_pays_per_row_query_for_its_queries():
    # TensorRT-LLM's decode tables (H200, BF16, context <= 7, 2,048 sequences): a grouped row
    # costs 32 / 37 / 52 ns at head_dim 64 / 128 / 256 (group 4): per_row_query x group x head_dim
    hw = profile(attention_decode=dict(memory=0.5, per_row="10ns", per_row_group="20ns", per_row_query="0.01ns",
                                       group_limit=32, group_compute=0.01))
    shape = dict(q_len=1, scores=0.0, rows=8192.0, decode_rows=1024.0, group=8.0, kv_read=0.0, head_dim=128)
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=5e6, dtype="bf16", shape=shape)
    # 100 us of bytes; 1,024 rows x (20 ns + 0.01 ns x 8 x 128 = 10.24 ns) = 30.97 us; + 1 us
    assert float(operator_terms(op, hw).time_s) == pytest.approx(100e-6 + 1024 * 30.24e-9 + 1e-6, rel=1e-12)
    # MHA (group 1) and fallback groups (beyond group_limit) pay no query term
    mha = Operator(**{**op.__dict__, "shape": {**shape, "rows": 1024.0, "group": 1.0}})
    assert float(operator_terms(mha, hw).time_s) == pytest.approx(100e-6 + 10.24e-6 + 1e-6, rel=1e-12)
    big = Operator(**{**op.__dict__, "shape": {**shape, "group": 64.0}})
    assert float(operator_terms(big, hw).time_s) == pytest.approx(100e-6 + 81.92e-6 + 1e-6, rel=1e-12)
    with pytest.raises(ValueError):
        profile(attention_prefill=dict(per_row_query="0.01ns"))  # a decode-kernel parameter only


def test_decode_rows_pay_per_row_tile_and_overlap_the_stream_by_overlap_p():
    # H200 decode tables, 32 query / 8 KV heads, batch 64: a row costs 48 ns up to 127 cached
    # tokens, 100 ns at 255, 132 ns at 511 (per tile of the row's loop over the cache); at batch
    # 256 and 511 tokens the rows' 63 us and the stream's 125 us take 146 us together, not 188
    hw = profile(attention_decode=dict(memory=0.5, per_row="10ns", per_row_tile="5ns", kv_tile=256))
    shape = dict(q_len=1, scores=0.0, rows=1024.0, decode_rows=1024.0, group=1.0, kv_read=0.0, kv_len=1000.0)
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=5e6, dtype="bf16", shape=shape)
    # 100 us of bytes; rows: 1,024 x (10 ns + 5 ns x ceil(1000 / 256) = 4 tiles) = 30.72 us; + 1 us
    rows = 1024 * (10e-9 + 4 * 5e-9)
    assert float(operator_terms(op, hw).time_s) == pytest.approx(100e-6 + rows + 1e-6, rel=1e-12)
    # kv_tile defaults to 256; a short cache (kv_len 2: one cached token and the new one) is one tile
    assert rates(profile(attention_decode=dict(per_row_tile="5ns")), Family.ATTENTION_DECODE).kv_tile == 256
    empty = Operator(**{**op.__dict__, "shape": {**shape, "kv_len": 2.0}})
    assert float(operator_terms(empty, hw).time_s) == pytest.approx(100e-6 + 1024 * 15e-9 + 1e-6, rel=1e-12)
    # overlap_p 2: (100^2 + 30.72^2)^(1/2) us instead of their sum
    hw2 = profile(attention_decode=dict(memory=0.5, per_row="10ns", per_row_tile="5ns", kv_tile=256, overlap_p=2))
    assert float(operator_terms(op, hw2).time_s) == pytest.approx(((100e-6) ** 2 + rows ** 2) ** 0.5 + 1e-6, rel=1e-12)
    # a prefill does not overlap them; the decode fields are refused on prefill; kv_tile is whole
    for bad in (dict(attention_prefill=dict(per_row_tile="5ns")), dict(attention_decode=dict(kv_tile=0.5))):
        with pytest.raises(ValueError):
            profile(**bad)


def test_ungrouped_decode_over_an_8bit_cache_streams_at_kv8_memory():
    # H200 tables at 16k+ tokens: an fp8 MHA cache streams 1.6 TB/s, a BF16 one 3.1 TB/s
    hw = profile(attention_decode=dict(memory=0.5, kv8_memory=0.25))
    shape = dict(q_len=1, scores=0.0, rows=1024.0, decode_rows=1024.0, group=1.0, kv_read=0.0, kv8=True)
    op = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                  flops=0.0, bytes_read=5e6, dtype="bf16", shape=shape)
    # 5e6 B at 0.25 x 1e11 = 200 us, + 1 us; a BF16 cache at memory 0.5: 100 us
    assert float(operator_terms(op, hw).time_s) == pytest.approx(200e-6 + 1e-6, rel=1e-12)
    bf16 = Operator(**{**op.__dict__, "shape": {**shape, "kv8": False}})
    assert float(operator_terms(bf16, hw).time_s) == pytest.approx(100e-6 + 1e-6, rel=1e-12)
    # MLA cores never take it (their own family falls back to attention_decode's fields)
    mla = Operator(**{**op.__dict__, "shape": {**shape, "mla": True}})
    assert float(operator_terms(mla, hw).time_s) == pytest.approx(100e-6 + 1e-6, rel=1e-12)


def test_windowed_decode_splits_the_whole_cache():
    # H200 tables: window-128 rows at batch 1 take 0.95 of the full-context rows' time (the
    # multi-block kernel cuts its chunks from the whole cache); the engine's GQA core carries
    # ctx_len = context + 1 beside kv_len = min(context + 1, window)
    from costsim.registry import load_hardware, load_model
    from costsim.simulator.kernels import attention_core_operators

    spec = load_model("llama-3.1-8b")
    (op,) = attention_core_operators(spec, load_hardware("h200"), 1.0, 16383.0, 1.0, tp=1, window=128)
    assert (float(op.shape["kv_len"]), float(op.shape["ctx_len"]), op.shape["head_dim"]) == (128.0, 16384.0, 128)
    hw = profile(attention_decode=dict(memory=0.5, split_tokens=1024, split_memory=0.01))
    shape = dict(q_len=1, scores=0.0, kv_len=128.0, ctx_len=16384.0, row_bytes=512.0)
    w = Operator(name="a", kind=OpKind.ATTENTION, group=OpGroup.ATTENTION, layer=LayerType.DENSE, count=1,
                 flops=0.0, bytes_read=8e6, dtype="bf16", shape=shape)
    # the chunk is min(16,384, 1,024) tokens x 512 B at 1e9 B/s = 524.288 us, not 128 tokens' 65.5 us
    assert float(operator_terms(w, hw).time_s) == pytest.approx(160e-6 + 524.288e-6 + 1e-6, rel=1e-12)
