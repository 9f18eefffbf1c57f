"""Independent expected values for parameter counts and the KV cache.

Every expected number below is derived by hand in the test (arithmetic written out, with the
source of the shape: HF module shapes, DeepSeek-V2/V3 papers, FlashMLA layout), or is a
published figure. None calls the engine's own formula to make its expected value.

Tiny hand-made specs keep the arithmetic short:
- GQA: vocab 100, hidden 8, 2 layers, 4 query heads / 2 KV heads of dim 2, gated FFN 16.
- MLA: hidden 16, 2 heads, d'_c 4, d_c 6, d_h^R 2, d_h (nope) 3, d_h^v 5, gated FFN 12.
- MoE: hidden 8, 3 layers (layer 0 dense 12), 4 routed experts top-2 of size 4, 1 shared.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from costsim.errors import CostsimError
from costsim.registry import load_model
from costsim.simulator.kv import (
    cached_tokens,
    kv_bytes_per_token,
    kv_bytes_per_token_per_layer,
    kv_cache_bytes,
    kv_elements_per_token,
    kv_elements_per_token_per_layer,
    kv_heads_per_device,
)
from costsim.simulator.params import attention_params, ffn_matrix_params, layer_params, param_counts
from costsim.specs import ModelSpec
from costsim.units import FORMATS, NumberFormat

BF16 = FORMATS["bf16"]


def gqa(**kw):
    attn = dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2)
    attn.update(kw.pop("attention", {}))
    ffn = dict(kind="dense", intermediate_size=16)
    ffn.update(kw.pop("ffn", {}))
    d = dict(name="tiny-gqa", source="hand-made test spec", vocab_size=100, hidden_size=8,
             num_hidden_layers=2, attention=attn, ffn=ffn)
    d.update(kw)
    return ModelSpec.model_validate(d)


def mla(**kw):
    attn = dict(kind="mla", num_attention_heads=2, q_lora_rank=4, kv_lora_rank=6, qk_rope_head_dim=2,
                qk_nope_head_dim=3, v_head_dim=5)
    attn.update(kw.pop("attention", {}))
    d = dict(name="tiny-mla", source="hand-made test spec", vocab_size=50, hidden_size=16,
             num_hidden_layers=2, attention=attn, ffn=dict(kind="dense", intermediate_size=12))
    d.update(kw)
    return ModelSpec.model_validate(d)


def moe(**kw):
    ffn = dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=4,
               n_shared_experts=1, first_k_dense_replace=1, dense_intermediate_size=12)
    ffn.update(kw.pop("ffn", {}))
    d = dict(name="tiny-moe", source="hand-made test spec", vocab_size=100, hidden_size=8,
             num_hidden_layers=3, attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2),
             ffn=ffn)
    d.update(kw)
    return ModelSpec.model_validate(d)


# ============================================================== parameters


def test_gqa_attention_params_by_module_shape():
    # HF LlamaAttention: q_proj [h, nh*d] = 8*8 = 64, k_proj and v_proj [h, nkv*d] = 8*4 = 32 each,
    # o_proj [nh*d, h] = 64  ->  64 + 32 + 32 + 64 = 192
    assert attention_params(gqa()) == 192


@pytest.mark.parametrize("flags,extra", [
    # Qwen2 q/k/v biases: nh*d + 2*nkv*d = 8 + 4 + 4 = 16
    (dict(qkv_bias=True), 16),
    # gpt-oss o_proj bias: h = 8
    (dict(o_bias=True), 8),
    # Qwen3 q_norm and k_norm: RMSNorm(head_dim) each = 2 + 2 = 4
    (dict(qk_norm=True), 4),
    # gpt-oss sinks: one logit per query head = 4
    (dict(sinks=True), 4),
    (dict(qkv_bias=True, o_bias=True, qk_norm=True, sinks=True), 16 + 8 + 4 + 4),
])
def test_gqa_attention_extras(flags, extra):
    assert attention_params(gqa(attention=flags)) == 192 + extra


def test_mla_attention_params_by_module_shape():
    # HF DeepseekV2Attention (DeepSeek-V2 §2.1.2-2.1.3):
    # q_a_proj W^DQ [16 x 4] = 64, q_a_layernorm 4, q_b_proj W^UQ|W^QR [4 x 2*(3+2)] = 40  -> 108
    # kv_a_proj_with_mqa W^DKV|W^KR [16 x (6+2)] = 128, kv_a_layernorm 6,
    # kv_b_proj W^UK|W^UV [6 x 2*(3+5)] = 96                                            -> 230
    # o_proj W^O [2*5 x 16] = 160
    assert attention_params(mla()) == 108 + 230 + 160


def test_mla_attention_params_without_q_compression():
    # DeepSeek-V2-Lite style: q_proj [16 x 2*(3+2)] = 160 instead of the 108 of the q LoRA
    assert attention_params(mla(attention=dict(q_lora_rank=None))) == 160 + 230 + 160


def test_deepseek_v2_attention_params_per_layer():
    # DeepSeek-V2 (arXiv 2405.04434 §3.1.2): h 5120, 128 heads, d'_c 1536, d_c 512, d_h 128,
    # d_h^R 64, d_h^v 128
    q = 5120 * 1536 + 1536 + 1536 * 128 * (128 + 64)
    kv = 5120 * (512 + 64) + 512 + 512 * 128 * (128 + 128)
    o = 128 * 128 * 5120
    assert q + kv + o == 149_227_520
    assert attention_params(load_model("deepseek-v2")) == 149_227_520


@pytest.mark.parametrize("gated,bias,expected", [
    (True, False, 3 * 8 * 16),  # SwiGLU gate, up, down: 3 matrices of 8x16 = 384
    (False, False, 2 * 8 * 16),  # up, down: 256
    (True, True, 3 * 8 * 16 + 16 + 16 + 8),  # + gate bias 16, up bias 16, down bias 8 = 424
    (False, True, 2 * 8 * 16 + 16 + 8),  # + up bias 16, down bias 8 = 280
])
def test_ffn_matrix_params(gated, bias, expected):
    assert ffn_matrix_params(8, 16, gated, bias) == expected


def test_dense_gqa_param_counts():
    p = param_counts(gqa())
    # per layer: attention 192 + FFN 3*8*16 = 384 + two RMSNorms 2*8 = 16
    assert p.attention == 2 * 192
    assert p.dense_ffn == 2 * 384
    assert p.norms == 2 * 16 + 8  # + final norm
    assert p.embedding == 100 * 8 == 800
    assert p.lm_head == 800
    assert p.routed_experts == p.routed_experts_active == p.shared_experts == p.router == p.mtp == 0
    assert p.total == 800 + 800 + 384 + 768 + 40 == 2792
    # active: LM head matmul 800 + attention 384 + FFN 768 + norms 40 (input embedding excluded)
    assert p.active == 1992
    assert p.active_incl_embedding == 2792
    assert p.matmul_active == 1992 - 40


def test_layernorm_has_weight_and_bias():
    # LayerNorm(h) = weight + bias = 16 per norm, 2 per layer + final
    p = param_counts(gqa(norm="layernorm"))
    assert p.norms == 2 * 2 * 16 + 16 == 80


def test_tied_embeddings_counted_once_but_multiplied_twice():
    p = param_counts(gqa(tie_word_embeddings=True))
    assert p.lm_head == 0
    assert p.total == 2792 - 800
    assert p.active == 1992  # the LM-head matmul still multiplies with the (tied) 800 weights
    assert p.active_incl_embedding == 1992  # the tied table counts once
    assert p.matmul_active == 1992 - 40


def test_non_gated_biased_dense_ffn_in_totals():
    p = param_counts(gqa(ffn=dict(gated=False, bias=True)))
    assert p.dense_ffn == 2 * (2 * 8 * 16 + 16 + 8)  # 560


def test_moe_layer_params_and_totals():
    s = moe()
    # one expert (SwiGLU) = 3*8*4 = 96
    lp = layer_params(s, True)
    assert lp == dict(attention=192, norms=16, dense_ffn=0, routed=4 * 96, routed_active=2 * 96,
                      shared=96, router=8 * 4)
    dense = layer_params(s, False)
    assert dense == dict(attention=192, norms=16, dense_ffn=3 * 8 * 12, routed=0, routed_active=0,
                         shared=0, router=0)
    p = param_counts(s)
    # layer 0 dense (first_k_dense_replace = 1), layers 1 and 2 MoE
    assert p.dense_ffn == 288
    assert p.routed_experts == 2 * 384
    assert p.routed_experts_active == 2 * 192
    assert p.shared_experts == 2 * 96
    assert p.router == 2 * 32
    assert p.attention == 3 * 192
    assert p.norms == 3 * 16 + 8
    total = 800 + 800 + 576 + 288 + 768 + 192 + 64 + 56
    assert p.total == total == 3544
    # active: 2 of 4 experts -> 384 fewer routed weights than stored; input embedding excluded
    assert p.active == total - 800 - 384 == 2360


def test_moe_layer_freq_and_bias_options():
    # moe_layer_freq 2 with first_k_dense_replace 0: layers 0 and 2 MoE, layer 1 dense
    s = moe(ffn=dict(first_k_dense_replace=0, moe_layer_freq=2, expert_bias=True, router_bias=True,
                     shared_expert_intermediate_size=6))
    assert [s.is_moe_layer(i) for i in range(3)] == [True, False, True]
    lp = layer_params(s, True)
    # expert with biases: 96 + gate 4 + up 4 + down 8 = 112; shared of size 6: 3*8*6 + 6 + 6 + 8 = 164
    assert lp["routed"] == 4 * 112
    assert lp["routed_active"] == 2 * 112
    assert lp["shared"] == 164
    assert lp["router"] == 8 * 4 + 4  # + router bias per expert


def test_mtp_module_params():
    # DeepSeek-V3 §2.2: MTP module = 2 RMSNorms (h each) + projection M [2h -> h] + one
    # transformer block (MoE layer here) + the module's final norm; embedding/head shared.
    s = moe(num_nextn_predict_layers=1)
    block = 192 + 16 + 384 + 96 + 32  # attention + 2 norms + routed + shared + router = 720
    assert param_counts(s).mtp == 2 * 8 + 2 * 8 * 8 + block + 8 == 872
    assert param_counts(moe(num_nextn_predict_layers=2)).mtp == 2 * 872
    # not in total / active
    assert param_counts(s).total == param_counts(moe()).total


def test_mtp_module_of_a_dense_model():
    # the MTP block of a dense model is a dense layer: attention 192 + norms 16 + FFN 384 = 592
    assert param_counts(gqa(num_nextn_predict_layers=1)).mtp == 2 * 8 + 2 * 8 * 8 + 592 + 8 == 744


def test_as_dict_has_every_count():
    d = param_counts(moe()).as_dict()
    assert d["total"] == 3544 and d["active"] == 2360 and d["active_incl_embedding"] == 3160
    assert d["embedding"] == 800 and d["routed_experts"] == 768 and d["router"] == 64 and d["mtp"] == 0


def test_published_deepseek_v2_totals():
    # DeepSeek-V2 abstract: 236B total, 21B activated per token
    p = param_counts(load_model("deepseek-v2"))
    assert p.total == pytest.approx(236e9, rel=0.01)
    assert p.active == pytest.approx(21e9, rel=0.01)


# ============================================================== KV cache


def test_kv_elements_per_token_table1():
    # DeepSeek-V2 Table 1: GQA 2*n_g*d_h per layer = 2*2*2 = 8; MLA d_c + d_h^R = 6 + 2 = 8
    assert kv_elements_per_token_per_layer(gqa()) == 8
    assert kv_elements_per_token_per_layer(gqa(attention=dict(num_key_value_heads=1, kind="mqa"))) == 4
    assert kv_elements_per_token_per_layer(mla(attention=dict(kv_lora_rank=10))) == 12
    assert kv_elements_per_token(gqa(num_hidden_layers=3)) == 24
    # DeepSeek-V2 (512 + 64) * 60 = 34,560 (README / paper Table 1)
    assert kv_elements_per_token(load_model("deepseek-v2")) == (512 + 64) * 60 == 34_560


def test_kv_bytes_bf16_and_fp8():
    # bf16: 8 elements * 2 B = 16 B per layer, 2 layers -> 32 B
    assert kv_bytes_per_token_per_layer(gqa(), BF16) == 16
    assert kv_bytes_per_token(gqa(), BF16) == 32
    assert kv_bytes_per_token(gqa(), FORMATS["fp8"]) == 16
    # ISCA 2025 (arXiv 2505.09343) Table 1: DeepSeek-V3 BF16 KV per token 70.272 KB = 576*2*61
    assert kv_bytes_per_token(load_model("deepseek-v3"), BF16) == 576 * 2 * 61 == 70_272


def test_block_scales_are_per_head_vector():
    # int4-g32: each K or V head vector of 2 elements = 1 B payload + one 2-B scale = 3 B;
    # 2 KV heads * (K + V) = 4 vectors -> 12 B per layer (not 8*0.5 + 2 = 6 B over the layer)
    assert kv_bytes_per_token_per_layer(gqa(), FORMATS["int4-g32"]) == 12
    # head_dim 64: 32 B payload + 2 scales * 2 B = 36 B per vector, 4 vectors -> 144 B
    assert kv_bytes_per_token_per_layer(gqa(attention=dict(head_dim=64)), FORMATS["int4-g32"]) == 144


def test_flashmla_fp8_layout():
    # FlashMLA FP8 cache: 512 fp8 latent (512 B) + 512/128 = 4 fp32 scales (16 B) + 64 bf16
    # RoPE key (128 B) = 656 B/token/layer
    assert kv_bytes_per_token_per_layer(load_model("deepseek-v3"), FORMATS["flashmla-fp8"]) == 512 + 16 + 128 == 656
    # tiny MLA: latent 6 B + ceil(6/128) = 1 scale (4 B) + rope 2 * 2 B = 14 B
    assert kv_bytes_per_token_per_layer(mla(), FORMATS["flashmla-fp8"]) == 14
    # a custom layout with a 1-byte rope key: 6 + 4 + 2 = 12 B
    fmt = NumberFormat("x", 8, group_size=128, scale_bits=32, rope_bits=8)
    assert kv_bytes_per_token_per_layer(mla(), fmt) == 12
    # MLA in a plain format: (6 + 2) elements, int4-g32: 4 B + 1 scale of 2 B = 6 B
    assert kv_bytes_per_token_per_layer(mla(), FORMATS["int4-g32"]) == 6


def test_mla_layout_on_gqa_is_an_error():
    with pytest.raises(CostsimError):
        kv_bytes_per_token_per_layer(gqa(), FORMATS["flashmla-fp8"])


@pytest.mark.parametrize("tp,heads", [(1, 2), (2, 1), (4, 1), (8, 1)])
def test_kv_heads_per_device(tp, heads):
    # 2 KV heads: TP 2 -> one each; TP 4, 8 -> every rank still holds (a replica of) one head
    assert kv_heads_per_device(gqa(attention=dict(num_attention_heads=8)), tp) == heads


def test_kv_heads_per_device_defaults_and_type():
    s = gqa(attention=dict(num_attention_heads=8))
    assert kv_heads_per_device(s) == 2  # TP defaults to 1
    # a head count, not 4.0 (8 KV heads over TP 2)
    assert type(kv_heads_per_device(gqa(attention=dict(num_attention_heads=8, num_key_value_heads=8, kind="mha")), 2)) is int


def test_ffn_matrix_params_default_has_no_bias():
    assert ffn_matrix_params(8, 16, True) == 384


def test_kv_heads_per_device_eight_heads():
    s = gqa(attention=dict(num_attention_heads=8, num_key_value_heads=8, kind="mha"))
    assert [kv_heads_per_device(s, t) for t in (1, 2, 4, 8)] == [8, 4, 2, 1]


@pytest.mark.parametrize("tp", [3, 5, 6])
def test_kv_heads_tp_neither_divides(tp):
    s = gqa(attention=dict(num_attention_heads=12, num_key_value_heads=4))
    with pytest.raises(CostsimError):
        kv_heads_per_device(s, tp)


def test_kv_bytes_under_tp():
    s = gqa(attention=dict(num_attention_heads=8))
    # TP 2: one KV head per device = 2 * 2 elements * 2 B = 8 B per layer
    assert kv_bytes_per_token_per_layer(s, BF16, tp=2) == 8
    # TP 4 > 2 KV heads: replicated, still one head = 8 B (not 4 B)
    assert kv_bytes_per_token_per_layer(s, BF16, tp=4) == 8
    # MLA latent is not split by TP: (6 + 2) * 2 B = 16 B on every rank
    assert kv_bytes_per_token_per_layer(mla(), BF16, tp=2) == 16
    assert kv_heads_per_device(mla(), 2) == 1
    assert kv_bytes_per_token(mla(), BF16, tp=2) == 32


def test_cached_tokens_rounds_to_blocks():
    assert cached_tokens(10, 4) == 12  # ceil(10/4) = 3 blocks of 4
    assert cached_tokens(12, 4) == 12
    assert cached_tokens(10) == 10
    assert list(cached_tokens(np.array([1, 16, 17]), 16)) == [16, 16, 32]


def test_kv_cache_bytes_windows_blocks_batch():
    s = gqa(sliding_window=dict(window=4, layers=[0]))
    # 16 B per token per layer (bf16); layer 1 full, layer 0 holds min(context, 4) tokens
    assert kv_cache_bytes(s, BF16, 10, 3) == 16 * (10 + 4) * 3 == 672
    assert kv_cache_bytes(s, BF16, 3, 1) == 16 * (3 + 3)
    # paged blocks of 4, per layer: ceil(10/4)*4 = 12 and 4 -> 16 tokens
    assert kv_cache_bytes(s, BF16, 10, 3, block_size=4) == 16 * 16 * 3 == 768
    # context 5 in blocks of 3: full ceil(5/3)*3 = 6, window min(5,4)=4 -> ceil(4/3)*3 = 6
    assert kv_cache_bytes(s, BF16, 5, 1, block_size=3) == 16 * 12
    # no window: 2 layers * 16 B * 10 tokens * 2 sequences
    assert kv_cache_bytes(gqa(), BF16, 10, 2) == 640
    assert kv_cache_bytes(gqa(), BF16, 10) == 320  # batch defaults to one sequence
    # duplicated window layer indices count once
    s2 = gqa(sliding_window=dict(window=4, layers=[0, 0]))
    assert kv_cache_bytes(s2, BF16, 10, 1) == 16 * 14
    assert isinstance(kv_cache_bytes(gqa(), BF16, 10, 2), float)


def test_kv_cache_bytes_tp_and_arrays():
    s = gqa(attention=dict(num_attention_heads=8))
    assert kv_cache_bytes(s, BF16, 10, 1, tp=2) == 8 * 2 * 10
    out = kv_cache_bytes(gqa(), BF16, np.array([1, 2, 3]), 1)
    assert list(out) == [32, 64, 96]


def test_kv_cache_bytes_rejects_negative():
    with pytest.raises(CostsimError):
        kv_cache_bytes(gqa(), BF16, -1, 1)
    with pytest.raises(CostsimError):
        kv_cache_bytes(gqa(), BF16, 1, -1)
    assert kv_cache_bytes(gqa(), BF16, 0, 0) == 0


def test_v2_kv_cache_gb_batch_64():
    # README claim: V2 at batch 64 x 4096 tokens in bf16 = 34,560 * 2 B * 4096 * 64 = 18.12 GB
    expected = 34_560 * 2 * 4096 * 64
    assert math.isclose(kv_cache_bytes(load_model("deepseek-v2"), BF16, 4096, 64), expected)
