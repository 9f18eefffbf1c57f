"""Small, readable PyTorch reference modules built from a ``costsim.specs.ModelSpec``.

They exist to check the engine's arithmetic (``costsim.simulator.operators``) against real
tensors: FLOPs with ``torch.utils.flop_counter.FlopCounterMode``, KV bytes with
``Tensor.nbytes``, parameters with ``Parameter.numel()``; and to time kernels for
calibration (``costsim.calibration.timing``). Style: DeepSeek-V3 ``inference/model.py``,
one small class per idea, tensor shapes in comments. Names of the projections follow the
engine's operator list (``attn.q_a_proj``, ``attn.kv_b_proj``, ``moe.router``, ...).

Conventions:
- ``x``: [batch, new_tokens, hidden]; a step appends ``new_tokens`` after ``context``
  cached tokens (prefill: context 0; decode: new_tokens 1).
- Caches are passed in, not mutated: MLA latent cache [batch, context, d_c + d_h^R];
  GQA cache [batch, context, 2, n_kv, head_dim]. The new tokens' entries are appended
  internally, so attention runs over context + new_tokens keys.
- No RoPE rotation: it is elementwise (0 FLOPs in the engine's and FlopCounterMode's
  convention) and does not change any shape. The decoupled RoPE key/query parts (d_h^R)
  are kept with their real shapes, unrotated.
- Norms (RMSNorm / LayerNorm) are included so parameter counts match
  ``costsim.simulator.params``; FlopCounterMode does not count them, nor the engine.
- Group-limited routing (n_group / topk_group) is not modelled: it changes which experts
  are picked, never how many (top-k per token), so it does not change FLOPs.

Causal attention has two implementations (``causal=``):
- ``"mask"``: one dense score matrix [new_tokens, context + new_tokens] with the upper
  triangle masked, as a simple eager kernel computes it. FLOPs cover s*(L+s) pairs,
  masked ones included.
- ``"rows"``: query row i multiplies only the L+i+1 keys it may see (and, with a sliding
  window, only the last ``window`` of those). FLOPs cover exactly the unmasked pairs,
  s*L + s(s+1)/2, the count the engine charges (``operators.attended_pairs``) and what a
  causal FlashAttention-style kernel does up to tile granularity. Slow (a loop over
  queries): for FLOP checks, not for timing.
For decode (new_tokens = 1) both are the same computation.

Attention products use ``torch.matmul`` (always an ``aten.bmm``/``mm``), not ``einsum``:
an einsum whose contracted dim has size 1 (a query row seeing one key) runs as an
elementwise multiply, which FlopCounterMode does not count.

torch is imported at module level: import this module only where torch is wanted.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from costsim import specs as S

Causal = Literal["mask", "rows"]


# ======================================================================================
# Building blocks
# ======================================================================================


class RMSNorm(nn.Module):
    """y = x / rms(x) * weight; ``dim`` weights (elementwise: 0 counted FLOPs)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(spec: S.ModelSpec, dim: int) -> nn.Module:
    """The model's block norm: RMSNorm (dim weights) or LayerNorm (weight + bias)."""
    return RMSNorm(dim) if spec.norm == "rmsnorm" else nn.LayerNorm(dim, bias=spec.norm == "layernorm")


def _key_blocks(s: int, L: int, causal: Causal, window: int | None, device) -> list[tuple[slice, int, int, torch.Tensor | None]]:
    """How queries of a step meet keys: a list of (query rows, key start, key end, additive
    mask or None). Query i (0-based among the new tokens) sits at position L+i and may see
    keys j with max(0, L+i+1-window) <= j <= L+i."""
    if causal == "rows":
        out = []
        for i in range(s):
            end = L + i + 1
            start = 0 if window is None else max(0, end - window)
            out.append((slice(i, i + 1), start, end, None))
        return out
    q_pos = torch.arange(L, L + s, device=device)[:, None]  # [s, 1]
    k_pos = torch.arange(L + s, device=device)[None, :]  # [1, L+s]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    mask = torch.zeros(s, L + s, device=device).masked_fill(~allowed, float("-inf"))  # [s, L+s]
    return [(slice(0, s), 0, L + s, mask)]


