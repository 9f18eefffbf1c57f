"""Disaggregated prefill/decode: a prefill pool and a decode pool, each with its own layout,
sized against each other for a request mix of ``input_len`` -> ``output_len`` tokens.

DistServe (Zhong et al., OSDI 2024, arXiv 2401.09670, §3-4) places prefill and decode on
separate GPUs so that each phase gets the parallelism that suits it, and sizes the two pools by
their per-instance goodput; DeepSeek's Day-6 inference overview (open-infra-index,
2025-02) runs V3/R1 that way: prefill units of 4 H800 nodes (EP32), decode units of 18 nodes
(EP144). This module does the same search with costsim's per-layout models:

- Prefill pool: over the planner's deployments (``planner.candidates``: powers of two up to
  ``max_devices``, PP, TP within a node, EP, formats), or over the formats of one given layout,
  the one with the most input tokens/s per device whose TTFT <= ``ttft_slo_s``. A replica
  prefills a batch of b prompts in one step (chunked when its activations do not fit,
  ``serving.chunked_prefill``): TTFT = that step's time, input tokens/s = b x I / TTFT (cached
  prefix tokens counted, as ``perf``), memory = weights + the prompts' KV (I tokens each). The
  batch: the best of every integer up to the largest batch meeting the SLO and memory
  (``planner._largest_batch``; beyond ``PREFILL_POINTS``, a geometric grid of that many).
- Decode pool: the deployment with the most output tokens/s per device at its largest batch
  meeting TPOT <= ``tpot_slo_s`` and memory (KV at I + O tokens), TPOT the mean over the O - 1
  steps, as the planner and ``perf`` compute it (``sweep.serve_grid``); tokens/s = batch / TPOT.
- One KV cache format for both pools (the decode pool takes the prefill's cache as it is): of
  ``kv_dtypes``, the one whose pools give the most output tokens/s per device (below).
- Ratio: prefill devices per decode device = (I / p) / (O / d), p and d the per-device rates
  (device-seconds per request of each phase). A balanced pair delivers O / (I / p + O / d)
  output tokens/s per device of both pools.
- With ``rate`` (requests/s): each pool's replicas = ceil(rate x tokens / replica tokens/s),
  its devices and nodes (ceil of devices / ``devices_per_node``).
- KV transfer: a request's KV cache of I tokens (one copy, ``kv.kv_cache_bytes``) moves from
  the prefill pool to the decode pool over the inter-node link. Each prefill device sends its
  share (``memory.kv_bytes_per_device`` of one sequence per DP rank) at ``inter_node_bandwidth``
  x ``efficiency.inter_node``, + ``inter_node_latency``. The link load of a pool is the share of
  time its devices' links are busy at the pool's rate (prefill: the batch's KV per TTFT; decode:
  the KV of the requests it admits per second). Assumed overlapped: the transfer streams while
  the next batch prefills (layer by layer, as DistServe and Mooncake do), so it adds neither to
  TTFT nor to either pool's throughput as long as the link load is <= 1 (a warning says when it
  is not). The first token comes from the prefill pool; the transfer delays the second.
- Colocated comparison: the planner's best deployment (``planner.plan``, top 1) at the same
  SLOs and formats, prefill and decode on the same replica in lock-step; with ``rate`` its
  replicas for rate x O output tokens/s, so devices compare at the same rate.

Steady state, no queueing (requests arrive as fast as the pools serve them; every request has
the given lengths), no scheduling of prefill into decode steps. Units: SI (seconds, bytes,
tokens/s); tokens/s per replica unless the name says per device or node.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, replace

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.deployment import mode_warnings
from costsim.simulator.kv import kv_cache_bytes
from costsim.simulator.layout import LayoutRequest, check_types, resolve_deployment
from costsim.simulator.memory import dispatch_warning, kv_bytes_per_device
from costsim.simulator.planner import (MAX_DEVICES, _check, _largest_batch, _screen, _weight_choices, admit, candidates, plan,
                                       pp_problem, slo_text)
from costsim.simulator.serving import decode, prefill
from costsim.simulator.sweep import serve_grid
from costsim.specs import HardwareProfile, ModelSpec, Price


PREFILL_POINTS = 4096  # prefill batches tried per layout: every integer up to this, else a geometric grid


@dataclass(frozen=True)
class Pool:
    """The best layout of one pool (``role`` "prefill" or "decode") and its rate there."""

    role: str
    devices: int  # per replica
    nodes: float  # devices / devices_per_node
    tp: int
    ep: int
    pp: int
    dp: int
    weight_dtype: str
    kv_dtype: str
    batch: int  # prompts per prefill step, or running sequences per decode replica
    ttft_s: float | None  # prefill: the batch's prefill (TTFT); decode: None
    tpot_s: float | None  # decode: mean over the O - 1 steps; prefill: None
    tokens_per_s: float  # per replica: input tokens/s (prefill) or output tokens/s (decode)
    tokens_per_s_per_device: float
    tokens_per_s_per_node: float
    max_batch_memory: int  # sequences per replica that fit (KV at I tokens, or I + O for decode)
    limit: str  # what stops a larger batch ("memory", "TTFT SLO", "TPOT SLO", "throughput peak", ...)
    candidates: int  # deployments searched (layouts x formats whose weights fit)
    evaluated: int  # costed exactly (the others' bound could not beat the best)
    modes: str = ""  # the pool's serving modes (MTP, prefix hits, redundant experts, EP kernel, TBO); "" none


@dataclass(frozen=True)
class Disaggregated:
    """``disaggregate``'s answer. SI units; per-device and per-node rates say so."""

    model: str
    hardware: str
    input_len: int
    output_len: int
    ttft_slo_s: float | None
    tpot_slo_s: float | None
    rate: float | None  # requests/s
    devices_per_node: int
    max_devices: int
    prefill: Pool
    decode: Pool
    prefill_device_s_per_request: float  # I / prefill tokens/s per device
    decode_device_s_per_request: float  # O / decode tokens/s per device
    prefill_devices_per_decode_device: float  # the ratio (also prefill nodes per decode node)
    prefill_devices_per_decode_replica: float  # ratio x decode replica devices
    output_tokens_per_s_per_device: float  # balanced pools: O / (I / p + O / d)
    kv_bytes_per_request: float  # one copy of I tokens' KV cache (kv_dtype of the prefill pool)
    kv_transfer_s: float | None  # one request's KV over the inter-node link (None: no such link)
    prefill_link_load: float | None  # share of time a prefill device's link is busy (<= 1: hidden)
    decode_link_load: float | None
    prefill_replicas: int | None = None  # with rate: replicas, devices, nodes of each pool
    prefill_devices: int | None = None
    prefill_nodes: int | None = None
    decode_replicas: int | None = None
    decode_devices: int | None = None
    decode_nodes: int | None = None
    total_devices: int | None = None
    colocated: dict | None = None  # planner's best row (PlanRow fields) at the same SLOs, or None
    colocated_reason: str = ""  # why there is none
    colocated_output_tokens_per_s_per_device: float | None = None
    warnings: tuple = ()

    def to_dict(self) -> dict:
        return asdict(self)


