"""Device memory: weights after sharding, KV cache per device, activation workspace, and
the largest batch that fits.

Sharding (``Deployment``): attention, dense FFN and shared experts split by TP (the MLA
down-projection W^DKV|W^KR and the latent cache are replicated on every TP rank); routed
experts split over EP x expert-TP (= devices / PP); embedding and LM head split by TP
(vocab-parallel); layers split over PP; norms and router replicated. Matmul weights are in
``weight_format`` (routed experts in ``expert_weights``); embedding, LM head, norms and router
stay in ``high_precision``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.kv import cached_tokens, kv_bytes_per_token_per_layer, linear_state_bytes_per_layer
from costsim.simulator.operators import layer_groups, step_operators
from costsim.simulator.params import layer_params, param_counts
from costsim.simulator.types import OpKind, StepShape
from costsim.specs import HardwareProfile, MLAAttention, MoEFFN, ModelSpec


def _slot_share(spec: ModelSpec, dep: Deployment) -> float:
    """Stored routed-expert copies over the experts: (E + redundant) / E (1 for dense)."""
    f = spec.ffn
    return dep.expert_slots(spec) / f.n_routed_experts if isinstance(f, MoEFFN) else 1.0


def weight_bytes_per_device(spec: ModelSpec, dep: Deployment) -> float:
    """Bytes of weights on the busiest device: the layers of the busiest pipeline stage
    (``operators.layer_groups``) plus the embedding and the LM head, as the timing costs that
    stage (exact for pp = 1, a conservative bound for pp > 1)."""
    dep.check(spec)
    p = param_counts(spec)
    w, hp = dep.weight_format.bytes_per_element, dep.high_precision.bytes_per_element
    a = spec.attention
    replicated = 0  # W^DKV|W^KR + kv_a_layernorm: replicated on every TP rank
    if isinstance(a, MLAAttention):
        replicated = spec.hidden_size * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
    total = 0.0
    for is_moe, _window, n, linear in layer_groups(spec, dep.pp):
        lp = layer_params(spec, is_moe, linear)
        tp_sharded = (lp["attention"] - replicated) / dep.tp + replicated + (lp["dense_ffn"] + lp["shared"]) / dep.tp
        experts = lp["routed"] * _slot_share(spec, dep) / (dep.ep * dep.moe_tp)
        total += n * (tp_sharded * w + experts * dep.expert_weights.bytes_per_element
                      + (lp["norms"] + lp["router"]) * hp)
    vocab = (p.embedding + p.lm_head) * hp / dep.tp
    if dep.draft_model is not None:  # draft-model speculation: the draft's weights on every TP group
        total += weight_bytes_per_device(dep.draft_model, dep.draft_deployment())
    elif dep.mtp_depth:
        # serving with MTP loads the MTP modules (DeepSeek-V3 §2.2): per module one block (MoE
        # when the model is MoE), the projection M (2h -> h, TP-split) and three RMSNorms
        moe = isinstance(spec.ffn, MoEFFN)
        lp = layer_params(spec, moe, False)
        tp_sharded = (lp["attention"] - replicated) / dep.tp + replicated + (lp["dense_ffn"] + lp["shared"]) / dep.tp
        h = spec.hidden_size
        module = (tp_sharded + 2 * h * h / dep.tp) * w + lp["routed"] * _slot_share(spec, dep) / (dep.ep * dep.moe_tp) * \
            dep.expert_weights.bytes_per_element + (lp["norms"] + lp["router"] + 3 * h) * hp
        total += spec.num_nextn_predict_layers * module
    return float(total + vocab + spec.hidden_size * hp)  # + final norm


def kv_bytes_per_device(spec: ModelSpec, dep: Deployment, batch, context):
    """KV cache bytes on the busiest device: its DP group's sequences, the layers of the busiest
    pipeline stage (``operators.layer_groups``, as weights and timing use; with uneven stages
    that is more than 1/pp of the layers), sliding-window layers capped at their window,
    linear-attention layers holding their fixed state per sequence."""
    dep.check(spec)
    seqs = dep.seqs_per_rank(batch)
    per_layer = kv_bytes_per_token_per_layer(spec, dep.kv_format, dep.tp)
    ctx = np.asarray(context, dtype=float)
    if np.any(ctx < 0) or np.any(np.asarray(batch) < 0):
        raise FieldError("context" if np.any(ctx < 0) else "batch", "<0", "must be >= 0")
    groups = layer_groups(spec, dep.pp)
    tokens = sum(n * cached_tokens(ctx if w is None else np.minimum(ctx, w), dep.block_size)
                 for _moe, w, n, linear in groups if not linear)
    if dep.mtp_depth and dep.draft_model is None:  # each MTP module's attention layer keeps its own cache
        tokens = tokens + spec.num_nextn_predict_layers * cached_tokens(ctx, dep.block_size)
    # linear-attention layers: a fixed state per sequence, whatever the context
    state = sum(g.n for g in groups if g.linear) * linear_state_bytes_per_layer(spec, dep.tp)
    draft = kv_bytes_per_device(dep.draft_model, dep.draft_deployment(), batch, context) if dep.draft_model else 0.0
    return (per_layer * tokens + state) * seqs + draft + 0.0 * ctx  # (+ 0 ctx: a stage of only linear layers broadcasts too)


def workspace_bytes(spec: ModelSpec, dep: Deployment, step: StepShape):
    """Peak transient activation bytes of a step on one device: the largest operator's
    activation inputs + outputs (weights and KV excluded), plus FP32 logits."""
    ops = step_operators(spec, dep, step, include_comm=False)
    peak = 0.0
    for o in ops:
        if o.kind in (OpKind.GEMM, OpKind.GROUPED_GEMM):
            M = np.asarray(o.shape["M"], dtype=float)
            act = M * (o.shape["K"] + o.shape["N"]) * dep.act_bytes * o.shape.get("batch", 1)
        elif o.kind is OpKind.ELEMENTWISE:
            act = o.bytes_moved
        else:
            continue
        peak = np.maximum(peak, act)
    b = dep.seqs_per_rank(step.batch)
    logits = b * np.asarray(step.logit_tokens, dtype=float) * spec.vocab_size / dep.tp * 4.0
    return peak + logits


@dataclass(frozen=True)
class MemoryReport:
    """Bytes per device and the largest batch (sequences per replica) that fits."""

    capacity_bytes: float
    usable_bytes: float
    weight_bytes: float
    kv_bytes: object
    workspace_bytes: object
    max_batch: object  # sequences per replica at the given context
    limit: str  # what limits the batch

    @property
    def fits(self):
        return np.asarray(self.weight_bytes + self.kv_bytes + self.workspace_bytes) <= self.usable_bytes


def memory_report(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, context,
                  new_tokens=1) -> MemoryReport:
    """Memory per device for ``batch`` sequences at ``context`` tokens, and the largest
    batch that fits in ``gpu_memory_utilization`` of the device memory.

    The batch is limited by memory (weights + KV + workspace); the report says
    "weights do not fit" when even batch 0 does not.
    """
    cap = hw.memory_capacity.value
    usable = cap * dep.gpu_memory_utilization
    wb = weight_bytes_per_device(spec, dep)
    kvb = kv_bytes_per_device(spec, dep, batch, context)
    ws = workspace_bytes(spec, dep, StepShape(batch, new_tokens, context, 1))
    per_seq_kv = kv_bytes_per_device(spec, dep, dep.dp, context)  # one sequence per DP rank
    per_seq_ws = workspace_bytes(spec, dep, StepShape(dep.dp, new_tokens, context, 1))
    free = usable - wb
    with np.errstate(divide="ignore", invalid="ignore"):
        per_rank = np.floor(np.maximum(free, 0) / (per_seq_kv + per_seq_ws))
    max_b = per_rank * dep.dp
    limit = "weights do not fit" if free <= 0 else "memory: KV cache" if np.all(per_seq_kv >= per_seq_ws) else "memory: workspace"
    return MemoryReport(cap, usable, wb, kvb, ws, max_b, limit)


def require_fit(spec: ModelSpec, hw: HardwareProfile, dep: Deployment) -> None:
    """Raise CostsimError when the weights alone exceed the usable memory of a device."""
    wb = weight_bytes_per_device(spec, dep)
    usable = hw.memory_capacity.value * dep.gpu_memory_utilization
    if wb > usable:
        raise CostsimError(
            f"{spec.name} does not fit on {hw.name}: {wb / 1e9:.1f} GB of weights per device "
            f"> {usable / 1e9:.1f} GB usable ({dep.devices} devices, tp={dep.tp}, ep={dep.ep}, pp={dep.pp}, "
            f"weights {dep.weights_name}); add devices or use a narrower weight format")
