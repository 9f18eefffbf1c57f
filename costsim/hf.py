"""HuggingFace ``config.json`` -> :class:`~costsim.specs.ModelSpec`, and ModelSpec -> YAML.

Supported ``model_type`` values (the families whose HF modelling code we mirror):

* ``deepseek`` (DeepSeekMoE / DeepSeek-LLM remote code), ``deepseek_v2``, ``deepseek_v3``:
  MLA when ``kv_lora_rank`` is present, else MHA/GQA; DeepSeekMoE FFN when ``n_routed_experts``
  is set (layer i is MoE iff ``i >= first_k_dense_replace and i % moe_layer_freq == 0``, the rule
  in ``modeling_deepseek.py``; transformers ignores ``moe_layer_freq``, so V2/V3 need it 1);
  ``num_nextn_predict_layers`` (MTP, V3); V3's ``e_score_correction_bias``; V2's ``mlp_bias``.
* ``deepseek_v32``: V3 plus DeepSeek Sparse Attention (``index_n_heads``, ``index_head_dim``,
  ``index_topk``): the indexer's weights and key cache are counted, attention is top-k sparse.
* ``llama``, ``mistral``: dense SwiGLU; ``attention_bias`` (q/k/v/o) and ``mlp_bias`` (llama).
* ``mixtral``: top-k of ``num_local_experts``, expert width ``intermediate_size``, no shared expert.
* ``qwen2``: dense, q/k/v bias always on (o_proj has none) as in ``modeling_qwen2.py``.
* ``qwen2_moe``: routed ``num_experts`` + one shared expert of ``shared_expert_intermediate_size``
  and its sigmoid ``shared_expert_gate``; q/k/v bias from ``qkv_bias`` (default true).
* ``qwen3``, ``qwen3_moe``: per-head q/k RMSNorm (``qk_norm``), explicit ``head_dim``.
* ``gpt_oss``: q/k/v/o bias (``attention_bias``, default true), attention sinks, expert and
  router biases, ``layer_types`` -> sliding-window layers.
* ``olmoe``: every layer MoE (``num_experts``), q/k RMSNorm over the whole projections.
* ``minimax_m2``: MoE with a sigmoid router and ``e_score_correction_bias``; q/k RMSNorm over
  the projections (``qk_norm_scope: projection``); its MTP modules are not built (as transformers).
* ``phimoe`` (Phi-3.5-MoE): LayerNorm with bias, ``attention_bias``, a window on every layer.
* ``granitemoe``, ``granitemoeshared``: MoE (+ one shared MLP of ``shared_intermediate_size``).
* ``dbrx`` (DBRX): ``d_model``, ``n_heads``, ``n_layers``, ``max_seq_len``; GQA of
  ``attn_config.kv_n_heads`` (fused Wqkv, no biases); every layer MoE of
  ``ffn_config.moe_num_experts`` GLU experts of ``ffn_hidden_size``, top ``moe_top_k``;
  LayerNorm without bias (``modeling_dbrx.py``); untied embeddings (DbrxConfig refuses tied).
* ``glm4_moe`` (GLM-4.5): DeepSeek-V3's MoE layout with GQA attention, q/k/v bias, optional
  per-head q/k norm (``use_qk_norm``), ``num_nextn_predict_layers`` (MTP).
* ``llama4_text`` / ``llama4`` (text_config): MoE on ``moe_layers`` (or every
  ``interleave_moe_layer_step``-th layer) with one shared expert; chunked-attention layers as a
  window of ``attention_chunk_size`` (see :func:`_layer_type_window` for what that over-counts).
* ``gemma2``, ``gemma3_text`` / ``gemma3`` (text_config): four norms per layer
  (``sandwich_norm``), tied embeddings by default, sliding layers from ``layer_types`` (or the
  config class's pattern), per-head q/k norm (Gemma-3).

* ``qwen3_next``, ``qwen3_5_text`` / ``qwen3_5``, ``qwen3_5_moe_text`` / ``qwen3_5_moe``: hybrids of
  Gated DeltaNet layers (``layer_types`` ``linear_attention``, or all but every
  ``full_attention_interval``-th) and gated full attention (``output_gate``, per-head q/k norm).

Multimodal wrappers (``gemma3``, ``llama4``, ``qwen3_5``, ``qwen3_5_moe``) import their language
model only, with a warning.

An unknown ``model_type`` whose ``architectures`` names one of these families' classes
(Kimi-K2: ``kimi_k2`` with ``DeepseekV3ForCausalLM``) is read as that family, with a
:class:`~costsim.errors.CostsimWarning`.

Absent and null keys: as the transformers config class of the model_type (transformers 5.x)
would read them, or refused. ``tests/test_hf_differential.py`` checks this against
transformers on the meta device: parameter count, KV per token and sliding layers agree
exactly, or the import refuses naming the key. See :class:`_Cfg` for the rule.

Anything else is refused with a one-line :class:`~costsim.errors.CostsimError` naming the file
and the unsupported ``model_type``; a missing required key names the key. Nothing is guessed: an
unknown config is never silently treated as MHA.

``quantization_config`` sets the default weight formats (``fp8`` block-scaled, ``mxfp4``
experts: :func:`_checkpoint_formats`). Not representable (ignored): RoPE scaling.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import yaml

from costsim.errors import CostsimError, CostsimWarning
from costsim.specs import ModelSpec, moe_layer_rule, validate

SUPPORTED_MODEL_TYPES = (
    "deepseek",
    "deepseek_v2",
    "deepseek_v3",
    "deepseek_v32",
    "dbrx",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "glm4_moe",
    "gpt_oss",
    "granitemoe",
    "granitemoeshared",
    "llama",
    "llama4",
    "llama4_text",
    "minimax_m2",
    "mistral",
    "mixtral",
    "olmoe",
    "phimoe",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_5",
    "qwen3_5_moe",
    "qwen3_5_moe_text",
    "qwen3_5_text",
    "qwen3_moe",
    "qwen3_next",
)

# multimodal wrappers: the language model is ``text_config`` (of this model_type); the vision
# tower and projector are not counted (a warning says so)
_TEXT_CONFIG = {"gemma3": "gemma3_text", "llama4": "llama4_text", "qwen3_5": "qwen3_5_text",
                "qwen3_5_moe": "qwen3_5_moe_text"}
# hybrid models: Gated DeltaNet linear attention on most layers, gated full attention on the rest
_HYBRID = {"qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"}
_GEMMA = {"gemma2", "gemma3_text"}
_GRANITE = {"granitemoe", "granitemoeshared"}

_DEEPSEEK = {"deepseek", "deepseek_v2", "deepseek_v3", "deepseek_v32"}
_QWEN = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"}

_REFUSE = object()  # marker: the transformers default is a size; an absent key is refused, not guessed

# The transformers config class of each model_type (transformers 5.x, ``configuration_*.py``),
# named in messages about its defaults.
_TF_CLASS = {
    "deepseek_v2": "DeepseekV2Config", "deepseek_v3": "DeepseekV3Config", "deepseek_v32": "DeepseekV32Config",
    "gpt_oss": "GptOssConfig",
    "llama": "LlamaConfig", "mistral": "MistralConfig", "mixtral": "MixtralConfig", "qwen2": "Qwen2Config",
    "qwen2_moe": "Qwen2MoeConfig", "qwen3": "Qwen3Config", "qwen3_moe": "Qwen3MoeConfig",
}


class _Cfg:
    """Typed access to a config dict; every failure is a one-line CostsimError.

    Absent and null keys follow the transformers config class of the model_type: an absent
    key takes the dataclass default, a null one goes through ``__post_init__``. Where that
    default is a size (``num_key_value_heads: 32`` in Qwen2Config, ``q_lora_rank: 1536``),
    the import refuses and names the key and the default instead of building a model of a
    size nobody wrote down; defaults that switch a feature off (False, 0, None) or derive
    from other keys (``head_dim = hidden_size // num_attention_heads``) are taken.
    """

    def __init__(self, cfg: dict, where: str, model_type: str):
        self.cfg, self.where, self.mt = cfg, where, model_type

    def fail(self, msg: str) -> CostsimError:
        return CostsimError(f"{self.where}: {msg} (model_type {self.mt})")

    def has(self, key: str) -> bool:
        return self.cfg.get(key) is not None

    def _missing(self, key: str, tf_default: Any, null: bool) -> CostsimError:
        state = "is null" if null else "is missing"
        cls = _TF_CLASS.get(self.mt)
        if tf_default is not _REFUSE and tf_default is not ... and cls:
            return self.fail(f"required key '{key}' {state} (transformers' {cls} would take {tf_default!r}; "
                             "give it explicitly)")
        return self.fail(f"required key '{key}' {state}")

    def get_int(self, key: str, default: Any = ..., *, allow_none: bool = False, null: Any = ...,
                tf_default: Any = _REFUSE) -> Any:
        """The integer at ``key``. Absent: ``default`` (if given), else None with ``allow_none``,
        else an error naming the key (and ``tf_default``, the size transformers would take).
        Null: ``null`` if given, else an error (transformers' strict config fields refuse None)."""
        if key in self.cfg and self.cfg[key] is None:
            if null is not ...:
                return null
            raise self._missing(key, tf_default, True)
        v = self.cfg.get(key)
        if v is None:
            if default is not ...:
                return default
            if allow_none:
                return None
            raise self._missing(key, tf_default, False)
        if isinstance(v, bool) or not isinstance(v, int):
            # JSON writers sometimes emit 4096.0; accept integral floats, reject the rest
            if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
                return int(v)
            raise self.fail(f"key '{key}' must be an integer, got {_short(v)}")
        if not -(2**63) < v < 2**63:
            raise self.fail(f"key '{key}' is an integer of {v.bit_length()} bits: expected one below 2^63")
        return v

    def get_bool(self, key: str, default: bool) -> bool:
        """A flag: absent -> ``default`` (the transformers default); null -> an error (a bool
        field of a transformers config refuses None)."""
        if key not in self.cfg:
            return default
        v = self.cfg[key]
        if not isinstance(v, bool):
            raise self.fail(f"key '{key}' must be true or false, got {'null' if v is None else _short(v)}")
        return v


def _short(v: Any) -> str:
    """``repr`` of a config value, cut to 60 characters (a 10 MB value stays one short line)."""
    if isinstance(v, (dict, list)):
        return f"a {'mapping' if isinstance(v, dict) else 'list'} ({len(v)} entries)"
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 200:
        return f"an integer of {v.bit_length()} bits"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


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


_MAX_LAYERS = 100_000  # ModelSpec.num_hidden_layers bound

# ``architectures`` classes whose modelling code is the one of a supported model_type: a config
# with an unknown model_type (Kimi-K2: ``kimi_k2``) but one of these classes imports as that type.
_ARCH_TO_MODEL_TYPE = {
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "DeepseekV32ForCausalLM": "deepseek_v32",
    "DeepseekForCausalLM": "deepseek",
    "GptOssForCausalLM": "gpt_oss",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text",
    "Gemma3ForConditionalGeneration": "gemma3",
    "Glm4MoeForCausalLM": "glm4_moe",
    "GraniteMoeForCausalLM": "granitemoe",
    "GraniteMoeSharedForCausalLM": "granitemoeshared",
    "Llama4ForCausalLM": "llama4_text",
    "Llama4ForConditionalGeneration": "llama4",
    "MiniMaxM2ForCausalLM": "minimax_m2",
    "OlmoeForCausalLM": "olmoe",
    "Qwen3NextForCausalLM": "qwen3_next",
    "Qwen3_5ForConditionalGeneration": "qwen3_5",
    "Qwen3_5MoeForConditionalGeneration": "qwen3_5_moe",
    "PhimoeForCausalLM": "phimoe",
    "DbrxForCausalLM": "dbrx",
}


def _model_type(cfg: dict, where: str) -> str:
    """The supported model_type of ``cfg``: its own, or the one its ``architectures`` class
    belongs to (with a :class:`~costsim.errors.CostsimWarning`), else a one-line error."""
    mt = cfg.get("model_type")
    if isinstance(mt, str) and mt in SUPPORTED_MODEL_TYPES:
        return mt
    archs = cfg.get("architectures")
    archs = archs if isinstance(archs, list) else []
    known = [a for a in archs if isinstance(a, str) and a in _ARCH_TO_MODEL_TYPE]
    if known:
        as_mt = _ARCH_TO_MODEL_TYPE[known[0]]
        said = "has no model_type" if mt is None else f"model_type {_short(mt)} is not supported"
        warnings.warn(CostsimWarning(
            f"{where}: {said}; read as {as_mt}, the model_type of its architectures class {known[0]}"),
            stacklevel=3)
        return as_mt
    if mt is None:
        raise CostsimError(f"{where}: required key 'model_type' is missing (cannot tell the architecture)")
    raise CostsimError(
        f"{where}: unsupported model_type {_short(mt)} (supported: {', '.join(SUPPORTED_MODEL_TYPES)}; "
        f"or an architectures class among {', '.join(_ARCH_TO_MODEL_TYPE)})"
    )


def spec_from_hf_config(cfg: dict, where: str, name: str | None = None) -> ModelSpec:
    """Build a validated ModelSpec from a HuggingFace ``config.json`` dict.

    ``where`` names the file in error messages and in ``source``. ``name`` defaults to a slug of
    ``_name_or_path`` (last path component), else of the file name, else of ``model_type``.
    """
    if not isinstance(cfg, dict):
        raise CostsimError(f"{where}: expected a JSON object at the top level, got {type(cfg).__name__}")
    mt = _model_type(cfg, where)
    if mt in _TEXT_CONFIG:
        cfg, mt = _text_config(cfg, where, mt), _TEXT_CONFIG[mt]
    if mt == "dbrx":
        cfg = _dbrx_flat(cfg, where)
    c = _Cfg(cfg, where, mt)

    hidden = c.get_int("hidden_size")
    layers = c.get_int("num_hidden_layers")
    heads = c.get_int("num_attention_heads")
    if not 0 < layers <= _MAX_LAYERS:  # before any per-layer list is built
        raise c.fail(f"num_hidden_layers {layers} is out of range: expected 1 to {_MAX_LAYERS:,}")
    if heads <= 0:
        raise c.fail(f"num_attention_heads {heads} must be positive")
    data: dict[str, Any] = {
        "name": name or _default_name(cfg, where, mt),
        "source": f"HF config.json: {where}",
        "description": f"imported from a HuggingFace config.json (model_type {mt})",
        "vocab_size": c.get_int("vocab_size"),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        # Phi-3.5-MoE: nn.LayerNorm with bias; Gemma-2/3: pre/post norms around attention and FFN
        # DBRX: nn.LayerNorm(bias=False), a weight only
        "norm": "layernorm" if mt == "phimoe" else "layernorm_nobias" if mt == "dbrx" else "rmsnorm",
        "sandwich_norm": mt in _GEMMA,
        "tie_word_embeddings": c.get_bool("tie_word_embeddings", mt in _GEMMA),  # Gemma*Config: True
        "num_nextn_predict_layers": (c.get_int("num_nextn_predict_layers", 0)
                                     if mt in _DEEPSEEK or mt == "glm4_moe" else 0),
        "attention": _attention(c, hidden, heads),
        "ffn": _ffn(c, layers),
    }
    if c.has("max_position_embeddings"):
        data["max_position_embeddings"] = c.get_int("max_position_embeddings")
    sw = _sliding_window(c, layers)
    if sw is not None:
        data["sliding_window"] = sw
    if mt in _HYBRID:
        data["linear_attention"] = _linear_attention(c, layers)
    data.update(_checkpoint_formats(c, isinstance(data["ffn"], dict) and data["ffn"].get("kind") == "moe"))
    return validate(ModelSpec, data, where)


def _text_config(cfg: dict, where: str, mt: str) -> dict:
    """The language model of a multimodal config (Gemma-3, Llama-4): its ``text_config``, with
    ``tie_word_embeddings`` and ``quantization_config`` from the top level where it has none,
    and a warning that the vision tower is left out."""
    text = cfg.get("text_config")
    if not isinstance(text, dict):
        raise CostsimError(f"{where}: model_type {mt} keeps its language model in 'text_config', "
                           f"expected a mapping, got {_short(text) if 'text_config' in cfg else 'nothing'}")
    out = dict(text)
    out["model_type"] = _TEXT_CONFIG[mt]
    for key in ("tie_word_embeddings", "quantization_config", "_name_or_path"):
        if key in cfg and key not in out:
            out[key] = cfg[key]
    warnings.warn(CostsimWarning(f"{where}: model_type {mt}: only the language model (text_config) is "
                                 "modelled; the vision encoder and projector are not counted"), stacklevel=3)
    return out


# DbrxConfig key -> the key the common path reads; nested under attn_config / ffn_config
_DBRX_TOP = {"d_model": "hidden_size", "n_heads": "num_attention_heads", "n_layers": "num_hidden_layers",
             "max_seq_len": "max_position_embeddings", "vocab_size": "vocab_size"}
_DBRX_SUB = {("attn_config", "kv_n_heads"): "num_key_value_heads",
             ("ffn_config", "moe_num_experts"): "num_local_experts", ("ffn_config", "moe_top_k"): "num_experts_per_tok",
             ("ffn_config", "ffn_hidden_size"): "intermediate_size"}


def _dbrx_flat(cfg: dict, where: str) -> dict:
    """A DBRX config (``d_model``, ``attn_config``, ``ffn_config``: transformers DbrxConfig) as
    the flat keys of the common path. Every size DbrxConfig would default (``d_model`` 2048,
    ``kv_n_heads`` 1, ``moe_num_experts`` 4, ...) is refused when absent or null, naming the
    DBRX key; ``max_seq_len`` is optional. ``tie_word_embeddings`` true is refused (DbrxConfig
    refuses it)."""
    def fail(msg):
        return CostsimError(f"{where}: {msg} (model_type dbrx)")

    out = {k: v for k, v in cfg.items() if k not in _DBRX_TOP and k not in ("attn_config", "ffn_config")}
    out["model_type"] = "dbrx"
    for key, flat in _DBRX_TOP.items():
        if cfg.get(key) is not None:
            out[flat] = cfg[key]
        elif key != "max_seq_len":
            raise fail(f"required key '{key}' is {'null' if key in cfg else 'missing'}")
    for (sub, key), flat in _DBRX_SUB.items():
        block = cfg.get(sub)
        if block is not None and not isinstance(block, dict):
            raise fail(f"key '{sub}' must be a mapping, got {_short(block)}")
        v = (block or {}).get(key)
        if v is None:
            raise fail(f"required key '{key}' in {sub} is {'null' if key in (block or {}) else 'missing'}")
        out[flat] = v
    if cfg.get("tie_word_embeddings") is True:
        raise fail("tie_word_embeddings true is not supported by DBRX (DbrxConfig refuses it)")
    out["tie_word_embeddings"] = False
    return out


def _checkpoint_formats(c: _Cfg, moe: bool) -> dict:
    """``weight_dtype`` / ``expert_weight_dtype`` of the published checkpoint from its
    ``quantization_config`` (the default weight format of every query on the model).

    - ``quant_method: fp8`` with ``weight_block_size: [128, 128]`` (DeepSeek-V3, Qwen3-FP8):
      ``fp8-b128`` (one fp32 scale per 128 x 128 block); without a block size: ``fp8``.
    - ``quant_method: mxfp4`` (gpt-oss): routed experts ``mxfp4``; the modules listed in
      ``modules_to_not_convert`` (attention, router, embedding, LM head) stay BF16.
    - any other method: not modelled, weights stay BF16, with a warning.
    """
    q = c.cfg.get("quantization_config")
    if q is None:
        return {}
    if not isinstance(q, dict):
        raise c.fail(f"key 'quantization_config' must be a mapping, got {_short(q)}")
    method = q.get("quant_method")
    if method == "fp8":
        block = q.get("weight_block_size")
        if block is None:
            return {"weight_dtype": "fp8"}
        if block == [128, 128]:
            return {"weight_dtype": "fp8-b128"}
        warnings.warn(CostsimWarning(
            f"{c.where}: quantization_config.weight_block_size {_short(block)} is not modelled; weights "
            "default to fp8 without their scales"), stacklevel=4)
        return {"weight_dtype": "fp8"}
    if method == "mxfp4":
        skip = q.get("modules_to_not_convert") or []
        if not isinstance(skip, list):
            raise c.fail(f"key 'quantization_config.modules_to_not_convert' must be a list, got {_short(skip)}")
        attention_kept = any(isinstance(m, str) and "self_attn" in m for m in skip)
        if not moe:
            return {"weight_dtype": "bf16" if attention_kept else "mxfp4"}
        return {"weight_dtype": "bf16" if attention_kept else "mxfp4", "expert_weight_dtype": "mxfp4"}
    warnings.warn(CostsimWarning(
        f"{c.where}: quantization_config quant_method {_short(method)} is not modelled (fp8 and mxfp4 are); "
        "weights default to bf16, give --weight-dtype"), stacklevel=4)
    return {}


# --------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------

# num_key_value_heads when absent: "heads" (LlamaConfig: None -> num_attention_heads) or the
# transformers dataclass default, refused as a size. Null: num_attention_heads (every
# __post_init__ here) except Qwen2-MoE / Qwen3-MoE, whose None reaches nn.Linear and fails.
_KV_ABSENT = {"llama": "heads", "mistral": 8, "mixtral": 8, "qwen2": 32, "qwen3": 32, "qwen2_moe": 16,
              "qwen3_moe": 4, "gpt_oss": 8, "deepseek": "heads", "gemma2": 4, "gemma3_text": 4, "glm4_moe": 8,
              "minimax_m2": 8, "olmoe": 16, "phimoe": 8, "granitemoe": 32, "granitemoeshared": 32, "llama4_text": 8,
              "qwen3_next": 2, "qwen3_5_moe_text": 2, "qwen3_5_text": 4}
_KV_NULL_FAILS = {"qwen2_moe", "qwen3_moe", "gemma2", "gemma3_text", "glm4_moe", "minimax_m2"} | _HYBRID
# head_dim when absent: derived (hidden_size // num_attention_heads, the modelling code's
# getattr default) or a dataclass size default (refused). Null: derived where __post_init__
# or ``getattr(...) or`` derives it, else refused (None reaches nn.Linear).
_HEAD_DIM_ABSENT = {"qwen3": 128, "gpt_oss": 64, "gemma2": 256, "gemma3_text": 256, "llama4_text": 128,
                    "minimax_m2": 128, "qwen3_next": 256, "qwen3_5_text": 256, "qwen3_5_moe_text": 256}
_HEAD_DIM_NULL_DERIVES = {"llama", "mistral", "mixtral", "gpt_oss", "deepseek", "llama4_text"}


def _attention(c: _Cfg, hidden: int, heads: int) -> dict:
    mt = c.mt
    if mt in ("deepseek_v2", "deepseek_v3", "deepseek_v32") and not c.has("kv_lora_rank"):
        # every DeepSeek-V2/V3 model uses MLA; a missing latent rank is a broken config, not MHA
        raise c.fail("required key 'kv_lora_rank' is missing (DeepSeek-V2/V3 configs use MLA)")
    if mt in _DEEPSEEK and c.has("kv_lora_rank"):
        if c.get_bool("attention_bias", False):
            raise c.fail("attention_bias true with MLA is not representable (MLAAttention has no bias fields)")
        # q_lora_rank: absent -> 1536 in DeepseekV2Config / DeepseekV3Config (refused as a size);
        # null -> no query compression (V2-Lite). Remote code (deepseek) defaults it to None.
        if mt == "deepseek":
            q_lora = c.get_int("q_lora_rank", allow_none=True, null=None)
        else:
            q_lora = c.get_int("q_lora_rank", null=None, tf_default=1536)
        mla = {
            "kind": "mla",
            "num_attention_heads": heads,
            "q_lora_rank": q_lora,
            "kv_lora_rank": c.get_int("kv_lora_rank"),
            "qk_rope_head_dim": c.get_int("qk_rope_head_dim", tf_default=64),
            "qk_nope_head_dim": c.get_int("qk_nope_head_dim", tf_default=128),
            "v_head_dim": c.get_int("v_head_dim", tf_default=128),
        }
        if mt == "deepseek_v32":  # DSA indexer (DeepseekV32Config: 64 heads of 128, top-2048)
            if q_lora is None:
                raise c.fail("q_lora_rank null is not representable with DSA (the indexer projects the "
                             "compressed query)")
            mla.update(index_n_heads=c.get_int("index_n_heads", tf_default=64),
                       index_head_dim=c.get_int("index_head_dim", tf_default=128),
                       index_topk=c.get_int("index_topk", tf_default=2048))
        return mla

    absent = _KV_ABSENT.get(mt, "heads")
    null_kv = ... if mt in _KV_NULL_FAILS else heads
    if absent == "heads":
        kv = c.get_int("num_key_value_heads", heads, null=null_kv)
    else:
        kv = c.get_int("num_key_value_heads", null=null_kv, tf_default=absent)
    if "head_dim" in c.cfg and not (c.cfg["head_dim"] is None and mt in _HEAD_DIM_NULL_DERIVES):
        head_dim = c.get_int("head_dim", tf_default=_HEAD_DIM_ABSENT.get(mt, _REFUSE))
    elif mt in _HEAD_DIM_ABSENT and "head_dim" not in c.cfg:
        raise c._missing("head_dim", _HEAD_DIM_ABSENT[mt], False)
    else:
        if hidden % heads:
            raise c.fail(f"no 'head_dim' and hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        head_dim = hidden // heads
    kind = "mha" if kv == heads else "mqa" if kv == 1 else "gqa"

    qk_norm, scope = mt in ("qwen3", "qwen3_moe", "gemma3_text") or mt in _HYBRID, "head"
    if mt == "glm4_moe":
        qk_norm = c.get_bool("use_qk_norm", False)  # Glm4MoeAttention: RMSNorm(head_dim) if use_qk_norm
    elif mt in ("olmoe", "minimax_m2"):
        # OlmoeAttention: q_norm = RMSNorm(hidden_size), k_norm = RMSNorm(kv_heads * head_dim);
        # MiniMaxM2Attention: RMSNorm(heads * head_dim) and RMSNorm(kv_heads * head_dim), always
        qk_norm, scope = True, "projection"
        if mt == "olmoe" and heads * head_dim != hidden:
            raise c.fail(f"num_attention_heads x head_dim = {heads * head_dim} differs from hidden_size {hidden}: "
                         "OLMoE's q_norm spans hidden_size, not representable")
    if mt == "qwen2":
        qkv_bias, o_bias = True, False  # hard-coded in modeling_qwen2.py
    elif mt == "qwen2_moe":
        qkv_bias, o_bias = c.get_bool("qkv_bias", True), False  # Qwen2MoeConfig.qkv_bias (default True)
    elif mt in ("mistral", "mixtral", "minimax_m2", "dbrx"):
        qkv_bias = o_bias = False  # no bias option in the HF modules
    elif mt == "glm4_moe":
        qkv_bias, o_bias = c.get_bool("attention_bias", False), False  # o_proj: bias=False
    else:  # llama(4), qwen3(_moe), gpt_oss, deepseek without MLA, gemma, olmoe, granite, phimoe: q/k/v/o
        qkv_bias = o_bias = c.get_bool("attention_bias", mt == "gpt_oss")  # GptOssConfig: True
    return {
        "kind": kind,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "qkv_bias": qkv_bias,
        "o_bias": o_bias,
        "qk_norm": qk_norm,
        "qk_norm_scope": scope,
        "sinks": mt == "gpt_oss",
        "output_gate": mt in _HYBRID,  # Qwen3NextAttention: q_proj emits query and gate
    }


# --------------------------------------------------------------------------------------
# FFN
# --------------------------------------------------------------------------------------


def _dense(c: _Cfg) -> dict:
    bias = c.get_bool("mlp_bias", False) if c.mt in ("llama", "deepseek_v2") else False
    return {"kind": "dense", "intermediate_size": c.get_int("intermediate_size"), "gated": True, "bias": bias}


def _ffn(c: _Cfg, layers: int) -> dict:
    mt = c.mt
    if mt in ("llama", "mistral", "qwen2", "qwen3", "qwen3_5_text") or mt in _GEMMA:
        return _dense(c)
    if mt in ("qwen3_next", "qwen3_5_moe_text"):
        return _qwen_moe_ffn(c, layers)
    if mt in ("olmoe", "minimax_m2", "phimoe", "dbrx") or mt in _GRANITE:
        return _simple_moe_ffn(c)
    if mt == "glm4_moe":
        return _glm4_moe_ffn(c, layers)
    if mt == "llama4_text":
        return _llama4_ffn(c, layers)
    if mt in _DEEPSEEK:
        return _deepseek_ffn(c, layers)
    if mt == "mixtral":
        return {
            "kind": "moe",
            "n_routed_experts": c.get_int("num_local_experts", tf_default=8),
            "num_experts_per_tok": c.get_int("num_experts_per_tok", tf_default=2),
            "moe_intermediate_size": c.get_int("intermediate_size", tf_default=14336),
            "n_shared_experts": 0,
        }
    if mt in ("qwen2_moe", "qwen3_moe"):
        return _qwen_moe_ffn(c, layers)
    if mt == "gpt_oss":
        topk = c.get_int("num_experts_per_tok", None)
        if topk is None:
            topk = c.get_int("experts_per_token", None)
        if topk is None:
            raise c._missing("num_experts_per_tok", 4, "num_experts_per_tok" in c.cfg)
        return {
            "kind": "moe",
            "n_routed_experts": c.get_int("num_local_experts", tf_default=128),
            "num_experts_per_tok": topk,
            "moe_intermediate_size": c.get_int("intermediate_size", tf_default=2880),
            "n_shared_experts": 0,
            "expert_bias": True,  # gate_up_proj_bias / down_proj_bias in GptOssExperts
            "router_bias": True,  # GptOssTopKRouter has a bias
        }
    raise c.fail("no FFN mapping")  # unreachable: model_type checked above


# transformers defaults (sizes, refused when absent) of the one-expert-type MoE families
_SIMPLE_MOE = {  # model_type: (experts key, experts, top-k, expert width)
    "olmoe": ("num_experts", 64, 8, 2048), "minimax_m2": ("num_local_experts", 256, 8, 1536),
    "phimoe": ("num_local_experts", 16, 2, 6400), "granitemoe": ("num_local_experts", 8, 2, 11008),
    "granitemoeshared": ("num_local_experts", 8, 2, 11008), "dbrx": ("num_local_experts", 4, 1, 3584),
}


def _simple_moe_ffn(c: _Cfg) -> dict:
    """Every layer MoE, routed experts of ``intermediate_size`` (OLMoE, MiniMax-M2, Phi-3.5-MoE,
    Granite-MoE); Granite-MoE-Shared adds one shared MLP of ``shared_intermediate_size``
    (0: none); MiniMax-M2 stores an ``e_score_correction_bias`` per layer."""
    key, n, k, inter = _SIMPLE_MOE[c.mt]
    if c.mt == "phimoe" and c.get_bool("lm_head_bias", False):
        raise c.fail("lm_head_bias true is not representable (the LM head has no bias in costsim)")
    ffn: dict[str, Any] = {
        "kind": "moe",
        "n_routed_experts": c.get_int(key, tf_default=n),
        "num_experts_per_tok": c.get_int("num_experts_per_tok", tf_default=k),
        "moe_intermediate_size": c.get_int("intermediate_size", tf_default=inter),
        "n_shared_experts": 0,
        "router_correction_bias": c.mt == "minimax_m2",  # MiniMaxM2SparseMoeBlock buffer
    }
    if c.mt == "granitemoeshared":
        shared = c.get_int("shared_intermediate_size", 0)
        if shared > 0:  # GraniteMoeSharedMLP: input_linear (h -> 2 x shared) + output_linear
            ffn.update(n_shared_experts=1, shared_expert_intermediate_size=shared)
    return ffn


def _glm4_moe_ffn(c: _Cfg, layers: int) -> dict:
    """GLM-4.5 (Glm4MoeConfig): DeepSeek-V3's layout (first_k_dense_replace dense layers, then
    routed + shared experts with a sigmoid router and its e_score_correction_bias)."""
    first_k = c.get_int("first_k_dense_replace", tf_default=1)
    ffn: dict[str, Any] = {
        "kind": "moe",
        "n_routed_experts": c.get_int("n_routed_experts", tf_default=128),
        "num_experts_per_tok": c.get_int("num_experts_per_tok", tf_default=8),
        "moe_intermediate_size": c.get_int("moe_intermediate_size", tf_default=1408),
        "n_shared_experts": c.get_int("n_shared_experts", tf_default=1),
        "first_k_dense_replace": first_k,
        "router_correction_bias": True,  # Glm4MoeTopkRouter.e_score_correction_bias
        "n_group": c.get_int("n_group", 1),
        "topk_group": c.get_int("topk_group", 1),
    }
    if first_k > 0:
        ffn["dense_intermediate_size"] = c.get_int("intermediate_size", tf_default=10944)
    return ffn


def _llama4_ffn(c: _Cfg, layers: int) -> dict:
    """Llama-4 (Llama4TextConfig): MoE on ``moe_layers`` (default: every
    ``interleave_moe_layer_step``-th layer from step - 1), each with ``num_local_experts``
    routed experts of ``intermediate_size`` and one shared expert of the same width; the other
    layers a dense MLP of ``intermediate_size_mlp``."""
    moe = c.cfg.get("moe_layers")
    if moe is None:
        step = c.get_int("interleave_moe_layer_step", 1)
        if step < 1:
            raise c.fail(f"interleave_moe_layer_step {step} must be at least 1")
        moe = list(range(step - 1, layers, step))
    elif not isinstance(moe, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in moe):
        raise c.fail(f"key 'moe_layers' must be a list of layer indices, got {_short(moe)}")
    moe = sorted({i for i in moe if 0 <= i < layers})  # transformers: a layer is MoE iff its index is listed
    if not moe:  # e.g. one layer with interleave step 2: every layer is the dense MLP
        return {"kind": "dense", "intermediate_size": c.get_int("intermediate_size_mlp", tf_default=16384)}
    inter = c.get_int("intermediate_size", tf_default=8192)
    ffn: dict[str, Any] = {
        "kind": "moe",
        "n_routed_experts": c.get_int("num_local_experts", tf_default=16),
        "num_experts_per_tok": c.get_int("num_experts_per_tok", tf_default=1),
        "moe_intermediate_size": inter,
        "n_shared_experts": 1,  # Llama4TextMoe.shared_expert (intermediate_size wide)
        "moe_layers": moe,
    }
    if len(moe) < layers:
        ffn["dense_intermediate_size"] = c.get_int("intermediate_size_mlp", tf_default=16384)
    return ffn


def _deepseek_ffn(c: _Cfg, layers: int) -> dict:
    mt = c.mt
    if mt == "deepseek" and not c.has("n_routed_experts"):
        return _dense(c)  # remote modeling_deepseek: n_routed_experts None -> every layer dense
    v3 = mt in ("deepseek_v3", "deepseek_v32")  # V3.2 keeps V3's MoE (and its config defaults)
    # transformers' DeepseekV2/V3 build the MoE on every layer >= first_k_dense_replace and
    # ignore moe_layer_freq; the remote code applies it. Only freq 1 means the same in both.
    freq = c.get_int("moe_layer_freq", 1)
    if mt != "deepseek" and freq != 1:
        raise c.fail(f"moe_layer_freq {freq} is read by DeepSeek's remote code but ignored by transformers' "
                     f"{_TF_CLASS[mt]} (MoE on every layer >= first_k_dense_replace); give 1 or remove it")
    if mt == "deepseek":
        first_k = c.get_int("first_k_dense_replace", 0)
        n_shared = c.get_int("n_shared_experts", 0)  # remote code: shared experts only when not None
    else:
        # DeepseekV3Config: first_k_dense_replace 3, n_shared_experts 1; V2: 0 and 2
        first_k = c.get_int("first_k_dense_replace", tf_default=3) if v3 else c.get_int("first_k_dense_replace", 0)
        n_shared = c.get_int("n_shared_experts", tf_default=1 if v3 else 2)
    ffn: dict[str, Any] = {
        "kind": "moe",
        "n_routed_experts": c.get_int("n_routed_experts", tf_default=256 if v3 else 64),
        "num_experts_per_tok": c.get_int("num_experts_per_tok", tf_default=8 if v3 else _REFUSE),
        "moe_intermediate_size": c.get_int("moe_intermediate_size", tf_default=2048 if v3 else 1407),
        "n_shared_experts": n_shared,
        "first_k_dense_replace": first_k,
        "moe_layer_freq": freq,
    }
    if v3:
        ffn["router_correction_bias"] = True  # DeepseekV3TopkRouter.e_score_correction_bias (n_routed_experts)
    if mt == "deepseek_v2" and c.get_bool("mlp_bias", False):
        ffn["dense_bias"] = ffn["shared_expert_bias"] = True  # DeepseekV2MLP(bias=mlp_bias): dense + shared
    if v3 and not (c.has("n_group") or c.has("topk_group")):
        raise c._missing("n_group", 8, "n_group" in c.cfg)  # DeepseekV3Config: n_group 8, topk_group 4
    if c.has("n_group") or c.has("topk_group"):
        ffn["n_group"] = c.get_int("n_group")
        ffn["topk_group"] = c.get_int("topk_group")
    if any(not moe_layer_rule(i, first_k, freq) for i in range(layers)):
        ffn["dense_intermediate_size"] = c.get_int("intermediate_size", tf_default=18432 if v3 else 11008)
    return ffn


def _qwen_moe_ffn(c: _Cfg, layers: int) -> dict:
    # modeling_qwen2_moe / qwen3_moe: layer i is sparse iff
    #   i not in mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0
    if c.mt == "qwen3_5_moe_text":  # Qwen3_5MoeDecoderLayer: every layer sparse
        return _qwen_moe_body(c, layers, [])
    step = c.get_int("decoder_sparse_step", 1)
    if step != 1:
        raise c.fail(
            f"decoder_sparse_step {step} is not representable (MoE on layers i with (i+1) % {step} == 0; "
            "the schema's rule is i % moe_layer_freq == 0)"
        )
    only = c.cfg.get("mlp_only_layers") or []
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in only):
        raise c.fail(f"key 'mlp_only_layers' must be a list of layer indices, got {_short(only)}")
    only = sorted({i for i in only if 0 <= i < layers})  # indices past the last layer select nothing
    if only != list(range(len(only))):
        raise c.fail(
            f"mlp_only_layers {_short(only)} is not representable (only a leading run 0..k-1 maps to "
            "first_k_dense_replace)"
        )
    return _qwen_moe_body(c, layers, only)


def _qwen_moe_body(c: _Cfg, layers: int, only: list[int]) -> dict:
    q2 = c.mt in ("qwen2_moe", "qwen3_next", "qwen3_5_moe_text")  # with a gated shared expert
    experts, topk, width, shared_w, dense_w = _QWEN_MOE_DEFAULTS[c.mt]
    n_exp = c.get_int("num_experts", tf_default=experts)
    ffn: dict[str, Any] = {
        "kind": "moe",
        "n_routed_experts": n_exp,
        "num_experts_per_tok": c.get_int("num_experts_per_tok", tf_default=topk),
        "moe_intermediate_size": c.get_int("moe_intermediate_size", tf_default=width),
        "n_shared_experts": 0,
        "first_k_dense_replace": len(only),
    }
    if q2:
        # Qwen2MoeSparseMoeBlock (and Qwen3-Next's, Qwen3.5's): one shared expert of
        # shared_expert_intermediate_size and its 1-wide sigmoid gate (hidden_size weights)
        shared = c.get_int("shared_expert_intermediate_size", tf_default=shared_w)
        if shared > 0:
            ffn["n_shared_experts"] = 1
            ffn["shared_expert_intermediate_size"] = shared
        ffn["shared_expert_gate"] = True
    if only:
        ffn["dense_intermediate_size"] = c.get_int("intermediate_size", tf_default=dense_w)
    return ffn


# transformers defaults (sizes, refused when absent): experts, top-k, expert width, shared
# expert width, dense width
_QWEN_MOE_DEFAULTS = {"qwen2_moe": (60, 4, 1408, 5632, 5632), "qwen3_moe": (128, 8, 768, None, 6144),
                      "qwen3_next": (512, 10, 512, 512, 5632), "qwen3_5_moe_text": (256, 8, 512, 512, _REFUSE)}


# --------------------------------------------------------------------------------------
# sliding window
# --------------------------------------------------------------------------------------


def _sliding_window(c: _Cfg, layers: int) -> dict | None:
    """Sliding-window layers as the transformers config computes ``layer_types`` (or uses the
    config's own list) and the modelling code applies them."""
    mt, cfg = c.mt, c.cfg
    if mt in _GEMMA or mt == "llama4_text":
        return _layer_type_window(c, layers)
    if mt == "phimoe":  # PhimoeConfig.sliding_window: None by default, else every layer
        return {"window": c.get_int("sliding_window"), "layers": list(range(layers))} if c.has("sliding_window") else None
    if mt in ("glm4_moe", "olmoe", "minimax_m2", "dbrx") or mt in _GRANITE or mt in _HYBRID:
        return None  # no sliding window in these HF modules
    types = cfg.get("layer_types")
    if types is None and mt == "gpt_oss":
        # GptOssConfig default when layer_types is absent: even layers slide, odd layers are full
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    if types is not None and mt not in ("mistral", "mixtral", "qwen3_moe", "llama") + tuple(_DEEPSEEK):
        if mt in _QWEN and not c.get_bool("use_sliding_window", False):
            return None  # Qwen2(Moe)Config: no window unless use_sliding_window, whatever layer_types says
        if not isinstance(types, list) or len(types) != layers:
            raise c.fail(f"layer_types must be a list of {layers} entries (one per layer)")
        bad = sorted({t for t in types if t not in ("sliding_attention", "full_attention")}, key=str)
        if bad:
            raise c.fail(f"layer_types entries {_short(bad)} are not supported (only sliding_attention / "
                         "full_attention)")
        idx = [i for i, t in enumerate(types) if t == "sliding_attention"]
        if not idx:
            return None
        return {"window": c.get_int("sliding_window", tf_default=128 if mt == "gpt_oss" else 4096), "layers": idx}

    if mt == "mistral":
        # MistralConfig: sliding_window 4096 when absent (refused as a size), every layer; null: none
        if "sliding_window" not in cfg:
            raise c._missing("sliding_window", 4096, False)
    if mt in ("mistral", "mixtral"):
        if not c.has("sliding_window"):
            return None
        return {"window": c.get_int("sliding_window"), "layers": list(range(layers))}
    if mt in _QWEN:
        if not c.get_bool("use_sliding_window", False):
            return None
        window = c.get_int("sliding_window", tf_default=4096)
        if mt == "qwen3_moe":
            idx = list(range(layers))  # Qwen3MoeAttention: config.sliding_window on every layer
        else:
            start = c.get_int("max_window_layers", tf_default=28)
            if mt == "qwen2_moe":  # Qwen2MoeConfig.layer_types: even layers below max_window_layers
                idx = [i for i in range(layers) if (i + 1) % 2 and i < start]
            else:  # Qwen2Config / Qwen3Config.layer_types: layers from max_window_layers on
                idx = list(range(start, layers))
        return {"window": window, "layers": idx} if idx else None
    return None  # llama / deepseek: no sliding window in the HF modules


def _linear_attention(c: _Cfg, layers: int) -> dict:
    """Qwen3-Next / Qwen3.5 Gated DeltaNet layers: ``layer_types`` entries ``linear_attention``
    (default: all but every ``full_attention_interval``-th layer, 4), with the config's
    ``linear_*`` sizes (transformers defaults are sizes, refused when absent)."""
    types = c.cfg.get("layer_types")
    if types is None:
        interval = c.get_int("full_attention_interval", 4)
        if interval < 1:
            raise c.fail(f"full_attention_interval {interval} must be at least 1")
        types = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(layers)]
    if not isinstance(types, list) or len(types) != layers:
        raise c.fail(f"layer_types must be a list of {layers} entries (one per layer)")
    bad = sorted({t for t in types if t not in ("linear_attention", "full_attention")}, key=str)
    if bad:
        raise c.fail(f"layer_types entries {_short(bad)} are not supported (only linear_attention / full_attention)")
    dtype = c.cfg.get("mamba_ssm_dtype") or "float32"
    state = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype)
    if state is None:
        raise c.fail(f"mamba_ssm_dtype {_short(dtype)} is not supported (float32, bfloat16, float16)")
    return {
        "layers": [i for i, t in enumerate(types) if t == "linear_attention"],
        "num_key_heads": c.get_int("linear_num_key_heads", tf_default=16),
        "num_value_heads": c.get_int("linear_num_value_heads", tf_default=32),
        "key_head_dim": c.get_int("linear_key_head_dim", tf_default=128),
        "value_head_dim": c.get_int("linear_value_head_dim", tf_default=128),
        "conv_kernel_dim": c.get_int("linear_conv_kernel_dim", tf_default=4),
        "state_dtype": state,
    }


