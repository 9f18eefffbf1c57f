"""Serving under a request rate: continuous (in-flight) batching on one pool, in steady state.

Requests arrive at ``rate`` per second (Poisson), each with ``input_len`` prompt tokens and
``output_len`` generated tokens. The pool is one replica (``dep``) scheduling as vLLM does
without chunked prefill: a waiting prompt is prefilled first, in a step of its own, then joins
the running batch, which advances one token per sequence per decode step.

- Prefill: the dp attention ranks prefill dp prompts at once, p = ``prefill(dp, I)``
  seconds, so its busy share is rho = rate x p / dp (the prefill utilisation).
- Decode: with B running sequences a step takes d(B) = ``decode(B, L)`` at the mean context
  L = I + (O - 1) / 2, and gets 1 - rho of the time. Output tokens/s = B (1 - rho) / d(B) must
  equal rate x O (Little's law: B = rate x O x TPOT); B is the smallest integer batch whose
  decode capacity meets that (B / d(B) grows with B).
- TPOT = d(B) / (1 - rho): decode steps stretched by the prefills between them.
- TTFT = p + M/D/1 queueing for the prefill server, rho p / (2 (1 - rho))
  (Pollaczek-Khinchine, deterministic service), + half a decode step (an arrival waits for the
  step in flight). MTP / draft speculation enter through ``decode``'s TPOT.
- Saturated when no batch up to the memory limit (KV at I + O tokens) keeps up, or rho >= 1.
  The largest sustainable rate is 1 / (O d(Bmax) / Bmax + p / dp) (Bmax: the memory limit).

With a token budget per step (Sarathi-Serve chunked prefill) see ``at_rate_chunked`` and
``mixed_step``: prefill chunks ride in the decode steps instead of stalling them.

Units: requests/s, seconds, tokens/s (per replica = all ``dep.devices``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.memory import memory_report
from costsim.simulator.operators import step_operators
from costsim.simulator.roofline import StepTiming, time_step
from costsim.simulator.serving import decode, prefill
from costsim.simulator.types import OpKind, StepShape
from costsim.specs import HardwareProfile, ModelSpec


@dataclass(frozen=True)
class RatePoint:
    rate: float  # requests/s offered
    saturated: bool  # True: the pool cannot keep up (queues grow); the timing fields are None
    batch: int | None  # mean running sequences (decode batch)
    ttft_s: float | None
    tpot_s: float | None
    e2e_s: float | None  # TTFT + (O - 1) TPOT
    prefill_share: float  # rho: share of the time spent prefilling (may be >= 1 when saturated)
    output_tokens_per_s: float | None  # = rate x O when not saturated
    reason: str = ""  # why saturated


def mixed_operators(decode_batch, context, chunk, chunk_context, chunk_logits=1.0):
    """An ``operators`` callable for ``roofline.time_step``: ONE Sarathi-Serve mixed step
    (Agrawal et al., OSDI 2024, arXiv 2403.02310, §4.2 "stall-free batching"): ``decode_batch``
    = B sequences each decoding one token after ``context`` = L cached tokens, plus a prefill
    chunk of ``chunk`` = c tokens of one prompt after ``chunk_context`` = k tokens already in its
    KV cache (prefilled or a prefix hit), with ``chunk_logits`` logit rows (1 when the chunk ends
    the prompt, else 0; a mean fraction is allowed).

    Built from ``step_operators`` three times: the decode part StepShape(B, 1, L, 1), the chunk
    part StepShape(1, c, k, chunk_logits), and the fused batch StepShape(1, B + c, 0, B +
    chunk_logits). An operator whose FLOPs are additive over the parts depends on the token
    count only (projections, FFN / experts, norms, embedding, LM head, collectives): it is taken
    from the fused batch, so its weights are read ONCE for B + c tokens. The attention cores and
    any operator whose FLOPs depend on the context (MLA's naive decompression, the DSA indexer)
    are kept per part, each over its own context (the chunk's with the name suffix ``.chunk``);
    an empty part (B = 0 or c = 0) has none. The ``step`` that ``time_step`` passes is ignored
    (so two-batch overlap does not apply). Scalars only; tokens per replica with dp = 1."""
    B, c = float(decode_batch), float(chunk)

    def ops(spec, dep, step, *, form=None, include_comm=True):
        parts = []
        if B > 0:
            parts.append(("", step_operators(spec, dep, StepShape(B, 1.0, float(context), 1.0), form=form,
                                             include_comm=include_comm)))
        if c > 0:
            parts.append((".chunk", step_operators(spec, dep, StepShape(1.0, c, float(chunk_context), float(chunk_logits)),
                                                   form=form, include_comm=include_comm)))
        fused = step_operators(spec, dep, StepShape(1.0, B + c, 0.0, B * 1.0 + float(chunk_logits) * (c > 0)),
                               form=form, include_comm=include_comm)
        out = []
        for i, op in enumerate(fused):
            mine = [(sfx, p[i]) for sfx, p in parts]
            additive = all(o.name == op.name for _, o in mine) and np.allclose(
                np.asarray(op.flops, dtype=float), sum(float(np.asarray(o.flops)) for _, o in mine), rtol=1e-12, atol=0)
            if op.kind is OpKind.ATTENTION or not additive:
                out += [o if not sfx else replace(o, name=o.name + sfx) for sfx, o in mine]
            else:
                out.append(op)
        return out

    return ops


def mixed_step(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, decode_batch, context, chunk,
               chunk_context, chunk_logits=1.0) -> StepTiming:
    """Time (``time_s``, seconds, per replica, one pipeline stage) of ONE mixed step
    (``mixed_operators``). With ``chunk`` = 0 it is the decode step of ``decode_batch``
    sequences; with ``decode_batch`` = 0 the prefill step of the chunk."""
    return time_step(spec, hw, dep.with_(two_batch_overlap=False), StepShape(decode_batch, 1, context, 1),
                     operators=mixed_operators(decode_batch, context, chunk, chunk_context, chunk_logits))


def max_rate(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, input_len: int, output_len: int) -> float:
    """The largest sustainable request rate (requests/s): 1 / (O d(Bmax) / Bmax + p / dp)."""
    p = float(prefill(spec, hw, dep, dep.dp, input_len).time_s)
    bmax = _bmax(spec, hw, dep, input_len, output_len)
    if bmax < 1:
        return 0.0
    d = float(decode(spec, hw, dep, bmax, _context(input_len, output_len)).time_s)
    return 1.0 / (max(output_len, 1) * d / bmax + p / dep.dp) if output_len else dep.dp / p


def _context(i, o) -> float:
    return i + max(o - 1, 0) / 2


def _bmax(spec, hw, dep, i, o) -> int:
    return int(memory_report(spec, hw, dep, 1, i + o).max_batch)


def _check(rate, input_len, output_len) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0 < rate < float("inf")):
        raise FieldError("rate", rate, "must be a finite number of requests/s > 0")
    for name, v in (("input_len", input_len), ("output_len", output_len)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise FieldError(name, v, "must be an integer >= 1")


def at_rate(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, rate: float, input_len: int,
            output_len: int) -> RatePoint:
    """The steady state at ``rate`` requests/s (module docstring). Raises FieldError for a
    rate that is not a finite number > 0 or lengths below 1."""
    _check(rate, input_len, output_len)
    I, O = int(input_len), int(output_len)
    p = float(prefill(spec, hw, dep, dep.dp, I).time_s)
    rho = rate * p / dep.dp
    if rho >= 1:
        return RatePoint(rate, True, None, None, None, None, rho, None,
                         f"prefill needs {rho:.0%} of the time")
    L = _context(I, O)
    bmax = _bmax(spec, hw, dep, I, O)
    need = rate * O  # output tokens/s
    if bmax < 1:
        return RatePoint(rate, True, None, None, None, None, rho, None, "not one sequence fits in memory")

    def keeps_up(b: int) -> bool:
        return b * (1 - rho) / float(decode(spec, hw, dep, b, L).time_s) >= need

    if not keeps_up(bmax):
        return RatePoint(rate, True, None, None, None, None, rho, None,
                         f"{bmax} sequences (memory) decode < {need:,.0f} tokens/s")
    lo, hi = 1, bmax
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if keeps_up(mid) else (mid + 1, hi)
    d = float(decode(spec, hw, dep, lo, L).time_s)
    tpot = d / (1 - rho)
    ttft = p + rho * p / (2 * (1 - rho)) + d / 2
    return RatePoint(rate, False, lo, ttft, tpot, ttft + (O - 1) * tpot, rho, need)


def rate_records(spec: ModelSpec, hw: HardwareProfile, request, rates, input_len: int, output_len: int,
                 chunked_prefill: int | None = None):
    """(head, points) for ``costsim rate``: the layout of ``request`` (a ``LayoutRequest``,
    resolved at input + output tokens) with the largest sustainable rate and the memory-limited
    batch, and one ``at_rate`` dict per rate, in increasing order (``at_rate_chunked`` with a
    ``chunked_prefill`` token budget; the head's max_rate is then None: not searched). Raises
    CostsimError when the weights do not fit."""
    from costsim.simulator.layout import resolve_deployment
    from costsim.simulator.memory import require_fit

    dep = resolve_deployment(spec, hw, request, 1, input_len + output_len)
    require_fit(spec, hw, dep)
    head = dict(model=spec.name, hardware=hw.name, devices=dep.devices, tp=dep.tp, ep=dep.ep, pp=dep.pp, dp=dep.dp,
                weight_dtype=dep.weights_name, kv_dtype=dep.kv_format.name, input=input_len, output=output_len,
                max_rate=None if chunked_prefill else max_rate(spec, hw, dep, input_len, output_len),
                max_batch=_bmax(spec, hw, dep, input_len, output_len), chunked_prefill=chunked_prefill)
    if chunked_prefill:
        pts = [at_rate_chunked(spec, hw, dep, r, input_len, output_len, chunked_prefill) for r in sorted(rates)]
    else:
        pts = [at_rate(spec, hw, dep, r, input_len, output_len) for r in sorted(rates)]
    return head, [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in vars(p).items()} for p in pts]


def at_rate_chunked(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, rate: float, input_len: int,
                    output_len: int, budget: int) -> RatePoint:
    """The steady state at ``rate`` requests/s with Sarathi-Serve chunked prefill (Agrawal et
    al., OSDI 2024, §4; vLLM ``--enable-chunked-prefill --max-num-batched-tokens``, SGLang
    ``--chunked-prefill-size``): every step has a budget of ``budget`` = T tokens; the B running
    sequences decode one token each and up to T - B tokens of waiting prompts ride along.

    - Prefill work: P = I - (prefix-cache hit) tokens per request, rate x P tokens/s. In a step
      of time s the chunk processed is c = min(T - B, rate x P x s(c)) (a fixed point; c < T - B
      when no prompt is waiting); rho = c / (T - B) is the budget's prefill share.
    - Step time s = ``mixed_step``(B decode tokens at the mean context L = I + (O - 1) / 2, c
      chunk tokens attending at the mean chunk position k + (P - c) / 2, c / P logit rows: the
      mean share of chunks that end a prompt). Assumptions: mean prompt progress (one chunk per
      step, of the mean size) and chunk attention at the mean position.
    - B: the smallest batch with B / s >= rate x O (Little's law, as ``at_rate``). TPOT = s: no
      decode stall from prefill.
    - TTFT = S = ceil(P / (T - B)) steps of the full spare budget (s at c = T - B: the prompt's
      own chunks, each charged a full step, the last one too) + M/D/1
      queueing rho S / (2 (1 - rho)) for that service time S + half a step (the step in flight).
    - Saturated when rho >= 1 (the spare budget cannot prefill rate x P tokens/s), B reaches T,
      or no batch up to the memory limit keeps up.
    Not modelled: pp > 1, dp > 1, MTP / draft speculation, two-batch overlap (FieldError names
    ``chunked_prefill``). Raises FieldError for a budget that is not an integer >= 1."""
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise FieldError("chunked_prefill", budget, "must be an integer token budget per step >= 1")
    for bad, why in ((dep.pp > 1, "pp > 1"), (dep.dp > 1, "dp > 1"), (bool(dep.mtp_depth), "MTP"),
                     (dep.draft_model is not None, "a draft model"), (dep.two_batch_overlap, "two-batch overlap")):
        if bad:
            raise FieldError("chunked_prefill", budget, f"is not modelled with {why}")
    _check(rate, input_len, output_len)
    I, O, T = int(input_len), int(output_len), int(budget)
    k = float(dep.cached_prefix(I))
    P = I - k
    L = _context(I, O)
    need = rate * O
    bmax = min(_bmax(spec, hw, dep, I, O), T - 1)

    def state(b: int):
        """(step seconds, chunk tokens c, rho, step seconds at the full spare budget) at batch b."""
        spare = float(T - b)

        def s_of(c):
            return float(mixed_step(spec, hw, dep, b, L, c, k + max(P - c, 0.0) / 2, c / P).time_s)

        s_full = s_of(spare)
        if rate * P * s_full >= spare:
            return s_full, spare, rate * P * s_full / spare, s_full
        c = rate * P * s_full
        for _ in range(30):  # s grows slowly with c: the iteration contracts
            c_new = min(spare, rate * P * s_of(c))
            if abs(c_new - c) <= 1e-9 * spare:
                break
            c = c_new
        return s_of(c), c, c / spare, s_full

    if bmax < 1:
        why = "not one sequence fits in memory" if T > 1 else "a budget of 1 token leaves no room for a prompt"
        return RatePoint(rate, True, None, None, None, None, float("inf"), None, why)

    def keeps_up(b: int) -> bool:
        s, _, rho, _ = state(b)
        return rho < 1 and b / s >= need

    if not keeps_up(bmax):
        s, _, rho, _ = state(bmax)
        return RatePoint(rate, True, None, None, None, None, rho, None,
                         f"prefill needs {rho:.0%} of the spare budget" if rho >= 1 else
                         f"{bmax} sequences ({'memory' if bmax < T - 1 else 'budget'}) decode < {need:,.0f} tokens/s")
    lo, hi = 1, bmax
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if keeps_up(mid) else (mid + 1, hi)
    s, c, rho, s_full = state(lo)
    service = float(np.ceil(P / (T - lo))) * s_full
    ttft = service + rho * service / (2 * (1 - rho)) + s / 2
    return RatePoint(rate, False, lo, ttft, s, ttft + (O - 1) * s, rho, need)
