"""Deployment planner: the cheapest ways to serve a model under latency SLOs.

For each hardware profile the planner enumerates deployments (``candidates``):

- devices per replica: 1, 2, 4, ... up to ``max_devices`` (powers of two);
- PP in ``pp`` (default 1, 2, 4) dividing the devices (when no PP given has any layout,
  ``pp_problem`` says why, as a FieldError on ``pp``); per stage of devices / PP devices:
  TP among the degrees that split the heads and stay within a node; a dense model takes
  dp = 1 (TP x PP = devices: more devices are replicas, counted apart), an MoE model may run
  DP-attention (dp = devices / (PP x TP) > 1, as DeepSeek serves V3);
- EP: the largest that divides the stage's devices and the routed experts (a smaller EP
  splits each expert over devices / (PP x EP) devices: the same weight bytes per device plus
  an expert-TP gather and reduce-scatter per MoE layer, so it is not searched);
- weight formats: the checkpoint's (``spec.weight_dtype``), plus fp8 where the hardware has
  FP8 tensor cores and the checkpoint is not FP8 already (or ``weight_dtypes``); KV cache
  formats ``kv_dtypes`` (default bf16 and fp8). A narrower format is a quality choice the
  planner does not judge: it says which formats it searched.

Each deployment serves ``batch`` requests of ``input_len`` prompt tokens -> ``output_len``
output tokens in lock-step, exactly as ``serving.serve`` (``perf``) models it: TTFT is the
prefill of the whole batch, TPOT the mean over the n - 1 decode steps. The planner takes the
largest batch (per replica, all its devices) that fits in memory (weights + KV + workspace,
``memory.memory_report``) with TTFT <= ``ttft_slo_s`` and TPOT <= ``tpot_slo_s``, found on a
geometric grid of batches and refined to the integer (``_largest_batch``; it assumes TTFT and
TPOT do not fall as the batch grows, which holds for the roofline time model). Its output
rate is the combined rate: batch x output / e2e (the replica prefills, then decodes, its batch).

Cost (``costsim.simulator.cost``): a replica rents devices x price per device-hour.
- ``target_tokens_per_s`` (output tokens/s of the whole fleet): replicas = ceil(target /
  replica rate); the fleet delivers the target.
- ``users`` (concurrent requests): replicas = ceil(users / largest batch), each running its
  share ceil(users / replicas) (a replica's batch, TTFT and TPOT are at that share: one user
  is served at batch 1); the fleet delivers users x output / e2e.
- neither: one replica at its full rate.
USD per 1e6 output tokens = fleet USD per hour / 3600 / delivered tokens per s x 1e6; the
deployments are ranked by it (then by fewer devices, then by less memory per device).

Speed: each candidate is first screened by the prefill and the first decode step on the batch
grid (cheap; the mean TPOT is at least the first step's, as a step's time does not fall with
the context). That gives an upper bound on its rate, so a lower bound on its cost; candidates
are then costed exactly (``sweep.serve_grid``, equal to ``serve``) in order of that bound,
and the search stops when the next bound cannot beat the ``top``-th plan found.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.cost import SECONDS_PER_HOUR
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import (MAX_DEVICES, LayoutRequest, check_types, default_ep, resolve_deployment, valid_tp,
                                      weight_formats)
from costsim.simulator.memory import memory_report, weight_bytes_per_device
from costsim.simulator.serving import decode, prefill
from costsim.simulator.sweep import serve_grid
from costsim.specs import HardwareProfile, MoEFFN, ModelSpec

GRID_POINTS = 48  # batches of the geometric grid per candidate (then refined to the integer)
MAX_BATCH = 2**24  # sequences per replica considered at most


@dataclass(frozen=True)
class PlanRow:
    """One deployment that meets the SLOs, at its largest such batch. SI units; USD."""

    hardware: str
    devices: int  # per replica
    tp: int
    ep: int
    pp: int
    dp: int
    weight_dtype: str
    kv_dtype: str
    batch: int  # concurrent requests per replica
    ttft_s: float
    tpot_s: float
    e2e_s: float
    tokens_per_s: float  # output tokens/s of one replica: batch x output / e2e
    decode_tokens_per_s: float  # batch / TPOT (a decode-only replica)
    memory_per_device_bytes: float
    max_batch_memory: int
    limit: str  # what stops a larger batch: "memory", "TTFT SLO", "TPOT SLO", "TTFT and TPOT SLO", "batch cap"
    replicas: int
    total_devices: int
    price_usd_per_device_hour: float
    usd_per_hour: float  # the whole fleet (replicas x devices x price)
    usd_per_million_output_tokens: float  # fleet USD per hour over the delivered output tokens


@dataclass(frozen=True)
class HardwareSummary:
    """What the search found on one hardware profile."""

    hardware: str
    candidates: int  # deployments enumerated (layouts x formats)
    screened: int  # that fit their weights and pass the SLOs at some batch of the grid (screen)
    evaluated: int  # costed exactly
    feasible: int  # of those evaluated, meeting the SLOs
    reasons: dict  # reason -> count, for candidates without a plan
    fastest_ttft_s: float | None  # batch 1, over the candidates whose weights fit
    fastest_tpot_s: float | None  # first decode step at batch 1 (a lower bound of its mean TPOT)
    price_usd_per_device_hour: float
    price_provenance: str


@dataclass(frozen=True)
class Plan:
    """The ranked deployments (``rows``, cheapest first) and what was searched."""

    model: str
    input_len: int
    output_len: int
    tpot_slo_s: float | None
    ttft_slo_s: float | None
    target_tokens_per_s: float | None
    users: int | None
    max_devices: int
    pp: tuple
    weight_dtypes: dict  # hardware -> the weight formats searched
    kv_dtypes: tuple
    rows: list
    hardware: list  # HardwareSummary per profile
    complete: bool  # every screened candidate was costed (no bound cut the search)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def device_counts(max_devices: int) -> list[int]:
    """Devices per replica the planner tries: powers of two up to ``max_devices``."""
    out, n = [], 1
    while n <= max_devices:
        out.append(n)
        n *= 2
    return out


def _weight_choices(spec: ModelSpec, hw: HardwareProfile, weight_dtypes) -> list:
    if weight_dtypes is not None:
        return list(weight_dtypes)
    wf, _ = weight_formats(spec, hw, None)
    out = [None]
    try:
        hw.peak("fp8")
        if wf.compute != "fp8":
            out.append("fp8")
    except CostsimError:
        pass
    return out


# request fields whose check does not depend on the layout searched: a bad value is the
# caller's error, raised, not a layout counted invalid (``--prefix-hit 1.5`` once read "no layout fits")
REQUEST_FIELDS = ("prefix_hit", "mtp_acceptance", "mtp_depth", "deepep_max_tokens", "two_batch_overlap", "mla_form",
                  "block_size", "redundant_experts", "gpu_memory_utilization")


def candidates(spec: ModelSpec, hw: HardwareProfile, max_devices: int, weight_dtypes=None,
               kv_dtypes=("bf16", "fp8"), pp=(1, 2, 4), context: int = 0, mla_form: str = "auto",
               base: LayoutRequest | None = None) -> tuple[list[Deployment], Counter]:
    """The deployments the planner searches on ``hw`` (see the module docstring) whose weights
    fit, and a count of the others by reason ("layout invalid", "format unsupported", "weights
    do not fit"). Deduplicated by layout and resolved formats. ``base``: the other fields of
    every request (serving modes: MTP / draft model, prefix hit, redundant experts, EP kernel,
    two-batch overlap, DeepEP tokens, imbalance, ...; its devices, TP, EP, PP and formats are
    the search's); None: the ``LayoutRequest`` defaults."""
    out, seen, reasons = [], set(), Counter()
    base = LayoutRequest() if base is None else base
    moe = isinstance(spec.ffn, MoEFFN)
    for n in device_counts(max_devices):
        for p in pp:
            if n % p or p > spec.num_hidden_layers:
                continue
            stage = n // p
            ep = default_ep(spec, stage, base.redundant_experts)
            tps = [t for t in valid_tp(spec, stage) if t <= hw.devices_per_node]
            if not moe:
                tps = [t for t in tps if t == stage]
            for t in tps:
                for w in _weight_choices(spec, hw, weight_dtypes):
                    for k in kv_dtypes:
                        req = replace(base, devices=n, tp=t, ep=ep, pp=p, weight_dtype=w, kv_dtype=k, mla_form=mla_form)
                        try:
                            dep = resolve_deployment(spec, hw, req, 1, context)
                        except FieldError as e:
                            if e.field in REQUEST_FIELDS:  # wrong at every layout: say so, once
                                raise
                            reasons["format unsupported" if e.field in ("weight_dtype", "kv_dtype")
                                    else "layout invalid"] += 1
                            continue
                        admit(spec, hw, dep, (dep.devices, dep.tp, dep.ep, dep.pp), seen, out, reasons)
    return out, reasons


def admit(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, layout_key: tuple, seen: set, out: list,
          reasons: Counter) -> None:
    """Append ``dep`` to ``out`` unless its layout and formats were seen already, or its weights
    do not fit in usable memory (counted in ``reasons``)."""
    key = (*layout_key, dep.weights_name, dep.kv_format.name)
    if key in seen:
        return
    seen.add(key)
    if weight_bytes_per_device(spec, dep) > hw.memory_capacity.value * dep.gpu_memory_utilization:
        reasons["weights do not fit"] += 1
        return
    out.append(dep)


def pp_problem(spec: ModelSpec, pp: int, max_devices: int) -> str | None:
    """Why PP degree ``pp`` gives ``candidates`` no layout at all (it exceeds the layers, or
    divides none of the device counts searched, ``device_counts``), else None."""
    if pp > spec.num_hidden_layers:
        return f"PP {pp} exceeds the {spec.num_hidden_layers} layers of {spec.name}"
    if not any(n % pp == 0 for n in device_counts(max_devices)):
        return (f"PP {pp} divides none of the device counts searched (powers of two up to --max-devices "
                f"{max_devices}); give a power of two <= {max_devices}")
    return None


def _ok(ttft, tpot, ttft_slo, tpot_slo):
    ok = np.ones(np.shape(ttft), dtype=bool)
    if ttft_slo is not None:
        ok &= np.asarray(ttft) <= ttft_slo
    if tpot_slo is not None:
        ok &= np.asarray(tpot) <= tpot_slo
    return ok


@dataclass
class _Screen:
    dep: Deployment
    grid: np.ndarray
    last_ok: int  # index into grid of the largest batch passing the screen
    upper_tokens_per_s: float  # bound on the rate at any batch meeting the SLOs
    max_batch: int


def _screen(spec, hw, dep, input_len, output_len, ttft_slo, tpot_slo):
    """(``_Screen`` or None, reason, TTFT at batch 1, first-step TPOT at batch 1)."""
    ctx = input_len + output_len
    mem = memory_report(spec, hw, dep, dep.dp, ctx)
    max_b = int(min(float(mem.max_batch), MAX_BATCH))
    if max_b < 1:
        return None, "memory", None, None
    grid = np.unique(np.concatenate([np.round(np.geomspace(1, max_b, GRID_POINTS)), [max_b]]))
    ttft = np.asarray(prefill(spec, hw, dep, grid, input_len).time_s, dtype=float)
    first = np.asarray(decode(spec, hw, dep, grid, input_len).time_s, dtype=float)
    ok = _ok(ttft, first, ttft_slo, tpot_slo)
    if not ok.any():
        reason = "TTFT SLO" if ttft_slo is not None and ttft[0] > ttft_slo else "TPOT SLO"
        return None, reason, float(ttft[0]), float(first[0])
    last = int(np.nonzero(ok)[0][-1])
    steps = max(output_len - 1, 0)
    # any feasible batch b lies in [grid[j], grid[j + 1]) with grid[j] passing the screen
    # (TTFT and the first step do not fall with the batch): rate <= grid[j + 1] x out / (TTFT(grid[j])
    # + steps x first(grid[j]))
    top = np.append(grid[1:], grid[-1])
    bound = np.where(ok, np.minimum(top, max_b) * output_len / (ttft + steps * first), 0.0)
    return _Screen(dep, grid, last, float(np.max(bound)), max_b), "", float(ttft[0]), float(first[0])


def _largest_batch(spec, hw, dep, grid, last_ok, input_len, output_len, ttft_slo, tpot_slo):
    """The largest integer batch meeting memory and the SLOs, by ``serve_grid`` on the grid up to
    the first batch after the screen's last, then on integers between the last passing and the
    first failing batch. Returns (batch, its ServingGrid index data, limit) or (None, reason)."""

    def run(b):
        g = serve_grid(spec, hw, dep, b, input_len, output_len, bounds=False)
        sh = np.shape(b)
        fits = np.broadcast_to(g.fits, sh)
        ttft, tpot = np.broadcast_to(g.ttft_s, sh), np.broadcast_to(g.tpot_s, sh)
        return g, fits & _ok(ttft, tpot, ttft_slo, tpot_slo), fits, ttft, tpot

    b = grid[: last_ok + 2]
    g, ok, fits, ttft, tpot = run(b)
    if not ok.any():
        return None, ("memory" if not fits[0] else "TTFT SLO" if ttft_slo is not None and ttft[0] > ttft_slo
                      else "TPOT SLO")
    i = int(np.nonzero(ok)[0][-1])
    best = (g, b, i)
    if i + 1 < len(b):
        lo, hi = int(b[i]), int(b[i + 1])
        fail = (fits[i + 1], ttft[i + 1], tpot[i + 1])
        while hi - lo > 1:
            pts = np.unique(np.round(np.linspace(lo, hi, min(hi - lo + 1, 257))))
            g2, ok2, fits2, ttft2, tpot2 = run(pts)
            j = int(np.nonzero(ok2)[0][-1]) if ok2.any() else 0  # pts[0] = lo passed before
            if ok2[j]:
                best = (g2, pts, j)
            lo, hi = int(pts[j]), int(pts[j + 1])
            fail = (fits2[j + 1], ttft2[j + 1], tpot2[j + 1])
        f_fits, f_ttft, f_tpot = fail
        if not f_fits:
            limit = "memory"
        else:
            slo = [name for name, v, s in (("TTFT", f_ttft, ttft_slo), ("TPOT", f_tpot, tpot_slo))
                   if s is not None and v > s]
            limit = " and ".join(slo) + " SLO"
    else:
        limit = "batch cap" if int(b[i]) >= MAX_BATCH else "memory"
    return best, limit


def _money(price, devices, batch, tps, e2e_s, output_len, target, users):
    replica_usd_h = devices * price
    if target is not None:
        replicas, delivered = math.ceil(target / tps), target
    elif users is not None:
        replicas, delivered = math.ceil(users / batch), users * output_len / e2e_s
    else:
        replicas, delivered = 1, tps
    fleet = replicas * replica_usd_h
    return replicas, fleet, fleet / SECONDS_PER_HOUR / delivered * 1e6


def _check(name, v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
        raise FieldError(name, v, "must be a finite number > 0")
    return v


def plan(spec: ModelSpec, hardware, input_len: int, output_len: int, *, tpot_slo_s: float | None = None,
         ttft_slo_s: float | None = None, target_tokens_per_s: float | None = None, users: int | None = None,
         max_devices: int = 64, weight_dtypes=None, kv_dtypes=("bf16", "fp8"), pp=(1, 2, 4), top: int | None = 10,
         mla_form: str = "auto", base: LayoutRequest | None = None) -> Plan:
    """The cheapest deployments of ``spec`` on the profiles ``hardware`` (a list) serving
    ``input_len`` -> ``output_len`` tokens per request under the SLOs (seconds), ranked by USD
    per 1e6 output tokens (module docstring). ``top``: how many plans to find (None: all).
    ``base``: the request fields the search does not choose (``candidates``).

    Every profile needs ``price_per_device_hour``. Raises FieldError naming a bad argument
    (``input_len``, ``tpot_slo_s``, ``max_devices``, ``price``, ...) and CostsimError, in one
    line, when no deployment on any profile meets the SLOs.
    """
    check_types(spec)
    hardware = list(hardware)
    if not hardware:
        raise CostsimError("hardware: expected at least one HardwareProfile")
    for hw in hardware:
        check_types(hw=hw)
        if hw.price_per_device_hour is None:
            raise FieldError("price", hw.name, f"hardware {hw.name} has no price_per_device_hour: give one "
                                               "(USD per device-hour)")
    for name, v, lo in (("input_len", input_len, 1), ("output_len", output_len, 1), ("max_devices", max_devices, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise FieldError(name, v, f"must be an integer >= {lo}")
    if max_devices > MAX_DEVICES:
        raise FieldError("max_devices", max_devices, f"must be at most {MAX_DEVICES:,}")
    if input_len + output_len > 2**24:
        raise FieldError("input_len", input_len, "input + output must be at most 2^24 tokens")
    _check("tpot_slo_s", tpot_slo_s), _check("ttft_slo_s", ttft_slo_s), _check("target_tokens_per_s", target_tokens_per_s)
    if users is not None and (isinstance(users, bool) or not isinstance(users, (int, np.integer)) or users < 1):
        raise FieldError("users", users, "must be an integer >= 1")
    if users is not None and target_tokens_per_s is not None:
        raise FieldError("users", users, "give a target rate or a number of users, not both")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise FieldError("top", top, "must be an integer >= 1")
    pp = tuple(pp)
    if not pp or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in pp):
        raise FieldError("pp", pp, "must be integers >= 1")
    problems = [pp_problem(spec, p, max_devices) for p in pp]
    if all(problems):
        raise FieldError("pp", ",".join(map(str, pp)), "no layout to search: " + "; ".join(problems))

    screens, summaries, searched = [], {}, {}
    for hw in hardware:
        price = hw.price_per_device_hour.value
        deps, reasons = candidates(spec, hw, max_devices, weight_dtypes, kv_dtypes, pp, input_len + output_len, mla_form,
                                   base)
        searched[hw.name] = sorted({d.weights_name for d in deps}) or \
            [str(w or "checkpoint") for w in _weight_choices(spec, hw, weight_dtypes)]
        n_all = len(deps) + sum(reasons.values())
        fastest_ttft = fastest_tpot = None
        n_screened = 0
        for dep in deps:
            s, reason, t1, d1 = _screen(spec, hw, dep, input_len, output_len, ttft_slo_s, tpot_slo_s)
            if t1 is not None:
                fastest_ttft = t1 if fastest_ttft is None else min(fastest_ttft, t1)
                fastest_tpot = d1 if fastest_tpot is None else min(fastest_tpot, d1)
            if s is None:
                reasons[reason] += 1
                continue
            n_screened += 1
            _, _, lower = _money(price, dep.devices, s.grid[s.last_ok], s.upper_tokens_per_s, 1.0, output_len,
                                 target_tokens_per_s, None)
            if users is not None:  # cost >= devices x price / rate (see the module docstring)
                lower = dep.devices * price / SECONDS_PER_HOUR / s.upper_tokens_per_s * 1e6
            screens.append((lower, hw, s))
        summaries[hw.name] = dict(candidates=n_all, screened=n_screened, reasons=reasons, fastest_ttft_s=fastest_ttft,
                                  fastest_tpot_s=fastest_tpot, evaluated=0, feasible=0, price=price,
                                  provenance=hw.price_per_device_hour.provenance)

    order = {hw.name: i for i, hw in enumerate(hardware)}
    screens.sort(key=lambda x: (x[0], x[2].dep.devices, order[x[1].name]))
    rows: list[PlanRow] = []
    complete = True
    for lower, hw, s in screens:
        if top is not None and len(rows) >= top:
            kth = sorted(r.usd_per_million_output_tokens for r in rows)[top - 1]
            if lower > kth:
                complete = False
                break
        summ = summaries[hw.name]
        summ["evaluated"] += 1
        dep = s.dep
        best, limit = _largest_batch(spec, hw, dep, s.grid, s.last_ok, input_len, output_len, ttft_slo_s, tpot_slo_s)
        if best is None:
            summ["reasons"][limit] += 1
            continue
        g, b, i = best
        sh = np.shape(b)

        def at(x):
            return float(np.broadcast_to(x, sh)[i])

        if users is not None and users < int(b[i]) * math.ceil(users / int(b[i])):
            # fewer users than the replicas' largest batches: each replica runs its share of
            # them, ceil(users / replicas), at that batch's (shorter) TTFT and TPOT
            share = math.ceil(users / math.ceil(users / int(b[i])))
            b, i, g = np.array([float(share)]), 0, serve_grid(spec, hw, dep, np.array([float(share)]), input_len,
                                                              output_len, bounds=False)
            sh, limit = np.shape(b), "users"
        batch, e2e, tps = int(b[i]), at(g.e2e_s), at(g.combined_tokens_per_s)
        price = summ["price"]
        replicas, fleet, usd_m = _money(price, dep.devices, batch, tps, e2e, output_len, target_tokens_per_s, users)
        summ["feasible"] += 1
        rows.append(PlanRow(
            hardware=hw.name, devices=dep.devices, tp=dep.tp, ep=dep.ep, pp=dep.pp, dp=dep.dp,
            weight_dtype=dep.weights_name, kv_dtype=dep.kv_format.name, batch=batch, ttft_s=at(g.ttft_s),
            tpot_s=at(g.tpot_s), e2e_s=e2e, tokens_per_s=tps, decode_tokens_per_s=at(g.decode_tokens_per_s),
            memory_per_device_bytes=at(g.memory_bytes), max_batch_memory=s.max_batch, limit=limit, replicas=replicas,
            total_devices=replicas * dep.devices, price_usd_per_device_hour=price, usd_per_hour=fleet,
            usd_per_million_output_tokens=usd_m))
    rows.sort(key=_rank(order))
    if top is not None:
        rows = rows[:top]
    hw_out = [HardwareSummary(n, v["candidates"], v["screened"], v["evaluated"], v["feasible"],
                              dict(sorted(v["reasons"].items())), v["fastest_ttft_s"], v["fastest_tpot_s"], v["price"],
                              v["provenance"])
              for n, v in summaries.items()]
    result = Plan(spec.name, int(input_len), int(output_len), tpot_slo_s, ttft_slo_s, target_tokens_per_s, users,
                  int(max_devices), pp, searched, tuple(kv_dtypes), rows, hw_out, complete)
    if not rows:
        raise CostsimError(infeasible_message(result))
    return result


def _rank(order):
    # equal cost: fewer devices, then more memory left per device (a narrower KV format that costs nothing)
    return lambda r: (r.usd_per_million_output_tokens, r.total_devices, r.memory_per_device_bytes, order[r.hardware],
                      r.devices, r.tp, r.ep, r.pp, r.weight_dtype, r.kv_dtype)


def slo_text(tpot_slo_s, ttft_slo_s) -> str:
    parts = ([f"TTFT <= {ttft_slo_s * 1e3:g} ms"] if ttft_slo_s is not None else []) + \
            ([f"TPOT <= {tpot_slo_s * 1e3:g} ms"] if tpot_slo_s is not None else [])
    return " and ".join(parts) or "no latency SLO"


def infeasible_message(p: Plan) -> str:
    """One line: no deployment meets the SLOs, and why, per hardware."""
    why = []
    for h in p.hardware:
        r = h.reasons
        if not h.candidates:
            why.append(f"{h.hardware}: no layout to search with PP {', '.join(map(str, p.pp))} "
                       f"within {_devices(p.max_devices)} (--pp, --max-devices)")
            continue
        if h.candidates and r.get("weights do not fit", 0) + r.get("layout invalid", 0) \
                + r.get("format unsupported", 0) == h.candidates:
            why.append(f"{h.hardware}: the weights do not fit on up to {_devices(p.max_devices)} (--max-devices)")
            continue
        counts = ", ".join(f"{n} {k}" for k, n in sorted(r.items(), key=lambda kv: -kv[1]))
        fast = []
        if h.fastest_ttft_s is not None and p.ttft_slo_s is not None:
            fast.append(f"fastest TTFT {h.fastest_ttft_s * 1e3:.4g} ms")
        if h.fastest_tpot_s is not None and p.tpot_slo_s is not None:
            fast.append(f"fastest TPOT {h.fastest_tpot_s * 1e3:.4g} ms")
        why.append(f"{h.hardware}: {counts}" + (f" ({', '.join(fast)} at batch 1)" if fast else ""))
    meets = ("fits in memory" if p.tpot_slo_s is None and p.ttft_slo_s is None
             else f"meets {slo_text(p.tpot_slo_s, p.ttft_slo_s)}")
    return (f"no deployment of {p.model} {meets} for {p.input_len} -> "
            f"{p.output_len} tokens within {_devices(p.max_devices)} per replica: " + "; ".join(why))


def _devices(n: int) -> str:
    return f"{n} device" + ("s" if n != 1 else "")
