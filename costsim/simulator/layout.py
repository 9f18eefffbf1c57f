"""Layout policy: which TP/EP the engine uses when the user gives none, and the one place that
turns a layout request (flags or Python arguments) into a checked ``Deployment``.

Policy (per pipeline stage of ``devices / pp`` devices):
- EP: an MoE model spreads its experts over the largest EP that divides both the device count
  and the routed-expert count; a dense model uses EP = 1.
- PP: 1, unless the weights and the batch do not fit at PP = 1 (TP within a node, the rest
  data-parallel); then the smallest PP dividing the devices at which they fit (PP across nodes,
  TP within each, as Llama 3 405B is trained and served: arXiv 2407.21783 §3.3). The chosen
  deployment's ``layout_reason`` says so. A given ``pp`` is kept as given.
- TP stays within a node (``devices_per_node``) when it can.
  - Dense models take the largest such TP compatible with the head counts; the other devices
    are data-parallel replicas.
  - MoE models take the smallest TP at which the batch fits in memory (TP = 1 is DP-attention,
    as DeepSeek deploys V2/V3); if no TP fits, the TP with the largest max batch.
- Formats: activations, the attention core, embedding and LM head are FP32 when the weights
  are FP32 (a full-precision run), else BF16 (``activation_format``). FP8 weights dispatch tokens to experts in FP8 (1 byte per element) and combine in
  BF16 (2 bytes); other weight formats send BF16 both ways (DeepSeek Open-Infra Day 6
  overview: "FP8 for dispatch, BF16 for combine").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.deployment import Deployment, activation_format, kv_format_problem, tp_problem
from costsim.simulator.memory import memory_report
from costsim.specs import HardwareProfile, MoEFFN, ModelSpec
from costsim.units import NumberFormat, parse_format

MAX_COUNT = 2**24  # sequences, tokens, TP degree: beyond any deployment, checked before any loop
MAX_OUTPUT = 2**20  # output tokens per sequence: the decode curve is sampled per output token


def count(name: str, v, minimum: int = 0) -> int:
    """``v`` as an int in [minimum, MAX_COUNT] (``output_len``: MAX_OUTPUT); else FieldError."""
    if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or v < minimum:
        raise FieldError(name, repr(v), f"must be an integer >= {minimum}")
    top = MAX_OUTPUT if name == "output_len" else MAX_COUNT
    if v > top:
        raise FieldError(name, v, f"must be at most {top:,} (2^{top.bit_length() - 1})")
    return int(v)


@dataclass(frozen=True)
class LayoutRequest:
    """What the user asks for; ``None`` leaves the choice to the layout policy above.

    ``devices`` defaults to one node of the hardware. Formats are names (``bf16``, ``fp8``,
    ``int4-g32``, ``flashmla-fp8``, a bit count such as ``6``) or ``NumberFormat`` objects.
    """

    devices: int | None = None
    tp: int | None = None
    ep: int | None = None
    pp: int | None = None  # None: 1, or the smallest depth that fits (the policy above)
    weight_dtype: str | NumberFormat | None = None  # None: the checkpoint's (spec.weight_dtype), else bf16
    kv_dtype: str | NumberFormat = "bf16"
    mla_form: str = "auto"
    imbalance: float = 1.0
    overlap_comm: bool = False
    ep_kernel: str = "normal"  # EP all-to-all: normal, low_latency or auto (``Deployment.ep_kernel``)
    deepep_nvlink: bool = False  # DeepEP's NVLink-aware low-latency kernels (``Deployment.deepep_nvlink``)
    two_batch_overlap: bool = False  # two micro-batches, comm of one under compute of the other
    deepep_max_tokens: int = 128  # tokens per rank of a low-latency dispatch (sizes DeepEP's buffer)
    block_size: int | None = None
    mtp_depth: int = 0  # MTP speculative decoding: draft tokens per step (0: off)
    mtp_acceptance: float = 0.85  # each draft's acceptance given the ones before (DeepSeek-V3: 0.85-0.90)
    prefix_hit: float = 0.0  # share of each prompt already in the prefix cache (its prefill is skipped)
    redundant_experts: int = 0  # EPLB: extra routed-expert copies, so that E + these divide over EP
    draft_model: ModelSpec | None = None  # draft-model speculation: drafts the mtp_depth tokens


def check_types(spec=None, hw=None) -> None:
    """CostsimError unless ``spec`` is a ModelSpec and ``hw`` a HardwareProfile (as
    ``costsim.api.load_model`` / ``load_hardware`` return)."""
    if spec is not None and not isinstance(spec, ModelSpec):
        raise CostsimError(f"model: expected a ModelSpec (costsim.api.load_model(name)), got {type(spec).__name__}")
    if hw is not None and not isinstance(hw, HardwareProfile):
        raise CostsimError(f"hardware: expected a HardwareProfile (costsim.api.load_hardware(name)), "
                           f"got {type(hw).__name__}")


MAX_DEVICES = 2**20  # devices in one deployment (checked before any search over layouts)


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n``, ascending (trial division up to sqrt(n))."""
    small, large, d = [], [], 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


