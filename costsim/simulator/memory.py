"""Device memory: weights after sharding, KV cache per device, activation workspace, and
the largest batch that fits.

Sharding (``Deployment``): attention, dense FFN and shared experts split by TP (the MLA
down-projection W^DKV|W^KR and the latent cache are replicated on every TP rank); routed
experts split over EP x expert-TP (= devices / PP); embedding and LM head split by TP
(vocab-parallel); layers split over PP; norms and router replicated. Matmul weights are in
``weight_format`` (routed experts in ``expert_weights``); embedding, LM head, norms and router
stay in ``high_precision``.

DeepEP communication buffers (``deepep_buffers``): with EP > 1 every device holds the
buffers its all-to-all kernels run in, sized as DeepEP's own size hints (cited at each
constant below) for the kernels ``Deployment.ep_kernel`` selects, and charged beside the
weights: they are allocated once at start-up, whatever the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

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


# ---- DeepEP buffers ------------------------------------------------------------------------
# Source: github.com/deepseek-ai/DeepEP at 567632d (the last tree before EPv2; the same formulas
# stand at dd758ca in csrc/legacy/config.hpp:52-187 and deep_ep/buffers/legacy.py).
DEEPEP_NVL_PEERS = 8  # NUM_MAX_NVL_PEERS, csrc/kernels/configs.cuh:3
DEEPEP_ALIGN = 128  # NUM_BUFFER_ALIGNMENT_BYTES, configs.cuh:7
DEEPEP_WORKSPACE_BYTES = 32 * 2**20  # NUM_WORKSPACE_BYTES, configs.cuh:5; cudaMalloc'd by every Buffer (csrc/deep_ep.cpp:197)
DEEPEP_NVL_META_BYTES = 8 * 4 + 8 * 8 + 8 * 8  # barrier signals + buffer and signal pointers (deep_ep.cpp:146-148)
DEEPEP_NUM_SMS = 20  # Buffer.num_sms, deep_ep/buffer.py:30 (SGLang's DeepEPConfig default too)
DEEPEP_MAX_TOKENS = 128  # low-latency tokens per rank: SGLang's SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK
#                          default (python/sglang/srt/environ.py, EnvInt(128)); DeepEP tests/test_low_latency.py:318
DEEPEP_MAX_TOKENS_LIMIT = 1024  # FINISHED_SUM_TAG (configs.cuh:9): SGLang asserts the cap <= 1024 (token_dispatcher/deepep.py)
_TOPK_MAX, _SCALES_MAX = 128, 128  # kNumMaxTopK / kNumMaxScales, csrc/config.hpp:55-56
_TOPK_IDX_BYTES = 8  # topk_idx_t = int64 (TOPK_IDX_BITS 64, configs.cuh:71-77)
_SOURCE_META_BYTES = 8  # sizeof(SourceMeta): two ints (csrc/kernels/internode.cu:17-40)
# Buffer.get_dispatch_config / get_combine_config (deep_ep/buffer.py:233-290), per EP size:
# (num_max_nvl_chunked_recv_tokens, num_max_rdma_chunked_send_tokens, num_max_rdma_chunked_recv_tokens)
_DISPATCH_CONFIGS = {2: (256, 6, 128), 4: (256, 6, 128), 8: (256, 6, 128), 16: (288, 20, 128), 24: (288, 8, 128),
                     32: (288, 8, 128), 48: (288, 8, 128), 64: (288, 8, 128), 96: (480, 12, 128),
                     128: (560, 12, 128), 144: (720, 12, 128), 160: (720, 12, 128)}
_COMBINE_CONFIGS = {2: (256, 6, 128), 4: (256, 6, 128), 8: (256, 6, 128), 16: (288, 12, 128), 24: (288, 8, 128),
                    32: (288, 8, 128), 48: (288, 8, 128), 64: (288, 8, 128), 96: (480, 8, 128), 128: (560, 8, 128),
                    144: (720, 8, 128), 160: (720, 8, 128)}


def _align(n, a: int = DEEPEP_ALIGN):
    return -(-n // a) * a


def deepep_low_latency_rdma_bytes(tokens: int, hidden: int, num_ranks: int, num_experts: int) -> int:
    """``Buffer.get_low_latency_rdma_size_hint`` (DeepEP csrc/config.hpp:136-193): the RDMA
    (NVSHMEM) bytes per rank of the low-latency kernels for ``tokens`` dispatched per rank at
    most, ``hidden`` elements per token and ``num_experts`` experts (``num_ranks`` does not
    enter; it is DeepEP's signature). Odd/even copies of a send buffer, a receive buffer and a
    signalling buffer (``LowLatencyLayout``):

    - dispatch message = 16 + max(2 h, h + 4 h/128) bytes (a control int4, then BF16 or FP8
      + per-128-channel FP32 scales); combine message = 4 h/128 + 2 h;
    - send = max(T x dispatch msg, E x T x combine msg); receive = E x T x max(the two);
    - signalling = align128(4 E); total = 2 (send + receive + signalling), then
      (total + 128) // 128 x 128 (DeepEP's rounding, which adds 128 to an aligned total).
    """
    for name, v in (("tokens", tokens), ("hidden", hidden), ("num_ranks", num_ranks), ("num_experts", num_experts)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise FieldError(name, v, "must be an integer >= 1")
    scales = hidden // 128
    dispatch_msg = 16 + max(hidden * 2, hidden + scales * 4)
    combine_msg = scales * 4 + hidden * 2
    send = max(tokens * dispatch_msg, num_experts * tokens * combine_msg)
    recv = max(num_experts * tokens * dispatch_msg, num_experts * tokens * combine_msg)
    signal = _align(num_experts * 4)
    total = 2 * (send + recv + signal)
    return (total + DEEPEP_ALIGN) // DEEPEP_ALIGN * DEEPEP_ALIGN


def deepep_normal_nvl_bytes(hidden_bytes: int, num_ranks: int, nvl_recv_tokens: int,
                            num_sms: int = DEEPEP_NUM_SMS) -> int:
    """``Config.get_nvl_buffer_size_hint`` (DeepEP csrc/config.hpp:52-74): the NVLink buffer
    of the normal kernels per rank. With c = num_sms / 2 channels, n = min(ranks, 8) NVLink
    peers, r = max(ranks / 8, 1) RDMA ranks (rounded up: DeepEP asserts ranks < 8 or a multiple of 8) and R = ``nvl_recv_tokens`` per channel and peer:
    c n (2 r + 3) 4 + c n R (hidden_bytes + 8 + 128 x 8 + 128 x 4 + 128 x 4), rounded up to 128."""
    c, n, r = num_sms // 2, min(num_ranks, DEEPEP_NVL_PEERS), max(-(-num_ranks // DEEPEP_NVL_PEERS), 1)
    b = c * n * (2 * r + 3) * 4
    b += c * n * nvl_recv_tokens * (hidden_bytes + _SOURCE_META_BYTES + _TOPK_MAX * _TOPK_IDX_BYTES
                                    + _TOPK_MAX * 4 + _SCALES_MAX * 4)
    return _align(b)


def deepep_normal_rdma_bytes(hidden_bytes: int, num_ranks: int, rdma_send_tokens: int, rdma_recv_tokens: int,
                             num_sms: int = DEEPEP_NUM_SMS) -> int:
    """``Config.get_rdma_buffer_size_hint`` (DeepEP csrc/config.hpp:76-104): the RDMA buffer of
    the normal kernels per rank, 0 within one NVLink domain (ranks <= 8). With c = num_sms / 2,
    r = ranks / 8 and R = align_up(rdma_recv, rdma_send) (Config's constructor, config.hpp:46):
    c r (8 x 2 + 2) 2 x 4 + 2 c r R (hidden_bytes + 8 + 128 x 8 + 128 x 4 + 128 x 4 + 16),
    rounded up to 128."""
    if num_ranks <= DEEPEP_NVL_PEERS:
        return 0
    c, r = num_sms // 2, -(-num_ranks // DEEPEP_NVL_PEERS)
    R = _align(rdma_recv_tokens, rdma_send_tokens)
    b = c * r * (DEEPEP_NVL_PEERS * 2 + 2) * 2 * 4
    b += 2 * c * r * R * (hidden_bytes + _SOURCE_META_BYTES + _TOPK_MAX * _TOPK_IDX_BYTES + _TOPK_MAX * 4
                          + _SCALES_MAX * 4 + 16)
    return _align(b)


def deepep_configs(num_ranks: int) -> tuple[tuple, tuple]:
    """DeepEP's recommended (dispatch, combine) configs for ``num_ranks`` (buffer.py:233-290).
    DeepEP lists 2-160 ranks; another count takes the entry of the next listed size up (160
    beyond it): an assumption, DeepEP itself asserts the count is listed."""
    key = min((k for k in _DISPATCH_CONFIGS if k >= num_ranks), default=160)
    return _DISPATCH_CONFIGS[key], _COMBINE_CONFIGS[key]


@dataclass(frozen=True)
class DeepEPBuffers:
    """DeepEP's buffers on one device (bytes): ``nvl_bytes`` (the normal kernels' NVLink
    buffer, with its 160 bytes of barrier metadata), ``rdma_bytes`` (NVSHMEM: the normal
    kernels' across nodes, or the low-latency kernels', the larger when both run),
    ``workspace_bytes`` (32 MiB), and ``tokens``, the low-latency dispatch capacity per rank
    (0 when those kernels do not run)."""

    nvl_bytes: int = 0
    rdma_bytes: int = 0
    workspace_bytes: int = 0
    tokens: int = 0

    @property
    def total(self) -> int:
        return self.nvl_bytes + self.rdma_bytes + self.workspace_bytes


def deepep_buffers(spec: ModelSpec, dep: Deployment) -> DeepEPBuffers:
    """The DeepEP buffers per device of ``dep`` (zero without EP or experts), as SGLang sizes
    them (``DeepEPBuffer.get_deepep_buffer``, python/sglang/srt/layers/moe/token_dispatcher/
    deepep.py): the normal kernels (``ep_kernel`` normal or auto) take the max over DeepEP's
    dispatch and combine configs of ``deepep_normal_nvl_bytes`` and ``deepep_normal_rdma_bytes``
    at hidden x max(act bytes, 2) bytes per token (DeepEP README ``get_hidden_bytes``); the
    low-latency kernels (low_latency or auto) need ``deepep_low_latency_rdma_bytes`` for
    ``dep.deepep_max_tokens`` tokens per rank, the ep ranks and the E + redundant expert slots;
    auto keeps the larger RDMA size (one buffer serves both). Not counted: NVSHMEM's own heap
    reserve and the pinned host counters."""
    dep.check(spec)
    if dep.ep == 1 or not isinstance(spec.ffn, MoEFFN):
        return DeepEPBuffers()
    h, n = spec.hidden_size, dep.ep
    nvl = rdma = tokens = 0
    if dep.ep_kernel in ("normal", "auto"):
        hidden_bytes = int(h * max(dep.act_bytes, 2))
        for nvl_recv, rdma_send, rdma_recv in deepep_configs(n):
            nvl = max(nvl, deepep_normal_nvl_bytes(hidden_bytes, n, nvl_recv))
            rdma = max(rdma, deepep_normal_rdma_bytes(hidden_bytes, n, rdma_send, rdma_recv))
        nvl += DEEPEP_NVL_META_BYTES
    if dep.ep_kernel in ("low_latency", "auto"):
        tokens = dep.deepep_max_tokens
        rdma = max(rdma, deepep_low_latency_rdma_bytes(tokens, h, n, dep.expert_slots(spec)))
    return DeepEPBuffers(nvl, rdma, DEEPEP_WORKSPACE_BYTES, tokens)


def decode_dispatch_tokens(dep: Deployment, batch) -> int:
    """Tokens one device sends in a decode step's low-latency dispatch of ``batch`` sequences:
    the sequences of its attention rank (per micro-batch with two-batch overlap) x (1 +
    mtp_depth), its 1/tp share (``parallel.comm_operators``), rounded up; what
    ``deepep_max_tokens`` must hold (``scenario`` warns when it does not)."""
    seqs = float(dep.seqs_per_rank(float(np.max(batch))))
    if dep.two_batch_overlap:  # each rank splits its sequences, rounding up (1 sequence: both hold it)
        seqs = ceil(seqs / 2)
    return int(ceil(seqs * (1 + dep.mtp_depth) / dep.tp - 1e-9))


def resident_bytes(spec: ModelSpec, dep: Deployment) -> float:
    """Bytes per device held whatever the batch: the weights and the DeepEP buffers."""
    return weight_bytes_per_device(spec, dep) + float(deepep_buffers(spec, dep).total)


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
    comm_buffer_bytes: float = 0.0  # DeepEP buffers (``deepep_buffers``), allocated beside the weights

    @property
    def fits(self):
        return np.asarray(self.weight_bytes + self.comm_buffer_bytes + self.kv_bytes + self.workspace_bytes) \
            <= self.usable_bytes


def memory_report(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, context,
                  new_tokens=1) -> MemoryReport:
    """Memory per device for ``batch`` sequences at ``context`` tokens, and the largest
    batch that fits in ``gpu_memory_utilization`` of the device memory.

    The batch is limited by memory (weights + DeepEP buffers + KV + workspace); the report
    says "weights do not fit" when even batch 0 does not.
    """
    cap = hw.memory_capacity.value
    usable = cap * dep.gpu_memory_utilization
    wb = weight_bytes_per_device(spec, dep)
    buf = float(deepep_buffers(spec, dep).total)
    kvb = kv_bytes_per_device(spec, dep, batch, context)
    ws = workspace_bytes(spec, dep, StepShape(batch, new_tokens, context, 1))
    per_seq_kv = kv_bytes_per_device(spec, dep, dep.dp, context)  # one sequence per DP rank
    per_seq_ws = workspace_bytes(spec, dep, StepShape(dep.dp, new_tokens, context, 1))
    free = usable - wb - buf
    with np.errstate(divide="ignore", invalid="ignore"):
        per_rank = np.floor(np.maximum(free, 0) / (per_seq_kv + per_seq_ws))
    max_b = per_rank * dep.dp
    limit = "weights do not fit" if free <= 0 else "memory: KV cache" if np.all(per_seq_kv >= per_seq_ws) else "memory: workspace"
    return MemoryReport(cap, usable, wb, kvb, ws, max_b, limit, buf)


def require_fit(spec: ModelSpec, hw: HardwareProfile, dep: Deployment) -> None:
    """Raise CostsimError when the weights alone exceed the usable memory of a device."""
    wb = weight_bytes_per_device(spec, dep)
    usable = hw.memory_capacity.value * dep.gpu_memory_utilization
    if wb > usable:
        raise CostsimError(
            f"{spec.name} does not fit on {hw.name}: {wb / 1e9:.1f} GB of weights per device "
            f"> {usable / 1e9:.1f} GB usable ({dep.devices} devices, tp={dep.tp}, ep={dep.ep}, pp={dep.pp}, "
            f"weights {dep.weights_name}); add devices or use a narrower weight format")


def dispatch_warning(spec: ModelSpec, dep: Deployment, batch) -> list[str]:
    """A warning when a decode step's low-latency dispatch sends more tokens per rank than
    DeepEP's buffer holds (``memory.deepep_buffers``), else none."""
    cap, sent = deepep_buffers(spec, dep).tokens, decode_dispatch_tokens(dep, batch)
    if not cap or sent <= cap:
        return []
    return [f"at batch {int(batch)} a decode step's low-latency dispatch sends {sent} tokens per rank, more than "
            f"the {cap} DeepEP's buffer is sized for (--deepep-max-tokens; SGLang: "
            "SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK); DeepEP refuses such a step"]
