"""HuggingFace ``config.json`` -> :class:`~costsim.specs.ModelSpec`, and ModelSpec -> YAML.

Supported ``model_type`` values (the families whose HF modelling code we mirror):

* ``deepseek`` (DeepSeekMoE / DeepSeek-LLM remote code), ``deepseek_v2``, ``deepseek_v3``:
  MLA when ``kv_lora_rank`` is present, else MHA/GQA; DeepSeekMoE FFN when ``n_routed_experts``
  is set (layer i is MoE iff ``i >= first_k_dense_replace and i % moe_layer_freq == 0``, the rule
  in ``modeling_deepseek.py``); ``num_nextn_predict_layers`` (MTP, V3).
* ``llama``, ``mistral``: dense SwiGLU; ``attention_bias`` (q/k/v/o) and ``mlp_bias`` (llama).
* ``mixtral``: top-k of ``num_local_experts``, expert width ``intermediate_size``, no shared expert.
* ``qwen2``: dense, q/k/v bias always on (o_proj has none) as in ``modeling_qwen2.py``.
* ``qwen2_moe``: routed ``num_experts`` + one shared expert of ``shared_expert_intermediate_size``.
* ``qwen3``, ``qwen3_moe``: per-head q/k RMSNorm (``qk_norm``), explicit ``head_dim``.
* ``gpt_oss``: q/k/v/o bias, attention sinks, expert and router biases, ``layer_types`` ->
  sliding-window layers.

Anything else is refused with a one-line :class:`~costsim.errors.CostsimError` naming the file
and the unsupported ``model_type``; a missing required key names the key. Nothing is guessed: an
unknown config is never silently treated as MHA.

Not representable in the schema (ignored, see the model docs): Qwen2-MoE's 1-wide sigmoid
``shared_expert_gate`` (hidden_size weights per layer), RoPE scaling, quantisation configs.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from costsim.errors import CostsimError
from costsim.specs import ModelSpec, moe_layer_rule, validate

SUPPORTED_MODEL_TYPES = (
    "deepseek",
    "deepseek_v2",
    "deepseek_v3",
    "gpt_oss",
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
)

_DEEPSEEK = {"deepseek", "deepseek_v2", "deepseek_v3"}
_QWEN = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"}
# Families whose HF config class defaults num_key_value_heads to num_attention_heads when absent.
# (Mistral, Mixtral and gpt-oss default it to 8 in transformers, so there we require the key.)
_KV_DEFAULTS_TO_HEADS = {"llama", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe"} | _DEEPSEEK


class _Cfg:
    """Typed access to a config dict; every failure is a one-line CostsimError."""

    def __init__(self, cfg: dict, where: str, model_type: str):
        self.cfg, self.where, self.mt = cfg, where, model_type

    def fail(self, msg: str) -> CostsimError:
        return CostsimError(f"{self.where}: {msg} (model_type {self.mt})")

    def has(self, key: str) -> bool:
        return self.cfg.get(key) is not None

    def get_int(self, key: str, default: Any = ..., *, allow_none: bool = False) -> Any:
        v = self.cfg.get(key)
        if v is None:
            if default is not ...:
                return default
            if allow_none:
                return None
            state = "is null" if key in self.cfg else "is missing"
            raise self.fail(f"required key '{key}' {state}")
        if isinstance(v, bool) or not isinstance(v, int):
            # JSON writers sometimes emit 4096.0; accept integral floats, reject the rest
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise self.fail(f"key '{key}' must be an integer, got {v!r}")
        return v

    def get_bool(self, key: str, default: bool) -> bool:
        v = self.cfg.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.fail(f"key '{key}' must be true or false, got {v!r}")
        return v


def _slug(text: str) -> str:
    text = text.strip().rstrip("/").split("/")[-1].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", text).strip("-")


def _default_name(cfg: dict, where: str, mt: str) -> str:
    """``_name_or_path``'s last component; else the file's stem (or its folder's name for a
    plain ``config.json``), so an imported file never takes a shipped model's name by accident;
    else the model_type."""
    from pathlib import Path

    named = _slug(str(cfg.get("_name_or_path") or ""))
    if named:
        return named
    p = Path(where)
    stem = p.stem if p.stem.lower() != "config" else p.parent.name
    return _slug(stem) or mt.replace("_", "-")


def spec_from_hf_config(cfg: dict, where: str, name: str | None = None) -> ModelSpec:
    """Build a validated ModelSpec from a HuggingFace ``config.json`` dict.

    ``where`` names the file in error messages and in ``source``. ``name`` defaults to a slug of
    ``_name_or_path`` (last path component), else of the file name, else of ``model_type``.
    """
    if not isinstance(cfg, dict):
        raise CostsimError(f"{where}: expected a JSON object at the top level, got {type(cfg).__name__}")
    mt = cfg.get("model_type")
    if mt is None:
        raise CostsimError(f"{where}: required key 'model_type' is missing (cannot tell the architecture)")
    if not isinstance(mt, str) or mt not in SUPPORTED_MODEL_TYPES:
        raise CostsimError(
            f"{where}: unsupported model_type {mt!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    c = _Cfg(cfg, where, mt)

    hidden = c.get_int("hidden_size")
    layers = c.get_int("num_hidden_layers")
    heads = c.get_int("num_attention_heads")
    data: dict[str, Any] = {
        "name": name or _default_name(cfg, where, mt),
        "source": f"HF config.json: {where}",
        "description": f"imported from a HuggingFace config.json (model_type {mt})",
        "vocab_size": c.get_int("vocab_size"),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "norm": "rmsnorm",
        "tie_word_embeddings": c.get_bool("tie_word_embeddings", False),
        "num_nextn_predict_layers": c.get_int("num_nextn_predict_layers", 0) if mt in _DEEPSEEK else 0,
        "attention": _attention(c, hidden, heads),
        "ffn": _ffn(c, layers),
    }
    if c.has("max_position_embeddings"):
        data["max_position_embeddings"] = c.get_int("max_position_embeddings")
    sw = _sliding_window(c, layers)
    if sw is not None:
        data["sliding_window"] = sw
    return validate(ModelSpec, data, where)


# --------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------


def _attention(c: _Cfg, hidden: int, heads: int) -> dict:
    mt = c.mt
    if mt in ("deepseek_v2", "deepseek_v3") and not c.has("kv_lora_rank"):
        # every DeepSeek-V2/V3 model uses MLA; a missing latent rank is a broken config, not MHA
        raise c.fail("required key 'kv_lora_rank' is missing (DeepSeek-V2/V3 configs use MLA)")
    if mt in _DEEPSEEK and c.has("kv_lora_rank"):
        if c.get_bool("attention_bias", False):
            raise c.fail("attention_bias true with MLA is not representable (MLAAttention has no bias fields)")
        return {
            "kind": "mla",
            "num_attention_heads": heads,
            "q_lora_rank": c.get_int("q_lora_rank", allow_none=True),  # null: no query compression (V2-Lite)
            "kv_lora_rank": c.get_int("kv_lora_rank"),
            "qk_rope_head_dim": c.get_int("qk_rope_head_dim"),
            "qk_nope_head_dim": c.get_int("qk_nope_head_dim"),
            "v_head_dim": c.get_int("v_head_dim"),
        }

    if mt in _KV_DEFAULTS_TO_HEADS:
        kv = c.get_int("num_key_value_heads", heads)
    else:
        kv = c.get_int("num_key_value_heads")
    if c.has("head_dim"):
        head_dim = c.get_int("head_dim")
    else:
        if hidden % heads:
            raise c.fail(f"no 'head_dim' and hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        head_dim = hidden // heads
    kind = "mha" if kv == heads else "mqa" if kv == 1 else "gqa"

    if mt in ("qwen2", "qwen2_moe"):
        qkv_bias, o_bias = True, False  # hard-coded in modeling_qwen2(_moe).py
    elif mt in ("mistral", "mixtral"):
        qkv_bias = o_bias = False  # no bias option in the HF modules
    else:  # llama, qwen3(_moe), gpt_oss, deepseek without MLA: one flag for q/k/v/o
        qkv_bias = o_bias = c.get_bool("attention_bias", False)
    return {
        "kind": kind,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "qkv_bias": qkv_bias,
        "o_bias": o_bias,
        "qk_norm": mt in ("qwen3", "qwen3_moe"),
        "sinks": mt == "gpt_oss",
    }


# --------------------------------------------------------------------------------------
# FFN
# --------------------------------------------------------------------------------------


def _dense(c: _Cfg) -> dict:
    bias = c.get_bool("mlp_bias", False) if c.mt == "llama" else False
    return {"kind": "dense", "intermediate_size": c.get_int("intermediate_size"), "gated": True, "bias": bias}


def _ffn(c: _Cfg, layers: int) -> dict:
    mt = c.mt
    if mt in ("llama", "mistral", "qwen2", "qwen3"):
        return _dense(c)
    if mt in _DEEPSEEK:
        return _deepseek_ffn(c, layers)
    if mt == "mixtral":
        return {
            "kind": "moe",
            "n_routed_experts": c.get_int("num_local_experts"),
            "num_experts_per_tok": c.get_int("num_experts_per_tok"),
            "moe_intermediate_size": c.get_int("intermediate_size"),
            "n_shared_experts": 0,
        }
    if mt in ("qwen2_moe", "qwen3_moe"):
        return _qwen_moe_ffn(c, layers)
    if mt == "gpt_oss":
        topk = c.get_int("num_experts_per_tok", None)
        if topk is None:
            topk = c.get_int("experts_per_token")
        return {
            "kind": "moe",
            "n_routed_experts": c.get_int("num_local_experts"),
            "num_experts_per_tok": topk,
            "moe_intermediate_size": c.get_int("intermediate_size"),
            "n_shared_experts": 0,
            "expert_bias": True,  # gate_up_proj_bias / down_proj_bias in GptOssExperts
            "router_bias": True,  # GptOssTopKRouter has a bias
        }
    raise c.fail("no FFN mapping")  # unreachable: model_type checked above


def _deepseek_ffn(c: _Cfg, layers: int) -> dict:
    if not c.has("n_routed_experts"):
        return _dense(c)  # modeling_deepseek: n_routed_experts None -> every layer dense
    first_k = c.get_int("first_k_dense_replace", 0)
    freq = c.get_int("moe_layer_freq", 1)
    ffn: dict[str, Any] = {
        "kind": "moe",
        "n_routed_experts": c.get_int("n_routed_experts"),
        "num_experts_per_tok": c.get_int("num_experts_per_tok"),
        "moe_intermediate_size": c.get_int("moe_intermediate_size"),
        # remote code: shared experts exist only when n_shared_experts is not None
        "n_shared_experts": c.get_int("n_shared_experts", 0),
        "first_k_dense_replace": first_k,
        "moe_layer_freq": freq,
    }
    if c.has("n_group") or c.has("topk_group"):
        ffn["n_group"] = c.get_int("n_group")
        ffn["topk_group"] = c.get_int("topk_group")
    if any(not moe_layer_rule(i, first_k, freq) for i in range(layers)):
        ffn["dense_intermediate_size"] = c.get_int("intermediate_size")
    return ffn


def _qwen_moe_ffn(c: _Cfg, layers: int) -> dict:
    # modeling_qwen2_moe / qwen3_moe: layer i is sparse iff
    #   i not in mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0
    step = c.get_int("decoder_sparse_step", 1)
    if step != 1:
        raise c.fail(
            f"decoder_sparse_step {step} is not representable (MoE on layers i with (i+1) % {step} == 0; "
            "the schema's rule is i % moe_layer_freq == 0)"
        )
    only = c.cfg.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        raise c.fail(f"key 'mlp_only_layers' must be a list of layer indices, got {only!r}")
    only = sorted(set(only))
    if only != list(range(len(only))):
        raise c.fail(
            f"mlp_only_layers {only} is not representable (only a leading run 0..k-1 maps to first_k_dense_replace)"
        )
    n_exp = c.get_int("num_experts")
    ffn: dict[str, Any] = {
        "kind": "moe",
        "n_routed_experts": n_exp,
        "num_experts_per_tok": c.get_int("num_experts_per_tok"),
        "moe_intermediate_size": c.get_int("moe_intermediate_size"),
        "n_shared_experts": 0,
        "first_k_dense_replace": len(only),
    }
    if c.mt == "qwen2_moe":
        shared = c.get_int("shared_expert_intermediate_size", 0)
        if shared > 0:
            ffn["n_shared_experts"] = 1
            ffn["shared_expert_intermediate_size"] = shared
    if only:
        ffn["dense_intermediate_size"] = c.get_int("intermediate_size")
    return ffn


# --------------------------------------------------------------------------------------
# sliding window
# --------------------------------------------------------------------------------------


def _sliding_window(c: _Cfg, layers: int) -> dict | None:
    mt, cfg = c.mt, c.cfg
    types = cfg.get("layer_types")
    if types is None and mt == "gpt_oss":
        # GptOssConfig default when layer_types is absent: even layers slide, odd layers are full
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise c.fail(f"layer_types must be a list of {layers} entries (one per layer)")
        bad = sorted({t for t in types if t not in ("sliding_attention", "full_attention")}, key=str)
        if bad:
            raise c.fail(f"layer_types entries {bad} are not supported (only sliding_attention / full_attention)")
        idx = [i for i, t in enumerate(types) if t == "sliding_attention"]
        if not idx:
            return None
        return {"window": c.get_int("sliding_window"), "layers": idx}

    if not c.has("sliding_window"):
        return None
    if mt in ("mistral", "mixtral"):
        return {"window": c.get_int("sliding_window"), "layers": list(range(layers))}
    if mt in _QWEN:
        # modeling_qwen2: sliding only when use_sliding_window and layer_idx >= max_window_layers
        if not c.get_bool("use_sliding_window", False):
            return None
        start = c.get_int("max_window_layers", 0)
        idx = list(range(start, layers))
        return {"window": c.get_int("sliding_window"), "layers": idx} if idx else None
    return None  # llama / deepseek: no sliding window in the HF modules


# --------------------------------------------------------------------------------------
# YAML out
# --------------------------------------------------------------------------------------


class _SpecDumper(yaml.SafeDumper):
    """SafeDumper that writes lists of scalars on one line (``layers: [0, 2, 4]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list):
    flow = all(not isinstance(x, (dict, list)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_SpecDumper.add_representer(list, _represent_list)


def spec_to_yaml(spec: ModelSpec) -> str:
    """YAML text for ``spec`` (None values omitted) that loads back to an equal spec."""
    data = spec.model_dump(mode="json", exclude_none=True)
    head = {k: data.pop(k) for k in ("name", "description", "source") if k in data}
    return yaml.dump(
        {**head, **data},
        Dumper=_SpecDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
