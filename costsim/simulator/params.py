"""Parameter counts: total and activated per token, broken down by component.

Conventions
-----------
- Counts are exact integers from the spec (HF module shapes, no rounding).
- **Activated** parameters (``active``) are the weights a token's forward pass multiplies
  with: attention, dense FFN, router, the top-k routed experts, the shared experts, norms
  and the LM head. The input embedding is a table *lookup*, not a matmul, and is left out,
  as DeepSeek's figures do: DeepSeek-V2 "21B activated" (arXiv 2405.04434 abstract),
  DeepSeek-V3 "37B" (arXiv 2412.19437; README_WEIGHTS: 36.7B). Mistral's "12.9B active"
  for Mixtral-8x7B counts the embedding too: ``active_incl_embedding`` gives that figure.
- MTP (multi-token prediction) modules (DeepSeek-V3 §2.2) are reported in ``mtp`` and are
  *not* part of ``total`` / ``active`` (the "671B main model" convention); their embedding
  and output head are shared with the main model and not counted again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from costsim.specs import GQAAttention, MLAAttention, MoEFFN, ModelSpec


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts (number of weights, not bytes)."""

    embedding: int
    lm_head: int  # unique LM-head weights (0 when tied to the embedding)
    attention: int
    dense_ffn: int
    routed_experts: int
    routed_experts_active: int  # top-k experts per token, over all MoE layers
    shared_experts: int
    router: int
    norms: int
    mtp: int  # extra MTP modules, excluded from total/active
    lm_head_matmul: int = 0  # weights the LM-head matmul multiplies with (the embedding when tied)

    @property
    def total(self) -> int:
        return (self.embedding + self.lm_head + self.attention + self.dense_ffn + self.routed_experts
                + self.shared_experts + self.router + self.norms)

    @property
    def active(self) -> int:
        """Activated per token, input embedding excluded (DeepSeek convention); the LM-head
        matmul counts even when its weights are tied to the embedding."""
        return (self.lm_head_matmul + self.attention + self.dense_ffn + self.routed_experts_active
                + self.shared_experts + self.router + self.norms)

    @property
    def active_incl_embedding(self) -> int:
        """Activated including the input embedding table (Mistral's convention); a tied table
        is counted once."""
        return self.active + self.embedding - (self.lm_head_matmul - self.lm_head)

    @property
    def matmul_active(self) -> int:
        """Activated weights that take part in matmuls (norms excluded): FLOPs = 2 x this."""
        return self.active - self.norms

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(total=self.total, active=self.active, active_incl_embedding=self.active_incl_embedding)
        return d


def attention_params(spec: ModelSpec) -> int:
    """Weights of one attention block (projections, biases, q/k/latent norms).

    MLA (DeepSeek-V2 §2.1.2-2.1.3, HF DeepseekV2Attention): W^DQ (h x d'_c) + q_a_layernorm
    (d'_c) + W^UQ|W^QR (d'_c x n_h(d_h + d_h^R)) [or W_q (h x n_h(d_h + d_h^R)) without
    q_lora_rank]; W^DKV|W^KR (h x (d_c + d_h^R)) + kv_a_layernorm (d_c); W^UK|W^UV
    (d_c x n_h(d_h + d_h^v)); W^O (n_h d_h^v x h).
    """
    a, h = spec.attention, spec.hidden_size
    if isinstance(a, MLAAttention):
        nh, qk = a.num_attention_heads, a.qk_nope_head_dim + a.qk_rope_head_dim
        q = (h * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * nh * qk) if a.q_lora_rank else h * nh * qk
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank + a.kv_lora_rank * nh * (a.qk_nope_head_dim + a.v_head_dim)
        return q + kv + nh * a.v_head_dim * h + indexer_params(spec)
    assert isinstance(a, GQAAttention)
    q_out, kv_out = a.num_attention_heads * a.head_dim, a.num_key_value_heads * a.head_dim
    n = h * q_out + 2 * h * kv_out + q_out * h + (h * q_out if a.output_gate else 0)
    if a.qkv_bias:
        n += q_out + 2 * kv_out + (q_out if a.output_gate else 0)  # the gate half of q_proj has its bias
    if a.o_bias:
        n += h
    if a.qk_norm:
        n += 2 * a.head_dim if a.qk_norm_scope == "head" else q_out + kv_out
    if a.sinks:
        n += a.num_attention_heads
    return n


def linear_attention_params(spec: ModelSpec) -> int:
    """Weights of one Gated DeltaNet layer (HF Qwen3NextGatedDeltaNet): in_proj_qkvz
    (h x (2 H_k d_k + 2 H_v d_v)), in_proj_ba (h x 2 H_v), depthwise conv1d (conv_dim x
    kernel, no bias), dt_bias and A_log (H_v each), the gated RMSNorm (d_v) and out_proj
    (H_v d_v x h). 0 for a model without linear attention."""
    la = spec.linear_attention
    if la is None:
        return 0
    h = spec.hidden_size
    kd, vd = la.num_key_heads * la.key_head_dim, la.num_value_heads * la.value_head_dim
    return (h * (2 * kd + 2 * vd) + h * 2 * la.num_value_heads + la.conv_dim * la.conv_kernel_dim
            + 2 * la.num_value_heads + la.value_head_dim + vd * h)


