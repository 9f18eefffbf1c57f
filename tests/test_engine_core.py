"""Golden values for the core engine: parameters, KV cache, FLOPs per token.

Every golden value cites its primary source. Tolerances say what kind of value it is:
exact for arithmetic on published configs, a percentage for published rounded figures.
"""

import numpy as np
import pytest

from costsim.errors import CostsimError
from costsim.registry import load_model
from costsim.simulator.flops import flops_per_token_decode, forward_flops, prefill_flops, training_flops_per_token
from costsim.simulator.kv import kv_bytes_per_token, kv_bytes_per_token_per_layer, kv_cache_bytes, kv_elements_per_token
from costsim.simulator.params import param_counts
from costsim.units import FORMATS, parse_format


def M(name):
    return load_model(name)


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("name,total,active,rel_active,src", [
    # DeepSeek-V2 abstract + §3.1.2: "236B total parameters, of which 21B are activated for each token"
    ("deepseek-v2", 236e9, 21e9, 0.01, "arXiv 2405.04434 abstract"),
    # DeepSeek-V2-Lite, V2 paper App. B: 15.7B total, 2.4B activated (2 significant digits:
    # the config gives 2.45B, so the band is the rounding of the published figure)
    ("deepseek-v2-lite", 15.7e9, 2.4e9, 0.025, "arXiv 2405.04434 App. B"),
    # DeepSeek-V3 README_WEIGHTS.md: main model 671B, 36.7B activated (the precise form of "37B")
    ("deepseek-v3", 671e9, 36.7e9, 0.01, "DeepSeek-V3 README_WEIGHTS.md"),
])
def test_deepseek_total_and_active_params(name, total, active, rel_active, src):
    p = param_counts(M(name))
    assert p.total == pytest.approx(total, rel=0.01), src
    assert p.active == pytest.approx(active, rel=rel_active), src


def test_deepseek_v3_headline_37b_and_mtp_reported_separately():
    # DeepSeek-V3 tech report (arXiv 2412.19437) abstract: 671B total, 37B activated. The
    # config gives 36.63B without the input embedding (the convention that reproduces V2's 21B),
    # 1.01% under the rounded headline; with the embedding it would be 37.55B (+1.5%).
    p = param_counts(M("deepseek-v3"))
    # exact count from config_671B.json shapes, + gate.e_score_correction_bias (58 MoE layers x 256)
    assert p.active == 36_625_603_584 + 58 * 256
    assert abs(p.active - 37e9) / 37e9 < 0.0102
    # README: the HF checkpoint is 685B = 671B main + 14B MTP; README_WEIGHTS: MTP 11.5B unique
    assert p.mtp == pytest.approx(11.5e9, rel=0.02)
    assert p.total + p.mtp + p.embedding + p.lm_head == pytest.approx(685e9, rel=0.01)


def test_mixtral_8x7b_params_mistral_convention():
    # Mistral AI, "Mixtral of experts" (arXiv 2401.04088) §1: 46.7B total, 12.9B active per token.
    # Mistral's active count includes the embedding table.
    p = param_counts(M("mixtral-8x7b"))
    assert p.total == pytest.approx(46.7e9, rel=0.01)
    assert p.active_incl_embedding == pytest.approx(12.9e9, rel=0.01)


def test_deepseek_v2_exact_breakdown():
    # Exact arithmetic on config_236B.json: 160 experts x 3 x 5120 x 1536 x 59 MoE layers
    p = param_counts(M("deepseek-v2"))
    assert p.routed_experts == 160 * 3 * 5120 * 1536 * 59
    assert p.routed_experts_active == 6 * 3 * 5120 * 1536 * 59
    assert p.shared_experts == 2 * 3 * 5120 * 1536 * 59
    assert p.dense_ffn == 3 * 5120 * 12288  # first_k_dense_replace = 1
    assert p.embedding == p.lm_head == 102400 * 5120
    # MLA per layer: W^DQ 5120x1536 + norm 1536 + W^UQ|QR 1536x128x192 + W^DKV|KR 5120x576 + norm 512
    #                + W^UK|UV 512x128x256 + W^O 128x128x5120
    per_layer = 5120 * 1536 + 1536 + 1536 * 128 * 192 + 5120 * 576 + 512 + 512 * 128 * 256 + 128 * 128 * 5120
    assert p.attention == 60 * per_layer