def _softmax(scores: torch.Tensor, sinks: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dim (keys), in fp32. ``sinks`` (broadcastable to
    ``scores[..., :1]``): one extra logit per head that takes probability mass and is then
    dropped (gpt-oss attention sinks)."""
    sf = scores.float()
    if sinks is not None:
        sink = sinks.float().expand(*sf.shape[:-1], 1)
        return torch.softmax(torch.cat([sf, sink], dim=-1), dim=-1)[..., :-1].type_as(scores)
    return torch.softmax(sf, dim=-1).type_as(scores)


# ======================================================================================
# Attention
# ======================================================================================


class MLAAttention(nn.Module):
    """Multi-head Latent Attention (DeepSeek-V2, arXiv 2405.04434, §2.1.2-2.1.3).

    Projections as in the engine's operator list (and HF DeepseekV2Attention):
      q_a_proj [h -> d'_c], q_a_layernorm, q_b_proj [d'_c -> n_h(d_h + d_h^R)]   (or q_proj)
      kv_a_proj [h -> d_c + d_h^R]  (the cached latent c^KV and the shared RoPE key k^R)
      kv_a_layernorm, kv_b_proj [d_c -> n_h(d_h + d_h^v)]  (W^UK | W^UV)
      o_proj [n_h d_h^v -> h]
    ``form="naive"``: decompress K_nope and V for every cached token each call, then MHA
    with qk dim d_h + d_h^R and v dim d_h^v. ``form="absorbed"``: fold W^UK into the query
    (per head [d_h x d_c]) and W^UV into the output; attend over latent + RoPE key (MQA-like).
    """

    def __init__(self, spec: S.ModelSpec, form: Literal["naive", "absorbed"] = "absorbed", causal: Causal = "mask"):
        super().__init__()
        a = spec.attention
        assert isinstance(a, S.MLAAttention), f"{spec.name} does not use MLA"
        if form not in ("naive", "absorbed"):
            raise ValueError(f"form must be 'naive' or 'absorbed', got {form!r}")
        self.form, self.causal = form, causal
        h = spec.hidden_size
        self.n_heads = a.num_attention_heads
        self.q_lora_rank, self.kv_lora_rank = a.q_lora_rank, a.kv_lora_rank
        self.nope, self.rope, self.v_dim = a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim
        self.qk_dim = self.nope + self.rope
        self.scale = 1.0 / math.sqrt(self.qk_dim)
        if self.q_lora_rank:
            self.q_a_proj = nn.Linear(h, self.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(self.q_lora_rank)
            self.q_b_proj = nn.Linear(self.q_lora_rank, self.n_heads * self.qk_dim, bias=False)
        else:
            self.q_proj = nn.Linear(h, self.n_heads * self.qk_dim, bias=False)
        self.kv_a_proj = nn.Linear(h, self.kv_lora_rank + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, self.n_heads * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.v_dim, h, bias=False)

    def empty_cache(self, batch: int, context: int, **kw) -> torch.Tensor:
        """A latent cache [batch, context, d_c + d_h^R] (uninitialised)."""
        return torch.empty(batch, context, self.kv_lora_rank + self.rope, **kw)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> torch.Tensor:
        B, s, _ = x.shape  # x: [B, s, h]
        nh, dc, dr, dn, dv = self.n_heads, self.kv_lora_rank, self.rope, self.nope, self.v_dim
        if cache is None:
            cache = self.empty_cache(B, 0, dtype=x.dtype, device=x.device)
        L = cache.shape[1]

        # queries: [B, s, nh, dn + dr]
        if self.q_lora_rank:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q = q.view(B, s, nh, dn + dr)
        q_nope, q_pe = q[..., :dn], q[..., dn:]  # [B, s, nh, dn], [B, s, nh, dr] (RoPE omitted)

        # new latent (normed before caching, as DeepSeek-V3 does) + RoPE key, appended to the cache
        kv_new = self.kv_a_proj(x)  # [B, s, dc + dr]
        kv_new = torch.cat([self.kv_a_layernorm(kv_new[..., :dc]), kv_new[..., dc:]], dim=-1)
        kv = torch.cat([cache, kv_new.to(cache.dtype)], dim=1).to(x.dtype)  # [B, L+s, dc + dr]
        c_kv, k_pe = kv[..., :dc], kv[..., dc:]  # [B, L+s, dc], [B, L+s, dr] (k_pe shared by all heads)

        blocks = _key_blocks(s, L, self.causal, None, x.device)
        outs = []
        if self.form == "naive":
            # decompress K_nope and V for ALL L+s tokens: [B, L+s, nh, dn + dv]
            kv_full = self.kv_b_proj(c_kv).view(B, L + s, nh, dn + dv)
            k = torch.cat([kv_full[..., :dn], k_pe[:, :, None, :].expand(B, L + s, nh, dr)], dim=-1)
            k = k.transpose(1, 2)  # [B, nh, L+s, dn + dr]
            v = kv_full[..., dn:].transpose(1, 2)  # [B, nh, L+s, dv]
            qh = q.transpose(1, 2)  # [B, nh, s, dn + dr]
            for rows, k0, k1, mask in blocks:
                scores = torch.matmul(qh[:, :, rows], k[:, :, k0:k1].transpose(-1, -2)) * self.scale  # [B, nh, r, t]
                if mask is not None:
                    scores = scores + mask.to(scores.dtype)
                outs.append(torch.matmul(_softmax(scores), v[:, :, k0:k1]))  # [B, nh, r, dv]
            o = torch.cat(outs, dim=2).transpose(1, 2)  # [B, s, nh, dv]
        else:
            w = self.kv_b_proj.weight.view(nh, dn + dv, dc)
            w_uk, w_uv = w[:, :dn], w[:, dn:]  # [nh, dn, dc], [nh, dv, dc]
            # W^UK absorbed into the query, per head: [nh, B*s, dn] @ [nh, dn, dc] -> [B, s, nh, dc]
            q_lat = torch.matmul(q_nope.reshape(B * s, nh, dn).transpose(0, 1), w_uk).transpose(0, 1).view(B, s, nh, dc)
            for rows, k0, k1, mask in blocks:
                # MQA-like: all heads share the latent key; heads fold into the query rows
                r = q_lat[:, rows].shape[1]
                ql = q_lat[:, rows].reshape(B, r * nh, dc)  # [B, r*nh, dc]
                qr = q_pe[:, rows].reshape(B, r * nh, dr)  # [B, r*nh, dr]
                scores = (torch.matmul(ql, c_kv[:, k0:k1].transpose(1, 2))
                          + torch.matmul(qr, k_pe[:, k0:k1].transpose(1, 2))) * self.scale  # [B, r*nh, t]
                scores = scores.view(B, r, nh, k1 - k0)
                if mask is not None:
                    scores = scores + mask[:, None, :].to(scores.dtype)
                p_attn = _softmax(scores).view(B, r * nh, k1 - k0)
                outs.append(torch.matmul(p_attn, c_kv[:, k0:k1]).view(B, r, nh, dc))  # [B, r, nh, dc]
            o_lat = torch.cat(outs, dim=1)  # [B, s, nh, dc]
            # W^UV absorbed into the output, per head: [nh, B*s, dc] @ [nh, dc, dv] -> [B, s, nh, dv]
            o = torch.matmul(o_lat.reshape(B * s, nh, dc).transpose(0, 1), w_uv.transpose(1, 2)).transpose(0, 1)
            o = o.reshape(B, s, nh, dv)
        return self.o_proj(o.reshape(B, s, nh * dv))  # [B, s, h]


class GQAAttention(nn.Module):
    """Multi-head / grouped-query / multi-query attention (n_kv KV heads, head_dim each).

    One fused qkv_proj [h -> (n_h + 2 n_kv) d] and o_proj [n_h d -> h], as the engine's
    operator list has them. Optional: q/k/v/o biases, per-head q/k RMSNorm (Qwen3),
    attention sinks (gpt-oss), a sliding ``window`` (keys within the last ``window``
    positions, the query's own included).
    """

    def __init__(self, spec: S.ModelSpec, causal: Causal = "mask", window: int | None = None):
        super().__init__()
        a = spec.attention
        assert isinstance(a, S.GQAAttention), f"{spec.name} does not use MHA/GQA/MQA"
        h = spec.hidden_size
        self.causal, self.window = causal, window
        self.n_heads, self.n_kv, self.head_dim = a.num_attention_heads, a.num_key_value_heads, a.head_dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv_proj = nn.Linear(h, (self.n_heads + 2 * self.n_kv) * self.head_dim, bias=a.qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=a.o_bias)
        self.qk_scope = a.qk_norm_scope  # "head": RMSNorm(head_dim); "projection": over all heads
        per_head = a.qk_norm_scope == "head"
        self.q_norm = RMSNorm(self.head_dim if per_head else self.n_heads * self.head_dim) if a.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim if per_head else self.n_kv * self.head_dim) if a.qk_norm else None
        self.sinks = nn.Parameter(torch.zeros(self.n_heads)) if a.sinks else None

    def empty_cache(self, batch: int, context: int, **kw) -> torch.Tensor:
        """A KV cache [batch, context, 2, n_kv, head_dim] (uninitialised)."""
        return torch.empty(batch, context, 2, self.n_kv, self.head_dim, **kw)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> torch.Tensor:
        B, s, _ = x.shape  # x: [B, s, h]
        nh, nkv, d = self.n_heads, self.n_kv, self.head_dim
        g = nh // nkv  # query heads per KV head
        if cache is None:
            cache = self.empty_cache(B, 0, dtype=x.dtype, device=x.device)
        L = cache.shape[1]
        qkv = self.qkv_proj(x)  # [B, s, (nh + 2 nkv) d]
        if self.q_norm is not None and self.qk_scope == "projection":  # OLMoE / MiniMax-M2
            q_, k_, v_ = qkv.split([nh * d, nkv * d, nkv * d], dim=-1)
            qkv = torch.cat([self.q_norm(q_), self.k_norm(k_), v_], dim=-1)
        q = qkv[..., : nh * d].view(B, s, nkv, g, d)  # [B, s, nkv, g, d]; RoPE omitted
        kv_new = qkv[..., nh * d:].view(B, s, 2, nkv, d)  # [B, s, 2, nkv, d]
        if self.q_norm is not None and self.qk_scope == "head":
            q = self.q_norm(q)
            kv_new = torch.stack([self.k_norm(kv_new[:, :, 0]), kv_new[:, :, 1]], dim=2)
        kv = torch.cat([cache, kv_new.to(cache.dtype)], dim=1).to(x.dtype)  # [B, L+s, 2, nkv, d]
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # [B, nkv, L+s, d] each
        qh = q.permute(0, 2, 1, 3, 4)  # [B, nkv, s, g, d]
        sinks = None if self.sinks is None else self.sinks.view(nkv, 1, g, 1)  # per query head
        outs = []
        for rows, k0, k1, mask in _key_blocks(s, L, self.causal, self.window, x.device):
            r = qh[:, :, rows].shape[2]
            # the g query heads of a group share one K/V head: fold them into the query rows
            qg = qh[:, :, rows].reshape(B, nkv, r * g, d)  # [B, nkv, r*g, d]
            scores = torch.matmul(qg, k[:, :, k0:k1].transpose(-1, -2)) * self.scale  # [B, nkv, r*g, t]
            scores = scores.view(B, nkv, r, g, k1 - k0)
            if mask is not None:
                scores = scores + mask[:, None, :].to(scores.dtype)
            p_attn = _softmax(scores, sinks).view(B, nkv, r * g, k1 - k0)
            outs.append(torch.matmul(p_attn, v[:, :, k0:k1]).view(B, nkv, r, g, d))  # [B, nkv, r, g, d]
        o = torch.cat(outs, dim=2).permute(0, 2, 1, 3, 4)  # [B, s, nkv, g, d]
        return self.o_proj(o.reshape(B, s, nh * d))  # [B, s, h]


def make_attention(spec: S.ModelSpec, form: str = "absorbed", causal: Causal = "mask",
                   window: int | None = None) -> nn.Module:
    """The attention module of ``spec`` (``form`` only matters for MLA; ``window`` for GQA)."""
    if isinstance(spec.attention, S.MLAAttention):
        if window is not None:
            raise NotImplementedError("sliding-window MLA is not modelled")
        return MLAAttention(spec, form=form, causal=causal)
    return GQAAttention(spec, causal=causal, window=window)


# ======================================================================================
# FFN
# ======================================================================================


class MLP(nn.Module):
    """One FFN or one expert: SwiGLU down(silu(gate(x)) * up(x)) when gated, else
    down(gelu(up(x))). [T, h] -> [T, h]."""

    def __init__(self, hidden: int, inter: int, gated: bool = True, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=bias) if gated else None
        self.up_proj = nn.Linear(hidden, inter, bias=bias)
        self.down_proj = nn.Linear(inter, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x)))


class DenseFFN(MLP):
    """The dense FFN of ``spec`` (for an MoE spec: the FFN of its dense layers)."""

    def __init__(self, spec: S.ModelSpec):
        f = spec.ffn
        if isinstance(f, S.MoEFFN):
            super().__init__(spec.hidden_size, f.dense_intermediate_size, f.gated, f.dense_bias)
        else:
            super().__init__(spec.hidden_size, f.intermediate_size, f.gated, f.bias)


class Router(nn.Module):
    """Top-k routing: scores = softmax(x W_r^T) over the experts; keep the k largest.

    x: [T, h] -> (weights [T, k], indices [T, k]); each token picks k DISTINCT experts, so
    there are exactly T*k token-expert assignments whatever the scores are.
    """

    def __init__(self, hidden: int, n_experts: int, top_k: int, bias: bool = False, correction_bias: bool = False):
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(n_experts, hidden))
        self.bias = nn.Parameter(torch.zeros(n_experts)) if bias else None
        # DeepSeek-V3 e_score_correction_bias [E]: shifts which experts are chosen, not their weights
        self.e_score_correction_bias = nn.Parameter(torch.zeros(n_experts)) if correction_bias else None
        nn.init.normal_(self.weight, std=hidden ** -0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = F.linear(x, self.weight, self.bias).float().softmax(dim=-1)  # [T, E]
        if self.e_score_correction_bias is None:
            weights, indices = torch.topk(scores, self.top_k, dim=-1)  # [T, k] each
        else:
            indices = torch.topk(scores + self.e_score_correction_bias.float(), self.top_k, dim=-1).indices
            weights = scores.gather(-1, indices)
        return weights.type_as(x), indices


class MoEFFN(nn.Module):
    """DeepSeekMoE FFN (arXiv 2401.06066 §3): router, routed experts run one by one on the
    tokens routed to them (only experts that got tokens), and always-on shared experts
    (one MLP of width n_shared * shared_size, as DeepSeek-V3 ``inference/model.py``)."""

    def __init__(self, spec: S.ModelSpec):
        super().__init__()
        f = spec.ffn
        assert isinstance(f, S.MoEFFN), f"{spec.name} has no experts"
        h = spec.hidden_size
        self.n_experts, self.top_k = f.n_routed_experts, f.num_experts_per_tok
        self.router = Router(h, f.n_routed_experts, f.num_experts_per_tok, bias=f.router_bias,
                             correction_bias=f.router_correction_bias)
        self.experts = nn.ModuleList(
            MLP(h, f.moe_intermediate_size, f.gated, f.expert_bias) for _ in range(f.n_routed_experts))
        self.shared_experts = (MLP(h, f.n_shared_experts * f.shared_size, f.gated, f.expert_bias or f.shared_expert_bias)
                               if f.n_shared_experts or f.shared_expert_bias else None)
        # Qwen2-MoE: sigmoid(x W_g) [T, 1] scales the shared expert's output
        self.shared_expert_gate = nn.Linear(h, 1, bias=False) if f.shared_expert_gate else None

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, s, h] -> [B, s, h]. ``indices`` [B*s, k] forces the routing (distinct
        experts per token); the router still runs (its FLOPs are part of the layer)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [T, h]
        weights, routed = self.router(x)  # [T, k], [T, k]
        if indices is not None:
            assert indices.shape == routed.shape, f"indices must be [tokens, k] = {tuple(routed.shape)}"
            routed = indices
        y = torch.zeros_like(x)
        counts = torch.bincount(routed.flatten(), minlength=self.n_experts).tolist()  # tokens per expert
        for e, n in enumerate(counts):
            if n == 0:
                continue
            tok, slot = torch.where(routed == e)  # [n], [n]
            y.index_add_(0, tok, self.experts[e](x[tok]) * weights[tok, slot, None])  # [n, h]
        if self.shared_experts is not None:
            shared = self.shared_experts(x)  # [T, h]
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared  # [T, 1] * [T, h]
            y = y + shared
        return y.view(shape)


def make_ffn(spec: S.ModelSpec, moe: bool) -> nn.Module:
    return MoEFFN(spec) if moe else DenseFFN(spec)


# ======================================================================================
# A whole (tiny) model
# ======================================================================================


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + ffn(norm(x))."""

    def __init__(self, spec: S.ModelSpec, layer: int, form: str = "absorbed", causal: Causal = "mask"):
        super().__init__()
        win = spec.sliding_window
        window = win.window if win is not None and layer in win.layers else None
        self.attn_norm = make_norm(spec, spec.hidden_size)
        self.attn = make_attention(spec, form=form, causal=causal, window=window)
        self.ffn_norm = make_norm(spec, spec.hidden_size)
        self.ffn = make_ffn(spec, spec.is_moe_layer(layer))

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cache)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """Embedding, ``num_hidden_layers`` blocks, final norm, LM head (MTP modules omitted).

    forward(tokens [B, s], caches: one per layer or None, logit_tokens) ->
    logits [B, logit_tokens, vocab] for the last ``logit_tokens`` positions.
    """

    def __init__(self, spec: S.ModelSpec, form: str = "absorbed", causal: Causal = "mask"):
        super().__init__()
        self.embed = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(Block(spec, i, form, causal) for i in range(spec.num_hidden_layers))
        self.norm = make_norm(spec, spec.hidden_size)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight

    def empty_caches(self, batch: int, context: int, **kw) -> list[torch.Tensor]:
        return [blk.attn.empty_cache(batch, context, **kw) for blk in self.layers]

    def forward(self, tokens: torch.Tensor, caches: list[torch.Tensor] | None = None, logit_tokens: int = 1) -> torch.Tensor:
        x = self.embed(tokens)  # [B, s, h]
        for i, blk in enumerate(self.layers):
            x = blk(x, None if caches is None else caches[i])
        return self.lm_head(self.norm(x[:, x.shape[1] - logit_tokens:]))  # [B, logit_tokens, V]


# ======================================================================================
# Scaled-down specs for fast CPU tests
# ======================================================================================

_TOP = {"name", "vocab_size", "hidden_size", "num_hidden_layers", "norm", "tie_word_embeddings",
        "num_nextn_predict_layers", "sliding_window", "max_position_embeddings"}


def scaled_down(spec: S.ModelSpec, **overrides) -> S.ModelSpec:
    """A small ModelSpec of the same kind as ``spec`` (MLA/GQA, MoE/dense, same flags), for
    tests that must run in well under a second on a CPU.

    Defaults: hidden 256, 2 layers, vocab 512, 4 heads; MLA d_c 64, d_h^R 16, d_h 32,
    d_h^v 32, d'_c 96 (None if ``spec`` has none); GQA head_dim 32 with 4/2/1 KV heads for
    mha/gqa/mqa; MoE 8 routed experts top-2, min(shared, 1) shared, width 64, first layer
    dense when ``spec`` has dense layers, no router groups; dense FFN width 128; a sliding
    window of 4 on layer 0 when ``spec`` has windows.

    ``overrides``: field names of ModelSpec, its attention or its ffn (flat, e.g.
    ``num_attention_heads=8, n_routed_experts=4``), or ``attention=``/``ffn=`` dicts.
    The result is re-validated (``costsim.registry.validate``).
    """
    from costsim.registry import validate

    a, f = spec.attention, spec.ffn
    data = spec.model_dump(mode="python")
    data.update(name=f"{spec.name}-tiny", source=f"scaled down from {spec.name} (costsim.calibration.kernels)",
                vocab_size=512, hidden_size=256, num_hidden_layers=2, num_nextn_predict_layers=0,
                max_position_embeddings=None, sliding_window=None)
    if spec.sliding_window is not None:
        data["sliding_window"] = dict(window=4, layers=[0])
    att = data["attention"]
    if isinstance(a, S.MLAAttention):
        att.update(num_attention_heads=4, kv_lora_rank=64, qk_rope_head_dim=16, qk_nope_head_dim=32,
                   v_head_dim=32, q_lora_rank=96 if a.q_lora_rank else None)
    else:
        att.update(num_attention_heads=4, head_dim=32, num_key_value_heads={"mha": 4, "gqa": 2, "mqa": 1}[a.kind])
    ffn = data["ffn"]
    if isinstance(f, S.MoEFFN):
        ffn.update(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=min(f.n_shared_experts, 1),
                   moe_intermediate_size=64, first_k_dense_replace=min(f.first_k_dense_replace, 1),
                   moe_layer_freq=1, n_group=None, topk_group=None,
                   shared_expert_intermediate_size=64 if f.shared_expert_intermediate_size else None,
                   dense_intermediate_size=128 if f.dense_intermediate_size else None)
    else:
        ffn.update(intermediate_size=128)

    for key, value in overrides.items():
        if key in ("attention", "ffn"):
            data[key].update(value)
        elif key in _TOP:
            data[key] = value
        elif key in att and key != "kind":
            att[key] = value
        elif key in ffn and key != "kind":
            ffn[key] = value
        else:
            raise TypeError(f"scaled_down: unknown field {key!r} for {spec.name}")
    return validate(S.ModelSpec, data, f"scaled_down({spec.name})")