def _ranking_price(hw: HardwareProfile) -> HardwareProfile:
    """``hw`` with a unit price where it has none: the planner ranks by USD, which at one price for
    every device ranks by devices per output token/s (the answer here needs no price)."""
    if hw.price_per_device_hour is not None:
        return hw
    return hw.model_copy(update={"price_per_device_hour": Price(value=1.0, provenance="assumed",
                                                                source="disagg: ranking by devices")})


def _pool_deployments(role, spec, hw, layout, base, max_devices, weight_dtypes, kv_dtypes, pp, context, mla_form):
    """(deployments, reasons): the planner's candidates, or ``layout``'s over the formats."""
    if layout is None:
        return candidates(spec, hw, max_devices, weight_dtypes, kv_dtypes, pp, context, mla_form, base)
    out, seen, reasons = [], set(), Counter()
    for w in _weight_choices(spec, hw, weight_dtypes):
        for k in kv_dtypes:
            try:
                dep = resolve_deployment(spec, hw, replace(layout, weight_dtype=w, kv_dtype=k, mla_form=mla_form), 1,
                                         context)
            except FieldError as e:
                if e.field in ("weight_dtype", "kv_dtype"):
                    reasons["format unsupported"] += 1
                    continue
                if e.field in ("devices", "tp", "ep", "pp"):  # the pool's own layout: name it
                    raise FieldError(f"{role}_{e.field}", e.value, e.reason) from None
                raise
            admit(spec, hw, dep, (), seen, out, reasons)
    return out, reasons


