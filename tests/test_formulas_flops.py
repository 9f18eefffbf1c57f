"""Independent expected values for FLOP counts.

Convention (the engine's, and Kaplan et al. 2020 §2.1): 2 FLOPs per multiply-add, matmuls and
attention (QK^T and PV) only. Every expected value is written out by hand below from module
shapes (HF Llama / DeepseekV2 attention) or counted by an independent loop; none calls the
engine's formula.

Tiny specs (same as tests/test_formulas_params_kv.py):
- GQA: vocab 100, hidden 8, 2 layers, 4 q heads / 2 kv heads of dim 2, gated FFN 16.
  Matmul weights per layer: attention 192 + FFN 384 = 576; LM head 800.
- MLA: vocab 50, hidden 16, 2 layers, 2 heads, d'_c 4, d_c 6, d_h^R 2, d_h 3, d_h^v 5, FFN 12
  (gated: 3*16*12 = 576 weights per layer); LM head 800.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from costsim.simulator.flops import flops_per_token_decode, forward_flops, prefill_flops, training_flops_per_token
from costsim.simulator.operators import attended_pairs, expected_distinct_experts
from costsim.registry import load_model
from costsim.specs import ModelSpec


def gqa(**kw):
    d = dict(name="tiny-gqa", source="hand-made test spec", vocab_size=100, hidden_size=8, num_hidden_layers=2,
             attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2),
             ffn=dict(kind="dense", intermediate_size=16))
    d.update(kw)
    return ModelSpec.model_validate(d)


def mla(**attn):
    a = dict(kind="mla", num_attention_heads=2, q_lora_rank=4, kv_lora_rank=6, qk_rope_head_dim=2,
             qk_nope_head_dim=3, v_head_dim=5)
    a.update(attn)
    return ModelSpec.model_validate(dict(name="tiny-mla", source="hand-made test spec", vocab_size=50, hidden_size=16,
                                         num_hidden_layers=2, attention=a, ffn=dict(kind="dense", intermediate_size=12)))


def moe():
    return ModelSpec.model_validate(dict(
        name="tiny-moe", source="hand-made test spec", vocab_size=100, hidden_size=8, num_hidden_layers=3,
        attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2),
        ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=4, n_shared_experts=1,
                 first_k_dense_replace=1, dense_intermediate_size=12)))


# ============================================================== attended pairs


def pairs_by_loop(context, new_tokens, window=None):
    """Independent counter: query at absolute position p (1-based) sees keys max(1, p-W+1)..p."""
    n = 0
    for p in range(context + 1, context + new_tokens + 1):
        n += p if window is None else min(p, window)
    return n


@pytest.mark.parametrize("L,s", [(0, 1), (0, 4), (5, 3), (9, 1), (100, 7)])
def test_attended_pairs_causal(L, s):
    assert attended_pairs(L, s) == pairs_by_loop(L, s)


def test_attended_pairs_hand_values():
    # queries at positions 6, 7, 8 after 5 cached tokens: 6 + 7 + 8 = 21 pairs
    assert attended_pairs(5, 3) == 21
    # window 7: min(6,7) + min(7,7) + min(8,7) = 20; window 2: 2 + 2 + 2 = 6
    assert attended_pairs(5, 3, 7) == 20
    assert attended_pairs(5, 3, 2) == 6
    # fresh prompt of 4 with window 2: 1 + 2 + 2 + 2 = 7
    assert attended_pairs(0, 4, 2) == 7


@pytest.mark.parametrize("L,s,W", [(0, 1, 1), (0, 4, 2), (0, 4, 4), (0, 4, 5), (3, 5, 4), (5, 3, 7),
                                   (5, 3, 100), (10, 6, 3), (2, 10, 6)])
def test_attended_pairs_window_matches_loop(L, s, W):
    assert attended_pairs(L, s, W) == pairs_by_loop(L, s, W)


def test_attended_pairs_broadcasts():
    out = attended_pairs(np.array([0, 5]), 3, 7)
    assert list(out) == [pairs_by_loop(0, 3, 7), pairs_by_loop(5, 3, 7)]


# ============================================================== expected distinct experts


def distinct_by_enumeration(E, k, T):
    """Independent counter: average number of distinct experts over every routing of T tokens,
    each to one of the C(E, k) expert sets with equal probability."""
    sets = list(itertools.combinations(range(E), k))
    tot = 0
    for choice in itertools.product(sets, repeat=T):
        tot += len(set().union(*choice)) if T else 0
    return tot / len(sets) ** T


@pytest.mark.parametrize("E,k,T", [(4, 2, 1), (4, 2, 2), (4, 1, 3), (5, 2, 2), (6, 3, 2), (4, 2, 0)])
def test_expected_distinct_experts_matches_enumeration(E, k, T):
    assert expected_distinct_experts(E, k, T) == pytest.approx(distinct_by_enumeration(E, k, T), abs=1e-12)


def test_expected_distinct_experts_hand():
    # E=4, k=2: an expert is missed by one token with probability C(3,2)/C(4,2) = 1/2,
    # so 2 tokens hit 4 * (1 - 1/4) = 3 distinct experts on average; 1 token hits exactly k = 2
    assert expected_distinct_experts(4, 2, 2) == pytest.approx(3.0)
    assert expected_distinct_experts(4, 2, 1) == pytest.approx(2.0)
    assert expected_distinct_experts(4, 2, 0) == 0
    # many tokens hit every expert
    assert expected_distinct_experts(160, 6, 1e6) == pytest.approx(160.0)


# ============================================================== dense GQA


def test_gqa_decode_flops_by_hand():
    # per layer: 2 * 576 matmul weights = 1152, plus attention 4 * n_h * d_h * pairs
    # (QK^T 2*n_h*d_h + PV 2*n_h*d_h per pair) = 4*4*2*(L+1); LM head 2 * 800 = 1600
    L = 9
    expected = 2 * (1152 + 4 * 4 * 2 * (L + 1)) + 1600
    assert expected == 4544
    assert flops_per_token_decode(gqa(), L) == expected
    assert forward_flops(gqa(), batch=3, new_tokens=1, context=L) == 3 * expected


def test_forward_flops_defaults_one_token_no_context():
    # batch 1, one new token, context 0 (one attention pair), logits for that token
    assert forward_flops(gqa()) == 2 * (1152 + 32) + 1600 == 3968
    assert forward_flops(gqa(), batch=2, new_tokens=2, context=3, logit_tokens=1) == (
        2 * (2 * (2 * 2 * 576 + 32 * (3 * 2 + 3))) + 2 * 1600)


def test_gqa_decode_flops_vectorise_over_context():
    out = flops_per_token_decode(gqa(), np.array([0, 9]))
    assert list(out) == [2 * (1152 + 32 * 1) + 1600, 4544]


def test_gqa_prefill_and_training_flops_by_hand():
    s = 4
    # prompt of 4: matmuls 2 * 4 tokens * 576 * 2 layers = 9216; attention pairs 4*5/2 = 10,
    # 32 FLOPs per pair per layer -> 640; LM head for the last token only 1600
    assert prefill_flops(gqa(), s) == 9216 + 640 + 1600 == 11456
    # logits for all 4 tokens: 4 * 1600
    assert prefill_flops(gqa(), s, logits_for_all=True) == 9216 + 640 + 6400
    # training: 3 x forward (backward = 2 x forward), per token
    assert training_flops_per_token(gqa(), s) == 3 * (9216 + 640 + 6400) / 4 == 12192
    # forward_flops default logit_tokens = new_tokens
    assert forward_flops(gqa(), new_tokens=s) == 9216 + 640 + 6400


def test_sliding_window_decode_flops():
    # layer 0 windowed to 4 keys: 32 * 4 = 128 attention FLOPs instead of 32 * 10
    s = gqa(sliding_window=dict(window=4, layers=[0]))
    assert flops_per_token_decode(s, 9) == 2 * 1152 + 32 * 4 + 32 * 10 + 1600 == 4352


def test_non_gated_ffn_flops():
    s = gqa(ffn=dict(kind="dense", intermediate_size=16, gated=False))
    # FFN 2*8*16 = 256 weights -> 512 FLOPs per token per layer
    assert flops_per_token_decode(s, 0) == 2 * (2 * 192 + 512 + 32) + 1600


def test_moe_decode_flops_by_hand():
    # layer 0 dense: attention 2*192 + core 32 (one pair) + FFN 2*3*8*12 = 576
    # MoE layers: attention 384 + 32 + router 2*8*4 = 64 + shared 2*96 = 192 + top-2 experts 2*2*96 = 384
    dense = 384 + 32 + 576
    moe_layer = 384 + 32 + 64 + 192 + 384
    assert flops_per_token_decode(moe(), 0) == dense + 2 * moe_layer + 1600 == 4704


# ============================================================== MLA naive vs absorbed


def test_mla_decode_absorbed_by_hand():
    # DeepSeek-V2 §2.1.2-2.1.3, per token per layer, context L (L+1 keys):
    #   q_a  2*16*4 = 128; q_b 2*4*2*(3+2) = 80; kv_a 2*16*(6+2) = 256
    #   absorb W^UK into q: 2 heads * 2*3*6 = 72; absorb W^UV into o: 2 heads * 2*6*5 = 120
    #   o_proj 2*(2*5)*16 = 320
    #   core over the latent, per head per key: scores 2*(6+2) + values 2*6 = 28 -> 56 per key
    L = 9
    attn = 128 + 80 + 256 + 72 + 120 + 320 + 56 * (L + 1)
    ffn = 2 * 3 * 16 * 12
    assert flops_per_token_decode(mla(), L, form="absorbed") == 2 * (attn + ffn) + 2 * 50 * 16 == 6976


def test_mla_decode_naive_by_hand():
    # naive: decompress every cached key/value each step: kv_b 2*6*2*(3+5) = 192 per key,
    # core per head per key: scores 2*(3+2) + values 2*5 = 20 -> 40 per key
    L = 9
    attn = 128 + 80 + 256 + 320 + (192 + 40) * (L + 1)
    ffn = 1152
    assert flops_per_token_decode(mla(), L, form="naive") == 2 * (attn + ffn) + 1600 == 10112


def test_mla_without_q_lora():
    # q_proj 2*16*2*(3+2) = 320 replaces q_a + q_b (128 + 80)
    L = 0
    attn = 320 + 256 + 72 + 120 + 320 + 56 * (L + 1)
    assert flops_per_token_decode(mla(q_lora_rank=None), L) == 2 * (attn + 1152) + 1600


def test_mla_prefill_naive_vs_absorbed_by_hand():
    # prompt 4 (10 causal pairs), logits for the last token only (1600)
    # projections over 4 tokens: q_a 512, q_b 320, kv_a 1024, o_proj 1280; FFN 4*1152 = 4608
    proj = 512 + 320 + 1024 + 1280
    # naive: kv_b over the 4 prompt tokens 4*192 = 768, core 10 pairs * 40 = 400
    naive = 2 * (proj + 768 + 400 + 4608) + 1600
    # absorbed: absorb 4*(72 + 120) = 768, core 10 * 56 = 560
    absorbed = 2 * (proj + 768 + 560 + 4608) + 1600
    assert prefill_flops(mla(), 4, form="naive") == naive == 19424
    assert prefill_flops(mla(), 4, form="absorbed") == absorbed == 19744
    # the default prefill form is naive (MHA mode for prefill, DeepSeek-V3.2 App. A)
    assert prefill_flops(mla(), 4) == naive
    # training trains the naive form: 3 x (naive forward with 4 logits) / 4
    assert training_flops_per_token(mla(), 4) == 3 * (naive + 3 * 1600) / 4


def test_mla_decode_default_form_is_absorbed():
    assert flops_per_token_decode(mla(), 9) == 6976


# ============================================================== published


@pytest.mark.parametrize("name,gflop", [
    # ISCA 2025 "Insights into DeepSeek-V3" (arXiv 2505.09343) Table 2, training compute per
    # token at sequence length 4096
    ("deepseek-v2", 155), ("deepseek-v3", 250),
])
def test_isca_table2_within_one_percent(name, gflop):
    assert training_flops_per_token(load_model(name), 4096) / 1e9 == pytest.approx(gflop, rel=0.01)


def test_deepseek_v2_decode_linear_part():
    # 2 FLOPs per activated matmul weight: DeepSeek-V2 activates ~21B (abstract); at context 0
    # the attention core adds only 2 * 60 layers * 128 heads * ((512+64) + 512) FLOPs
    core = 2 * 60 * 128 * (576 + 512)
    f = flops_per_token_decode(load_model("deepseek-v2"), 0)
    assert (f - core) / 2 == pytest.approx(21e9, rel=0.01)
    assert math.isfinite(f)