@pytest.mark.parametrize("name,total,active,rel", [
    # DeepSeekMoE paper (arXiv 2401.06066) Table 3/6: 16.4B total, 2.8B activated (counts the embedding)
    ("deepseekmoe-16b", 16.4e9, 2.8e9, 0.02),
    # arXiv 2401.06066 §7.1: DeepSeekMoE 145B, 144.6B total, 22.2B activated
    ("deepseekmoe-145b", 144.6e9, 22.2e9, 0.01),
    # DeepSeek-V2 paper Table 6: DeepSeek 7B dense 6.9B
    ("deepseek-llm-7b", 6.9e9, 6.9e9, 0.01),
    # DeepSeek-V2 Table 2 baseline column: Mixtral 8x22B 141B total, 39B activated
    ("mixtral-8x22b", 141e9, 39e9, 0.01),
    # Qwen3 technical report (arXiv 2505.09388) Table 2: 235B total, 22B activated
    ("qwen3-235b-a22b", 235e9, 22e9, 0.02),
    # OpenAI gpt-oss model card: 116.8B total, 5.1B active (excl. embedding)
    ("gpt-oss-120b", 116.8e9, None, 0.01),
])
def test_other_published_totals(name, total, active, rel):
    p = param_counts(M(name))
    assert p.total == pytest.approx(total, rel=rel)
    if active:
        assert p.active_incl_embedding == pytest.approx(active, rel=rel)


def test_gpt_oss_active_excludes_embedding():
    # OpenAI gpt-oss model card: 5.1B active parameters per token (input embedding excluded)
    assert param_counts(M("gpt-oss-120b")).active == pytest.approx(5.13e9, rel=0.01)


# ---------------------------------------------------------------- KV cache


def test_deepseek_v2_kv_elements():
    # DeepSeek-V2 Table 1: MLA (d_c + d_h^R) * l = (512 + 64) * 60
    assert kv_elements_per_token(M("deepseek-v2")) == 34_560


@pytest.mark.parametrize("name,expected", [
    # ISCA 2025 "Insights into DeepSeek-V3" (arXiv 2505.09343) Table 1, BF16 KV per token
    ("deepseek-v3", 70_272),
    ("qwen2.5-72b", 327_680),
    ("llama-3.1-405b", 516_096),
])
def test_isca_table1_kv_bytes(name, expected):
    assert kv_bytes_per_token(M(name), FORMATS["bf16"]) == expected


def test_v2_six_bit_vs_67b_bf16_is_93_3_percent():
    # DeepSeek-V2 abstract: "reduces the KV cache by 93.3%"; §3.2.3: deployed KV cache is
    # quantized to 6 bits per element on average; DeepSeek 67B is GQA-8 with 95 layers in BF16.
    v2 = kv_bytes_per_token(M("deepseek-v2"), parse_format(6))
    b67 = kv_bytes_per_token(M("deepseek-llm-67b"), FORMATS["bf16"])
    assert v2 == 25_920 and b67 == 389_120
    assert round(100 * (1 - v2 / b67), 1) == 93.3


def test_flashmla_fp8_layout_656_bytes():
    # FlashMLA README / 2025-09-29 deep dive: 512 fp8 + 4 fp32 scales + 64 bf16 = 656 B/token/layer
    assert kv_bytes_per_token_per_layer(M("deepseek-v3"), FORMATS["flashmla-fp8"]) == 656


def test_block_scaled_int4_carries_scales():
    # 4-bit payload + one fp16 scale per 32 elements = 18 bytes per 32 elements
    fmt = FORMATS["int4-g32"]
    assert fmt.bytes_for(32) == 18
    # LLaMA-3.1-8B: 8 KV heads x 128 = 4 groups of 32 per head, K and V, 32 layers
    assert kv_bytes_per_token(M("llama-3.1-8b"), fmt) == 2 * 8 * 4 * 18 * 32


def test_paged_cache_rounds_up_to_blocks():
    spec = M("llama-3.1-8b")
    per_tok = kv_bytes_per_token(spec, FORMATS["bf16"])
    assert kv_cache_bytes(spec, FORMATS["bf16"], 1000, 1, block_size=64) == per_tok * 1024
    assert kv_cache_bytes(spec, FORMATS["bf16"], 1024, 1, block_size=64) == per_tok * 1024


def test_sliding_window_layers_stop_growing():
    # gpt-oss-120b config: sliding_window 128 on 18 of 36 layers; GQA 8 KV heads x 64
    spec = M("gpt-oss-120b")
    per_layer = 2 * 8 * 64 * 2
    assert kv_cache_bytes(spec, FORMATS["bf16"], 100, 1) == per_layer * 36 * 100
    assert kv_cache_bytes(spec, FORMATS["bf16"], 10_000, 1) == per_layer * (18 * 10_000 + 18 * 128)


def test_tensor_parallel_kv_per_device():
    bf16 = FORMATS["bf16"]
    llama = M("llama-3.1-70b")  # 8 KV heads
    full = kv_bytes_per_token(llama, bf16)
    assert kv_bytes_per_token(llama, bf16, tp=8) == full / 8
    assert kv_bytes_per_token(llama, bf16, tp=16) == full / 8  # heads replicated beyond TP=8
    v2 = M("deepseek-v2")  # the MLA latent is not divided by TP
    assert kv_bytes_per_token(v2, bf16, tp=8) == kv_bytes_per_token(v2, bf16)
    with pytest.raises(CostsimError, match="tp=3"):
        kv_bytes_per_token(llama, bf16, tp=3)


# ---------------------------------------------------------------- FLOPs