def _bound(spec, hw, dep, s, role, input_len):
    """Upper bound on the pool's tokens/s per device at any batch passing the screen: a batch in
    [grid[j], grid[j+1]) has at most grid[j+1] sequences and takes at least the time at grid[j]
    (one-step prefill, first decode step; times do not fall as the batch grows)."""
    g = s.grid[: s.last_ok + 1]
    top = np.minimum(np.append(s.grid[1:], s.grid[-1])[: s.last_ok + 1], s.max_batch)
    if role == "prefill":
        t = np.asarray(prefill(spec, hw, dep, g, input_len).time_s, dtype=float)
        return float(np.max(top * input_len / t)) / dep.devices
    t = np.asarray(decode(spec, hw, dep, g, input_len).time_s, dtype=float)
    return float(np.max(top / t)) / dep.devices


def _evaluate(spec, hw, dep, s, role, input_len, output_len, ttft_slo, tpot_slo):
    """(tokens/s per replica, batch, ttft, tpot, limit) of ``dep`` in its pool, or (None, reason)."""
    o = 0 if role == "prefill" else output_len
    slos = (ttft_slo, None) if role == "prefill" else (None, tpot_slo)
    best, limit = _largest_batch(spec, hw, dep, s.grid, s.last_ok, input_len, o, *slos)
    if best is None:
        return None, limit
    g, b, i = best
    sh = np.shape(b)

    def at(x, j=i):
        return float(np.broadcast_to(x, sh)[j])

    if role == "decode":
        return (at(g.decode_tokens_per_s), int(b[i]), None, at(g.tpot_s), limit), ""
    # prefill: the batch with the most tokens/s among every integer up to the largest meeting the
    # SLO (tokens/s need not grow with the batch: pipeline micro-batches, tile waves, chunking);
    # beyond PREFILL_POINTS batches a geometric grid of that many, plus the largest
    top = int(b[i])
    gb = (np.arange(1, top + 1, dtype=float) if top <= PREFILL_POINTS else
          np.unique(np.concatenate([np.round(np.geomspace(1, top, PREFILL_POINTS)), [top]])))
    gg = serve_grid(spec, hw, dep, gb, input_len, 0, bounds=False)
    ttft = np.broadcast_to(gg.ttft_s, gb.shape)
    ok = np.broadcast_to(gg.fits, gb.shape) & np.broadcast_to(gg.prefill_fits, gb.shape)
    if ttft_slo is not None:
        ok &= ttft <= ttft_slo
    tps = np.broadcast_to(gg.prefill_tokens_per_s, gb.shape)
    pts = [(float(tps[j]), int(gb[j]), float(ttft[j]), limit if int(gb[j]) == top else "throughput peak")
           for j in np.nonzero(ok)[0]]
    if not pts:
        return None, "memory"
    r = max(pts, key=lambda p: (p[0], -p[1]))
    return (r[0], r[1], r[2], None, r[3]), ""


def _search(spec, hw, deps, role, input_len, output_len, ttft_slo, tpot_slo, reasons):
    """The pool's best deployment (most tokens/s per device) over ``deps``, best-first by bound."""
    o = 0 if role == "prefill" else output_len
    slos = (ttft_slo, None) if role == "prefill" else (None, tpot_slo)
    screened = []
    for dep in deps:
        s, reason, _, _ = _screen(spec, hw, dep, input_len, o, *slos)
        if s is None:
            reasons[reason] += 1
            continue
        screened.append((_bound(spec, hw, dep, s, role, input_len), dep.devices, len(screened), dep, s))
    screened.sort(key=lambda x: (-x[0], x[1], x[2]))
    best, evaluated = None, 0
    for bound, _, _, dep, s in screened:
        if best is not None and bound <= best[0][0] / best[1].devices:
            break
        evaluated += 1
        r, reason = _evaluate(spec, hw, dep, s, role, input_len, output_len, ttft_slo, tpot_slo)
        if r is None:
            reasons[reason] += 1
            continue
        if best is None or r[0] / dep.devices > best[0][0] / best[1].devices:
            best = (r, dep, s)
    return best, evaluated


