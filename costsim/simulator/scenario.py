"""One engine entry per question: a frozen scenario in, a result record out.

Every CLI command and every Python user goes through these functions, so both get the same
numbers: the layout policy, format choices, feasibility checks and warnings are decided here
(``costsim.simulator.layout``), not in the CLI. Records are frozen dataclasses of SI numbers
with units in their field names (``_s`` seconds, ``_bytes`` bytes, ``tokens_per_s``);
``to_dict()`` gives the JSON the CLI prints. Errors are ``FieldError`` naming the scenario
field (``batch``, ``tp``, ``kv_dtype``, ``tpot_slo_s``, ...).

    >>> from costsim.api import Scenario, LayoutRequest, perf, load_model, load_hardware
    >>> r = perf(Scenario(load_model("deepseek-v2"), load_hardware("h800"),
    ...                   LayoutRequest(weight_dtype="fp8"), batch=64, input_len=4096, output_len=1024))
    >>> r.tpot_s  # seconds, a roofline model
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.cost import serving_cost, training_cost, usd_per_hour, usd_per_million_tokens
from costsim.simulator.deployment import Deployment, kv_format_problem, mode_warnings, tp_problem  # noqa: F401 (re-exported)
from costsim.simulator.flops import flops_per_token_decode, prefill_flops
from costsim.simulator.kv import kv_bytes_per_token, kv_cache_bytes, kv_elements_per_token
from costsim.simulator.layout import LayoutRequest, check_types, number_format, resolve_deployment, valid_tp
from costsim.simulator.memory import (deepep_buffers, dispatch_warning, kv_bytes_per_device, memory_report, require_fit,
                                     weight_bytes_per_device)
from costsim.simulator.params import param_counts
from costsim.simulator.bands import band_kind, step_band
from costsim.simulator.roofline import StepTiming, per_layer_seconds, rate_provenance
from costsim.simulator.serving import (MaxThroughput, best_max_throughput, decode, max_throughput, microbatches,
                                      mla_crossover, mtp_tokens_per_step, prefill_workspace, serve)
from costsim.simulator.training import train_cost
from costsim.simulator.types import OpKind
from costsim.specs import HardwareProfile, MLAAttention, MoEFFN, ModelSpec


# the USD fields a record leaves out of its dict when the hardware has no price
_MONEY = ("price_usd_per_device_hour", "price_provenance", "usd_per_hour", "usd_per_million_output_tokens",
          "usd_per_million_input_tokens", "usd_per_million_output_tokens_combined", "training_usd")


class _Record:
    """Mixin: ``to_dict()`` as JSON-ready plain values (optional fields left out when None)."""

    _optional: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in self._optional:
            if d.get(k) is None:
                d.pop(k, None)
        return d


def price_of(hw: HardwareProfile) -> tuple[float | None, str | None]:
    """(USD per device-hour, its provenance) of ``hw``, or (None, None) when it has no price."""
    p = hw.price_per_device_hour
    return (None, None) if p is None else (p.value, p.provenance)


def context_warnings(spec: ModelSpec, tokens: int) -> list[str]:
    """A warning when ``tokens`` exceed the model's published ``max_position_embeddings``."""
    if spec.max_position_embeddings and tokens > spec.max_position_embeddings:
        return [f"{tokens} tokens exceed {spec.name}'s max_position_embeddings "
                f"({spec.max_position_embeddings}); figures are extrapolated"]
    return []


from costsim.simulator.layout import MAX_COUNT, MAX_OUTPUT, count as _count  # noqa: E402,F401  (re-exported)


# ---- models: show, kv -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLine(_Record):
    """One line of ``costsim models``: counts of parameters (not bytes)."""

    name: str
    attention: str
    ffn: str
    experts: str
    layers: int
    hidden_size: int
    params_total: int
    params_active: int
    source: str


def model_line(spec: ModelSpec) -> ModelLine:
    f, p = spec.ffn, param_counts(spec)
    moe = ""
    if isinstance(f, MoEFFN):
        moe = f"{f.n_routed_experts} routed + {f.n_shared_experts} shared, top-{f.num_experts_per_tok}"
    return ModelLine(spec.name, spec.attention.kind, f.kind, moe, spec.num_hidden_layers, spec.hidden_size,
                     p.total, p.active, spec.source)