def _layer_type_window(c: _Cfg, layers: int) -> dict | None:
    """Gemma-2/3 and Llama-4 windows from ``layer_types`` (or the config class's default list).

    Gemma-2: sliding on even layers; Gemma-3: on all but every ``sliding_window_pattern``-th
    (6). Llama-4's ``chunked_attention`` layers (the RoPE layers: all but every
    ``no_rope_layer_interval``-th, 4) attend within chunks of ``attention_chunk_size`` tokens;
    they are modelled as a window of that size: the cache holds at most a chunk, as in
    transformers' chunked cache, but the attention FLOPs are those of a window (each query sees
    up to W - 1 earlier tokens; in a chunk, on average half a chunk), an over-estimate.
    """
    mt, cfg = c.mt, c.cfg
    types = cfg.get("layer_types")
    if mt == "llama4_text":
        if types is None:
            interval = c.get_int("no_rope_layer_interval", 4)
            nope = cfg.get("no_rope_layers")
            if nope:
                if not isinstance(nope, list) or len(nope) != layers:
                    raise c.fail(f"no_rope_layers must be a list of {layers} entries (one per layer)")
                rope = [bool(x) for x in nope]
            else:
                rope = [(i + 1) % interval != 0 for i in range(layers)] if interval > 0 else [True] * layers
            chunk = c.get_int("attention_chunk_size", 8192, null=None)
            types = ["chunked_attention" if r and chunk is not None else "full_attention" for r in rope]
        kind, window = "chunked_attention", c.get_int("attention_chunk_size", tf_default=8192, null=None)
    else:
        if mt == "gemma3_text" and c.get_bool("use_bidirectional_attention", False):
            raise c.fail("use_bidirectional_attention true is not representable (costsim models causal decoders)")
        if types is None:
            pattern = 2 if mt == "gemma2" else c.get_int("sliding_window_pattern", 6)
            types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
        kind, window = "sliding_attention", c.get_int("sliding_window", tf_default=4096, null=None)
    if not isinstance(types, list) or len(types) != layers:
        raise c.fail(f"layer_types must be a list of {layers} entries (one per layer)")
    bad = sorted({t for t in types if t not in (kind, "full_attention")}, key=str)
    if bad:
        raise c.fail(f"layer_types entries {_short(bad)} are not supported (only {kind} / full_attention)")
    idx = [i for i, t in enumerate(types) if t == kind]
    return {"window": window, "layers": idx} if idx and window is not None else None


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