def modes_text(dep, role: str = "prefill") -> str:
    """A deployment's serving modes in words (those off their defaults), e.g. "MTP 1 at 85%,
    DeepEP auto, two-batch overlap"; "" when none. Prefix hits only for the prefill ``role``
    (they skip prefill compute; a decode pool's cost does not depend on them)."""
    out = []
    if dep.mtp_depth:
        out.append(f"{'draft ' + dep.draft_model.name if dep.draft_model is not None else 'MTP'} {dep.mtp_depth} "
                   f"at {dep.mtp_acceptance:.0%}")
    if dep.prefix_hit and role == "prefill":
        out.append(f"prefix hits {dep.prefix_hit:.1%}")
    if dep.redundant_experts:
        out.append(f"{dep.redundant_experts} redundant experts")
    if dep.ep > 1 and dep.ep_kernel != "normal":
        out.append(f"DeepEP {dep.ep_kernel.replace('_', '-')}" + (" NVLink-aware" if dep.deepep_nvlink else ""))
    if dep.two_batch_overlap:
        out.append("two-batch overlap")
    if dep.overlap_comm:
        out.append("comm overlapped")
    if dep.imbalance != 1:
        out.append(f"imbalance {dep.imbalance:g}")
    return ", ".join(out)


def _pool(role, best, hw, n_deps, evaluated) -> Pool:
    (tps, batch, ttft, tpot, limit), dep, s = best
    per_dev = tps / dep.devices
    n = hw.devices_per_node
    return Pool(role, dep.devices, dep.devices / n, dep.tp, dep.ep, dep.pp, dep.dp, dep.weights_name,
                dep.kv_format.name, batch, ttft, tpot, tps, per_dev, per_dev * n, s.max_batch, limit, n_deps,
                evaluated, modes_text(dep, role))


def _link_rate(hw: HardwareProfile):
    """(bytes/s, latency s) of one device's inter-node link, or None without one."""
    if hw.inter_node_bandwidth is None:
        return None
    return hw.inter_node_bandwidth.value * hw.efficiency.inter_node.value, hw.inter_node_latency.value