@dataclass(frozen=True)
class KVRecord(_Record):
    """KV cache of one model: elements (whole model) and bytes (per device under ``tp``)."""

    name: str
    kv_dtype: str
    kv_cache_elements_per_token: int
    kv_cache_bytes_per_token: float
    kv_cache_bytes_per_token_per_layer: float
    context: int
    batch: int
    tp: int
    block_size: int | None
    kv: float  # bytes for batch x context


def kv(spec: ModelSpec, kv_dtype="bf16", context: int = 4096, batch: int = 1, tp: int = 1,
       block_size: int | None = None) -> KVRecord:
    """KV cache per token and for ``batch`` sequences of ``context`` tokens, per device under
    TP (DeepSeek-V2 Table 1 per-token sizes). FieldError names a bad argument."""
    check_types(spec)
    fmt = number_format(kv_dtype, "kv_dtype")
    context, batch, tp = _count("context", context), _count("batch", batch), _count("tp", tp, 1)
    if block_size is not None:
        _count("block_size", block_size, 1)
    problem = kv_format_problem(spec, fmt)
    if problem:
        raise FieldError("kv_dtype", fmt.name, problem)
    problem = tp_problem(spec, tp)
    if problem:
        raise FieldError("tp", tp, problem)
    per_tok = kv_bytes_per_token(spec, fmt, tp)
    return KVRecord(spec.name, fmt.name, kv_elements_per_token(spec), per_tok, per_tok / spec.num_hidden_layers,
                    context, batch, tp, block_size,
                    float(kv_cache_bytes(spec, fmt, context, batch, tp=tp, block_size=block_size)))


@dataclass(frozen=True)
class ShowRecord(_Record):
    """Parameters (counts), KV cache (bytes) and FLOPs per token (2 per multiply-add)."""

    name: str
    source: str
    params_total: int
    params_active: int  # input embedding excluded (DeepSeek's convention)
    params_active_incl_embedding: int  # Mistral's convention
    params_mtp: int
    params: dict  # the breakdown by component (ParamBreakdown.as_dict)
    kv_dtype: str
    kv_cache_elements_per_token: int
    kv_cache_bytes_per_token: float
    kv_cache_bytes_per_token_per_layer: float
    context: int
    batch: int
    tp: int
    block_size: int | None
    kv: float
    flops_per_token_decode: float  # at ``context``, MLA absorbed
    flops_per_token_decode_naive: float
    flops_per_token_prefill: float  # causal prefill of ``context`` tokens, MLA naive
    warnings: tuple = ()


def show(spec: ModelSpec, kv_dtype="bf16", context: int = 4096, batch: int = 1) -> ShowRecord:
    """Everything exact about one model: parameter breakdown, KV cache, FLOPs per token."""
    check_types(spec)
    k = kv(spec, kv_dtype, context, batch)
    p = param_counts(spec)
    c = max(k.context, 1)
    kvd = {f.name: getattr(k, f.name) for f in fields(k) if f.name != "name"}
    return ShowRecord(
        name=spec.name, source=spec.source, params_total=p.total, params_active=p.active,
        params_active_incl_embedding=p.active_incl_embedding, params_mtp=p.mtp, params=p.as_dict(), **kvd,
        flops_per_token_decode=float(flops_per_token_decode(spec, k.context, "absorbed")),
        flops_per_token_decode_naive=float(flops_per_token_decode(spec, k.context, "naive")),
        flops_per_token_prefill=float(prefill_flops(spec, c, "naive", logits_for_all=True)) / c,
        warnings=tuple(context_warnings(spec, k.context)))


