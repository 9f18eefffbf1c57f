"""KV cache size: elements and bytes per token, per layer and per model, for a batch x context.

Per token per layer (DeepSeek-V2, arXiv 2405.04434, Table 1):
  MHA 2*n_h*d_h, GQA 2*n_g*d_h, MQA 2*d_h, MLA d_c + d_h^R.
Real layouts: block-scaled formats carry their scales (``NumberFormat.bytes_for``); the
FlashMLA FP8 layout keeps the RoPE key in BF16 (656 B/token/layer for d_c=512, d_h^R=64);
paged caches round each sequence up to whole blocks; sliding-window layers stop growing at
the window; under tensor parallelism each device holds ceil(n_kv / TP) KV heads (heads are
replicated when TP > n_kv) and an MLA latent is not divided at all.

All functions accept scalars or numpy arrays for ``context`` and ``batch`` (broadcasting).
"""

from __future__ import annotations

import numpy as np

from costsim.errors import FieldError
from costsim.simulator.deployment import kv_format_problem, tp_problem
from costsim.specs import MLAAttention, ModelSpec
from costsim.units import NumberFormat


INDEXER_SCALE_BLOCK = 128  # DSA indexer key cache: one FP32 scale per 128 FP8 elements


def indexer_bytes_per_token_per_layer(spec: ModelSpec) -> float:
    """Bytes of the DSA indexer's key cache per token per layer: index_head_dim FP8 elements
    plus one FP32 scale per 128 (DeepSeek-V3.2-Exp ``inference/model.py``: ``k_cache``
    float8_e4m3fn, ``k_scale_cache`` float32; 132 B for d_I = 128), whatever the main KV
    format. 0 without DSA."""
    a = spec.attention
    if not isinstance(a, MLAAttention) or not a.sparse:
        return 0.0
    return float(a.index_head_dim + 4 * -(-a.index_head_dim // INDEXER_SCALE_BLOCK))


def kv_elements_per_token_per_layer(spec: ModelSpec) -> int:
    """Elements cached per token in one layer (Table 1 of the DeepSeek-V2 paper); with DSA
    (DeepSeek-V3.2) the indexer's key (index_head_dim) too."""
    a = spec.attention
    if isinstance(a, MLAAttention):
        return a.kv_lora_rank + a.qk_rope_head_dim + (a.index_head_dim if a.sparse else 0)
    return 2 * a.num_key_value_heads * a.head_dim


def kv_elements_per_token(spec: ModelSpec) -> int:
    """Elements cached per token over all layers (ignores sliding windows: a token inside
    every window; linear-attention layers cache none). DeepSeek-V2: (512 + 64) * 60 = 34,560."""
    return kv_elements_per_token_per_layer(spec) * (spec.num_hidden_layers - spec.n_linear_layers)


_STATE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
CONV_STATE_BYTES = 2  # the causal-conv state is kept in the model's BF16 (vLLM: the model dtype)


def linear_state_bytes_per_layer(spec: ModelSpec, tp: int = 1) -> float:
    """Bytes of recurrent state one sequence keeps in one linear-attention layer on one device,
    independent of context: H_v/TP x d_k x d_v in ``state_dtype`` + (conv_dim/TP) x (kernel - 1)
    in BF16 (heads split over TP, at least one). 0 without linear attention.

    Qwen3.5-397B (H_v 64, d_k = d_v = 128, kernel 4, conv_dim 12,288): 4,194,304 + 73,728 B."""
    la = spec.linear_attention
    if la is None:
        return 0.0
    nv = max(1, la.num_value_heads // tp)
    conv = la.conv_dim / min(tp, la.num_key_heads)
    return float(nv * la.key_head_dim * la.value_head_dim * _STATE_BYTES[la.state_dtype]
                 + conv * (la.conv_kernel_dim - 1) * CONV_STATE_BYTES)


def kv_heads_per_device(spec: ModelSpec, tp: int = 1) -> int:
    """KV heads each TP rank stores: ceil(n_kv / TP), replicated when TP > n_kv.

    Raises FieldError (field ``tp``) when TP cannot split the heads (``deployment.tp_problem``).
    """
    a = spec.attention
    if isinstance(a, MLAAttention):
        return 1  # one latent "head", replicated on every TP rank
    problem = tp_problem(spec, tp)
    if problem:
        raise FieldError("tp", tp, problem)
    return max(1, a.num_key_value_heads // tp)


def kv_bytes_per_token_per_layer(spec: ModelSpec, fmt: NumberFormat, tp: int = 1) -> float:
    """Bytes per token per layer on one device, in format ``fmt`` (scales included).

    MLA: latent (d_c) in ``fmt``; the RoPE key (d_h^R) in ``fmt.rope_bits`` if set, else in
    ``fmt``; with DSA plus the indexer key (``indexer_bytes_per_token_per_layer``). GQA under TP: ``kv_heads_per_device`` heads of 2 * head_dim elements.
    """
    a = spec.attention
    if isinstance(a, MLAAttention):
        latent = fmt.bytes_for(a.kv_lora_rank)
        extra = indexer_bytes_per_token_per_layer(spec)
        if fmt.rope_bits is not None:
            return float(latent + a.qk_rope_head_dim * fmt.rope_bits / 8.0 + extra)
        return float(fmt.bytes_for(a.kv_lora_rank + a.qk_rope_head_dim) + extra)
    problem = kv_format_problem(spec, fmt)
    if problem:
        raise FieldError("kv_format", fmt.name, problem)
    # K and V are stored (and block-scaled) per head, each head_dim long.
    return float(2 * kv_heads_per_device(spec, tp) * fmt.bytes_for(a.head_dim))


def kv_bytes_per_token(spec: ModelSpec, fmt: NumberFormat, tp: int = 1) -> float:
    """Bytes per token over all layers on one device (every layer holds the token).

    DeepSeek-V3 in BF16: 576 * 2 * 61 = 70,272 B (ISCA 2025, arXiv 2505.09343, Table 1).
    """
    return kv_bytes_per_token_per_layer(spec, fmt, tp) * spec.num_hidden_layers


def cached_tokens(context, block_size: int | None = None):
    """Token slots a sequence of ``context`` tokens occupies: rounded up to whole blocks."""
    context = np.asarray(context, dtype=float)
    if block_size:
        return np.ceil(context / block_size) * block_size
    return context


def kv_cache_bytes(spec: ModelSpec, fmt: NumberFormat, context, batch=1, *, tp: int = 1,
                   block_size: int | None = None):
    """Bytes of KV cache for ``batch`` sequences of ``context`` tokens, on one device.

    Sliding-window layers hold min(context, window) tokens; linear-attention layers hold
    their fixed state per sequence (``linear_state_bytes_per_layer``). Paged caches
    (``block_size`` tokens per block) round each sequence's tokens up to whole blocks, per layer.
    Shapes: ``context`` and ``batch`` broadcast (numpy); returns float or ndarray, bytes.
    """
    per_layer = kv_bytes_per_token_per_layer(spec, fmt, tp)
    context = np.asarray(context, dtype=float)
    if np.any(context < 0) or np.any(np.asarray(batch) < 0):
        raise FieldError("context" if np.any(context < 0) else "batch", "<0", "must be >= 0")
    n_win = spec.n_window_layers
    n_full = spec.num_hidden_layers - n_win - spec.n_linear_layers
    tokens = n_full * cached_tokens(context, block_size)
    if n_win:
        tokens = tokens + n_win * cached_tokens(np.minimum(context, spec.sliding_window.window), block_size)
    state = spec.n_linear_layers * linear_state_bytes_per_layer(spec, tp)
    out = (per_layer * tokens + state) * np.asarray(batch, dtype=float)
    return float(out) if np.ndim(out) == 0 else out