def _pools(spec, hw, I, O, kv, ttft_slo_s, tpot_slo_s, max_devices, weight_dtypes, pp, mla_form, bases,
           prefill_layout, decode_layout):
    """Both pools' best deployments with KV format ``kv``: ({role: best}, {role: (candidates,
    evaluated)}, output tokens/s per device of the balanced pair); ``bases``: {role: the request
    fields of its searched deployments}. CostsimError when a pool has none."""
    found, n_deps = {}, {}
    for role, lay, ctx in (("prefill", prefill_layout, I), ("decode", decode_layout, I + O)):
        deps, reasons = _pool_deployments(role, spec, hw, lay, bases[role], max_devices, weight_dtypes, (kv,), pp, ctx,
                                          mla_form)
        best, evaluated = _search(spec, hw, deps, role, I, O, ttft_slo_s, tpot_slo_s, reasons)
        if best is None:
            slo = slo_text(None, ttft_slo_s) if role == "prefill" else slo_text(tpot_slo_s, None)
            where = (f"the given {role} layout ({lay.devices} devices)" if lay is not None
                     else f"up to {max_devices} devices per replica")
            why = ", ".join(f"{n} {k}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "no layout"
            raise CostsimError(f"no {role} layout of {spec.name} on {hw.name} "
                               f"{'fits' if slo == 'no latency SLO' else 'meets ' + slo} for {I} -> {O} tokens with "
                               f"KV {kv} on {where}: {why}")
        found[role], n_deps[role] = best, (len(deps), evaluated)
    (p, _, _, _, _), pdep, _ = found["prefill"]
    (d, _, _, _, _), ddep, _ = found["decode"]
    return found, n_deps, O / (I / (p / pdep.devices) + O / (d / ddep.devices))


def disaggregate(spec: ModelSpec, hw: HardwareProfile, input_len: int, output_len: int, *,
                 rate: float | None = None, ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
                 max_devices: int = 64, weight_dtypes=None, kv_dtypes=("bf16", "fp8"), pp=(1, 2, 4),
                 mla_form: str = "auto", base: LayoutRequest | None = None,
                 prefill_layout: LayoutRequest | None = None, decode_layout: LayoutRequest | None = None,
                 colocated: bool = True, prefill_base: LayoutRequest | None = None,
                 decode_base: LayoutRequest | None = None) -> Disaggregated:
    """The prefill and decode pools of ``spec`` on ``hw`` for requests of ``input_len`` ->
    ``output_len`` tokens (module docstring): each pool's best layout and per-device rate, the
    prefill:decode device ratio, with ``rate`` (requests/s) each pool's replicas, devices and
    nodes, the KV transfer per request, and the colocated planner's best for comparison.

    ``base``: request fields every searched deployment takes (MTP, prefix hit, redundant
    experts, EP kernel, two-batch overlap, ...; not devices/TP/EP/PP or formats), and the
    colocated comparison's. ``prefill_base`` / ``decode_base``: that pool's own request fields
    instead of ``base`` (per-pool modes: e.g. MTP only in decode, DeepEP normal kernels in
    prefill and low-latency in decode, as SGLang launches the two servers with their own flags).
    ``prefill_layout`` / ``decode_layout``: a pool's own layout (devices, TP, EP, PP and its
    other fields as given; formats searched over ``weight_dtypes`` x ``kv_dtypes``) instead of
    the search. ``colocated``: False skips the comparison.

    Raises FieldError naming a bad argument (``input_len``, ``rate``, ``ttft_slo_s``,
    ``max_devices``, ``pp``, ...), and CostsimError, one line, when no layout of a pool meets
    its SLO.
    """
    check_types(spec, hw)
    for name, v in (("input_len", input_len), ("output_len", output_len), ("max_devices", max_devices)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise FieldError(name, v, "must be an integer >= 1")
    if max_devices > MAX_DEVICES:
        raise FieldError("max_devices", max_devices, f"must be at most {MAX_DEVICES:,}")
    if input_len + output_len > 2**24:
        raise FieldError("input_len", input_len, "input + output must be at most 2^24 tokens")
    _check("ttft_slo_s", ttft_slo_s), _check("tpot_slo_s", tpot_slo_s), _check("rate", rate)
    pp = tuple(pp)
    if not pp or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in pp):
        raise FieldError("pp", pp, "must be integers >= 1")
    kv_dtypes = tuple(kv_dtypes)
    if not kv_dtypes:
        raise FieldError("kv_dtype", kv_dtypes, "give at least one KV cache format")
    base = LayoutRequest() if base is None else base
    bases = {"prefill": base if prefill_base is None else prefill_base,
             "decode": base if decode_base is None else decode_base}
    for name, b in (("base", base), ("prefill_base", bases["prefill"]), ("decode_base", bases["decode"])):
        if not isinstance(b, LayoutRequest):
            raise CostsimError(f"{name}: expected a LayoutRequest, got {type(b).__name__}")
        for k in ("devices", "tp", "ep", "pp"):
            if getattr(b, k) is not None:
                raise FieldError(k, getattr(b, k), "the search chooses it; give a pool its own layout "
                                                   "(prefill_layout / decode_layout) instead")
    for name, lay in (("prefill_layout", prefill_layout), ("decode_layout", decode_layout)):
        if lay is not None and (not isinstance(lay, LayoutRequest) or lay.devices is None):
            raise FieldError(name, lay, "must be a LayoutRequest with devices given")
    if (prefill_layout is None or decode_layout is None or colocated) and all(
            pp_problem(spec, p, max_devices) for p in pp):
        raise FieldError("pp", ",".join(map(str, pp)), "no layout to search: "
                         + "; ".join(pp_problem(spec, p, max_devices) for p in pp))
    I, O = int(input_len), int(output_len)
    pair, errors = None, []
    for kv in kv_dtypes:  # one KV format for both pools: the decode pool takes the prefill's cache as it is
        try:
            got = _pools(spec, hw, I, O, kv, ttft_slo_s, tpot_slo_s, max_devices, weight_dtypes, pp, mla_form, bases,
                         prefill_layout, decode_layout)
        except CostsimError as e:
            errors.append(e)
            continue
        if pair is None or got[2] > pair[2]:
            pair = got
    if pair is None:
        raise errors[0]
    found, n_deps, _ = pair
    pre = _pool("prefill", found["prefill"], hw, *n_deps["prefill"])
    dec = _pool("decode", found["decode"], hw, *n_deps["decode"])
    pdep, ddep = found["prefill"][1], found["decode"][1]
    p, d = pre.tokens_per_s_per_device, dec.tokens_per_s_per_device
    p_s, d_s = I / p, O / d
    ratio = p_s / d_s
    warnings = []

    kv_req = float(kv_cache_bytes(spec, pdep.kv_format, I))
    link = _link_rate(hw)
    transfer = p_load = d_load = None
    if link is not None:
        bw, lat = link
        share = float(kv_bytes_per_device(spec, pdep, pdep.dp, I))  # one request's KV on its devices
        transfer = share / bw + lat
        p_load = float(kv_bytes_per_device(spec, pdep, pre.batch, I)) / bw / pre.ttft_s
        # decode: requests admitted per second per DP rank x one request's KV per device
        d_share = float(kv_bytes_per_device(spec, ddep, ddep.dp, I))
        d_load = dec.tokens_per_s / O / ddep.dp * d_share / bw
        for role, load in (("prefill", p_load), ("decode", d_load)):
            if load > 1:
                warnings.append(f"the KV transfer needs {load:.3g}x the inter-node link of a {role} device: the link, "
                                f"not the {role} compute, limits the pool (not modelled)")
    else:
        warnings.append(f"{hw.name} has no inter_node_bandwidth: KV transfer time not computed")
    warnings += [f"decode pool: {w}" for w in dispatch_warning(spec, ddep, dec.batch)]  # DeepEP's capacity per rank
    for role, dep in (("prefill", pdep), ("decode", ddep)):  # modes that change nothing in a pool
        warnings += [f"{role} pool: {w}" for w in mode_warnings(dep)]

    counts = {}
    if rate is not None:
        pr = math.ceil(rate * I / pre.tokens_per_s - 1e-9)
        dr = math.ceil(rate * O / dec.tokens_per_s - 1e-9)
        n = hw.devices_per_node
        counts = dict(prefill_replicas=pr, prefill_devices=pr * pre.devices,
                      prefill_nodes=math.ceil(pr * pre.devices / n), decode_replicas=dr,
                      decode_devices=dr * dec.devices, decode_nodes=math.ceil(dr * dec.devices / n),
                      total_devices=pr * pre.devices + dr * dec.devices)

    col, col_reason, col_tps = None, "", None
    if colocated:
        try:
            res = plan(spec, [_ranking_price(hw)], I, O, tpot_slo_s=tpot_slo_s, ttft_slo_s=ttft_slo_s,
                       target_tokens_per_s=None if rate is None else rate * O, max_devices=max_devices,
                       weight_dtypes=weight_dtypes, kv_dtypes=kv_dtypes, pp=pp, top=1, mla_form=mla_form, base=base)
            col = asdict(res.rows[0])
            col_tps = col["tokens_per_s"] / col["devices"]
        except CostsimError as e:
            col_reason = str(e)
    return Disaggregated(
        spec.name, hw.name, I, O, ttft_slo_s, tpot_slo_s, rate, hw.devices_per_node, int(max_devices), pre, dec,
        p_s, d_s, ratio, ratio * dec.devices, O / (p_s + d_s), kv_req, transfer, p_load, d_load, **counts,
        colocated=col, colocated_reason=col_reason, colocated_output_tokens_per_s_per_device=col_tps,
        warnings=tuple(warnings))


__all__ = ["Pool", "Disaggregated", "disaggregate"]