def test_linear_flops_are_two_per_activated_matmul_weight():
    # With no context, forward FLOPs/token = 2 x activated matmul weights + attention on the
    # token itself. Cross-checks the operator list against the independent parameter counter.
    for name in ("deepseek-v2", "mixtral-8x7b", "llama-3.1-8b", "qwen2.5-72b", "gpt-oss-120b"):
        spec = M(name)
        p = param_counts(spec)
        # one token at context 0: attention over 1 pair per head
        f = forward_flops(spec, batch=1, new_tokens=1, context=0, logit_tokens=1)
        a = spec.attention
        if a.kind == "mla":
            att = 2 * a.num_attention_heads * (2 * a.kv_lora_rank + a.qk_rope_head_dim)
        else:
            att = 4 * a.num_attention_heads * a.head_dim
        sinks = a.num_attention_heads * spec.num_hidden_layers if getattr(a, "sinks", False) else 0
        biases = p.matmul_active - _matmul_weights_without_bias(spec, p)
        assert f == 2 * (p.matmul_active - sinks - biases) + att * spec.num_hidden_layers, name


def _matmul_weights_without_bias(spec, p):
    """Activated weights minus bias vectors and q/kv layernorms inside attention (not matmuls)."""
    a, f = spec.attention, spec.ffn
    n = p.matmul_active
    L = spec.num_hidden_layers
    if a.kind == "mla":
        n -= L * ((a.q_lora_rank or 0) + a.kv_lora_rank)  # q_a / kv_a layernorms
    else:
        q, kv = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
        n -= L * ((q + 2 * kv if a.qkv_bias else 0) + (spec.hidden_size if a.o_bias else 0) + (2 * a.head_dim if a.qk_norm else 0))
    if f.kind == "moe":
        per_expert_bias = 2 * f.moe_intermediate_size + spec.hidden_size if f.expert_bias else 0
        n -= spec.n_moe_layers * (f.num_experts_per_tok * per_expert_bias + (f.n_routed_experts if f.router_bias else 0))
    return n


def test_mla_decode_absorbed_vs_naive():
    # DeepSeek-V2 §2.1.2-2.1.3: naive decode must decompress K^C and V^C for every cached
    # token (d_c x n_h (d_h + d_h^v) per token per layer); absorbed attends over the latent.
    spec = M("deepseek-v2")
    L = 4096
    a = spec.attention
    nh, dc, dr, dn, dv = 128, 512, 64, 128, 128
    absorbed = flops_per_token_decode(spec, L, "absorbed")
    naive = flops_per_token_decode(spec, L, "naive")
    base_abs = flops_per_token_decode(spec, 0, "absorbed")
    base_naive = flops_per_token_decode(spec, 0, "naive")
    # absorbed grows by 2 n_h (2 d_c + d_h^R) FLOPs per cached token per layer
    assert absorbed - base_abs == 60 * 2 * nh * (2 * dc + dr) * L
    # naive grows by decompression 2 d_c n_h (d_h + d_h^v) plus MHA 2 n_h (d_h + d_h^R + d_h^v)
    assert naive - base_naive == 60 * L * (2 * dc * nh * (dn + dv) + 2 * nh * (dn + dr + dv))
    assert a.kind == "mla" and naive > 50 * absorbed


def test_prefill_is_causal_sum():
    spec = M("llama-3.1-8b")
    S = 2048
    lin = 2 * (param_counts(spec).matmul_active - param_counts(spec).lm_head) * S + 2 * spec.vocab_size * 4096
    att = 32 * 4 * 32 * 128 * (S * (S + 1) / 2)  # layers x 4 n_h d_h x causal pairs
    assert prefill_flops(spec, S) == pytest.approx(lin + att, rel=1e-12)


@pytest.mark.parametrize("name,gflops,rel", [
    # ISCA 2025 (arXiv 2505.09343) Table 2, training compute per token at sequence length 4096
    ("deepseek-v2", 155, 0.02),
    ("deepseek-v3", 250, 0.02),
    # LLaMa-405B: 2448 in Table 2; costsim gives 2473 (+1.0%) with the same method
    ("llama-3.1-405b", 2448, 0.02),
])
def test_isca_table2_training_flops(name, gflops, rel):
    assert training_flops_per_token(M(name), 4096) / 1e9 == pytest.approx(gflops, rel=rel)


def test_isca_qwen72b_row_not_reproducible():
    # ISCA Table 2 prints 394 GFLOPs/token for "Qwen-72B"; Qwen2.5-72B's config derives to
    # ~445 with the method that reproduces V2/V3 (2 x 71.5B activated x 3 = 429 GF of linear
    # layers alone already exceeds 394). costsim reports the derived value.
    f = training_flops_per_token(M("qwen2.5-72b"), 4096) / 1e9
    assert 440 < f < 450


def test_flops_vectorise_over_context():
    spec = M("deepseek-v2")
    ctx = np.array([0, 1024, 4096])
    vec = flops_per_token_decode(spec, ctx)
    assert np.allclose(vec, [flops_per_token_decode(spec, int(c)) for c in ctx], rtol=0, atol=0)
