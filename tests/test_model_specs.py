"""Shipped model specs, the HF config.json importer and the YAML writer.

Published values are asserted with the config file / paper section they come from. Parameter
counts are not tested here (the engine owns them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from costsim.errors import CostsimError, CostsimWarning
from costsim.simulator.params import param_counts
from costsim.hf import spec_from_hf_config, spec_to_yaml
from costsim.registry import load_model, model_names
from costsim.specs import DenseFFN, GQAAttention, MLAAttention, MoEFFN

FIXTURES = Path(__file__).parent / "fixtures" / "hf"

SHIPPED = {
    "deepseek-v2",
    "deepseek-v2-lite",
    "deepseek-v3",
    "deepseek-llm-67b",
    "deepseek-llm-7b",
    "deepseekmoe-16b",
    "deepseekmoe-145b",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "llama-2-70b",
    "llama-3.1-8b",
    "llama-3.1-70b",
    "llama-3.1-405b",
    "qwen2.5-72b",
    "qwen3-235b-a22b",
    "gpt-oss-120b",
}

# fixture file stem -> shipped spec it must reproduce (architecturally)
FIXTURE_TO_SPEC = {
    "deepseek-v2": "deepseek-v2",
    "deepseek-v2-lite": "deepseek-v2-lite",
    "deepseek-v3": "deepseek-v3",
    "deepseekmoe-16b": "deepseekmoe-16b",
    "mixtral-8x7b": "mixtral-8x7b",
    "mixtral-8x22b": "mixtral-8x22b",
    "llama-2-70b": "llama-2-70b",
    "llama-3.1-8b": "llama-3.1-8b",
    "llama-3.1-70b": "llama-3.1-70b",
    "llama-3.1-405b": "llama-3.1-405b",
    "qwen2.5-72b": "qwen2.5-72b",
    "qwen3-235b-a22b": "qwen3-235b-a22b",
    "gpt-oss-120b": "gpt-oss-120b",
}

NON_ARCH = {"name", "source", "description", "max_position_embeddings"}


# ======================================================================================
# shipped specs
# ======================================================================================


def test_model_names_has_all_shipped():
    assert SHIPPED <= set(model_names())


@pytest.mark.parametrize("slug", sorted(SHIPPED))
def test_shipped_spec_loads_and_is_named_after_its_file(slug):
    spec = load_model(slug)
    assert spec.name == slug
    assert spec.source.strip()
    assert load_model(slug.upper()) == spec  # names are case-insensitive


def test_deepseek_v2_published_fields():
    s = load_model("deepseek-v2")
    a, f = s.attention, s.ffn
    # HF deepseek-ai/DeepSeek-V2 config.json; arXiv 2405.04434 §3.1.2: 60 layers, hidden 5120,
    # 128 heads, d_c = 512, d'_c = 1536, d_h^R = 64, 2 shared + 160 routed, top-6, all FFNs MoE but layer 1
    assert (s.num_hidden_layers, s.hidden_size, s.vocab_size) == (60, 5120, 102400)
    assert isinstance(a, MLAAttention)
    assert (a.num_attention_heads, a.kv_lora_rank, a.q_lora_rank, a.qk_rope_head_dim) == (128, 512, 1536, 64)
    assert (a.qk_nope_head_dim, a.v_head_dim) == (128, 128)
    assert isinstance(f, MoEFFN)
    assert (f.n_routed_experts, f.n_shared_experts, f.num_experts_per_tok) == (160, 2, 6)
    assert (f.moe_intermediate_size, f.dense_intermediate_size, f.first_k_dense_replace) == (1536, 12288, 1)
    assert (f.n_group, f.topk_group) == (8, 3)  # device-limited routing D = 8, M = 3 (§2.2.2)
    assert (s.n_dense_layers, s.n_moe_layers) == (1, 59)


def test_deepseek_v2_lite_published_fields():
    s = load_model("deepseek-v2-lite")
    # HF deepseek-ai/DeepSeek-V2-Lite config.json; arXiv 2405.04434 App. B: 27 layers, hidden 2048,
    # 16 heads, d_c = 512, no query compression, 2 shared + 64 routed (1408 wide), top-6, first layer dense
    assert (s.num_hidden_layers, s.hidden_size) == (27, 2048)
    assert isinstance(s.attention, MLAAttention)
    assert s.attention.q_lora_rank is None
    assert (s.attention.num_attention_heads, s.attention.kv_lora_rank, s.attention.qk_rope_head_dim) == (16, 512, 64)
    f = s.ffn
    assert (f.n_routed_experts, f.n_shared_experts, f.num_experts_per_tok, f.moe_intermediate_size) == (64, 2, 6, 1408)
    assert (f.first_k_dense_replace, f.dense_intermediate_size) == (1, 10944)


def test_deepseek_v3_published_fields():
    s = load_model("deepseek-v3")
    a, f = s.attention, s.ffn
    # HF deepseek-ai/DeepSeek-V3 config.json; arXiv 2412.19437 §4.2: 61 layers, hidden 7168, 128 heads,
    # d_c = 512, d'_c = 1536, d_h^R = 64, 1 shared + 256 routed (2048 wide), top-8, first 3 layers dense,
    # <= 4 nodes per token (n_group 8 / topk_group 4); MTP depth 1 (num_nextn_predict_layers)
    assert (s.num_hidden_layers, s.hidden_size, s.vocab_size) == (61, 7168, 129280)
    assert (a.kv_lora_rank, a.q_lora_rank, a.qk_rope_head_dim, a.num_attention_heads) == (512, 1536, 64, 128)
    assert (f.n_routed_experts, f.n_shared_experts, f.num_experts_per_tok) == (256, 1, 8)
    assert (f.moe_intermediate_size, f.dense_intermediate_size, f.first_k_dense_replace) == (2048, 18432, 3)
    assert (f.n_group, f.topk_group) == (8, 4)
    assert s.num_nextn_predict_layers == 1


def test_deepseek_llm_published_fields():
    # DeepSeek-LLM README: "7B uses MHA, 67B uses GQA"; HF deepseek-llm-{7b,67b}-base config.json
    big, small = load_model("deepseek-llm-67b"), load_model("deepseek-llm-7b")
    assert (big.num_hidden_layers, big.hidden_size, big.ffn.intermediate_size) == (95, 8192, 22016)
    assert (big.attention.kind, big.attention.num_attention_heads, big.attention.num_key_value_heads) == ("gqa", 64, 8)
    assert (small.num_hidden_layers, small.hidden_size, small.ffn.intermediate_size) == (30, 4096, 11008)
    assert (small.attention.kind, small.attention.num_key_value_heads) == ("mha", 32)
    for s in (big, small):
        assert isinstance(s.ffn, DenseFFN) and s.ffn.gated
        assert s.vocab_size == 102400 and s.attention.head_dim == 128


def test_deepseekmoe_16b_published_fields():
    s = load_model("deepseekmoe-16b")
    # HF deepseek-ai/deepseek-moe-16b-base config.json; arXiv 2401.06066 §5.1.2: 28 layers, hidden 2048,
    # 16 MHA heads, 2 shared + 64 routed, top-6, expert = 0.25x the 5632-wide standard FFN
    assert (s.num_hidden_layers, s.hidden_size) == (28, 2048)
    assert (s.attention.kind, s.attention.num_attention_heads, s.attention.num_key_value_heads) == ("mha", 16, 16)
    f = s.ffn
    assert (f.n_routed_experts, f.n_shared_experts, f.num_experts_per_tok, f.moe_intermediate_size) == (64, 2, 6, 1408)
    assert (f.first_k_dense_replace, f.dense_intermediate_size) == (1, 10944)


def test_deepseekmoe_145b_layout():
    s = load_model("deepseekmoe-145b")
    # arXiv 2401.06066 §7.1: 62 layers, hidden 4096, 32 heads (x128), 4 shared + 128 routed, top-12,
    # expert = 0.125x standard FFN, first layer dense. m and the dense width are derived (see description).
    assert (s.num_hidden_layers, s.hidden_size, s.vocab_size) == (62, 4096, 102400)
    assert (s.attention.kind, s.attention.num_attention_heads, s.attention.head_dim) == ("mha", 32, 128)
    f = s.ffn
    assert (f.n_routed_experts, f.n_shared_experts, f.num_experts_per_tok) == (128, 4, 12)
    assert f.moe_intermediate_size * 8 == 11264  # 0.125x the standard FFN
    assert (s.n_dense_layers, s.n_moe_layers) == (1, 61)
    assert "derive" in s.description.lower()


@pytest.mark.parametrize(
    "slug, hidden, layers, heads, experts, inter",
    [
        ("mixtral-8x7b", 4096, 32, 32, 8, 14336),  # HF mistralai/Mixtral-8x7B-v0.1 config.json
        ("mixtral-8x22b", 6144, 56, 48, 8, 16384),  # HF mistralai/Mixtral-8x22B-v0.1 config.json
    ],
)
def test_mixtral_published_fields(slug, hidden, layers, heads, experts, inter):
    s = load_model(slug)
    assert (s.hidden_size, s.num_hidden_layers, s.vocab_size) == (hidden, layers, 32000)
    assert (s.attention.num_attention_heads, s.attention.num_key_value_heads) == (heads, 8)
    f = s.ffn
    assert isinstance(f, MoEFFN)
    # Mixtral: top-2 of 8, no shared expert, expert width = HF intermediate_size
    assert (f.n_routed_experts, f.num_experts_per_tok, f.n_shared_experts) == (experts, 2, 0)
    assert f.moe_intermediate_size == inter and f.dense_intermediate_size is None
    assert s.n_dense_layers == 0


@pytest.mark.parametrize(
    "slug, hidden, layers, heads, kv, inter, vocab",
    [
        ("llama-2-70b", 8192, 80, 64, 8, 28672, 32000),  # HF meta-llama/Llama-2-70b-hf config.json
        ("llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256),  # HF meta-llama/Llama-3.1-8B config.json
        ("llama-3.1-70b", 8192, 80, 64, 8, 28672, 128256),  # HF meta-llama/Llama-3.1-70B config.json
        ("llama-3.1-405b", 16384, 126, 128, 8, 53248, 128256),  # HF meta-llama/Llama-3.1-405B config.json
        ("qwen2.5-72b", 8192, 80, 64, 8, 29568, 152064),  # HF Qwen/Qwen2.5-72B config.json
    ],
)
def test_dense_gqa_published_fields(slug, hidden, layers, heads, kv, inter, vocab):
    s = load_model(slug)
    assert (s.hidden_size, s.num_hidden_layers, s.vocab_size) == (hidden, layers, vocab)
    a = s.attention
    assert isinstance(a, GQAAttention)
    assert (a.kind, a.num_attention_heads, a.num_key_value_heads, a.head_dim) == ("gqa", heads, kv, 128)
    assert isinstance(s.ffn, DenseFFN) and s.ffn.gated and s.ffn.intermediate_size == inter
    assert not s.tie_word_embeddings
    # Qwen2 has q/k/v bias (modeling_qwen2.py: bias=True on q/k/v, False on o); Llama has none
    assert (a.qkv_bias, a.o_bias) == ((True, False) if slug.startswith("qwen") else (False, False))


def test_qwen3_235b_published_fields():
    s = load_model("qwen3-235b-a22b")
    a, f = s.attention, s.ffn
    # HF Qwen/Qwen3-235B-A22B config.json: 94 layers, hidden 4096, 64 Q / 4 KV heads, head_dim 128,
    # 128 experts top-8 (1536 wide), no shared expert, q/k norm (Qwen3 modelling code)
    assert (s.num_hidden_layers, s.hidden_size, s.vocab_size) == (94, 4096, 151936)
    assert (a.num_attention_heads, a.num_key_value_heads, a.head_dim, a.qk_norm) == (64, 4, 128, True)
    assert (f.n_routed_experts, f.num_experts_per_tok, f.moe_intermediate_size, f.n_shared_experts) == (128, 8, 1536, 0)
    assert s.n_dense_layers == 0


def test_gpt_oss_120b_published_fields():
    s = load_model("gpt-oss-120b")
    a, f = s.attention, s.ffn
    # HF openai/gpt-oss-120b config.json: 36 layers, hidden 2880, 64 Q / 8 KV heads of 64,
    # attention_bias true, 128 local experts top-4 of width 2880, sliding_window 128, layer_types
    # alternating sliding_attention (layer 0) / full_attention
    assert (s.num_hidden_layers, s.hidden_size, s.vocab_size) == (36, 2880, 201088)
    assert (a.num_attention_heads, a.num_key_value_heads, a.head_dim) == (64, 8, 64)
    assert (a.qkv_bias, a.o_bias, a.sinks) == (True, True, True)
    assert (f.n_routed_experts, f.num_experts_per_tok, f.moe_intermediate_size) == (128, 4, 2880)
    assert (f.expert_bias, f.router_bias, f.n_shared_experts) == (True, True, 0)
    assert s.sliding_window.window == 128
    assert s.sliding_window.layers == list(range(0, 36, 2))
    assert s.n_window_layers == 18


# ======================================================================================
# HF config.json import
# ======================================================================================


def test_every_fixture_has_provenance():
    sources = (FIXTURES / "SOURCES.md").read_text()
    for f in FIXTURES.glob("*.json"):
        assert f.name in sources, f"{f.name} has no entry in SOURCES.md"


@pytest.mark.parametrize("stem", sorted(FIXTURE_TO_SPEC))
def test_hf_fixture_matches_shipped_spec(stem):
    path = FIXTURES / f"{stem}.json"
    imported = load_model(str(path))
    shipped = load_model(FIXTURE_TO_SPEC[stem])
    assert imported.model_dump(exclude=NON_ARCH) == shipped.model_dump(exclude=NON_ARCH)
    assert imported.source == f"HF config.json: {path}"


def test_hf_qwen2_moe_fixture():
    s = load_model(str(FIXTURES / "qwen1.5-moe-a2.7b.json"))
    a, f = s.attention, s.ffn
    # Qwen/Qwen1.5-MoE-A2.7B config.json: 24 layers, hidden 2048, 16 MHA heads with q/k/v bias,
    # 60 experts top-4 (1408 wide) + one shared expert of shared_expert_intermediate_size 5632
    assert (s.num_hidden_layers, s.hidden_size, s.vocab_size) == (24, 2048, 151936)
    assert (a.kind, a.num_attention_heads, a.head_dim, a.qkv_bias, a.o_bias) == ("mha", 16, 128, True, False)
    assert (f.n_routed_experts, f.num_experts_per_tok, f.moe_intermediate_size) == (60, 4, 1408)
    assert (f.n_shared_experts, f.shared_size) == (1, 5632)
    assert s.n_dense_layers == 0 and s.sliding_window is None  # use_sliding_window false


def test_hf_name_defaults_and_override():
    cfg = json.loads((FIXTURES / "llama-2-70b.json").read_text())
    assert spec_from_hf_config(cfg, where="x.json").name == "llama-2-70b-hf"  # from _name_or_path
    del cfg["_name_or_path"]
    assert spec_from_hf_config(cfg, where="dir/x.json").name == "x"  # from the file name
    assert spec_from_hf_config(cfg, where="Llama-Tiny/config.json").name == "llama-tiny"  # from its folder
    assert spec_from_hf_config(cfg, where="config.json").name == "llama"  # from model_type
    assert spec_from_hf_config(cfg, where="x.json", name="My-Model").name == "my-model"


def _llama(**over):
    cfg = json.loads((FIXTURES / "llama-3.1-8b.json").read_text())
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not ...}


def test_hf_attention_kind_and_head_dim():
    assert spec_from_hf_config(_llama(num_key_value_heads=1), "x.json").attention.kind == "mqa"
    assert spec_from_hf_config(_llama(num_key_value_heads=32), "x.json").attention.kind == "mha"
    # llama defaults num_key_value_heads to num_attention_heads (LlamaConfig)
    assert spec_from_hf_config(_llama(num_key_value_heads=...), "x.json").attention.kind == "mha"
    assert spec_from_hf_config(_llama(), "x.json").attention.head_dim == 4096 // 32
    assert spec_from_hf_config(_llama(head_dim=96), "x.json").attention.head_dim == 96
    biased = spec_from_hf_config(_llama(attention_bias=True, mlp_bias=True), "x.json")
    assert (biased.attention.qkv_bias, biased.attention.o_bias, biased.ffn.bias) == (True, True, True)


def test_hf_gpt_oss_layer_types():
    cfg = json.loads((FIXTURES / "gpt-oss-120b.json").read_text())
    cfg["layer_types"] = ["full_attention", "sliding_attention"] * 18  # odd layers slide if the config says so
    assert spec_from_hf_config(cfg, "x.json").sliding_window.layers == list(range(1, 36, 2))
    del cfg["layer_types"]  # GptOssConfig default: even layers slide
    assert spec_from_hf_config(cfg, "x.json").sliding_window.layers == list(range(0, 36, 2))
    cfg["layer_types"] = ["full_attention"] * 36
    assert spec_from_hf_config(cfg, "x.json").sliding_window is None


def test_hf_qwen2_moe_counts_the_shared_expert_gate():
    # Qwen1.5-MoE-A2.7B: 14.3B total (Qwen blog "Qwen1.5-MoE", model card); the shared-expert
    # gate (Linear(2048, 1) per layer, modeling_qwen2_moe.Qwen2MoeSparseMoeBlock) is 24 x 2048
    s = load_model(str(FIXTURES / "qwen1.5-moe-a2.7b.json"))
    p = param_counts(s)
    assert s.ffn.shared_expert_gate and p.router == 24 * (2048 * 60 + 2048)
    assert round(p.total / 1e9, 1) == 14.3
    off = s.model_copy(update={"ffn": s.ffn.model_copy(update={"shared_expert_gate": False})})
    assert p.total - param_counts(off).total == 24 * 2048


def test_hf_deepseek_v3_counts_the_score_correction_bias():
    # DeepseekV3TopkRouter.e_score_correction_bias: n_routed_experts (256) per MoE layer (58 of 61)
    s = load_model(str(FIXTURES / "deepseek-v3.json"))
    assert s.ffn.router_correction_bias
    assert param_counts(s).router == 58 * (7168 * 256 + 256)


@pytest.mark.parametrize("stem, key, tf_default", [
    ("qwen2.5-72b", "num_key_value_heads", 32),  # Qwen2Config default 32, not num_attention_heads
    ("qwen3-235b-a22b", "num_key_value_heads", 4),  # Qwen3MoeConfig
    ("gpt-oss-120b", "head_dim", 64),  # GptOssConfig
    ("deepseek-v3", "q_lora_rank", 1536),  # DeepseekV3Config; null would mean no compression
    ("deepseek-v3", "n_shared_experts", 1),
    ("deepseek-v3", "first_k_dense_replace", 3),
    ("deepseek-v2", "n_shared_experts", 2),  # DeepseekV2Config
    ("deepseek-v2", "n_routed_experts", 64),  # transformers builds 64 experts, the remote code none
])
def test_hf_absent_size_key_is_refused_naming_the_transformers_default(stem, key, tf_default):
    cfg = json.loads((FIXTURES / f"{stem}.json").read_text())
    del cfg[key]
    with pytest.raises(CostsimError) as ei:
        spec_from_hf_config(cfg, "x.json")
    assert f"'{key}' is missing" in str(ei.value) and f"would take {tf_default}" in str(ei.value)


def test_hf_transformers_default_flags():
    cfg = json.loads((FIXTURES / "gpt-oss-120b.json").read_text())
    del cfg["attention_bias"]  # GptOssConfig.attention_bias defaults to True
    assert spec_from_hf_config(cfg, "x.json").attention.qkv_bias is True
    cfg = json.loads((FIXTURES / "qwen1.5-moe-a2.7b.json").read_text())
    cfg["qkv_bias"] = False  # Qwen2MoeConfig.qkv_bias: read, not hard-coded
    assert spec_from_hf_config(cfg, "x.json").attention.qkv_bias is False
    cfg = json.loads((FIXTURES / "deepseek-v2.json").read_text())
    cfg["mlp_bias"] = True  # DeepseekV2MLP(bias=mlp_bias): the dense layer and the fused shared MLP
    f = spec_from_hf_config(cfg, "x.json").ffn
    assert f.dense_bias and f.shared_expert_bias
    base = param_counts(load_model(str(FIXTURES / "deepseek-v2.json"))).total
    # dense layer 0: 2 x 12288 + 5120; 59 MoE layers: one 2 x 1536 wide shared MLP, 2 x 3072 + 5120
    assert param_counts(spec_from_hf_config(cfg, "x.json")).total - base == (2 * 12288 + 5120) + 59 * (2 * 3072 + 5120)
    cfg["mlp_bias"] = None  # DeepseekV2Config.mlp_bias is a strict bool: null is refused
    with pytest.raises(CostsimError, match="'mlp_bias' must be true or false, got null"):
        spec_from_hf_config(cfg, "x.json")


def test_hf_qwen_moe_sliding_layers_follow_transformers():
    cfg = json.loads((FIXTURES / "qwen1.5-moe-a2.7b.json").read_text())
    cfg.update(use_sliding_window=True, sliding_window=4096, max_window_layers=21)
    # Qwen2MoeConfig.layer_types: even layers below max_window_layers slide
    assert spec_from_hf_config(cfg, "x.json").sliding_window.layers == list(range(0, 21, 2))
    cfg = json.loads((FIXTURES / "qwen3-235b-a22b.json").read_text())
    cfg.update(use_sliding_window=True, sliding_window=4096)
    # Qwen3MoeAttention: config.sliding_window on every layer
    assert spec_from_hf_config(cfg, "x.json").sliding_window.layers == list(range(94))


def test_hf_kimi_k2_falls_back_on_architectures():
    cfg = json.loads((FIXTURES / "deepseek-v3.json").read_text())
    cfg["model_type"] = "kimi_k2"  # Kimi-K2's config.json: kimi_k2 + DeepseekV3ForCausalLM
    with pytest.warns(CostsimWarning, match="read as deepseek_v3"):
        s = spec_from_hf_config(cfg, "x.json")
    ref = spec_from_hf_config(json.loads((FIXTURES / "deepseek-v3.json").read_text()), "x.json")
    assert s.model_dump(exclude={"description"}) == ref.model_dump(exclude={"description"})


def test_hf_qwen_moe_leading_dense_layers():
    cfg = json.loads((FIXTURES / "qwen3-235b-a22b.json").read_text())
    cfg["mlp_only_layers"] = [0, 1]
    s = spec_from_hf_config(cfg, "x.json")
    assert (s.ffn.first_k_dense_replace, s.ffn.dense_intermediate_size, s.n_dense_layers) == (2, 12288, 2)


# ======================================================================================
# bad configs: one-line CostsimError naming the file and the key
# ======================================================================================


def _write(tmp_path: Path, cfg, name="config.json") -> Path:
    p = tmp_path / name
    p.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return p


def _err(path: Path) -> str:
    with pytest.raises(CostsimError) as ei:
        load_model(str(path))
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_bad_config_missing_num_attention_heads(tmp_path):
    cfg = _llama()
    del cfg["num_attention_heads"]
    assert "'num_attention_heads'" in _err(_write(tmp_path, cfg))


def test_bad_config_null_required_key(tmp_path):
    assert "'hidden_size'" in _err(_write(tmp_path, _llama(hidden_size=None)))


def test_bad_config_unknown_model_type(tmp_path):
    msg = _err(_write(tmp_path, _llama(model_type="foo", architectures=["FooForCausalLM"])))
    assert "'foo'" in msg and "model_type" in msg and "architectures" in msg


def test_bad_config_missing_model_type(tmp_path):
    cfg = _llama()
    del cfg["model_type"], cfg["architectures"]
    assert "'model_type'" in _err(_write(tmp_path, cfg))


def test_bad_config_malformed_json(tmp_path):
    assert "malformed JSON" in _err(_write(tmp_path, '{"model_type": "llama", "hidden_size": }'))


def test_bad_config_not_an_object(tmp_path):
    assert "JSON object" in _err(_write(tmp_path, "[1, 2]"))


def test_bad_config_wrong_type(tmp_path):
    assert "'num_hidden_layers'" in _err(_write(tmp_path, _llama(num_hidden_layers="32")))


def test_bad_config_mixtral_requires_kv_heads(tmp_path):
    cfg = json.loads((FIXTURES / "mixtral-8x7b.json").read_text())
    del cfg["num_key_value_heads"]  # MixtralConfig would default to 8: refuse to guess
    assert "'num_key_value_heads'" in _err(_write(tmp_path, cfg))


def test_bad_config_deepseek_missing_mla_key(tmp_path):
    cfg = json.loads((FIXTURES / "deepseek-v3.json").read_text())
    del cfg["qk_rope_head_dim"]
    assert "'qk_rope_head_dim'" in _err(_write(tmp_path, cfg))


@pytest.mark.parametrize(
    "over, key",
    [({"decoder_sparse_step": 2}, "decoder_sparse_step"), ({"mlp_only_layers": [3, 7]}, "mlp_only_layers")],
)
def test_bad_config_unrepresentable_qwen_moe_layout(tmp_path, over, key):
    cfg = json.loads((FIXTURES / "qwen3-235b-a22b.json").read_text())
    cfg.update(over)
    assert key in _err(_write(tmp_path, cfg))


def test_bad_config_schema_violation_goes_through_validate(tmp_path):
    cfg = json.loads((FIXTURES / "mixtral-8x7b.json").read_text())
    cfg["num_experts_per_tok"] = 9  # more than the 8 experts: the schema rejects it
    assert "num_experts_per_tok" in _err(_write(tmp_path, cfg))


# ======================================================================================
# spec_to_yaml round trip
# ======================================================================================


def _has_none(node) -> bool:
    if isinstance(node, dict):
        return any(v is None or _has_none(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_none(v) for v in node)
    return node is None


@pytest.mark.parametrize("slug", sorted(SHIPPED))
def test_spec_to_yaml_round_trip_shipped(tmp_path, slug):
    spec = load_model(slug)
    text = spec_to_yaml(spec)
    assert not _has_none(yaml.safe_load(text))  # None values are omitted
    p = tmp_path / f"{slug}.yaml"
    p.write_text(text)
    assert load_model(str(p)) == spec


@pytest.mark.parametrize("stem", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_spec_to_yaml_round_trip_imported(tmp_path, stem):
    spec = load_model(str(FIXTURES / f"{stem}.json"))
    p = tmp_path / "out.yaml"
    p.write_text(spec_to_yaml(spec))
    assert load_model(str(p)) == spec