def valid_tp(spec: ModelSpec, devices: int, draft: ModelSpec | None = None) -> list[int]:
    """TP degrees (ascending) that divide ``devices`` and split the heads (``tp_problem``), of
    ``draft`` too when given (a draft model runs with the target's TP)."""
    return [t for t in divisors(devices) if tp_problem(spec, t) is None
            and (not isinstance(draft, ModelSpec) or tp_problem(draft, t) is None)]


def default_ep(spec: ModelSpec, devices: int, redundant: int = 0) -> int:
    """The largest EP dividing both ``devices`` and the routed-expert slots (experts +
    ``redundant`` copies; 1 for dense)."""
    f = spec.ffn
    if not isinstance(f, MoEFFN):
        return 1
    return max(e for e in divisors(devices) if (f.n_routed_experts + redundant) % e == 0)


def default_layout(spec: ModelSpec, devices: int, tp: int | None = None, ep: int | None = None,
                   room=None, max_tp: int | None = None, redundant: int = 0,
                   draft: ModelSpec | None = None) -> tuple[int, int]:
    """(tp, ep) for a pipeline stage of ``devices`` devices under the policy above.

    ``room(tp, ep)`` returns (fits, max_batch) for the requested batch, or None when that
    layout is infeasible; without it an MoE model with EP > 1 takes TP = 1. ``draft``: a
    draft model whose heads the TP must split as well (when some TP does).
    """
    if ep is None:
        ep = default_ep(spec, devices, redundant)
    if tp is None:
        valid = valid_tp(spec, devices, draft) or valid_tp(spec, devices)
        in_node = [t for t in valid if max_tp is None or t <= max_tp] or valid[:1]
        moe = isinstance(spec.ffn, MoEFFN) and ep > 1
        if moe and room is not None:
            scored = [(t, r) for t, r in ((t, room(t, ep)) for t in valid) if r is not None]
            fitting = [t for t, r in scored if r[0]]
            if fitting:
                tp = fitting[0]
            elif scored:
                tp = max(scored, key=lambda tr: (tr[1][1], -tr[0]))[0]
            else:
                tp = in_node[0]
        elif moe:
            tp = 1
        else:
            tp = in_node[-1]
    return tp, ep


def number_format(value: str | NumberFormat, field: str) -> NumberFormat:
    """A format name (or a ``NumberFormat``) as a ``NumberFormat``; FieldError naming ``field``."""
    if isinstance(value, NumberFormat):
        return value
    try:
        return parse_format(value)
    except CostsimError as e:
        raise FieldError(field, value, str(e)) from None


def weight_formats(spec: ModelSpec, hw: HardwareProfile,
                   weight_dtype: str | NumberFormat | None) -> tuple[NumberFormat, NumberFormat | None]:
    """(matmul weights, routed experts or None) for a request's ``weight_dtype``.

    A named format applies to every matmul weight. None takes the checkpoint's formats
    (``spec.weight_dtype`` / ``spec.expert_weight_dtype``, from its HF quantization_config),
    else bf16; a checkpoint format whose tensor-core dtype the hardware lacks (FP8 on an
    A100) is kept in memory at its size and computed in bf16 (weight-only, upcast per tile),
    and its name says so (``fp8-b128@bf16``).
    """
    if weight_dtype is not None:
        return number_format(weight_dtype, "weight_dtype"), None

    def stored(name: str | None) -> NumberFormat | None:
        if name is None:
            return None
        f = number_format(name, "weight_dtype")
        try:
            hw.peak(f.compute)
        except CostsimError:
            f = replace(f, name=f"{f.name}@bf16", compute="bf16")
        return f

    wf = stored(spec.weight_dtype) or number_format("bf16", "weight_dtype")
    ef = stored(spec.expert_weight_dtype)
    return wf, (None if ef == wf else ef)


