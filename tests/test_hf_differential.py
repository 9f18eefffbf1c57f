"""Differential check of the HF importer against transformers itself.

For every model_type costsim imports that transformers ships (all but DeepSeek's remote-code
``deepseek``), random small configs (seeded numpy) are built two ways:

- transformers: ``CONFIG_MAPPING[model_type](**cfg)`` and ``AutoModelForCausalLM.from_config``
  on the meta device (no memory, no weights). Its parameter count is every unique parameter
  plus the persistent buffers a checkpoint stores (DeepSeek-V3's ``e_score_correction_bias``);
  its KV per token is what its attention modules project into the cache (k_proj + v_proj
  outputs, or MLA's ``kv_a_proj_with_mqa`` = kv_lora_rank + qk_rope_head_dim); its
  sliding-window layers are the attention modules with a ``sliding_window``.
- costsim: :func:`costsim.hf.spec_from_hf_config` on the same dict, then
  :func:`param_counts` / :func:`kv_elements_per_token`.

Optional keys are dropped or nulled at random. costsim must either agree exactly, or refuse
with one line naming a key that the config left out or set to null (its policy for defaults
that are sizes, see ``costsim/hf.py``). Skipped when transformers (or torch) is not installed;
CI installs both (``pip install -e '.[test,kernels]'``).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from costsim.errors import CostsimError  # noqa: E402
from costsim.hf import spec_from_hf_config  # noqa: E402
from costsim.simulator.kv import kv_elements_per_token  # noqa: E402
from costsim.simulator.params import param_counts  # noqa: E402

N_PER_FAMILY = 24
SEED = 20261202


def _pick(rng, *options):
    return options[int(rng.integers(len(options)))]


def _base(rng) -> dict:
    heads = _pick(rng, 2, 4, 8)
    head_dim = _pick(rng, 4, 8, 16)
    return {
        "vocab_size": int(rng.integers(16, 80)),
        "hidden_size": heads * head_dim,
        "num_hidden_layers": int(rng.integers(1, 6)),
        "num_attention_heads": heads,
        "num_key_value_heads": _pick(rng, *[k for k in (1, 2, 4, 8) if heads % k == 0]),
        "intermediate_size": int(rng.integers(4, 48)),
        "tie_word_embeddings": bool(rng.integers(2)),
        "max_position_embeddings": 256,
    }


def _config(mt: str, rng) -> dict:
    c = _base(rng)
    c["model_type"] = mt
    h, heads = c["hidden_size"], c["num_attention_heads"]
    if mt == "llama":
        c.update(attention_bias=bool(rng.integers(2)), mlp_bias=bool(rng.integers(2)),
                 head_dim=_pick(rng, 4, 8, h // heads))
    elif mt in ("mistral", "mixtral"):
        c["sliding_window"] = _pick(rng, None, 16, 64)
        c["head_dim"] = _pick(rng, 4, 8, h // heads)
        if mt == "mixtral":
            c["num_local_experts"] = int(rng.integers(2, 6))
            c["num_experts_per_tok"] = int(rng.integers(1, c["num_local_experts"] + 1))
    elif mt in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
        c["use_sliding_window"] = bool(rng.integers(2))
        c["sliding_window"] = 32
        c["max_window_layers"] = int(rng.integers(0, c["num_hidden_layers"] + 1))
        if mt in ("qwen3", "qwen3_moe"):
            c["head_dim"] = _pick(rng, 4, 8, 16)
            c["attention_bias"] = bool(rng.integers(2))
        if mt.endswith("_moe"):
            n = int(rng.integers(2, 9))
            c.update(num_experts=n, num_experts_per_tok=int(rng.integers(1, n + 1)),
                     moe_intermediate_size=int(rng.integers(2, 24)), decoder_sparse_step=1,
                     mlp_only_layers=list(range(int(rng.integers(0, c["num_hidden_layers"])))))
        if mt == "qwen2_moe":
            c["shared_expert_intermediate_size"] = _pick(rng, 0, 8, 20)
            c["qkv_bias"] = bool(rng.integers(2))
    elif mt == "gpt_oss":
        n = int(rng.integers(2, 9))
        c.update(num_local_experts=n, num_experts_per_tok=int(rng.integers(1, n + 1)), head_dim=_pick(rng, 4, 8, 16),
                 sliding_window=16, attention_bias=bool(rng.integers(2)))
        c["layer_types"] = [_pick(rng, "sliding_attention", "full_attention") for _ in range(c["num_hidden_layers"])]
    elif mt in ("deepseek_v2", "deepseek_v3", "deepseek_v32"):
        groups = _pick(rng, 1, 2)
        n = groups * int(rng.integers(1, 5))
        c.update(kv_lora_rank=_pick(rng, 4, 8, 16), q_lora_rank=_pick(rng, None, 8, 12), qk_rope_head_dim=_pick(rng, 2, 4),
                 qk_nope_head_dim=_pick(rng, 4, 8), v_head_dim=_pick(rng, 4, 8), n_routed_experts=n,
                 num_experts_per_tok=int(rng.integers(1, n + 1)), n_shared_experts=int(rng.integers(0, 3)),
                 moe_intermediate_size=int(rng.integers(2, 16)),
                 first_k_dense_replace=int(rng.integers(0, c["num_hidden_layers"])), n_group=groups, topk_group=1)
        if mt == "deepseek_v32":
            c.update(q_lora_rank=_pick(rng, 8, 12), index_n_heads=_pick(rng, 1, 2, 4), index_head_dim=_pick(rng, 4, 8),
                     index_topk=_pick(rng, 4, 16))
        if mt == "deepseek_v2":
            c["mlp_bias"] = bool(rng.integers(2))
            c["topk_method"] = "greedy"
    elif mt in ("olmoe", "minimax_m2", "phimoe", "granitemoe", "granitemoeshared"):
        n = int(rng.integers(2, 9))
        c["num_local_experts" if mt != "olmoe" else "num_experts"] = n
        c["num_experts_per_tok"] = int(rng.integers(1, n + 1))
        if mt != "minimax_m2":
            c["attention_bias"] = bool(rng.integers(2))
        if mt == "minimax_m2":  # (OLMoE refuses heads x head_dim != hidden_size: its q_norm is hidden wide)
            c["head_dim"] = _pick(rng, 4, 8, h // heads)
        if mt == "phimoe":
            c["sliding_window"] = _pick(rng, None, 16)
        if mt == "granitemoeshared":
            c["shared_intermediate_size"] = _pick(rng, 0, 6, 20)
    elif mt == "glm4_moe":
        n = int(rng.integers(2, 9))
        c.update(n_routed_experts=n, num_experts_per_tok=int(rng.integers(1, n + 1)),
                 moe_intermediate_size=int(rng.integers(2, 16)), n_shared_experts=int(rng.integers(0, 3)),
                 first_k_dense_replace=int(rng.integers(0, c["num_hidden_layers"])), n_group=1, topk_group=1,
                 use_qk_norm=bool(rng.integers(2)), attention_bias=bool(rng.integers(2)),
                 head_dim=_pick(rng, 4, 8, h // heads))
    elif mt == "llama4_text":
        n = int(rng.integers(2, 9))
        c.update(num_local_experts=n, num_experts_per_tok=int(rng.integers(1, n + 1)),
                 intermediate_size_mlp=int(rng.integers(4, 48)), interleave_moe_layer_step=_pick(rng, 1, 2),
                 attention_chunk_size=_pick(rng, None, 16), head_dim=_pick(rng, 4, 8, h // heads),
                 attention_bias=bool(rng.integers(2)), no_rope_layer_interval=_pick(rng, 2, 4))
    elif mt in ("gemma2", "gemma3_text"):
        c.update(head_dim=_pick(rng, 4, 8, 16), sliding_window=_pick(rng, None, 16, 64),
                 attention_bias=bool(rng.integers(2)), query_pre_attn_scalar=16)
        if mt == "gemma2" and rng.random() < 0.5:
            c["layer_types"] = [_pick(rng, "sliding_attention", "full_attention") for _ in range(c["num_hidden_layers"])]
    elif mt in ("qwen3_next", "qwen3_5_moe_text", "qwen3_5_text"):
        c.update(head_dim=_pick(rng, 4, 8, 16), attention_bias=bool(rng.integers(2)),
                 linear_num_key_heads=_pick(rng, 1, 2), linear_key_head_dim=_pick(rng, 4, 8),
                 linear_value_head_dim=_pick(rng, 4, 6), linear_conv_kernel_dim=_pick(rng, 2, 4))
        c["linear_num_value_heads"] = c["linear_num_key_heads"] * _pick(rng, 1, 2)
        if rng.random() < 0.5:
            c["layer_types"] = [_pick(rng, "linear_attention", "full_attention") for _ in range(c["num_hidden_layers"] - 1)]
            c["layer_types"].append("full_attention")
        if mt != "qwen3_5_text":
            n = int(rng.integers(2, 9))
            c.update(num_experts=n, num_experts_per_tok=int(rng.integers(1, n + 1)),
                     moe_intermediate_size=int(rng.integers(2, 24)), shared_expert_intermediate_size=_pick(rng, 0, 8))
    elif mt == "dbrx":  # DbrxConfig: its own key names, attention and FFN keys nested
        n = int(rng.integers(2, 9))
        c = {"model_type": "dbrx", "vocab_size": c["vocab_size"], "d_model": h, "n_heads": heads,
             "n_layers": c["num_hidden_layers"], "max_seq_len": 256,
             "attn_config": {"kv_n_heads": c["num_key_value_heads"], "clip_qkv": _pick(rng, None, 8.0),
                             "rope_theta": 500000.0},
             "ffn_config": {"ffn_hidden_size": int(rng.integers(4, 48)), "moe_num_experts": n,
                            "moe_top_k": int(rng.integers(1, n + 1))}}
        for sub in ("attn_config", "ffn_config"):  # drop a nested size now and then
            if rng.random() < 0.2:
                del c[sub][_pick(rng, *sorted(k for k in c[sub] if k not in ("clip_qkv", "rope_theta")))]
    # drop or null optional keys (the required core stays)
    core = {"model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "d_model", "n_heads",
            "n_layers", "attn_config", "ffn_config"}
    optional = sorted(k for k in c if k not in core)
    for k in rng.choice(optional, size=min(int(rng.integers(0, 3)), len(optional)), replace=False):
        if rng.random() < 0.7:
            del c[k]
        else:
            c[k] = None
    return c


def _transformers_counts(cfg: dict):
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    kwargs = {k: v for k, v in cfg.items() if k != "model_type"}
    config = CONFIG_MAPPING[cfg["model_type"]](**kwargs)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config)
    state = set(model.state_dict())
    n = sum(p.numel() for p in model.parameters())  # unique: a tied LM head is counted once
    n += sum(b.numel() for name, b in model.named_buffers() if name in state)  # checkpoint buffers
    kv, sliding = 0, []
    linear = []
    if cfg["model_type"] == "dbrx":  # DbrxForCausalLM: transformer.blocks[i].norm_attn_norm.attn.Wqkv
        for block in model.transformer.blocks:
            a = block.norm_attn_norm.attn
            kv += a.Wqkv.out_features - a.hidden_size  # q is hidden_size wide, then k and v
        return n, kv, [], []
    for i, layer in enumerate(model.model.layers):
        if hasattr(layer, "linear_attn"):  # Qwen3-Next / Qwen3.5 Gated DeltaNet: no KV cache
            linear.append(i)
            continue
        a = layer.self_attn
        if hasattr(a, "kv_a_proj_with_mqa"):
            kv += a.kv_a_proj_with_mqa.out_features
            if hasattr(a, "indexer"):  # DeepSeek-V3.2: the indexer caches its key (wk) per token
                kv += a.indexer.wk.out_features
        else:
            kv += a.k_proj.out_features + a.v_proj.out_features
        types = getattr(config, "layer_types", None)
        if types is not None and types[i] == "chunked_attention":  # Llama-4: the cache holds a chunk
            w = config.attention_chunk_size
        elif types is not None:  # Qwen2/Qwen2-MoE/Qwen3, gpt-oss, Gemma-2/3: the config's per-layer list
            w = config.sliding_window if types[i] == "sliding_attention" else None
        elif hasattr(a, "sliding_window"):  # Qwen3-MoE: every layer's module
            w = a.sliding_window
        else:  # Mistral, Mixtral: the config's window on every layer
            w = getattr(config, "sliding_window", None)
        if w:
            sliding.append((i, w))
    return n, kv, sliding, linear


FAMILIES = ["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v2",
            "deepseek_v3", "deepseek_v32", "olmoe", "minimax_m2", "phimoe", "granitemoe", "granitemoeshared", "glm4_moe",
            "llama4_text", "gemma2", "gemma3_text", "qwen3_next", "qwen3_5_moe_text", "qwen3_5_text", "dbrx"]


@pytest.mark.parametrize("mt", FAMILIES)
def test_import_agrees_with_transformers_or_refuses_naming_the_key(mt):
    rng = np.random.default_rng([SEED, FAMILIES.index(mt)])
    agreed = refused = tf_refused = 0
    for _ in range(N_PER_FAMILY):
        cfg = _config(mt, rng)
        try:
            spec = spec_from_hf_config(dict(cfg), "cfg.json")
        except CostsimError as e:
            msg = str(e)
            keys = re.findall(r"'([a-z_]+)'", msg)
            unset = [k for k in keys if cfg.get(k) is None]
            assert "\n" not in msg and unset, f"{mt}: refused without naming an absent/null key: {msg}\n{cfg}"
            refused += 1
            continue
        try:
            n, kv, sliding, linear = _transformers_counts(cfg)
        except Exception as e:  # noqa: BLE001 (huggingface_hub StrictDataclassFieldValidationError)
            # transformers' strict config fields refuse a null that costsim does not read
            # (max_position_embeddings, intermediate_size of a model without dense layers)
            assert "None" in str(e), f"{mt}: transformers cannot build it ({e}) but costsim imported it\n{cfg}"
            tf_refused += 1
            continue
        assert param_counts(spec).total == n, f"{mt}: params {param_counts(spec).total} vs transformers {n}\n{cfg}"
        assert kv_elements_per_token(spec) == kv, f"{mt}: KV/token {kv_elements_per_token(spec)} vs {kv}\n{cfg}"
        sw = spec.sliding_window
        got = [(i, sw.window) for i in sorted(set(sw.layers))] if sw else []
        assert got == sliding, f"{mt}: sliding layers {got} vs transformers {sliding}\n{cfg}"
        got = sorted(spec.linear_attention.layers) if spec.linear_attention else []
        assert got == linear, f"{mt}: linear-attention layers {got} vs transformers {linear}\n{cfg}"
        agreed += 1
    # the random configs exercise the import, not only its refusals
    assert agreed >= N_PER_FAMILY // 3, (f"{mt}: only {agreed} of {N_PER_FAMILY} configs compared ({refused} refused "
                                         f"by costsim, {tf_refused} by transformers)")
    print(f"{mt}: {agreed} agree, {refused} refused by costsim naming the key, {tf_refused} refused by transformers")
