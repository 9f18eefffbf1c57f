"""The operator model: each layer as a list of operators with shapes, FLOPs and bytes moved.

One list serves every consumer (FLOPs per token, roofline time, the breakdown table, the
kernel cross-checks): write each formula once, here.

A *step* processes ``batch`` sequences (per replica), each adding ``new_tokens`` tokens on
top of ``context`` tokens already cached: prefill is (batch, prompt, 0), decode is
(batch, 1, L). ``batch`` and ``context`` may be numpy arrays (broadcast together).

Per operator, per occurrence, on ONE device (the busiest, for MoE):
  ``flops``         2 FLOPs per multiply-add; matmuls and attention only (norms/activations
                    are 0, as ``torch.utils.flop_counter.FlopCounterMode`` counts them)
  ``bytes_read``    weights + activations + KV cache read from device memory
  ``bytes_written`` activations + KV cache written
  ``count``         how many times it runs per step on the device (layers of that type)
Communication operators carry ``comm_bytes`` (sent per device) and ``link`` instead.

Sources: MLA projections and absorption, DeepSeek-V2 (arXiv 2405.04434) §2.1.2-2.1.3 and
eqs. 9-19; MoE routing, DeepSeekMoE (arXiv 2401.06066) §3; expected distinct experts
E*(1-(1-k/E)^T) for T uniformly routed tokens (each expert picked with probability k/E).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from costsim.simulator.deployment import Deployment
from costsim.simulator.kv import indexer_bytes_per_token_per_layer, kv_bytes_per_token_per_layer, kv_heads_per_device
from costsim.simulator.parallel import comm_operators
from costsim.simulator.params import stored_layer_params
from costsim.simulator.types import LayerType, OpGroup, OpKind, Operator, StepShape
from costsim.specs import GQAAttention, MLAAttention, MoEFFN, ModelSpec
from costsim.units import NumberFormat


def attended_pairs(context, new_tokens, window: int | None = None):
    """Number of (query, key) pairs for causal attention of ``new_tokens`` queries placed
    after ``context`` cached tokens; each query sees itself and everything before it, or
    only the last ``window`` keys. Shapes broadcast; returns float/ndarray.

    Without a window: s*L + s(s+1)/2. With a window W: sum over positions p = L+1..L+s of
    min(p, W).
    """
    L = np.asarray(context, dtype=float)
    s = np.asarray(new_tokens, dtype=float)
    full = s * L + s * (s + 1) / 2
    if window is None:
        return full
    W = float(window)
    lo = L + 1  # position of the first query; the queries sit at lo .. L + s
    # positions <= W contribute p, the rest contribute W
    k = np.clip(W - lo + 1, 0, s)  # number of queries with p <= W
    return k * lo + k * (k - 1) / 2 + (s - k) * W


def expected_distinct_experts(n_experts: int, top_k: int, tokens):
    """Expected number of distinct experts hit by ``tokens`` tokens routed uniformly at
    random to ``top_k`` of ``n_experts``: E*(1 - (1 - k/E)^T).

    Group-limited (device/node-limited) routing keeps each expert's marginal probability
    k/E, so this expectation is unchanged; what it limits is the number of nodes a token is
    sent to (see ``costsim.simulator.parallel``).
    """
    T = np.asarray(tokens, dtype=float)
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** T)


def _gemm(name, group: OpGroup, layer: LayerType, M, N, K, wfmt: NumberFormat, act: float, count: int,
          batch_dims: int = 1) -> Operator:
    """A (batched) GEMM [M,K] x [K,N]: 2*M*N*K FLOPs per batch; weights N*K per batch."""
    M = np.asarray(M, dtype=float)
    flops = 2.0 * M * N * K * batch_dims
    w_bytes = wfmt.bytes_for(N * K) * batch_dims
    return Operator(
        name=name, kind=OpKind.GEMM, group=group, layer=layer, count=count, flops=flops,
        bytes_read=w_bytes + M * K * act * batch_dims, bytes_written=M * N * act * batch_dims,
        dtype=wfmt.compute, shape=dict(M=M, N=N, K=K, batch=batch_dims, format=wfmt.name),
    )


def _elementwise(name, group: OpGroup, layer: LayerType, elements_in, elements_out, act, count) -> Operator:
    return Operator(name=name, kind=OpKind.ELEMENTWISE, group=group, layer=layer, count=count, flops=0.0,
                    bytes_read=np.asarray(elements_in, dtype=float) * act,
                    bytes_written=np.asarray(elements_out, dtype=float) * act,
                    dtype="")


def attention_operators(spec: ModelSpec, dep: Deployment, step: StepShape, n_layers: int = 1,
                        window: int | None = None, form: str = "absorbed", tag: str = "",
                        layer: LayerType = LayerType.DENSE, norms: bool = True) -> list[Operator]:
    """Projections + core attention of ``n_layers`` identical layers on one device (the
    operators of ``step_operators``' attention, for callers that need one layer's block), and
    with ``norms`` the layer's norms (input and post-attention; Gemma's sandwich adds the
    pre- and post-feedforward ones)."""
    a, h, act = spec.attention, spec.hidden_size, dep.act_bytes
    w = dep.weight_format
    b = dep.seqs_per_rank(step.batch)  # sequences on this device's DP group
    s = np.asarray(step.new_tokens, dtype=float)
    L = np.asarray(step.context, dtype=float)
    T = b * s
    # cached + new tokens some query of the step attends to: with a window W the first query
    # reaches back W - 1 tokens, so s + W - 1 of them (decode: min(L + 1, W)); every new token
    # is among them (MLA's naive form decompresses each one)
    kv_len = L + s if window is None else np.minimum(L + s, s + window - 1)
    pairs = attended_pairs(L, s, window) * b
    kv_tok = kv_bytes_per_token_per_layer(spec, dep.kv_format, dep.tp)
    kv8 = dep.kv_format.bytes_per_element <= 1  # an 8-bit (or narrower) cache: its own kernels (``types.attention_families``)
    idx_tok = indexer_bytes_per_token_per_layer(spec)
    sparse = isinstance(a, MLAAttention) and a.sparse
    pairs_all = pairs  # what a dense layer (and the DSA indexer) scores
    if sparse:
        # DSA: each query attends to min(position, top-k) keys (the window count with W = k);
        # the step reads at most s * k distinct selected entries of the latent cache
        k_top = a.index_topk
        pairs = attended_pairs(L, s, k_top if window is None else min(window, k_top)) * b
        kv_len = np.minimum(kv_len, s * k_top)
    kv_read = b * kv_len * (kv_tok - idx_tok)
    kv_write = T * (kv_tok - idx_tok)
    ops: list[Operator] = []
    sfx = f"[{tag}]" if tag else ""
    G = OpGroup.ATTENTION

    def gemm(name, M, N, K, batch_dims=1):
        return _gemm(name + sfx, G, layer, M, N, K, w, act, n_layers, batch_dims)

    def core(name, flops, read, written, shape):
        return Operator(name=name + sfx, kind=OpKind.ATTENTION, group=G, layer=layer, count=n_layers, flops=flops,
                        bytes_read=read, bytes_written=written, dtype=dep.act_format.compute, shape=shape)

    if isinstance(a, MLAAttention):
        nh = a.num_attention_heads // dep.tp
        dc, dr, dn, dv = a.kv_lora_rank, a.qk_rope_head_dim, a.qk_nope_head_dim, a.v_head_dim
        if a.q_lora_rank:
            ops.append(gemm("attn.q_a_proj", T, a.q_lora_rank, h))
            ops.append(gemm("attn.q_b_proj", T, nh * (dn + dr), a.q_lora_rank))
        else:
            ops.append(gemm("attn.q_proj", T, nh * (dn + dr), h))
        # latent + rope key, replicated on every TP rank (not divided by TP)
        ops.append(gemm("attn.kv_a_proj", T, dc + dr, h))
        if sparse:
            ops.extend(_indexer_operators(a, dep, T, b, L, s, pairs_all, idx_tok, h, act, gemm, core))
            ops.append(_elementwise("attn.indexer.topk" + sfx, G, layer, pairs_all * 4.0 / act,
                                    T * a.index_topk * 4.0 / act, act, n_layers))  # FP32 scores -> int32 indices
        if form == "absorbed":
            ops.append(gemm("attn.q_absorb(W_UK)", T, dc, dn, batch_dims=nh))
            flops = 2.0 * nh * (dc + dr) * pairs + 2.0 * nh * dc * pairs
            ops.append(core("attn.core(latent)", flops, kv_read + T * nh * (dc + dr) * act, kv_write + T * nh * dc * act,
                            dict(heads=nh, q_len=s, rows=T * nh, mla=True, kv_len=kv_len, row_bytes=kv_tok - idx_tok,
                                 kv8=kv8)))
            ops.append(gemm("attn.o_absorb(W_UV)", T, dv, dc, batch_dims=nh))
        else:  # naive: decompress K_nope and V for every cached token, every step
            ctx_tokens = b * kv_len
            ops.append(gemm("attn.kv_b_proj(decompress)", ctx_tokens, nh * (dn + dv), dc))
            flops = 2.0 * nh * (dn + dr) * pairs + 2.0 * nh * dv * pairs
            kv_dec = ctx_tokens * (nh * (dn + dv) + dr) * act
            ops.append(core("attn.core(mha)", flops, kv_read + kv_dec + T * nh * (dn + dr) * act,
                            kv_write + T * nh * dv * act,
                            dict(heads=nh, q_len=s, rows=T * nh, mla=True, kv_len=kv_len, kv8=kv8)))
        ops.append(gemm("attn.o_proj", T, h, nh * dv))
    else:
        assert isinstance(a, GQAAttention)
        nh = a.num_attention_heads // dep.tp
        nkv = kv_heads_per_device(spec, dep.tp)
        d = a.head_dim
        gate = nh * d if a.output_gate else 0  # Qwen3-Next: q_proj also yields the output gate
        ops.append(gemm("attn.qkv_proj", T, (nh + 2 * nkv) * d + gate, h))
        ops.append(core("attn.core", 4.0 * nh * d * pairs, kv_read + T * nh * d * act, kv_write + T * nh * d * act,
                        dict(heads=nh, q_len=s, rows=T * nh, decode_rows=T * nkv, group=nh / nkv, kv_read=kv_read,
                             kv_len=kv_len, row_bytes=kv_tok / nkv, kv8=kv8, head_dim=d, ctx_len=L + s)))
        ops.append(gemm("attn.o_proj", T, h, nh * d))
    if norms:
        k = spec.norms_per_layer
        ops.append(_elementwise("norms" + sfx, G, layer, k * T * h, k * T * h, act, n_layers))
    return ops


# Gated DeltaNet chunk length of the chunked (prefill) form (fla-org/flash-linear-attention
# chunk_gated_delta_rule, BT = 64)
DELTANET_CHUNK = 64


def linear_attention_operators(spec: ModelSpec, dep: Deployment, step: StepShape, n_layers: int = 1,
                               tag: str = "", layer: LayerType = LayerType.DENSE) -> list[Operator]:
    """One Gated DeltaNet layer type (Qwen3-Next / Qwen3.5 linear attention) on one device.

    Operators: in_proj (q, k, v, z, b, a), the depthwise causal conv (kernel K over conv_dim
    channels, reading its K - 1 cached inputs), the delta-rule recurrence and the gated
    RMSNorm, out_proj, the layer's norms. The recurrence per token and value head updates a
    d_k x d_v state S <- a S + b (v - S k) k^T and reads q S: 3 d_k d_v multiply-adds; with
    s > 1 tokens it runs chunk-wise (chunk C = min(s, 64)) and adds C (d_k + d_v) for the
    intra-chunk attention. Each step reads and writes every sequence's state once. Heads split
    over TP (at least one per device). Assumption: no extra FLOPs for the chunked form's WY
    factorisation (a few percent at d = 128)."""
    la, h, act = spec.linear_attention, spec.hidden_size, dep.act_bytes
    b = dep.seqs_per_rank(step.batch)
    s = np.asarray(step.new_tokens, dtype=float)
    T = b * s
    nk, nv = max(1, la.num_key_heads // dep.tp), max(1, la.num_value_heads // dep.tp)
    dk, dv = la.key_head_dim, la.value_head_dim
    kd, vd = nk * dk, nv * dv
    conv = 2 * kd + vd
    state = nv * dk * dv * {"fp32": 4, "bf16": 2, "fp16": 2}[la.state_dtype]
    sfx = f"[{tag}]" if tag else ""
    G, w = OpGroup.ATTENTION, dep.weight_format
    chunk = np.minimum(s, DELTANET_CHUNK)
    flops = 2.0 * nv * T * (3 * dk * dv + np.where(s > 1, chunk * (dk + dv), 0.0))
    k_conv = la.conv_kernel_dim
    return [
        _gemm("linear_attn.in_proj" + sfx, G, layer, T, 2 * kd + 2 * vd + 2 * nv, h, w, act, n_layers),
        _elementwise("linear_attn.conv1d" + sfx, G, layer, T * conv + b * conv * (k_conv - 1), T * conv, act, n_layers),
        Operator(name="linear_attn.delta_rule" + sfx, kind=OpKind.ATTENTION, group=G, layer=layer, count=n_layers,
                 flops=flops, bytes_read=b * state + T * (2 * kd + vd + 2 * nv) * act,
                 bytes_written=b * state + T * vd * act, dtype=dep.act_format.compute,
                 shape=dict(heads=nv, q_len=s, rows=T * nv, decode_rows=T * nv)),
        _elementwise("linear_attn.gated_norm" + sfx, G, layer, 2 * T * vd, T * vd, act, n_layers),
        _gemm("linear_attn.out_proj" + sfx, G, layer, T, h, vd, w, act, n_layers),
        _elementwise("norms" + sfx, G, layer, spec.norms_per_layer * T * h, spec.norms_per_layer * T * h, act,
                     n_layers),
    ]


def _indexer_operators(a: MLAAttention, dep: Deployment, T, b, L, s, pairs, idx_tok: float, h: int, act: float,
                       gemm, core) -> list[Operator]:
    """The DSA lightning indexer of one layer (DeepSeek-V3.2-Exp §2.1, eq. 1:
    I_ts = sum_j w_tj ReLU(q_tj . k_s)): its three projections, the scores of every causal
    (query, key) pair (H_I (d_I + 1) multiply-adds each, logits written in FP32), and the top-k
    selection reading them (appended by the caller). Indexer heads split over TP like the attention heads; its key is
    one per token, replicated. Assumption: the scores are costed at the activation format's
    peak; the paper runs them in FP8 (twice the BF16 rate on Hopper)."""
    nI = max(1, a.index_n_heads // dep.tp)
    dI = a.index_head_dim
    logits = pairs * 4.0  # FP32 index scores, one per (query, key) pair
    return [
        gemm("attn.indexer.wq_b", T, nI * dI, a.q_lora_rank),
        gemm("attn.indexer.wk", T, dI, h),
        gemm("attn.indexer.weights_proj", T, nI, h),
        core("attn.indexer.scores", 2.0 * nI * (dI + 1) * pairs, b * (L + s) * idx_tok + T * nI * (dI + 1) * act,
             T * idx_tok + logits, dict(heads=nI, q_len=s, rows=T * nI, decode_rows=T)),
    ]


def ffn_operators(spec: ModelSpec, dep: Deployment, step: StepShape, n_layers: int = 1,
                  moe: bool = False, routed_tokens=None) -> list[Operator]:
    """The dense FFN (``moe`` False) or the MoE FFN (router, token permute, shared and routed
    experts on the busiest EP rank) of ``n_layers`` identical layers on one device.
    ``routed_tokens``: the tokens this device routes and permutes (default: its own, the DP
    group's ``seqs_per_rank`` x new tokens)."""
    f, h, act, w = spec.ffn, spec.hidden_size, dep.act_bytes, dep.weight_format
    b = dep.seqs_per_rank(step.batch)
    T = b * np.asarray(step.new_tokens, dtype=float)
    ops: list[Operator] = []
    if not moe:
        D, G = LayerType.DENSE, OpGroup.FFN
        inter = f.dense_intermediate_size if isinstance(f, MoEFFN) else f.intermediate_size
        i_dev = inter // dep.tp
        up = 2 * i_dev if f.gated else i_dev
        ops.append(_gemm("ffn.gate_up_proj" if f.gated else "ffn.up_proj", G, D, T, up, h, w, act, n_layers))
        ops.append(_elementwise("ffn.act", G, D, T * up, T * i_dev, act, n_layers))
        ops.append(_gemm("ffn.down_proj", G, D, T, h, i_dev, w, act, n_layers))
        return ops
    assert isinstance(f, MoEFFN)
    M, G = LayerType.MOE, OpGroup.MOE
    E, k = f.n_routed_experts, f.num_experts_per_tok
    ops.append(_gemm("moe.router", G, M, T, E, h, dep.high_precision, act, n_layers))
    if f.n_shared_experts:
        i_sh = f.n_shared_experts * f.shared_size // dep.tp
        up = 2 * i_sh if f.gated else i_sh
        ops.append(_gemm("moe.shared.gate_up_proj", G, M, T, up, h, w, act, n_layers))
        ops.append(_gemm("moe.shared.down_proj", G, M, T, h, i_sh, w, act, n_layers))
    # routed experts on the busiest EP rank
    T_stage = np.asarray(step.batch, dtype=float) * np.asarray(step.new_tokens, dtype=float)
    # slots: E experts + redundant copies (EPLB balances the load over them: each rank gets
    # T k / ep pairs); a rank holds S / ep slots, each busy with the chance its expert is hit
    e_local = dep.expert_slots(spec) // dep.ep
    assign = T_stage * k / dep.ep * dep.imbalance  # token-expert pairs on this rank
    hit = expected_distinct_experts(E, k, T_stage)  # distinct experts hit over the whole EP group
    local = hit / dep.ep if not dep.redundant_experts else hit / E * e_local
    distinct = np.minimum(local * dep.imbalance, e_local)
    distinct = np.maximum(distinct, np.minimum(1.0, e_local))  # at least one expert is busy
    i_e = f.moe_intermediate_size // dep.moe_tp
    up = 2 * i_e if f.gated else i_e
    w = dep.expert_weights
    # permute and unpermute (TensorRT-LLM's expandInputRows / finalize, SGLang's deepep permute):
    # read the tokens this device routes and write its token-expert pairs, then read the pairs'
    # outputs and write the tokens back, weighted; one elementwise pass each way
    routed = T if routed_tokens is None else np.asarray(routed_tokens, dtype=float)
    ops.append(_elementwise("moe.permute", G, M, (routed + assign) * h, (assign + routed) * h, act, n_layers))
    for name, N, K in (("moe.experts.gate_up_proj", up, h), ("moe.experts.down_proj", h, i_e)):
        ops.append(Operator(
            name=name, kind=OpKind.GROUPED_GEMM, group=G, layer=M, count=n_layers, flops=2.0 * assign * N * K,
            bytes_read=distinct * w.bytes_for(N * K) + assign * K * act, bytes_written=assign * N * act,
            dtype=w.compute, shape=dict(M=assign, N=N, K=K, groups=distinct, tokens_per_expert=assign / distinct,
                                                      format=w.name, slots=float(e_local))))
    return ops


def stage_layers(n_layers: int, pp: int) -> list[range]:
    """Contiguous layer ranges of the ``pp`` pipeline stages (earlier stages take the remainder)."""
    sizes = [n_layers // pp + (1 if i < n_layers % pp else 0) for i in range(pp)]
    starts = [sum(sizes[:i]) for i in range(pp)]
    return [range(a, a + n) for a, n in zip(starts, sizes)]


class LayerGroup(NamedTuple):
    """Identical layers of a pipeline stage: MoE or dense FFN, sliding window (or None), how
    many, and whether their mixer is linear attention (a hybrid model's Gated DeltaNet)."""

    is_moe: bool
    window: int | None
    n: int
    linear: bool = False


def layer_groups(spec: ModelSpec, pp: int = 1) -> list[LayerGroup]:
    """(is_moe, window or None, number of layers, linear) on the busiest pipeline stage.

    The busiest stage is the one whose layers store the most weights (every routed expert
    counts, not only the activated ones), then the one with the most layers. It is costed with
    both the embedding and the LM head (a conservative bound on the slowest stage; with
    pp = 1 it is exact).
    """
    win = set(spec.sliding_window.layers) if spec.sliding_window else set()

    def groups(layers) -> dict:
        g: dict[tuple, int] = {}
        for i in layers:
            key = (spec.is_moe_layer(i), spec.sliding_window.window if i in win else None, spec.is_linear_layer(i))
            g[key] = g.get(key, 0) + 1
        return g

    stages = [groups(r) for r in stage_layers(spec.num_hidden_layers, pp)]
    size = {(m, lin): stored_layer_params(spec, m, lin) for g in stages for (m, _w, lin) in g}
    busiest = max(stages, key=lambda g: (sum(size[(m, lin)] * n for (m, _w, lin), n in g.items()), sum(g.values())))
    return [LayerGroup(m, w, n, lin) for (m, w, lin), n in busiest.items()]


def step_operators(spec: ModelSpec, dep: Deployment, step: StepShape, *, form: str | None = None,
                   include_comm: bool = True) -> list[Operator]:
    """All operators one device runs for a step (one pipeline stage's share of layers).

    ``form`` overrides ``dep.mla_form`` ("absorbed" | "naive"); "auto" is resolved by the
    roofline (``costsim.simulator.roofline``), not here. Raises FieldError when ``dep``
    cannot run ``spec`` (``Deployment.check``).
    """
    dep.check(spec)
    form = form or dep.mla_form
    if form == "auto":
        form = "absorbed"
    act, h = dep.act_bytes, spec.hidden_size
    b = dep.seqs_per_rank(step.batch)
    T = b * np.asarray(step.new_tokens, dtype=float)
    ops: list[Operator] = [
        Operator(name="embedding", kind=OpKind.ELEMENTWISE, group=OpGroup.EMBEDDING, layer=LayerType.ONCE, count=1,
                 flops=0.0, bytes_read=T * h * dep.high_precision.bytes_per_element, bytes_written=T * h * act, dtype="")
    ]
    groups = layer_groups(spec, dep.pp)
    for is_moe, window, n, linear in groups:
        tag = ("moe" if is_moe else "dense") + (f",window={window}" if window else "") + (",linear" if linear else "")
        layer = LayerType.MOE if is_moe else LayerType.DENSE
        tag = tag if len(groups) > 1 else ""
        if linear:
            ops += linear_attention_operators(spec, dep, step, n, tag, layer)
        else:
            ops += attention_operators(spec, dep, step, n, window, form, tag, layer)
    for is_moe in (False, True):
        n = sum(g[2] for g in groups if g[0] == is_moe)
        if n:
            ops += ffn_operators(spec, dep, step, n, is_moe)
    V = -(-spec.vocab_size // dep.tp)  # vocab-parallel shard, rounded up
    lt = b * np.asarray(step.logit_tokens, dtype=float)
    ops.append(_gemm("lm_head", OpGroup.LM_HEAD, LayerType.ONCE, lt, V, h, dep.high_precision, act, 1))
    if include_comm:
        ops += comm_operators(spec, dep, step, groups)
    return ops


def mtp_operators(spec: ModelSpec, dep: Deployment, step: StepShape, *, form: str | None = None,
                  include_comm: bool = True) -> list[Operator]:
    """One forward of an MTP module (DeepSeek-V3 §2.2, Fig. 3) for ``step``: the shared
    embedding's lookup, the two RMSNorms and the projection M_k (2h -> h), one transformer
    block (MoE when the model is MoE, at full context), the shared LM head; names start with
    ``mtp.``. Used by speculative decoding (``serving.decode`` with ``dep.mtp_depth``)."""
    dep.check(spec)
    form = form or dep.mla_form
    if form == "auto":
        form = "absorbed"
    act, h = dep.act_bytes, spec.hidden_size
    b = dep.seqs_per_rank(step.batch)
    T = b * np.asarray(step.new_tokens, dtype=float)
    moe = isinstance(spec.ffn, MoEFFN)
    layer = LayerType.MOE if moe else LayerType.DENSE
    ops = [Operator(name="embedding", kind=OpKind.ELEMENTWISE, group=OpGroup.EMBEDDING, layer=LayerType.ONCE,
                    count=1, flops=0.0, bytes_read=T * h * dep.high_precision.bytes_per_element,
                    bytes_written=T * h * act, dtype=""),
           _elementwise("norms(h, e)", OpGroup.ATTENTION, layer, 2 * T * h, 2 * T * h, act, 1),
           _gemm("eh_proj", OpGroup.ATTENTION, layer, T, h // dep.tp, 2 * h, dep.weight_format, act, 1)]
    ops += attention_operators(spec, dep, step, 1, None, form, "", layer)
    ops += ffn_operators(spec, dep, step, 1, moe)
    V = -(-spec.vocab_size // dep.tp)
    ops.append(_gemm("lm_head", OpGroup.LM_HEAD, LayerType.ONCE, b * np.asarray(step.logit_tokens, dtype=float), V, h,
                     dep.high_precision, act, 1))
    if include_comm:
        ops += comm_operators(spec, dep, step, [LayerGroup(moe, None, 1, False)])
    return [o if o.name.startswith("mtp.") else replace(o, name="mtp." + o.name) for o in ops]


def total(ops: list[Operator], attr: str = "flops", kinds: tuple[str, ...] | None = None):
    """Sum ``attr`` x count over operators (optionally only some kinds)."""
    return sum(np.asarray(getattr(o, attr)) * o.count for o in ops if kinds is None or o.kind in kinds)