def resolve_deployment(spec: ModelSpec, hw: HardwareProfile, request: LayoutRequest = LayoutRequest(),
                       batch: int = 1, context: int = 0) -> Deployment:
    """The checked ``Deployment`` for ``request``: unset TP/EP follow the policy above, fitting
    ``batch`` sequences of ``context`` tokens for MoE models.

    Raises FieldError naming the request field (``devices``, ``tp``, ``weight_dtype``, ...).
    """
    check_types(spec, hw)
    r = request
    if not isinstance(r, LayoutRequest):
        raise CostsimError(f"layout: expected a LayoutRequest, got {type(r).__name__}")
    devices = hw.devices_per_node if r.devices is None else r.devices
    for k, v in (("devices", devices), ("tp", r.tp), ("ep", r.ep), ("pp", r.pp)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise FieldError(k, v, "must be an integer >= 1")
        if v is not None and v > MAX_DEVICES:
            raise FieldError(k, v, f"must be at most {MAX_DEVICES:,} (2^20 devices)")
    if isinstance(r.imbalance, bool) or not isinstance(r.imbalance, (int, float)):
        raise FieldError("imbalance", r.imbalance, "must be a number >= 1")
    if r.pp is not None and devices % r.pp:
        raise FieldError("devices", devices, f"not a multiple of pp = {r.pp}")
    wf, ef = weight_formats(spec, hw, r.weight_dtype)
    kvf = number_format(r.kv_dtype, "kv_dtype")
    if wf.rope_bits is not None:
        raise FieldError("weight_dtype", wf.name, "a KV cache layout, not a weight format")
    problem = kv_format_problem(spec, kvf)
    if problem:
        raise FieldError("kv_dtype", kvf.name, problem)
    try:
        hw.peak(wf.compute)
    except CostsimError as e:
        raise FieldError("weight_dtype", wf.name, str(e)) from None
    act = activation_format(wf)
    base = Deployment(devices=devices, tp=1, ep=1, pp=r.pp or 1, weight_format=wf, expert_format=ef, kv_format=kvf,
                      mla_form=r.mla_form, high_precision=act, act_format=act,
                      imbalance=r.imbalance, overlap_comm=r.overlap_comm, ep_kernel=r.ep_kernel, deepep_nvlink=r.deepep_nvlink,
                      two_batch_overlap=r.two_batch_overlap, deepep_max_tokens=r.deepep_max_tokens, block_size=r.block_size,
                      dispatch_bytes=1.0 if wf.compute == "fp8" else 2.0, combine_bytes=2.0,
                      mtp_depth=r.mtp_depth, mtp_acceptance=r.mtp_acceptance if r.mtp_depth else 0.0,
                      prefix_hit=r.prefix_hit, redundant_experts=r.redundant_experts, draft_model=r.draft_model)

    def fits(d: Deployment):
        """(fits, max batch) of ``batch`` sequences of ``context`` on ``d``; None if invalid."""
        try:
            d.check(spec)
        except FieldError:
            return None
        m = memory_report(spec, hw, d, max(batch, d.dp), context)
        return bool(m.fits), float(m.max_batch)

    def layout(pp: int) -> Deployment:
        b = base.with_(pp=pp)
        t, e = default_layout(spec, devices // pp, r.tp, r.ep, lambda t, e: fits(b.with_(tp=t, ep=e)),
                              hw.devices_per_node, r.redundant_experts, r.draft_model)
        return b.with_(tp=t, ep=e)

    first = layout(base.pp)
    if r.redundant_experts and r.ep is None and first.ep == 1 and isinstance(spec.ffn, MoEFFN):
        raise FieldError("redundant_experts", r.redundant_experts,
                         f"the {spec.ffn.n_routed_experts} + {r.redundant_experts} expert slots divide over no EP > 1 "
                         f"of {devices // base.pp} devices; choose copies so that experts + copies is a multiple of "
                         "the EP wanted (or give --ep)")
    if r.pp is not None or (fits(first) or (False,))[0]:
        return _renamed(first, spec)
    # PP = 1 does not fit: the smallest pipeline depth that does
    for pp in divisors(devices)[1:]:
        if pp > spec.num_hidden_layers:
            break
        d = layout(pp)
        if (fits(d) or (False,))[0]:
            m = memory_report(spec, hw, first, max(batch, first.dp), context)
            what = ("the weights do not fit" if m.weight_bytes > m.usable_bytes
                    else f"a batch of {batch} x {context} tokens does not fit")
            why = (f"pp={pp}: at pp=1 (tp={first.tp}, dp={first.dp}) {what}: weights {m.weight_bytes / 1e9:.4g} "
                   f"GB + DeepEP buffers {m.comm_buffer_bytes / 1e9:.4g} GB + KV cache {float(m.kv_bytes) / 1e9:.4g} GB + activations "
                   f"{float(m.workspace_bytes) / 1e9:.4g} GB per device > {m.usable_bytes / 1e9:.4g} GB usable "
                   f"(GB = 1e9 bytes); pp={pp} is the smallest pipeline depth that fits")
            return _renamed(d.with_(layout_reason=why), spec)
    return _renamed(first, spec)


_REQUEST_FIELD = {"kv_format": "kv_dtype", "weight_format": "weight_dtype"}


def _renamed(dep: Deployment, spec: ModelSpec) -> Deployment:
    """``dep.check(spec)`` with errors named by the request's fields."""
    try:
        return dep.check(spec)
    except FieldError as e:
        if e.field in _REQUEST_FIELD:
            raise FieldError(_REQUEST_FIELD[e.field], e.value, e.reason) from None
        raise
