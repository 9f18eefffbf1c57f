"""Kernel-level predictions: one kernel, one shape, one profile.

The same operators and time models as a whole step (``operators``, ``efficiency``), for one
layer's block or one GEMM, so a prediction can be set beside a measurement of the same kernel
(``costsim kernel``, calibration and validation). Each prediction returns the time, what bounds
it and the terms it is made of.

Kernels:
- ``gemm``: [M, K] x [K, N] in a weight format (FLOPs 2MNK; bytes: weights N K in the format,
  activations M K and M N at 2 bytes). M, N, K may be numpy arrays (one prediction per row).
- ``elementwise``: a memory-only kernel (norm, activation) of given element counts.
- ``attention``: one layer's attention block (projections and core) of ``batch`` sequences
  adding ``new_tokens`` each after ``context`` cached tokens; MLA in the form asked for.
- ``attention_core``: the attention core alone (scores, softmax, values; what an attention
  kernel such as FlashAttention, XQA or FlashMLA does), without the projections.
- ``moe``: one MoE FFN layer for ``tokens`` tokens (router, shared and routed experts of the
  busiest EP rank); ``dense_ffn``: one dense FFN layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.deployment import Deployment, activation_format
from costsim.simulator.efficiency import operator_terms
from costsim.simulator.layout import check_types, number_format
from costsim.simulator.operators import _elementwise, _gemm, attention_operators, ffn_operators
from costsim.simulator.types import LayerType, OpGroup, OpKind, Operator, StepShape
from costsim.specs import HardwareProfile, MoEFFN, ModelSpec


@dataclass(frozen=True)
class KernelPrediction:
    """A predicted kernel time (seconds) with its terms; arrays when the shape was arrays.

    ``compute_s`` / ``memory_s``: the two roofline terms summed over the kernel's operators;
    ``extra_s``: launch overheads and per-element / per-group work; ``bound``: "compute" or
    "memory" (the larger roofline term of the whole kernel); ``flops`` (2 per multiply-add)
    and ``bytes`` moved; achieved rates = flops / time, bytes / time.
    """

    kernel: str
    time_s: object
    compute_s: object
    memory_s: object
    extra_s: object
    flops: object
    bytes: object
    bound: object
    operators: tuple[str, ...]

    @property
    def achieved_flops_per_s(self):
        return np.asarray(self.flops) / np.asarray(self.time_s)

    @property
    def achieved_bytes_per_s(self):
        return np.asarray(self.bytes) / np.asarray(self.time_s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(achieved_flops_per_s=self.achieved_flops_per_s, achieved_bytes_per_s=self.achieved_bytes_per_s)
        return d


def predict(ops: list[Operator], hw: HardwareProfile, kernel: str) -> KernelPrediction:
    """Sum the family time of each operator (x its count) into one kernel prediction."""
    terms = [(o, operator_terms(o, hw)) for o in ops]

    def tot(f):
        return sum(np.asarray(f(o, t), dtype=float) * o.count for o, t in terms)

    c, m = tot(lambda o, t: t.compute_s), tot(lambda o, t: t.memory_s)
    bound = np.where(c >= m, "compute", "memory")
    return KernelPrediction(kernel=kernel, time_s=tot(lambda o, t: t.time_s), compute_s=c, memory_s=m,
                            extra_s=tot(lambda o, t: t.extra_s), flops=tot(lambda o, t: o.flops),
                            bytes=tot(lambda o, t: o.bytes_moved), bound=bound if np.ndim(bound) else str(bound),
                            operators=tuple(o.name for o in ops))


MAX_SIZE = 2.0**53  # sizes and counts stay exact in float64


def _positive(name: str, v, integer: bool = True):
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise FieldError(name, v, "must be a number") from None
    if a.size == 0 or not np.all(np.isfinite(a)) or np.any(a < 1) or np.any(a > MAX_SIZE) or (
            integer and np.any(a != np.round(a))):
        shown = v if np.ndim(v) == 0 else "[...]"
        raise FieldError(name, shown, ("must be an integer" if integer else "must be a number") + " from 1 to 2^53")
    return a if a.ndim else float(a)


def gemm_operators(hw: HardwareProfile, m, n, k, dtype: str = "bf16") -> list[Operator]:
    """The operator of ``gemm`` (one GEMM; validated against ``hw``): for callers that time the
    same shapes on many profiles (``predict(ops, hw, "gemm")``) without rebuilding them."""
    check_types(hw=hw)
    m, n, k = _positive("m", m), _positive("n", n), _positive("k", k)
    fmt = number_format(dtype, "dtype")
    if fmt.rope_bits is not None:
        raise FieldError("dtype", dtype, "a KV cache layout, not a weight format")
    try:
        hw.peak(fmt.compute)
    except CostsimError as e:
        raise FieldError("dtype", dtype, str(e)) from None
    m, n, k = np.broadcast_arrays(np.asarray(m), np.asarray(n), np.asarray(k))
    return [_gemm("gemm", OpGroup.FFN, LayerType.DENSE, m, n, k, fmt, activation_format(fmt).bytes_per_element, 1)]


def gemm(hw: HardwareProfile, m, n, k, dtype: str = "bf16") -> KernelPrediction:
    """One GEMM [m, k] x [k, n] with weights in ``dtype`` (bf16, fp8, int4-g32, ...).

    ``m``, ``n``, ``k`` broadcast (numpy). FieldError names a bad argument.
    """
    return predict(gemm_operators(hw, m, n, k, dtype), hw, "gemm")


def elementwise(hw: HardwareProfile, elements_in, elements_out, dtype: str = "bf16") -> KernelPrediction:
    """One memory-only kernel (a norm, an activation) reading ``elements_in`` and writing
    ``elements_out`` elements of ``dtype``."""
    check_types(hw=hw)
    e_in, e_out = _positive("elements_in", elements_in), _positive("elements_out", elements_out)
    fmt = number_format(dtype, "dtype")
    op = _elementwise("elementwise", OpGroup.FFN, LayerType.DENSE, e_in, e_out, fmt.bytes_per_element, 1)
    return predict([op], hw, "elementwise")


def _dep(spec: ModelSpec, hw: HardwareProfile, tp: int, ep: int, weight_dtype, kv_dtype, form: str) -> Deployment:
    check_types(spec, hw)
    for name, v in (("tp", tp), ("ep", ep)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise FieldError(name, v, "must be an integer >= 1")
    if form not in ("absorbed", "naive"):
        raise FieldError("form", form, "expected absorbed or naive")
    wf = number_format(weight_dtype, "weight_dtype")
    if wf.rope_bits is not None:
        raise FieldError("weight_dtype", wf.name, "a KV cache layout, not a weight format")
    try:
        hw.peak(wf.compute)
    except CostsimError as e:
        raise FieldError("weight_dtype", wf.name, str(e)) from None
    dep = Deployment(devices=max(tp, ep), tp=tp, ep=ep, weight_format=wf, kv_format=number_format(kv_dtype, "kv_dtype"),
                     high_precision=activation_format(wf), act_format=activation_format(wf), mla_form=form)
    return dep.check(spec)


def attention_block_operators(spec: ModelSpec, hw: HardwareProfile, batch, context, new_tokens=1,
                              form: str = "absorbed", tp: int = 1, weight_dtype="bf16", kv_dtype="bf16",
                              window: int | None = None) -> list[Operator]:
    """The operators of ``attention`` (validated against ``hw``)."""
    batch, new_tokens = _positive("batch", batch), _positive("new_tokens", new_tokens)
    ctx = np.asarray(context, dtype=float)
    if not np.all(np.isfinite(ctx)) or np.any(ctx < 0) or np.any(ctx > MAX_SIZE):
        raise FieldError("context", context, "must be a number of tokens from 0 to 2^53")
    dep = _dep(spec, hw, tp, 1, weight_dtype, kv_dtype, form)
    return attention_operators(spec, dep, StepShape(batch, new_tokens, ctx), 1, window, form, norms=False)


def attention(spec: ModelSpec, hw: HardwareProfile, batch, context, new_tokens=1, form: str = "absorbed",
              tp: int = 1, weight_dtype="bf16", kv_dtype="bf16", window: int | None = None) -> KernelPrediction:
    """One layer's attention block on one device (TP rank): projections and core (the layer's
    RMSNorms are not part of it: ``elementwise``).

    ``batch`` sequences each add ``new_tokens`` after ``context`` cached tokens (decode:
    new_tokens = 1; prefill: context 0). ``form``: MLA absorbed or naive (ignored otherwise).
    """
    return predict(attention_block_operators(spec, hw, batch, context, new_tokens, form, tp, weight_dtype, kv_dtype,
                                             window), hw, "attention")


def attention_core_operators(spec: ModelSpec, hw: HardwareProfile, batch, context, new_tokens=1,
                             form: str = "absorbed", tp: int = 1, kv_dtype="bf16",
                             window: int | None = None) -> list[Operator]:
    """The operators of ``attention_core`` (validated against ``hw``)."""
    batch, new_tokens = _positive("batch", batch), _positive("new_tokens", new_tokens)
    ctx = np.asarray(context, dtype=float)
    if not np.all(np.isfinite(ctx)) or np.any(ctx < 0) or np.any(ctx > MAX_SIZE):
        raise FieldError("context", context, "must be a number of tokens from 0 to 2^53")
    dep = _dep(spec, hw, tp, 1, "bf16", kv_dtype, form)
    return [o for o in attention_operators(spec, dep, StepShape(batch, new_tokens, ctx), 1, window, form, norms=False)
            if o.kind is OpKind.ATTENTION]


def attention_core(spec: ModelSpec, hw: HardwareProfile, batch, context, new_tokens=1, form: str = "absorbed",
                   tp: int = 1, kv_dtype="bf16", window: int | None = None) -> KernelPrediction:
    """The attention core of one layer on one device (TP rank): the ``OpKind.ATTENTION``
    operators of ``attention`` (scores and values over the cache, FLOPs 4 x heads x head_dim
    x (query, key) pairs for GQA; bytes: the KV cache read and written, queries and outputs),
    without the q/k/v/o projections (and, for absorbed MLA, without the W_UK / W_UV products).

    ``batch`` sequences each add ``new_tokens`` after ``context`` cached tokens; arrays
    broadcast. MLA ``form``: "absorbed" attends over the latent (decode kernels such as
    FlashMLA), "naive" over decompressed keys and values (prefill kernels).
    """
    return predict(attention_core_operators(spec, hw, batch, context, new_tokens, form, tp, kv_dtype, window), hw,
                   "attention_core")


def moe_operators(spec: ModelSpec, hw: HardwareProfile, tokens, ep: int = 1, weight_dtype="bf16",
                  moe_tp: int = 1, router: bool = True, routed_tokens=None) -> list[Operator]:
    """The operators of ``moe`` (validated against ``hw``)."""
    check_types(spec, hw)
    if not isinstance(spec.ffn, MoEFFN):
        raise FieldError("model", spec.name, "is dense: it has no MoE layer")
    if isinstance(moe_tp, bool) or not isinstance(moe_tp, int) or moe_tp < 1:
        raise FieldError("moe_tp", moe_tp, "must be an integer >= 1")
    tokens = _positive("tokens", tokens)
    dep = _dep(spec, hw, 1, ep, weight_dtype, "bf16", "absorbed")
    if moe_tp > 1:  # each expert split moe_tp ways: ep x moe_tp devices (Deployment.moe_tp)
        dep = dep.with_(devices=ep * moe_tp).check(spec)
    # tokens are spread over the ep attention ranks: the batch of the step is all of them
    if routed_tokens is not None:
        routed_tokens = _positive("routed_tokens", routed_tokens)
    ops = ffn_operators(spec, dep, StepShape(tokens, 1, 0), 1, moe=True, routed_tokens=routed_tokens)
    return ops if router else [o for o in ops if o.name != "moe.router"]


def moe(spec: ModelSpec, hw: HardwareProfile, tokens, ep: int = 1, weight_dtype="bf16", moe_tp: int = 1,
        router: bool = True, routed_tokens=None) -> KernelPrediction:
    """One MoE FFN layer for ``tokens`` tokens on the busiest of ``ep`` expert ranks (router,
    token permute, shared experts, routed experts; uniform routing), each expert split
    ``moe_tp`` ways (its intermediate size / moe_tp per device). ``router`` False leaves out the
    router GEMM (a kernel given the router logits). ``routed_tokens``: the tokens the rank
    routes and permutes, default tokens / ep (DP attention: each rank its own); pass ``tokens``
    when every rank holds the whole step (TP attention, TensorRT-LLM's EP without DP attention,
    as aiconfigurator's MoE collector runs it). Raises FieldError for a dense model."""
    return predict(moe_operators(spec, hw, tokens, ep, weight_dtype, moe_tp, router, routed_tokens), hw, "moe")


def dense_ffn(spec: ModelSpec, hw: HardwareProfile, tokens, tp: int = 1, weight_dtype="bf16") -> KernelPrediction:
    """One dense FFN layer (SwiGLU when gated) for ``tokens`` tokens on one TP rank."""
    check_types(spec, hw)
    if isinstance(spec.ffn, MoEFFN) and spec.ffn.dense_intermediate_size is None:
        raise FieldError("model", spec.name, "has no dense FFN layer")
    tokens = _positive("tokens", tokens)
    dep = _dep(spec, hw, tp, 1, weight_dtype, "bf16", "absorbed")
    return predict(ffn_operators(spec, dep, StepShape(tokens, 1, 0), 1, moe=False), hw, "dense_ffn")