def indexer_params(spec: ModelSpec) -> int:
    """Weights of one layer's DSA lightning indexer (DeepSeek-V3.2-Exp ``inference/model.py``,
    HF DeepseekV32Indexer): wq_b (d'_c x H_I d_I), wk (h x d_I), k_norm LayerNorm (2 d_I),
    weights_proj (h x H_I). 0 without DSA."""
    a = spec.attention
    if not isinstance(a, MLAAttention) or not a.sparse:
        return 0
    nI, dI, h = a.index_n_heads, a.index_head_dim, spec.hidden_size
    return a.q_lora_rank * nI * dI + h * dI + 2 * dI + h * nI


def ffn_matrix_params(hidden: int, inter: int, gated: bool, bias: bool = False) -> int:
    """One FFN (or one expert): gate+up+down = 3*h*I when gated (SwiGLU), else 2*h*I."""
    n = (3 if gated else 2) * hidden * inter
    if bias:
        n += (2 if gated else 1) * inter + hidden
    return n


def _norm_params(spec: ModelSpec) -> int:
    return spec.hidden_size * (2 if spec.norm == "layernorm" else 1)


def layer_params(spec: ModelSpec, moe: bool, linear: bool = False) -> dict[str, int]:
    """Weights of one layer by part: attention, norms, dense_ffn, routed, routed_active,
    shared, router (a MoE layer when ``moe``; a linear-attention layer of a hybrid model when
    ``linear``). ``routed_active`` is the top-k share of ``routed``, not weights of their own:
    see ``stored_layer_params``."""
    h, f = spec.hidden_size, spec.ffn
    mixer = linear_attention_params(spec) if linear else attention_params(spec)
    out = dict(attention=mixer, norms=spec.norms_per_layer * _norm_params(spec), dense_ffn=0, routed=0,
               routed_active=0, shared=0, router=0)
    if moe:
        assert isinstance(f, MoEFFN)
        expert = ffn_matrix_params(h, f.moe_intermediate_size, f.gated, f.expert_bias)
        out["routed"] = f.n_routed_experts * expert
        out["routed_active"] = f.num_experts_per_tok * expert
        if f.shared_expert_bias:
            # one fused MLP n_shared x I wide (HF DeepseekV2MLP), biases included once; with no
            # shared expert the 0-wide MLP still has its down_proj bias (hidden_size)
            out["shared"] = ffn_matrix_params(h, f.n_shared_experts * f.shared_size, f.gated, True)
        else:
            out["shared"] = f.n_shared_experts * ffn_matrix_params(h, f.shared_size, f.gated, f.expert_bias)
        # router: gate weights (+ bias, + V3 e_score_correction_bias, + Qwen2-MoE shared-expert gate)
        out["router"] = (h * f.n_routed_experts + (f.n_routed_experts if f.router_bias else 0)
                         + (f.n_routed_experts if f.router_correction_bias else 0) + (h if f.shared_expert_gate else 0))
    else:
        inter = f.intermediate_size if not isinstance(f, MoEFFN) else f.dense_intermediate_size
        bias = f.dense_bias if isinstance(f, MoEFFN) else f.bias
        out["dense_ffn"] = ffn_matrix_params(h, inter, f.gated, bias)
    return out


def stored_layer_params(spec: ModelSpec, moe: bool, linear: bool = False) -> int:
    """Weights one layer stores (every routed expert; ``routed_active`` is not added again)."""
    lp = layer_params(spec, moe, linear)
    return lp["attention"] + lp["norms"] + lp["dense_ffn"] + lp["routed"] + lp["shared"] + lp["router"]


def param_counts(spec: ModelSpec) -> ParamBreakdown:
    """Total and activated parameter counts of ``spec`` by component.

    Returns a :class:`ParamBreakdown`. Acceptance (tests): DeepSeek-V2 236B / 21B, DeepSeek-V3
    671B / 37B, Mixtral-8x7B 46.7B / 12.9B (incl. embedding), within 1%.
    """
    h = spec.hidden_size
    acc = dict(attention=0, norms=0, dense_ffn=0, routed=0, routed_active=0, shared=0, router=0)
    for i in range(spec.num_hidden_layers):
        for k, v in layer_params(spec, spec.is_moe_layer(i), spec.is_linear_layer(i)).items():
            acc[k] += v
    embedding = spec.vocab_size * h
    lm_head = 0 if spec.tie_word_embeddings else spec.vocab_size * h
    mtp = 0
    if spec.num_nextn_predict_layers:
        # DeepSeek-V3 §2.2: each MTP module = RMSNorm(h) x2 + projection M (2h -> h) + one
        # transformer block (MoE when the model is MoE); embedding and head shared.
        block = stored_layer_params(spec, isinstance(spec.ffn, MoEFFN))
        mtp = spec.num_nextn_predict_layers * (2 * h + 2 * h * h + block + h)  # + final norm of the module
    return ParamBreakdown(
        embedding=embedding, lm_head=lm_head, attention=acc["attention"], dense_ffn=acc["dense_ffn"],
        routed_experts=acc["routed"], routed_experts_active=acc["routed_active"], shared_experts=acc["shared"],
        router=acc["router"], norms=acc["norms"] + _norm_params(spec), mtp=mtp,
        lm_head_matmul=spec.vocab_size * h,
    )
