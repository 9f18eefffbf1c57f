"""The data behind every plot and report figure: plain dicts of numpy arrays in SI units.

Each function answers one figure's question with the same engine calls the CLI commands use
(``serving.max_throughput``, ``memory.memory_report``, ``kv.kv_cache_bytes``, ...), so a plot
shows exactly what ``perf`` / ``max-throughput`` / ``kv`` print. No matplotlib here: the
drawing is ``costsim.reports.plots``. Units: seconds, bytes, FLOP/s, tokens/s, USD.

Errors: ``FieldError`` / ``CostsimError`` as the scenario functions raise them (a layout that
does not exist, weights that do not fit, a format the model or hardware lacks).
"""

from __future__ import annotations

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.cost import SECONDS_PER_HOUR
from costsim.simulator.deployment import Deployment
from costsim.simulator.kv import kv_bytes_per_token, kv_cache_bytes
from costsim.simulator.deployment import kv_format_problem
from costsim.simulator.layout import LayoutRequest, check_types, number_format, resolve_deployment, valid_tp
from costsim.simulator.layout import count as _count
from costsim.simulator.memory import memory_report, require_fit
from costsim.simulator.serving import SLOError, best_max_throughput, decode, max_throughput
from costsim.simulator.types import OpKind
from costsim.specs import HardwareProfile, ModelSpec


def layout_text(dep: Deployment) -> str:
    """``8 devices, TP8 EP1 PP1, bf16 weights, bf16 KV``: a deployment as titles print it."""
    return (f"{dep.devices} device{'s' if dep.devices != 1 else ''}, TP{dep.tp} EP{dep.ep} PP{dep.pp}, "
            f"{dep.weights_name} weights, {dep.kv_format.name} KV")


def _context(context, name="context", minimum=1) -> int:
    return _count(name, context, minimum)


# ---- decode throughput against TPOT (one layout) ------------------------------------------------

# batches marked on a throughput curve (each that is below the memory limit)
MARKED_BATCHES = (1, 4, 16, 64, 256, 1024, 4096, 16384)