# ---- compare ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareRecord(_Record):
    """One column of ``compare``: exact figures plus decode on one replica (a roofline model)."""

    name: str  # unique within one comparison: a repeated name gets " (2)", " (3)", ...
    source: str
    params_total: int
    params_active: int
    params_active_incl_embedding: int
    params_mtp: int
    kv_dtype: str
    kv_cache_elements_per_token: int
    kv_cache_bytes_per_token: float
    kv_cache_bytes_per_token_per_layer: float
    context: int
    batch: int
    tp: int
    block_size: int | None
    kv: float
    flops_per_token_decode: float
    flops_per_token_decode_naive: float
    flops_per_token_prefill: float
    hardware: str
    devices: int
    ep: int
    weight_dtype: str
    weight_bytes_per_device: float
    decode_tokens_per_s: float | None  # all ``devices`` together
    tpot_s: float | None
    max_batch: int | None
    fits: bool
    note: str
    warnings: tuple = ()
    pp: int = 1
    # rent at the profile's price (None without one): all ``devices``, and per 1e6 output
    # tokens at the decode rate of ``batch`` (``costsim.simulator.cost``)
    price_usd_per_device_hour: float | None = None
    usd_per_hour: float | None = None
    usd_per_million_output_tokens: float | None = None
    tpot_band_s: tuple | None = None  # p10-p90 of TPOT from the profile's calibration residuals
    band: str = "uncalibrated"  # ``band_kind``: "p10-p90", else "no residuals" / "uncalibrated" (no band)
    _optional = _MONEY + ("tpot_band_s",)


