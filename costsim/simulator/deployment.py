"""How a model is deployed: number formats and the parallel layout.

Layout conventions (per pipeline stage, ``devices / pp`` devices):
- Attention and dense FFN: ``dp`` data-parallel groups of ``tp`` tensor-parallel ranks
  (``dp = devices / (pp * tp)``). With tp=1 and dp>1 this is DeepSeek's DP-attention.
- MoE experts: spread over ``ep`` expert-parallel ranks; each expert is further split
  ``moe_tp = devices / (pp * ep)`` ways. Shared experts are replicated per attention DP
  group and split by ``tp`` like the dense FFN.
Infeasible layouts raise CostsimError when the Deployment is checked against a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from costsim.errors import FieldError
from costsim.specs import GQAAttention, MLAAttention, MoEFFN, ModelSpec
from costsim.units import FORMATS, NumberFormat


def activation_format(weights: NumberFormat) -> NumberFormat:
    """Activations (and the attention core, embedding, LM head) of a run with ``weights``:
    FP32 when the weights are FP32 (a full-precision run), else BF16 (FP8 and narrower
    weights feed BF16 activations; DeepSeek-V3 tech report §3.3)."""
    return FORMATS["fp32"] if weights.compute == "fp32" else FORMATS["bf16"]


EP_KERNELS = ("normal", "low_latency", "auto")


@dataclass(frozen=True)
class Deployment:
    """Formats and parallelism of one serving (or training) replica.

    - ``weight_format``: matmul weights (``fp8`` -> FP8 GEMMs on the fp8 peak). Embedding,
      LM head, norms and router stay in ``high_precision`` (BF16), as DeepSeek's FP8
      checkpoints keep them (DeepSeek-V3 tech report §3.3).
    - ``expert_format``: routed-expert weights when they differ from ``weight_format`` (gpt-oss
      ships MXFP4 experts beside BF16 attention); None: ``weight_format``.
    - ``kv_format``: KV cache storage (see ``costsim.units.FORMATS``).
    - ``act_format``: activations, communication payloads and the attention core's compute
      precision (BF16; FP32 for a full-precision run). ``act_bytes`` is its size.
    - ``mla_form``: "absorbed" (W_UK into q, W_UV into o; attend over the latent),
      "naive" (decompress K and V from the cached latent every step) or "auto" (the
      cheaper by roofline time, per phase).
    - ``imbalance``: busiest-rank MoE load over the mean (1.0 = perfectly balanced); scales
      the busiest expert rank's compute and all-to-all bytes.
    - ``dispatch_bytes`` / ``combine_bytes``: bytes per hidden element sent in the EP
      dispatch / combine (DeepSeek: FP8 dispatch = 1, BF16 combine = 2; Day-6 overview).
    - ``overlap_comm``: communication overlapped with compute (time = max, not sum).
    - ``two_batch_overlap``: each step runs as two micro-batches of half the sequences, one's
      communication overlapped with the other's computation (DeepSeek-V3 §3.4 and the Day-6
      overview, for prefill and decode; SGLang ``--enable-two-batch-overlap``): step time =
      2 x max(compute, communication) of one micro-batch. Unlike ``overlap_comm`` (one batch,
      perfect overlap) it pays for the split: every weight is read and every kernel launched
      once per micro-batch.
    - ``ep_kernel``: the EP all-to-all kernels (DeepEP, arXiv 2505.09343 §4.3 and its README):
      "normal" (high-throughput: one RDMA copy per remote node, forwarded inside the node over
      NVLink), "low_latency" (one RDMA copy per token-expert pair on another rank, no NVLink
      forwarding), or "auto" (low-latency for decode steps, normal for prefill, as DeepSeek
      serves V3 and SGLang's ``--deepep-mode auto`` does; a step is decode when it computes at
      most 1 + ``mtp_depth`` tokens per sequence).
    - ``deepep_nvlink``: the low-latency kernels are DeepEP's NVLink-aware ones (2025-06,
      PR #173): pairs for another rank of the same node go over NVLink, the rest over the NIC,
      and the time is the slower link's (``parallel.low_latency_seconds``). False (default):
      the Feb-2025 kernels DeepSeek's Day-6 deployment ran, every peer over the NIC.
    - ``deepep_max_tokens``: tokens one rank may send in a low-latency dispatch, which sizes
      DeepEP's low-latency buffer (``memory.deepep_buffers``; SGLang's
      ``SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK``, default 128, at most 1024).
    - ``gpu_memory_utilization``: fraction of device memory usable for weights + DeepEP
      buffers + KV + workspace (vLLM's default 0.9).
    """

    devices: int = 1
    tp: int = 1
    ep: int = 1
    pp: int = 1
    weight_format: NumberFormat = field(default_factory=lambda: FORMATS["bf16"])
    expert_format: NumberFormat | None = None  # routed experts, when not weight_format (gpt-oss MXFP4)
    kv_format: NumberFormat = field(default_factory=lambda: FORMATS["bf16"])
    high_precision: NumberFormat = field(default_factory=lambda: FORMATS["bf16"])
    act_format: NumberFormat = field(default_factory=lambda: FORMATS["bf16"])
    mla_form: Literal["absorbed", "naive", "auto"] = "absorbed"
    block_size: int | None = None
    imbalance: float = 1.0
    dispatch_bytes: float = 2.0
    combine_bytes: float = 2.0
    overlap_comm: bool = False
    ep_kernel: Literal["normal", "low_latency", "auto"] = "normal"
    deepep_nvlink: bool = False
    two_batch_overlap: bool = False
    deepep_max_tokens: int = 128  # memory.DEEPEP_MAX_TOKENS (SGLang's default)
    gpu_memory_utilization: float = 0.9
    layout_reason: str = ""  # why the layout policy chose this layout, when it is not the plain default
    # MTP speculative decoding (DeepSeek-V3 §2.2 and §5.4.3): draft tokens per decode step from the
    # model's MTP module(s) and the probability that each is accepted given the ones before it
    mtp_depth: int = 0
    mtp_acceptance: float = 0.0
    # prefix caching: share of each prompt whose KV is already cached (its prefill is skipped;
    # the KV cache still holds the whole prompt). DeepSeek Day 6: 56.3% of input tokens hit
    prefix_hit: float = 0.0
    # redundant experts (EPLB, DeepSeek-V3 §3.4): extra copies of hot routed experts, so that
    # E + redundant expert slots spread evenly over ``ep`` ranks (Day 6: 256 + 32 over EP32/EP144)
    redundant_experts: int = 0
    # draft-model speculative decoding (Leviathan et al. 2023, arXiv 2211.17192): a small model
    # drafts the ``mtp_depth`` tokens instead of the MTP module; it runs on every TP group of
    # the replica with the same TP, formats and KV dtype, and prefills the prompt too
    draft_model: ModelSpec | None = None

    def draft_deployment(self) -> "Deployment":
        """The draft model's layout: the replica's devices and TP, no EP/PP/redundancy."""
        return replace(self, ep=1, pp=1, imbalance=1.0, redundant_experts=0, mtp_depth=0, mtp_acceptance=0.0,
                       draft_model=None, prefix_hit=self.prefix_hit, layout_reason="")

    def cached_prefix(self, prompt):
        """Prompt tokens whose KV is reused from the prefix cache: floor(prefix_hit x prompt),
        at most prompt - 1 (the last token is always computed, for its logits)."""
        p = np.asarray(prompt, dtype=float)
        if not self.prefix_hit:
            return 0.0 * p
        return np.minimum(np.floor(self.prefix_hit * p), p - 1)

    @property
    def act_bytes(self) -> float:
        """Bytes per activation element (``act_format``)."""
        return self.act_format.bytes_per_element

    @property
    def dp(self) -> int:
        return self.devices // (self.pp * self.tp)

    @property
    def moe_tp(self) -> int:
        return self.devices // (self.pp * self.ep)

    def expert_slots(self, spec: ModelSpec) -> int:
        """Routed-expert copies over the EP group: n_routed_experts + ``redundant_experts``."""
        return spec.ffn.n_routed_experts + self.redundant_experts

    def seqs_per_rank(self, batch):
        """Sequences on the busiest attention DP rank: ceil(batch / dp) (batch may be an array)."""
        return np.ceil(np.asarray(batch, dtype=float) / self.dp - 1e-9)

    @property
    def expert_weights(self) -> NumberFormat:
        """The routed experts' weight format."""
        return self.weight_format if self.expert_format is None else self.expert_format

    @property
    def weights_name(self) -> str:
        """``weight_format``'s name, with the experts' when they differ (``bf16+mxfp4-experts``)."""
        e = self.expert_weights
        return self.weight_format.name if e == self.weight_format else f"{self.weight_format.name}+{e.name}-experts"

    def with_(self, **kw) -> "Deployment":
        return replace(self, **kw)

    def check(self, spec: ModelSpec) -> "Deployment":
        """Raise FieldError naming the field if this layout cannot run ``spec``; return self.

        Called by every engine entry that costs a layout (``step_operators``, the memory
        functions, ``serve``, ``max_throughput``), so no formula sees an invalid layout.
        """
        for k in ("devices", "tp", "ep", "pp"):
            if getattr(self, k) < 1:
                raise FieldError(k, getattr(self, k), "must be >= 1")
        if self.devices % (self.tp * self.pp):
            raise FieldError("devices", self.devices, f"not a multiple of tp*pp = {self.tp * self.pp}")
        if self.devices % (self.ep * self.pp):
            raise FieldError("devices", self.devices, f"not a multiple of ep*pp = {self.ep * self.pp}")
        if self.pp > spec.num_hidden_layers:
            raise FieldError("pp", self.pp, f"exceeds the {spec.num_hidden_layers} layers of {spec.name}")
        problem = tp_problem(spec, self.tp)
        if problem:
            raise FieldError("tp", self.tp, problem)
        if isinstance(self.redundant_experts, bool) or not isinstance(self.redundant_experts, int) or \
                self.redundant_experts < 0:
            raise FieldError("redundant_experts", self.redundant_experts, "must be an integer >= 0")
        if self.redundant_experts and not isinstance(spec.ffn, MoEFFN):
            raise FieldError("redundant_experts", self.redundant_experts, f"{spec.name} is dense (no experts)")
        problem = ep_problem(spec, self.ep, self.moe_tp, self.redundant_experts)
        if problem:
            raise FieldError("ep", self.ep, problem)
        if self.ep_kernel not in EP_KERNELS:
            raise FieldError("ep_kernel", self.ep_kernel, f"expected one of {', '.join(EP_KERNELS)}")
        if isinstance(self.deepep_max_tokens, bool) or not isinstance(self.deepep_max_tokens, int) or \
                not 1 <= self.deepep_max_tokens <= 1024:
            raise FieldError("deepep_max_tokens", self.deepep_max_tokens, "must be an integer from 1 to 1024 (DeepEP's "
                             "low-latency dispatch counts tokens per rank below FINISHED_SUM_TAG = 1024)")
        if not isinstance(self.deepep_nvlink, bool):
            raise FieldError("deepep_nvlink", self.deepep_nvlink, "must be True or False")
        if not isinstance(self.two_batch_overlap, bool):
            raise FieldError("two_batch_overlap", self.two_batch_overlap, "must be True or False")
        if self.draft_model is not None and not isinstance(self.draft_model, ModelSpec):
            raise FieldError("draft_model", self.draft_model, "expected a ModelSpec (load_model(name)) or None")
        if not (0 < self.gpu_memory_utilization <= 1):
            raise FieldError("gpu_memory_utilization", self.gpu_memory_utilization, "must be in (0, 1]")
        if not (1 <= self.imbalance < float("inf")):
            raise FieldError("imbalance", self.imbalance, "must be a finite number >= 1 (busiest rank over mean)")
        if self.imbalance != 1:
            if not isinstance(spec.ffn, MoEFFN):
                raise FieldError("imbalance", self.imbalance, f"applies to MoE models only; {spec.name} is dense")
            if self.imbalance > self.ep:
                raise FieldError("imbalance", self.imbalance,
                                 f"exceeds ep={self.ep}: the busiest rank carries at most ep x the mean")
        if self.block_size is not None and self.block_size < 1:
            raise FieldError("block_size", self.block_size, "must be >= 1")
        if isinstance(self.mtp_depth, bool) or not isinstance(self.mtp_depth, int) or not 0 <= self.mtp_depth <= 16:
            raise FieldError("mtp_depth", self.mtp_depth, "must be an integer from 0 to 16 (draft tokens per step)")
        if self.draft_model is not None:
            if not self.mtp_depth:
                raise FieldError("draft_model", self.draft_model.name, "needs mtp_depth >= 1 draft tokens per step")
            if self.pp > 1:
                raise FieldError("draft_model", self.draft_model.name, "with pp > 1 is not modelled")
            if self.draft_model.vocab_size != spec.vocab_size:
                raise FieldError("draft_model", self.draft_model.name,
                                 f"vocab_size {self.draft_model.vocab_size} differs from {spec.name}'s "
                                 f"{spec.vocab_size}: a draft must share the tokenizer")
            problem = tp_problem(self.draft_model, self.tp)
            if problem:
                raise FieldError("draft_model", self.draft_model.name, f"tp={self.tp}: {problem}")
        elif self.mtp_depth and not spec.num_nextn_predict_layers:
            raise FieldError("mtp_depth", self.mtp_depth, f"{spec.name} has no MTP module (num_nextn_predict_layers "
                             "0); a draft model (draft_model, --draft-model) can propose the tokens")
        if isinstance(self.prefix_hit, bool) or not (isinstance(self.prefix_hit, (int, float))
                                                      and 0 <= self.prefix_hit < 1):
            raise FieldError("prefix_hit", self.prefix_hit, "must be a share in [0, 1) of each prompt")
        if not (isinstance(self.mtp_acceptance, (int, float)) and 0 <= self.mtp_acceptance <= 1):
            raise FieldError("mtp_acceptance", self.mtp_acceptance, "must be a probability in [0, 1]")
        if self.mla_form not in ("absorbed", "naive", "auto"):
            raise FieldError("mla_form", self.mla_form, "expected auto, absorbed or naive")
        problem = kv_format_problem(spec, self.kv_format)
        if problem:
            raise FieldError("kv_format", self.kv_format.name, problem)
        if self.weight_format.rope_bits is not None:
            raise FieldError("weight_format", self.weight_format.name, "a KV cache layout, not a weight format")
        if self.expert_format is not None and self.expert_format.rope_bits is not None:
            raise FieldError("expert_format", self.expert_format.name, "a KV cache layout, not a weight format")
        return self


# ---- layout rules, each stated once (checks, layout search and KV sizing all use these) ----


def tp_problem(spec: ModelSpec, tp: int) -> str | None:
    """Why ``tp`` cannot split the attention heads of ``spec`` (None when it can).

    Query heads must divide evenly; GQA KV heads either divide by TP or are replicated when
    TP is a multiple of them (each rank then holds one KV head).
    """
    a = spec.attention
    if a.num_attention_heads % tp:
        return f"does not divide num_attention_heads={a.num_attention_heads} of {spec.name}"
    if isinstance(a, GQAAttention):
        kv = a.num_key_value_heads
        if (tp <= kv and kv % tp) or (tp > kv and tp % kv):
            return f"and num_key_value_heads={kv} of {spec.name}: neither divides the other"
    return None


def ep_problem(spec: ModelSpec, ep: int, moe_tp: int, redundant: int = 0) -> str | None:
    """Why ``ep`` (with each expert split ``moe_tp`` ways, and ``redundant`` extra expert
    copies) cannot place the experts of ``spec``."""
    f = spec.ffn
    if isinstance(f, MoEFFN):
        if (f.n_routed_experts + redundant) % ep:
            if redundant:
                return (f"does not divide the {f.n_routed_experts} + {redundant} redundant expert slots of "
                        f"{spec.name}")
            return (f"does not divide n_routed_experts={f.n_routed_experts} of {spec.name} (redundant experts "
                    f"can make up the slots: --redundant-experts)")
        if f.moe_intermediate_size % moe_tp:
            return (f"leaves expert TP {moe_tp} (devices/(pp*ep)), which does not divide "
                    f"moe_intermediate_size={f.moe_intermediate_size}")
        return None
    return None if ep == 1 else f"given but {spec.name} is dense (no experts)"


def kv_format_problem(spec: ModelSpec, fmt: NumberFormat) -> str | None:
    """Why ``fmt`` cannot store the KV cache of ``spec``: MLA-only layouts (a separate RoPE-key
    precision, e.g. flashmla-fp8) need an MLA model."""
    if fmt.rope_bits is not None and not isinstance(spec.attention, MLAAttention):
        return f"an MLA cache layout; {spec.name} uses {spec.attention.kind}"
    return None


def mode_warnings(dep: Deployment) -> list[str]:
    """Warnings for serving modes that change nothing on ``dep`` (the CLI's flag names): an EP
    kernel without EP, the NVLink-aware kernels without the low-latency ones, the one-batch
    overlap under two-batch overlap (which overlaps each micro-batch's communication already)."""
    warn = []
    if dep.ep_kernel != "normal" and dep.ep == 1:
        warn.append(f"--ep-kernel {dep.ep_kernel.replace('_', '-')} (ep_kernel) has no effect: ep=1 has no EP all-to-all")
    if dep.deepep_nvlink and (dep.ep == 1 or dep.ep_kernel == "normal"):
        warn.append("--deepep-nvlink (deepep_nvlink) has no effect: it changes DeepEP's low-latency kernels, which "
                    + ("ep=1 does not run" if dep.ep == 1 else "--ep-kernel normal does not use"))
    if dep.overlap_comm and dep.two_batch_overlap:
        warn.append("--overlap (overlap_comm) has no effect with --two-batch-overlap: each micro-batch's communication "
                    "already overlaps the other's computation")
    return warn