def throughput_curve(spec: ModelSpec, hw: HardwareProfile, request: LayoutRequest = LayoutRequest(),
                     context: int = 4096, tpot_slo_s: float | None = None) -> dict:
    """Decode tokens/s per device against TPOT, batch swept from 1 up to the memory limit
    (``serving.max_throughput``'s curve), on the layout ``costsim max-throughput`` picks: with
    ``request.tp`` unset, every valid TP of the resolved layout is tried and the one with the
    most tokens/s (under ``tpot_slo_s`` where some layout meets it, else without) is drawn, so
    the curve's best point is max-throughput's answer; with ``request.tp`` set, that layout.

    Returns ``label``, ``layout`` (text), ``deployment``, arrays ``batch``, ``tpot_s`` (s)
    and ``tokens_per_s_per_device``; ``max_batch`` (the memory limit, sequences per replica)
    and ``marks``: indices into the arrays of the ``MARKED_BATCHES`` that fit plus the last.
    """
    check_types(spec, hw)
    context = _context(context)
    dep = resolve_deployment(spec, hw, request, 1, context)
    if request.tp is None:  # as max-throughput: the layout is part of the answer
        cands = [dep.with_(tp=t) for t in valid_tp(spec, dep.devices // dep.pp)]
        try:
            dep, r = best_max_throughput(spec, hw, cands, context, tpot_slo_s)
        except SLOError:  # no layout meets the SLO: the most tokens/s without it (the SLO line shows the miss)
            dep, r = best_max_throughput(spec, hw, cands, context)
    else:
        r = max_throughput(spec, hw, dep, context)
    batch = np.asarray(r.curve_batch)
    mb = np.array([b for b in MARKED_BATCHES if b < batch[-1]] + [batch[-1]], dtype=float)
    md = decode(spec, hw, dep, mb, context)
    return dict(label=f"{spec.name} (TP{dep.tp} EP{dep.ep} PP{dep.pp})", layout=layout_text(dep), deployment=dep,
                batch=batch, tpot_s=np.asarray(r.curve_tpot_s),
                tokens_per_s_per_device=np.asarray(r.curve_tokens_per_s) / dep.devices,
                max_batch=int(r.max_batch_memory), mark_batch=mb.astype(int), mark_tpot_s=np.asarray(md.time_s),
                mark_tokens_per_s_per_device=np.asarray(md.tokens_per_s) / dep.devices)


# ---- roofline of one decode step ---------------------------------------------------------------


def decode_roofline(spec: ModelSpec, hw: HardwareProfile, request: LayoutRequest = LayoutRequest(),
                    batch: int = 1, context: int = 4096, min_share: float = 0.01) -> dict:
    """The operators of one decode step as points on the roofline.

    Points: each non-communication operator with FLOPs taking at least ``min_share`` of the
    step, numbered by time share (1 = largest): ``number``, ``label``, ``family``, ``dtype``
    (its compute format), ``intensity`` (FLOP/byte), ``flops_per_s`` achieved (its FLOPs over
    its modelled time) and ``share`` of the step. Roofs: ``roofs`` maps each compute dtype the
    points use to its datasheet peak (FLOP/s) and ``achievable`` to peak x efficiency.compute;
    ``bandwidth`` / ``bandwidth_achievable`` (B/s) likewise; ``deployment``, ``layout``, and
    ``fits``: whether ``batch`` sequences of ``context`` tokens fit in memory (the step is timed
    either way; only the weights must fit).
    """
    check_types(spec, hw)
    batch, context = _count("batch", batch, 1), _count("context", context)
    dep = resolve_deployment(spec, hw, request, batch, context)
    require_fit(spec, hw, dep)
    t = decode(spec, hw, dep, batch, context).timing
    step = float(np.asarray(t.time_s))
    pts = []
    for x in t.timings:
        flops, total = float(np.asarray(x.op.flops)), float(np.asarray(x.total_s))
        if x.op.kind is OpKind.COMM or flops <= 0 or total < min_share * step:
            continue
        pts.append(dict(label=x.op.name, family=x.op.family.value, dtype=x.op.dtype or "bf16",
                        intensity=float(np.asarray(x.op.intensity)), flops_per_s=flops / float(np.asarray(x.time_s)),
                        share=total / step))
    pts.sort(key=lambda p: -p["share"])
    for i, p in enumerate(pts, 1):
        p["number"] = i
    dtypes = sorted({p["dtype"] for p in pts}) or [dep.weight_format.compute]
    eff_c, eff_m = hw.efficiency.compute.value, hw.efficiency.memory.value
    roofs = {d: hw.peak(d) for d in dtypes}
    fits = bool(memory_report(spec, hw, dep, batch, context).max_batch >= batch)
    return dict(points=pts, deployment=dep, layout=layout_text(dep), step_s=step, fits=fits,
                roofs=roofs, achievable={d: v * eff_c for d, v in roofs.items()},
                bandwidth=hw.memory_bandwidth.value, bandwidth_achievable=hw.memory_bandwidth.value * eff_m)


# ---- KV cache ----------------------------------------------------------------------------------


def kv_per_token(specs: list[ModelSpec], kv_dtype="bf16") -> list[dict]:
    """KV cache bytes per token (all layers, whole model) of each model in ``kv_dtype``,
    grouped by attention kind (``attention``), smallest first within a kind (DeepSeek-V2
    Table 1: MLA caches (d_c + d_h^R) x layers elements per token)."""
    fmt = number_format(kv_dtype, "kv_dtype")
    rows = []
    for s in specs:
        check_types(s)
        rows.append(dict(label=s.name, attention=s.attention.kind, kv_dtype=fmt.name,
                         kv_bytes_per_token=float(kv_bytes_per_token(s, fmt))))
    order = {k: i for i, k in enumerate(dict.fromkeys(r["attention"] for r in
                                                          sorted(rows, key=lambda r: r["kv_bytes_per_token"])))}
    return sorted(rows, key=lambda r: (order[r["attention"]], r["kv_bytes_per_token"]))


def kv_curve(spec: ModelSpec, kv_dtype, context, batch: int = 1) -> dict:
    """KV cache bytes of ``batch`` sequences (whole model, no sharding) against an array of
    ``context`` lengths (tokens): ``label``, ``context``, ``kv_bytes``, ``kv_dtype``."""
    check_types(spec)
    fmt = number_format(kv_dtype, "kv_dtype")
    _count("batch", batch, 1)
    _count("context", int(np.max(context)))
    problem = kv_format_problem(spec, fmt)
    if problem:
        raise FieldError("kv_dtype", fmt.name, problem)
    return dict(label=spec.name, context=np.asarray(context), kv_bytes=kv_cache_bytes(spec, fmt, context, batch),
                kv_dtype=fmt.name)


def memory_lines(hardware: list[HardwareProfile]) -> list[dict]:
    """One horizontal line per hardware: its device memory (``memory_bytes``, datasheet)."""
    return [dict(label=f"{h.name} memory per device", memory_bytes=h.memory_capacity.value) for h in hardware]


def max_batch_curve(spec: ModelSpec, hw: HardwareProfile, request: LayoutRequest = LayoutRequest(),
                    context=None) -> dict:
    """The largest batch (sequences per replica) whose KV cache and workspace fit beside the
    weights and the DeepEP buffers, against an array of ``context`` lengths (``memory.memory_report``), on the
    layout ``request`` resolves to at the longest context. ``max_batch`` is 0 where not even
    one sequence fits. Raises CostsimError when the weights alone do not fit."""
    check_types(spec, hw)
    ctx = np.asarray(context, dtype=float)
    if ctx.ndim != 1 or ctx.size == 0 or not np.all(ctx >= 1):
        raise CostsimError("context: expected a non-empty array of lengths >= 1 token")
    dep = resolve_deployment(spec, hw, request, 1, _context(int(ctx.max())))
    require_fit(spec, hw, dep)
    mem = memory_report(spec, hw, dep, dep.dp, ctx)
    return dict(label=f"{spec.name} on {hw.name} (TP{dep.tp} EP{dep.ep} PP{dep.pp})", layout=layout_text(dep),
                deployment=dep, context=ctx, max_batch=np.asarray(mem.max_batch, dtype=float))


# ---- serving frontier and cost against the SLO ------------------------------------------------


def pareto_mask(per_user, per_device) -> np.ndarray:
    """True for the points no other point beats on both axes (both larger is better): the
    Pareto frontier of (tokens/s per user, tokens/s per device)."""
    u, d = np.asarray(per_user, dtype=float), np.asarray(per_device, dtype=float)
    order = np.lexsort((-d, -u))  # by per-user descending, ties: per-device descending
    keep = np.zeros(u.size, dtype=bool)
    best = -np.inf
    for i in order:
        if d[i] > best:
            keep[i] = True
            best = d[i]
    return keep


def frontier(spec: ModelSpec, hw: HardwareProfile, request: LayoutRequest = LayoutRequest(), context: int = 4096,
             max_devices: int | None = None) -> dict:
    """The serving frontier of decode: every layout the planner would search on up to
    ``max_devices`` devices (default one node) with ``request``'s weight and KV formats and
    serving modes (EP kernel, two-batch overlap, MTP / draft model), each
    batch from 1 to its memory limit; per point tokens/s per device and per user (a user's
    output tokens/s: tokens/s / batch = 1 / TPOT without MTP) and TPOT (s). ``pareto``
    marks the points no other beats on both rates; ``layouts`` labels each point's layout.
    Raises CostsimError when no layout fits.
    """
    from costsim.simulator.planner import candidates

    check_types(spec, hw)
    context = _context(context)
    n = hw.devices_per_node if max_devices is None else max_devices
    wd = [request.weight_dtype]  # None: the checkpoint's formats (the planner alone also tries fp8)
    deps, why = candidates(spec, hw, n, weight_dtypes=wd, kv_dtypes=(request.kv_dtype,), pp=(1,), context=context,
                         mla_form=request.mla_form, base=request)
    if not deps:
        reasons = ", ".join(f"{k}: {v}" for k, v in why.most_common()) or "none to try"
        raise CostsimError(f"{spec.name} on {hw.name}: no layout on up to {n} devices ({reasons})")
    per_dev, per_user, tpot, batch, lay = [], [], [], [], []
    for dep in deps:
        try:
            r = max_throughput(spec, hw, dep, context)
        except (CostsimError, SLOError):
            continue
        b = np.asarray(r.curve_batch, dtype=float)
        tps = np.asarray(r.curve_tokens_per_s, dtype=float)
        per_dev.append(tps / dep.devices)
        per_user.append(tps / b)
        tpot.append(np.asarray(r.curve_tpot_s, dtype=float))
        batch.append(b)
        lay += [f"{dep.devices}x TP{dep.tp} EP{dep.ep}"] * b.size
    if not per_dev:
        raise CostsimError(f"{spec.name} on {hw.name}: not one sequence of {context} tokens fits on any layout")
    pd_, pu = np.concatenate(per_dev), np.concatenate(per_user)
    return dict(label=f"{spec.name} on {hw.name}", tokens_per_s_per_device=pd_, tokens_per_s_per_user=pu,
                tpot_s=np.concatenate(tpot), batch=np.concatenate(batch), layouts=lay, pareto=pareto_mask(pu, pd_),
                price_usd_per_device_hour=None if hw.price_per_device_hour is None
                else hw.price_per_device_hour.value, context=context)


def cost_vs_slo(front: dict, tpot_slo_s) -> dict:
    """USD per million output tokens at each TPOT SLO (s): the cheapest point of ``front``
    (``frontier``) whose TPOT meets the SLO, at the profile's price: price / 3600 / (tokens/s
    per device) x 1e6. NaN where no point meets the SLO or the hardware has no price."""
    slo = np.asarray(tpot_slo_s, dtype=float)
    price = front["price_usd_per_device_hour"]
    best = np.full(slo.shape, np.nan)
    for i, s in np.ndenumerate(slo):
        ok = front["tpot_s"] <= s
        if ok.any() and price is not None:
            best[i] = price / SECONDS_PER_HOUR / front["tokens_per_s_per_device"][ok].max() * 1e6
    return dict(label=front["label"], tpot_slo_s=slo, usd_per_million_output_tokens=best)


__all__ = ["layout_text", "throughput_curve", "decode_roofline", "kv_per_token", "kv_curve", "memory_lines",
           "max_batch_curve", "pareto_mask", "frontier", "cost_vs_slo", "MARKED_BATCHES"]