def _unique_names(specs: list[ModelSpec]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        seen[s.name] = seen.get(s.name, 0) + 1
        out.append(s.name if seen[s.name] == 1 else f"{s.name} ({seen[s.name]})")
    return out


def compare(specs: list[ModelSpec], hw: HardwareProfile, request: LayoutRequest = LayoutRequest(),
            context: int = 4096, batch: int = 32) -> list[CompareRecord]:
    """Side by side on one replica of ``request.devices`` (default one node): params, KV,
    FLOPs, weights per device, decode TPOT and tokens/s at ``batch``, max batch. Each model
    gets the policy's layout (``layout.resolve_deployment``); a model that cannot run says
    why in ``note`` instead of failing the comparison."""
    if not isinstance(specs, (list, tuple)) or not specs:
        raise CostsimError("models: expected a non-empty list of ModelSpec")
    for spec in specs:
        check_types(spec)
    check_types(hw=hw)
    context, batch = _count("context", context), _count("batch", batch, 1)
    out = []
    for name, spec in zip(_unique_names(specs), specs):
        dep = resolve_deployment(spec, hw, request, batch, context)
        s = show(spec, dep.kv_format, context, batch).to_dict()
        s.pop("params"), s.pop("warnings")
        rec = dict(s, name=name, hardware=hw.name, devices=dep.devices, tp=dep.tp, ep=dep.ep, pp=dep.pp,
                   weight_dtype=dep.weights_name, weight_bytes_per_device=weight_bytes_per_device(spec, dep),
                   decode_tokens_per_s=None, tpot_s=None, max_batch=None, fits=False, note="",
                   warnings=tuple(context_warnings(spec, context)))
        mem = memory_report(spec, hw, dep, batch, context)
        rec["max_batch"] = int(mem.max_batch)
        if dep.layout_reason:
            rec["note"] = f"layout {dep.layout_reason}"
        if mem.limit == "weights do not fit":
            rec["note"] = f"weights do not fit ({rec['weight_bytes_per_device'] / 1e9:.1f} GB per device)"
        else:
            rec["fits"] = bool(np.all(mem.fits))
            if not rec["fits"]:
                rec["note"] = f"batch {batch} at context {context} exceeds memory (max batch {rec['max_batch']})"
            d = decode(spec, hw, dep, batch, context)
            rec.update(decode_tokens_per_s=float(d.tokens_per_s), tpot_s=float(d.time_s),
                       tpot_band_s=_band(float(d.time_s), step_band(d.timing, hw, dep.overlap_comm)), band=band_kind(hw))
        price, _ = price_of(hw)
        if price is not None:
            rec.update(price_usd_per_device_hour=price, usd_per_hour=usd_per_hour(dep.devices, price),
                       usd_per_million_output_tokens=None if rec["decode_tokens_per_s"] is None else
                       usd_per_million_tokens(dep.devices, price, rec["decode_tokens_per_s"]))
        out.append(CompareRecord(**rec))
    return out


# ---- perf -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A serving question: ``batch`` requests of ``input_len`` prompt tokens generating
    ``output_len`` tokens each, on ``hardware`` laid out as ``layout`` (a request the policy
    completes, or an explicit ``Deployment``)."""

    model: ModelSpec
    hardware: HardwareProfile
    layout: LayoutRequest | Deployment = field(default_factory=LayoutRequest)
    batch: int = 1
    input_len: int = 4096
    output_len: int = 1024


def operator_rows(timing: StepTiming) -> list[dict]:
    """Per operator of a timed step: time per step (all occurrences, s), FLOPs, bytes, bytes
    sent, arithmetic intensity (FLOP/byte) and what bounds it."""
    rows = []
    for t in timing.timings:
        o = t.op
        rows.append(dict(op=o.name, kind=o.kind.value, layer=o.layer.value, count=o.count,
                         time_s=float(np.asarray(t.total_s)), flops=float(np.asarray(o.flops) * o.count),
                         bytes=float(np.asarray(o.bytes_moved) * o.count),
                         comm_bytes=float(np.asarray(o.comm_bytes) * o.count),
                         intensity=None if o.kind is OpKind.COMM else float(np.asarray(o.intensity)),
                         bound=str(t.bound)))
    return rows


@dataclass(frozen=True)
class PerfRecord(_Record):
    """TTFT, TPOT and throughput of one scenario (roofline models), memory per device (exact
    arithmetic), and the rates the times stand on with their provenance."""

    model: str
    hardware: str
    devices: int
    devices_per_node: int
    tp: int
    ep: int
    pp: int
    dp: int
    weight_dtype: str
    kv_dtype: str
    batch: int
    input: int
    output: int
    ttft_s: float
    tpot_s: float | None  # mean over the output tokens; None when output is 0
    tpot_last_s: float | None
    e2e_s: float
    prefill_tokens_per_s: float  # all devices together
    prefill_tokens_per_s_per_device: float
    decode_tokens_per_s: float
    decode_tokens_per_s_per_device: float
    decode_tokens_per_s_per_node: float
    combined_tokens_per_s: float  # output tokens / e2e, prefill and decode on the same devices
    prefill_mfu: float
    decode_mbu: float | None
    prefill_mla_form: str
    decode_mla_form: str
    weight_bytes_per_device: float
    kv_bytes_per_device: float
    workspace_bytes_per_device: float
    memory_usable_bytes: float
    prefill_workspace_bytes_per_device: float
    prefill_fits: bool
    fits: bool
    max_batch: int
    max_batch_limit: str
    rates: dict
    warnings: tuple
    decode_seconds_per_layer: dict
    prefill_seconds_per_layer: dict
    mla_decode_step_absorbed_s: float | None = None
    mla_decode_step_naive_s: float | None = None
    mla_naive_faster_from_chunk_tokens: int | None = None
    prefill_operators: list | None = None
    decode_operators: list | None = None
    layout_reason: str = ""  # why the layout policy chose this layout (a PP it had to add), else ""
    prefill_chunk_tokens: int | None = None  # chunked prefill: tokens per sequence per chunk; None: one step
    mtp_depth: int = 0  # MTP speculative decoding: draft tokens per step (0: off)
    mtp_acceptance: float = 0.0
    mtp_tokens_per_step: float = 1.0  # expected tokens per sequence per decode step
    ep_kernel: str = "normal"  # EP all-to-all kernel (``Deployment.ep_kernel``)
    deepep_nvlink: bool = False  # NVLink-aware low-latency kernels (``Deployment.deepep_nvlink``)
    draft_model: str | None = None  # draft-model speculation: the draft's name (None: MTP module or off)
    two_batch_overlap: bool = False
    # disaggregated serving of this request mix: prefill devices per decode device, so that the
    # prefill pool's input tokens/s match the decode pool's output tokens/s (None: no decode)
    prefill_devices_per_decode_device: float | None = None
    # p10-p90 bands of TTFT and mean TPOT from the profile's calibration residuals
    # (``costsim.simulator.bands``; None for a profile without residuals)
    ttft_band_s: tuple | None = None
    tpot_band_s: tuple | None = None
    tpot_last_band_s: tuple | None = None  # with the first decode step's factors
    e2e_band_s: tuple | None = None  # TTFT's band + the decode steps' (first step's factors)
    band: str = "uncalibrated"  # ``band_kind``: "p10-p90", else "no residuals" / "uncalibrated" (no band)
    # rent at the profile's price (None without one; ``costsim.simulator.cost.serving_cost``)
    price_usd_per_device_hour: float | None = None
    price_provenance: str | None = None
    usd_per_hour: float | None = None  # all ``devices``
    usd_per_million_output_tokens: float | None = None  # at decode_tokens_per_s
    usd_per_million_input_tokens: float | None = None  # at prefill_tokens_per_s
    usd_per_million_output_tokens_combined: float | None = None  # at combined_tokens_per_s
    # DeepEP buffers per device (``memory.deepep_buffers``; 0 without EP) and the low-latency
    # dispatch capacity per rank they are sized for (``Deployment.deepep_max_tokens``; 0: not run)
    comm_buffer_bytes_per_device: float = 0.0
    deepep_max_tokens: int = 0
    _optional = ("mla_decode_step_absorbed_s", "mla_decode_step_naive_s", "prefill_operators", "decode_operators") \
        + _MONEY

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.mla_decode_step_absorbed_s is None:
            d.pop("mla_naive_faster_from_chunk_tokens")
        return d


def decode_modes(dep: Deployment) -> dict:
    """The decode-mode fields every serving record carries (``PerfRecord``, ``MaxThroughputRecord``,
    ``WhatIfRecord``): MTP / draft speculation, the EP kernel and two-batch overlap."""
    return dict(mtp_depth=dep.mtp_depth, mtp_acceptance=dep.mtp_acceptance,
                mtp_tokens_per_step=mtp_tokens_per_step(dep.mtp_depth, dep.mtp_acceptance), ep_kernel=dep.ep_kernel,
                deepep_nvlink=dep.deepep_nvlink, draft_model=dep.draft_model.name if dep.draft_model is not None else None,
                two_batch_overlap=dep.two_batch_overlap)


def _deployment(sc: Scenario, batch: int, context: int) -> Deployment:
    if isinstance(sc.layout, Deployment):
        return sc.layout.check(sc.model)
    return resolve_deployment(sc.model, sc.hardware, sc.layout, batch, context)


def _gb(x) -> str:
    """Bytes as ``12.3 GB`` (GB = 1e9 bytes), for messages."""
    return f"{float(np.max(x)) / 1e9:.4g} GB"


def _buffers(m) -> str:
    """``and 2.3 GB of DeepEP buffers `` when the memory report holds any, else ""."""
    return f"and {_gb(m.comm_buffer_bytes)} of DeepEP buffers " if m.comm_buffer_bytes else ""


def _band(t: float, factors) -> tuple | None:
    return None if factors is None else (t * factors[0], t * factors[1])


def perf(sc: Scenario, breakdown: bool = False) -> PerfRecord:
    """Serve ``sc`` (``serving.serve``) and report it; ``breakdown`` adds the operator rows of
    the prefill and of the first decode step. FieldError names a bad scenario field."""
    if not isinstance(sc, Scenario):
        raise CostsimError(f"scenario: expected a Scenario, got {type(sc).__name__}")
    spec, hw = sc.model, sc.hardware
    check_types(spec, hw)
    if not isinstance(sc.layout, (LayoutRequest, Deployment)):
        raise CostsimError(f"layout: expected a LayoutRequest or a Deployment, got {type(sc.layout).__name__}")
    b, i, o = _count("batch", sc.batch, 1), _count("input_len", sc.input_len, 1), _count("output_len", sc.output_len)
    dep = _deployment(sc, b, i + o)
    r = serve(spec, hw, dep, b, i, o)
    m = r.memory
    warn = context_warnings(spec, i + o)
    if not m.fits:
        warn.append(f"batch {b} does not fit in memory at {i + o} tokens: its KV cache "
                    f"({_gb(m.kv_bytes)}) and activations ({_gb(m.workspace_bytes)}) per device exceed the "
                    f"{_gb(m.usable_bytes - m.weight_bytes - m.comm_buffer_bytes)} left beside {_gb(m.weight_bytes)} of weights "
                    f"{_buffers(m)}"
                    f"({_gb(m.usable_bytes)} usable; GB = 1e9 bytes); max batch {int(m.max_batch)}")
    per_rank = int(dep.seqs_per_rank(b))
    if dep.two_batch_overlap and per_rank >= 2 and o > 0:  # (one sequence per rank: warned below)
        plain = serve(spec, hw, dep.with_(two_batch_overlap=False), b, i, o)
        if r.tpot_s > plain.tpot_s:
            warn.append(f"two-batch overlap is slower here: TPOT {r.tpot_s * 1e3:.2f} ms against "
                        f"{plain.tpot_s * 1e3:.2f} ms without it ({per_rank} sequences per attention rank: each "
                        "micro-batch reads every weight again)")
    if r.prefill_chunk_tokens is not None:
        warn.append(f"prefill chunked: a one-step prefill of all {b} prompts does not fit its activations; "
                    f"{-(-i // r.prefill_chunk_tokens)} chunks of {r.prefill_chunk_tokens:,} tokens per sequence "
                    f"({r.prefill_workspace_bytes / 1e9:.1f} GB of activations per device); the operator "
                    "breakdown shows the first chunk")
    if not r.prefill_fits:
        kv_in = float(kv_bytes_per_device(spec, dep, b, i))
        warn.append(f"prefilling all {b} prompts cannot be chunked to fit: their KV cache ({_gb(kv_in)}) and the "
                    f"activations of a one-token chunk ({_gb(prefill_workspace(spec, dep, b, 1, i))}) per device "
                    f"exceed the {_gb(m.usable_bytes - m.weight_bytes - m.comm_buffer_bytes)} left beside "
                    f"{_gb(m.weight_bytes)} of weights {_buffers(m)}({_gb(m.usable_bytes)} usable; GB = 1e9 bytes; the whole prompts in one step: "
                    f"{_gb(r.prefill_workspace_bytes)} of activations)")
    bufs = deepep_buffers(spec, dep)
    if o > 0:
        warn += dispatch_warning(spec, dep, b)
    warn += mode_warnings(dep)
    if dep.two_batch_overlap and float(dep.seqs_per_rank(float(b) / float(microbatches(b, dep.pp)))) < 2:
        warn.append(f"two_batch_overlap with batch {b}: a rank holds one sequence, so both micro-batches hold it "
                    "and every step costs twice one micro-batch (it gains only from 2 sequences per rank)")
    mla = {}
    if isinstance(spec.attention, MLAAttention):
        x = mla_crossover(spec, hw, dep, b, i)
        mla = dict(mla_decode_step_absorbed_s=x.decode_absorbed_s, mla_decode_step_naive_s=x.decode_naive_s,
                   mla_naive_faster_from_chunk_tokens=x.chunk_tokens)
    decoding = o > 0  # prefill only: no decode step happens, so no TPOT / decode utilisation
    # band factors (p10, p90 of measured / predicted, combined over the step's operators): the
    # prefill's, and the first decode step's, which also stand for the later steps (TPOT at the
    # last token, the decode part of end-to-end)
    f_pre = step_band(r.prefill.timing, hw, dep.overlap_comm)
    f_dec = step_band(r.decode_first.timing, hw, dep.overlap_comm) if decoding else None
    price, provenance = price_of(hw)
    money = {}
    if price is not None:
        c = serving_cost(r, price)
        money = dict(price_usd_per_device_hour=price, price_provenance=provenance, usd_per_hour=c.usd_per_hour,
                     usd_per_million_output_tokens=c.usd_per_million_output_tokens,
                     usd_per_million_input_tokens=c.usd_per_million_input_tokens,
                     usd_per_million_output_tokens_combined=c.usd_per_million_output_tokens_combined)
    return PerfRecord(
        model=spec.name, hardware=hw.name, devices=dep.devices, devices_per_node=hw.devices_per_node, tp=dep.tp,
        ep=dep.ep, pp=dep.pp, dp=dep.dp,
        weight_dtype=dep.weights_name, kv_dtype=dep.kv_format.name, batch=b, input=i, output=o,
        ttft_s=r.ttft_s, tpot_s=r.tpot_s if decoding else None, tpot_last_s=r.tpot_last_s if decoding else None,
        e2e_s=r.e2e_s, prefill_tokens_per_s=r.prefill_tokens_per_s,
        prefill_tokens_per_s_per_device=r.prefill_tokens_per_s_per_device,
        decode_tokens_per_s=r.decode_tokens_per_s, decode_tokens_per_s_per_device=r.decode_tokens_per_s_per_device,
        decode_tokens_per_s_per_node=r.decode_tokens_per_s_per_device * hw.devices_per_node,
        combined_tokens_per_s=r.combined_tokens_per_s, prefill_mfu=float(r.prefill.mfu),
        decode_mbu=float(r.decode_first.mbu) if decoding else None,
        prefill_mla_form=r.prefill.timing.mla_form, decode_mla_form=r.decode_first.timing.mla_form,
        weight_bytes_per_device=m.weight_bytes, kv_bytes_per_device=float(m.kv_bytes),
        workspace_bytes_per_device=float(m.workspace_bytes), memory_usable_bytes=m.usable_bytes,
        prefill_workspace_bytes_per_device=r.prefill_workspace_bytes, prefill_fits=r.prefill_fits,
        fits=bool(m.fits), max_batch=int(m.max_batch), max_batch_limit=m.limit,
        rates=rate_provenance(hw, dep.weight_format.compute), warnings=tuple(warn),
        decode_seconds_per_layer=per_layer_seconds(r.decode_first.timing, spec, dep.pp) if decoding else {},
        prefill_seconds_per_layer=per_layer_seconds(r.prefill.timing, spec, dep.pp), **mla,
        prefill_operators=operator_rows(r.prefill.timing) if breakdown else None, layout_reason=dep.layout_reason,
        prefill_chunk_tokens=r.prefill_chunk_tokens, **decode_modes(dep),
        prefill_devices_per_decode_device=((i / r.prefill_tokens_per_s) / (o / r.decode_tokens_per_s)
                                           if decoding else None),
        ttft_band_s=_band(r.ttft_s, f_pre), tpot_band_s=_band(r.tpot_s, f_dec) if decoding else None,
        tpot_last_band_s=_band(r.tpot_last_s, f_dec) if decoding else None,
        e2e_band_s=None if f_pre is None else (
            r.ttft_s * f_pre[0] + (r.e2e_s - r.ttft_s) * (f_dec or (1.0, 1.0))[0],
            r.ttft_s * f_pre[1] + (r.e2e_s - r.ttft_s) * (f_dec or (1.0, 1.0))[1]),
        band=band_kind(hw),
        decode_operators=operator_rows(r.decode_first.timing) if breakdown else None,
        comm_buffer_bytes_per_device=m.comm_buffer_bytes, deepep_max_tokens=bufs.tokens, **money)


# ---- max-throughput ---------------------------------------------------------------------


@dataclass(frozen=True)
class MaxThroughputRecord(_Record):
    """The decode batch that maximises tokens/s under memory and an optional TPOT SLO."""

    model: str
    hardware: str
    devices: int
    tp: int
    ep: int
    pp: int
    weight_dtype: str
    kv_dtype: str
    context: int
    tpot_slo_s: float | None
    batch: int
    tpot_s: float
    tokens_per_s: float  # all devices together
    tokens_per_s_per_device: float
    tokens_per_s_per_node: float
    max_batch_memory: int
    limit: str  # "memory" | "TPOT SLO" | "throughput peak"
    warnings: tuple = ()
    # rent at the profile's price (None without one): all ``devices``; per 1e6 output tokens
    # at ``tokens_per_s``
    price_usd_per_device_hour: float | None = None
    usd_per_hour: float | None = None
    usd_per_million_output_tokens: float | None = None
    tpot_band_s: tuple | None = None  # p10-p90 of TPOT from the profile's calibration residuals
    # decode modes of the layout, as ``PerfRecord`` carries them
    mtp_depth: int = 0
    mtp_acceptance: float = 0.0
    mtp_tokens_per_step: float = 1.0
    ep_kernel: str = "normal"
    deepep_nvlink: bool = False
    draft_model: str | None = None
    two_batch_overlap: bool = False
    band: str = "uncalibrated"  # ``band_kind``: "p10-p90", else "no residuals" / "uncalibrated" (no band)
    _optional = _MONEY + ("tpot_band_s",)


def max_throughput_search(spec: ModelSpec, hw: HardwareProfile, request: LayoutRequest = LayoutRequest(),
                          context: int = 4096, tpot_slo_s: float | None = None
                          ) -> tuple[Deployment, MaxThroughput]:
    """The layout and decode batch with the most tokens/s. With ``request.tp`` unset every
    valid TP is tried (the layout is part of the answer); otherwise only the requested one.
    Raises SLOError (field ``tpot_slo_s``) when no batch meets the SLO."""
    check_types(spec, hw)
    context = _count("context", context, 1)
    if tpot_slo_s is not None and not (isinstance(tpot_slo_s, (int, float)) and 0 < tpot_slo_s < float("inf")):
        raise FieldError("tpot_slo_s", tpot_slo_s, "must be a finite number of seconds > 0")
    dep = resolve_deployment(spec, hw, request, 1, context)
    if request.tp is None:
        cands = [dep.with_(tp=t) for t in valid_tp(spec, dep.devices // dep.pp, dep.draft_model)]
        return best_max_throughput(spec, hw, cands, context, tpot_slo_s)
    return dep, max_throughput(spec, hw, dep, context, tpot_slo_s)


def max_throughput_record(spec: ModelSpec, hw: HardwareProfile, request: LayoutRequest = LayoutRequest(),
                          context: int = 4096, tpot_slo_s: float | None = None) -> MaxThroughputRecord:
    """``max_throughput_search`` as a record."""
    dep, r = max_throughput_search(spec, hw, request, context, tpot_slo_s)
    price, _ = price_of(hw)
    money = (None, None, None) if price is None else (price, usd_per_hour(dep.devices, price),
                                                      usd_per_million_tokens(dep.devices, price, r.tokens_per_s))
    band = step_band(decode(spec, hw, dep, r.batch, context).timing, hw, dep.overlap_comm) if r.batch else None
    return MaxThroughputRecord(
        spec.name, hw.name, dep.devices, dep.tp, dep.ep, dep.pp, dep.weights_name, dep.kv_format.name, context,
        tpot_slo_s, r.batch, r.tpot_s, r.tokens_per_s, r.tokens_per_s_per_device,
        r.tokens_per_s_per_device * hw.devices_per_node, r.max_batch_memory, r.limit,
        tuple(context_warnings(spec, context) + (dispatch_warning(spec, dep, r.batch) if r.batch else [])
              + mode_warnings(dep)), *money,
        _band(r.tpot_s, band), **decode_modes(dep), band=band_kind(hw))


# ---- train ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRecord(_Record):
    model: str
    hardware: str
    seq_len: int
    tokens: float
    training_flops_per_token: float
    total_flops: float
    peak_flops: float  # FLOP/s per device, dense, in ``dtype``
    dtype: str
    mfu: float
    gpu_hours: float
    gpu_hours_per_trillion_tokens: float
    tokens_per_s_per_device: float
    mfu_given: bool
    warnings: tuple = ()
    # rent of the run at the profile's price (None without one): GPU-hours x price
    # (``costsim.simulator.cost.training_cost``); wall-clock days on ``devices`` (None without)
    price_usd_per_device_hour: float | None = None
    training_usd: float | None = None
    devices: int | None = None
    wall_clock_days: float | None = None
    attention_flops: str = "causal"  # FLOP convention of the attention core: causal or full
    _optional = _MONEY + ("devices", "wall_clock_days")


def train(spec: ModelSpec, hw: HardwareProfile, *, seq_len: int, tokens: float, mfu: float | None = None,
          gpu_hours: float | None = None, dtype: str = "bf16", devices: int | None = None,
          causal: bool = True) -> TrainRecord:
    """GPU-hours at an MFU, or the MFU implied by GPU-hours (``training.train_cost``); its rent
    at the profile's price and, with ``devices``, its wall-clock days (``cost.training_cost``)."""
    check_types(spec, hw)
    r = train_cost(spec, hw, seq_len=seq_len, tokens=tokens, mfu=mfu, gpu_hours=gpu_hours, dtype=dtype, causal=causal)
    price, _ = price_of(hw)
    c = training_cost(r.gpu_hours, 0.0 if price is None else price, devices)
    return TrainRecord(spec.name, hw.name, seq_len, tokens, r.flops_per_token, r.total_flops, r.peak_flops, dtype,
                       r.mfu, r.gpu_hours, r.gpu_hours_per_trillion_tokens, r.tokens_per_s_per_device,
                       mfu is not None, tuple(context_warnings(spec, seq_len)), price,
                       None if price is None else c.usd, devices, c.wall_clock_days,
                       "causal" if causal else "full")


# ---- plot data --------------------------------------------------------------------------


# the plot data lives in ``figures`` (one module per figure question); re-exported here
from costsim.simulator.figures import decode_roofline, kv_curve, throughput_curve  # noqa: E402


__all__ = ["CostsimError", "FieldError", "LayoutRequest", "Scenario", "compare", "kv", "show", "perf",
           "max_throughput_search", "max_throughput_record", "train", "model_line", "throughput_curve", "kv_curve",
           "decode_roofline", "operator_rows", "context_warnings", "price_of"]
