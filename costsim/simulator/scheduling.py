"""Chunked prefill (Sarathi-Serve) under a request rate: mixed steps of decodes and a prompt
chunk within a token budget, their steady state and the largest sustainable rate.

``mixed_operators`` / ``mixed_step``: ONE step of B decoding sequences plus a chunk of prompt
tokens, weights read once (Agrawal et al., OSDI 2024, arXiv 2403.02310, §4.2), with DP
attention, two-batch overlap, pipeline parallelism, MTP and a draft model.
``at_rate_chunked`` / ``max_rate_chunked``: continuous batching at a token budget per step per
DP rank (vLLM ``--max-num-batched-tokens``, SGLang ``--chunked-prefill-size``), in the records
of ``rate.RatePoint``; ``rate`` holds the prefill-first scheduler without a budget.
``rate_records``: ``costsim rate``'s records, either scheduler.

Units: requests/s, seconds, tokens (per DP rank where stated), tokens/s per replica.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.operators import mtp_operators, step_operators
from costsim.simulator.rate import RatePoint, _bmax, _check, _context, at_rate, max_rate
from costsim.simulator.roofline import StepTiming, time_step
from costsim.simulator.serving import microbatches, mtp_tokens_per_step
from costsim.simulator.types import OpKind, StepShape
from costsim.specs import HardwareProfile, ModelSpec


def mixed_operators(decode_batch, context, chunk, chunk_context, chunk_logits=1.0, verify=1, builder=step_operators,
                    prompt=None):
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
    (so two-batch overlap does not apply). Scalars only.

    B and c are per attention DP rank: with DP attention (``dep.dp`` ranks, DeepSeek-V3 §3.4;
    SGLang ``--enable-dp-attention``) each rank runs its own B decodes and its own chunk, so the
    parts are StepShape(dp B, 1, L, 1) and StepShape(dp, c, k, ...) and the fused batch
    StepShape(dp, B + c, 0, B + chunk_logits): one sequence of B + c tokens per rank
    (``Deployment.seqs_per_rank``), while the routed experts and the EP all-to-all of a MoE
    layer see the dp (B + c) tokens of all ranks (``operators.ffn_operators``). Every rank is
    assumed to carry the same (B, c).

    ``prompt`` = P tokens per prompt (None: unbounded): a chunk longer than one prompt (a budget
    that holds several whole ones) is n = floor(c / P) whole prompts, StepShape(dp n, P, k, ...),
    and the start of the next, c - n P tokens (name suffix ``.chunk_next``), each attending
    within itself, not one sequence of c tokens (whose self-attention grows as c squared: a
    10M-token budget once saturated at 1 request/s); the logit rows split in proportion.

    ``verify`` = V tokens per decoding sequence (MTP's verify pass: D + 1, logits for each; the
    fused batch then holds B V + c tokens); ``builder``: the operators of one pass
    (``step_operators``, or ``operators.mtp_operators`` for the MTP module's pass over the same
    decodes and chunk)."""
    # whole sequences: a micro-batch (PP, two-batch overlap) holds ceil of its share of the
    # decodes, as every step does (``Deployment.seqs_per_rank``), in the parts and the fused batch
    # alike, so that additive operators stay fused (their weights read once)
    B, c, V = float(np.ceil(float(decode_batch) - 1e-9)) if decode_batch > 0 else 0.0, float(chunk), float(verify)
    # a chunk of several prompts: n whole ones of P tokens and the start of the next (rem tokens)
    n, rem = (float(np.floor(c / float(prompt) + 1e-9)), 0.0) if prompt and c > prompt else (0.0, c)
    rem = c - n * float(prompt) if n else rem
    rem = rem if rem > 1e-9 * c else 0.0

    def ops(spec, dep, step, *, form=None, include_comm=True):
        dp = float(dep.dp)
        parts = []
        if B > 0:
            parts.append(("", builder(spec, dep, StepShape(dp * B, V, float(context), V), form=form,
                                      include_comm=include_comm)))
        if n:
            parts.append((".chunk", builder(spec, dep, StepShape(dp * n, float(prompt), float(chunk_context),
                                                                 float(chunk_logits) * float(prompt) / c),
                                            form=form, include_comm=include_comm)))
        if rem:
            parts.append((".chunk" if not n else ".chunk_next",
                          builder(spec, dep, StepShape(dp, rem, float(chunk_context), float(chunk_logits) * rem / c),
                                  form=form, include_comm=include_comm)))
        fused = builder(spec, dep, StepShape(dp, B * V + c, 0.0, B * V + float(chunk_logits) * (c > 0)),
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
               chunk_context, chunk_logits=1.0, prompt=None) -> StepTiming:
    """Time (``time_s``, seconds, on the busiest device; with pp > 1 the pp stage times of a step) of ONE mixed step
    (``mixed_operators``): ``decode_batch`` sequences and a ``chunk`` of prompt tokens on each
    of the ``dep.dp`` attention DP ranks. With ``chunk`` = 0 it is the decode step of
    dp x ``decode_batch`` sequences (``serving.decode``); with ``decode_batch`` = 0 the
    prefill step of dp chunks, one per rank.

    With MTP (``dep.mtp_depth`` = D >= 1, as ``serving.decode``): the decodes verify D + 1
    tokens each in the mixed pass, then the MTP module runs D passes: the first over the decodes
    and the chunk together (the chunk's tokens build the module's KV cache, as a prefill's do,
    ``serving.speculator_prefill_s``), the other D - 1 over the decodes alone. ``time_s``,
    ``flops`` and ``bytes_moved`` are the step's; the other fields the mixed pass's.

    With two-batch overlap (``dep.two_batch_overlap``, as ``roofline.time_step``): the step's
    tokens are split evenly into two micro-batches (half the decodes and half the chunk each;
    SGLang splits a mixed batch by tokens), one's communication overlapped with the other's
    computation: 2 x the half step with ``overlap_comm``. With pp > 1 (as ``serving.decode``):
    m = min(decodes, pp) micro-batches, each with ceil(decodes / m) sequences and chunk / m
    tokens, pp stage times per step. With a draft model (``dep.draft_model``) its D passes take
    the MTP module's place, the first over the chunk too, on ``Deployment.draft_deployment``.
    ``prompt``: tokens per prompt, as ``mixed_operators`` (a chunk of several whole prompts)."""
    if dep.two_batch_overlap:
        half = mixed_step(spec, hw, dep.with_(two_batch_overlap=False, overlap_comm=True), decode_batch / 2, context,
                          chunk / 2, chunk_context, chunk_logits / 2, prompt)
        return replace(half, time_s=2 * float(half.time_s), compute_part_s=2 * float(half.compute_part_s),
                       comm_part_s=2 * float(half.comm_part_s), flops=2 * float(half.flops),
                       bytes_moved=2 * float(half.bytes_moved), micro_batches=2)
    # pipeline parallel (as serving.decode): m = min(decodes, pp) micro-batches of 1/m of the
    # decodes and of the chunk, each through the pp stages: pp stage times per step
    m = float(microbatches(decode_batch, dep.pp)) if dep.pp > 1 and decode_batch > 0 else 1.0
    B, c, lg = decode_batch / m, chunk / m, chunk_logits / m
    D = dep.mtp_depth
    shape = StepShape(dep.dp * B, 1, context, 1)
    t = time_step(spec, hw, dep, shape, operators=mixed_operators(B, context, c, chunk_context, lg, verify=D + 1,
                                                                       prompt=prompt))
    passes = []
    if D and dep.draft_model is not None:
        # a draft model (on its own layout: the replica's devices and TP, dp_d ranks): its first
        # pass over the decodes and the chunk (the chunk builds its KV cache), then D - 1 over
        # the decodes; the same sequences and chunk tokens spread over its ranks
        dd = dep.draft_deployment()
        f = dep.dp / dd.dp
        passes = [time_step(dep.draft_model, hw, dd, shape, operators=mixed_operators(B * f, context, c * f,
                                                                                      chunk_context, lg * f,
                                                                                      prompt=prompt))]
        if D > 1 and decode_batch > 0:
            passes += [time_step(dep.draft_model, hw, dd, shape)] * (D - 1)
    elif D:
        passes = [time_step(spec, hw, dep, shape, operators=mixed_operators(B, context, c, chunk_context, lg,
                                                                            builder=mtp_operators, prompt=prompt))]
        if D > 1 and decode_batch > 0:
            passes += [time_step(spec, hw, dep, shape, operators=mtp_operators)] * (D - 1)
    if dep.pp == 1 and not D:
        return t
    # the MTP module is costed on top of the pp stage times, once per step (as serving.decode)
    return replace(t, time_s=float(t.time_s) * dep.pp + sum(float(p.time_s) for p in passes),
                   flops=float(t.flops) * m + sum(float(p.flops) for p in passes),
                   bytes_moved=float(t.bytes_moved) * m + sum(float(p.bytes_moved) for p in passes))


MAX_BUDGET = 2**24  # tokens per step: 16.8M, far beyond any engine's (vLLM / SGLang use 512-16k)


def _check_chunked(dep: Deployment, budget) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= MAX_BUDGET:
        raise FieldError("chunked_prefill", budget, f"must be an integer token budget per step, 1 to {MAX_BUDGET:,}")


def _per_decode(dep: Deployment) -> tuple[int, float]:
    """(V, E): budget tokens a decoding sequence takes per step (1 + MTP depth: its verify
    pass) and the output tokens it gains (``mtp_tokens_per_step``; 1 and 1 without MTP)."""
    return 1 + dep.mtp_depth, mtp_tokens_per_step(dep.mtp_depth, dep.mtp_acceptance)


def _chunk_step(spec, hw, dep, I, O, T):
    """(P, k, L, s) for chunked prefill: prompt tokens computed per request, the cached prefix,
    the mean decode context and s(b, c), the mixed step's seconds at b decodes and c chunk
    tokens per DP rank (chunk at its mean position, c / P logit rows)."""
    k = float(dep.cached_prefix(I))
    P = I - k
    L = _context(I, O)

    def s(b, c):
        return float(mixed_step(spec, hw, dep, b, L, c, k + max(P - c, 0.0) / 2, c / P, prompt=P).time_s)

    return P, k, L, s


def max_rate_chunked(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, input_len: int, output_len: int,
                     budget: int) -> float:
    """The largest sustainable request rate (requests/s, per replica) with chunked prefill at
    a budget of T = ``budget`` tokens per step per DP rank (``at_rate_chunked``): the supremum
    of the rates whose steady state exists; every rate below it is steady, every rate above it
    saturated.

    Per DP rank, a batch of b running sequences sustains at most R_b = c_b / (P s(b, c_b))
    requests/s with c_b = min(T - V b, b E P / O) chunk tokens per step: the steady-state
    balance rate x P = c / s of ``at_rate_chunked`` with, on the decode side, b E / s = rate x O,
    i.e. c / b = E P / O (below the crossover b0 = T O / (V O + E P) the decode binds, above it
    the spare budget); V = 1 + MTP depth budget tokens and E = ``mtp_tokens_per_step`` output
    tokens per decoding sequence per step (1 and 1 without MTP). R_b rises with b up to b0 and
    falls after it, so max_rate = dp x max R_b over the integers next to b0, clipped to
    [1, Bmax] (Bmax: the memory limit per rank, at most (T - 1) / V).
    0.0 when not one sequence fits or T = 1. Raises FieldError as ``at_rate_chunked``."""
    _check_chunked(dep, budget)
    _check(1.0, input_len, output_len)
    I, O, T = int(input_len), int(output_len), int(budget)
    P, _, _, s = _chunk_step(spec, hw, dep, I, O, T)
    V, E = _per_decode(dep)
    bmax = min(_bmax(spec, hw, dep, I, O) // dep.dp, (T - 1) // V)
    if bmax < 1:
        return 0.0
    b0 = T * O / (V * O + E * P)
    cands = {min(max(b, 1), bmax) for b in (int(np.floor(b0)), int(np.ceil(b0)))}

    def r_b(b):
        c = min(T - V * b, b * E * P / O)
        return c / (P * s(b, c))

    return dep.dp * max(r_b(b) for b in cands)


def at_rate_chunked(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, rate: float, input_len: int,
                    output_len: int, budget: int) -> RatePoint:
    """The steady state at ``rate`` requests/s with Sarathi-Serve chunked prefill (Agrawal et
    al., OSDI 2024, §4; vLLM ``--enable-chunked-prefill --max-num-batched-tokens``, SGLang
    ``--chunked-prefill-size``): every step has a budget of ``budget`` = T tokens; the B running
    sequences decode one token each and up to T - B tokens of waiting prompts ride along.

    With DP attention (``dep.dp`` > 1) each attention DP rank is such a scheduler with its own
    budget T (vLLM: each DP engine its own ``--max-num-batched-tokens``; SGLang divides
    ``--chunked-prefill-size`` by dp, so pass its value / dp) and rate / dp of the requests;
    the quantities below are per rank, the step is ``mixed_step``'s (the MoE layers see all
    ranks' tokens). ``batch`` and ``output_tokens_per_s`` in the result are per replica:
    dp x B and rate x O.

    - Prefill work: P = I - (prefix-cache hit) tokens per request, (rate / dp) x P tokens/s per
      rank. In a step of time s the chunk processed is c = min(T - B, (rate / dp) x P x s(c))
      (a fixed point; c < T - B when no prompt is waiting); rho = c / (T - B) is the budget's
      prefill share.
    - Step time s = ``mixed_step``(B decode tokens at the mean context L = I + (O - 1) / 2, c
      chunk tokens attending at the mean chunk position k + (P - c) / 2, c / P logit rows: the
      mean share of chunks that end a prompt). Assumptions: mean prompt progress (one chunk per
      step, of the mean size) and chunk attention at the mean position; every DP rank equally
      loaded.
    - B: the smallest batch with B / s >= (rate / dp) x O (Little's law, as ``at_rate``). TPOT
      = s: no decode stall from prefill.
    - TTFT = S = n = ceil(P / (T - B)) steps, the prompt's own chunks: n - 1 of the full spare
      budget (s at c = T - B) and a last one of what is left, P - (n - 1)(T - B) tokens (with
      pp > 1 that last step x (m + pp - 1) / pp: the pipeline's fill for m micro-batches), + M/D/1
      queueing rho S / (2 (1 - rho)) for that service time S + half a step (the step in flight).
    - Saturated when no batch up to the memory limit (at most T - 1) decodes fast enough, or
      rho >= 1 at that smallest batch B (the spare budget cannot prefill the prompts; a larger
      batch leaves less of it). ``max_rate_chunked``: the largest rate that is not.
    - MTP (``dep.mtp_depth`` = D, acceptance a): each decoding sequence takes V = D + 1 budget
      tokens per step (its verify pass) and gains E = 1 + a + ... + a^D tokens; the step adds
      the MTP module's D passes (``mixed_step``); B is the smallest batch with B E / s >=
      (rate / dp) x O, TPOT = s / E, and the spare budget is T - V B.
    - Two-batch overlap: each step is ``mixed_step``'s two micro-batches of half its tokens;
      pp > 1: its min(B, pp) pipeline micro-batches, pp stage times per step; a draft model
      (``dep.draft_model``) in place of the MTP module: its D passes, the first over the chunk
      too.
    Raises FieldError for a budget that is not an integer from 1 to ``MAX_BUDGET``."""
    _check_chunked(dep, budget)
    _check(rate, input_len, output_len)
    I, O, T = int(input_len), int(output_len), int(budget)
    P, _, _, s_of = _chunk_step(spec, hw, dep, I, O, T)
    V, E = _per_decode(dep)
    r = rate / dep.dp  # requests/s per DP rank
    need = r * O
    bmax = min(_bmax(spec, hw, dep, I, O) // dep.dp, (T - 1) // V)

    def state(b: int):
        """(step seconds, chunk tokens c, rho, step seconds at the full spare budget) at batch b."""
        spare = float(T - V * b)
        s_full = s_of(b, spare)
        # the smallest fixed point c = r P s(b, c): start from the line through s(b, 0) and
        # s(b, spare), then iterate (s grows slowly with c: the iteration contracts towards
        # it). A large budget at a moderate rate is not filled (it has such a point well below
        # the spare budget even when r P s(b, spare) exceeds it); none up to the spare budget:
        # the prompts fill it and rho = r P s / spare >= 1
        s0 = s_of(b, 0.0)
        den = 1.0 - r * P * (s_full - s0) / spare
        c = min(spare, r * P * s0 / den) if den > 0 else spare
        for _ in range(30):
            c_new = min(spare, r * P * s_of(b, c))
            if abs(c_new - c) <= 1e-9 * spare:
                break
            c = c_new
        if c >= spare * (1 - 1e-9):
            return s_full, spare, r * P * s_full / spare, s_full
        return s_of(b, c), c, c / spare, s_full

    if bmax < 1:
        why = ("not one sequence fits in memory" if (T - 1) // V >= 1 else
               f"a budget of {T} token(s) leaves no room for a prompt beside a decode's {V}")
        return RatePoint(rate, True, None, None, None, None, None, None, why)

    def decodes(b: int) -> bool:
        s, _, _, _ = state(b)
        return b * E / s >= need

    if not decodes(bmax):
        _, _, rho, _ = state(bmax)  # a full budget of prompt chunks stretches the steps: name the prefill
        by_budget = bmax >= (T - 1) // V  # the budget, not memory, caps the batch
        if by_budget and rho >= 1:
            why = (f"the budget of {T} tokens holds at most {bmax * dep.dp} decodes, too few for "
                   f"{need * dep.dp:,.0f} tokens/s (the prefill would need {rho:.0%} of the spare budget)")
        elif rho >= 1:
            why = f"prefill needs {rho:.0%} of the spare budget"
        else:
            why = f"{bmax * dep.dp} sequences ({'budget' if by_budget else 'memory'}) decode < {need * dep.dp:,.0f} tokens/s"
        return RatePoint(rate, True, None, None, None, None, rho, None, why)
    lo, hi = 1, bmax
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decodes(mid) else (mid + 1, hi)
    s, c, rho, s_full = state(lo)
    if rho >= 1:
        return RatePoint(rate, True, None, None, None, None, rho, None,
                         f"prefill needs {rho:.0%} of the spare budget")
    # the prompt's chunks: n - 1 full ones of the spare budget, the last of what is left (a
    # prompt within one step's spare budget is one step carrying all of it)
    spare = T - V * lo
    n = float(np.ceil(P / spare))
    # with PP the prompt's last chunk, split over m micro-batches, leaves the pipeline after
    # m + pp - 1 stage times, not the step's pp (m = 1: the same)
    m = float(microbatches(lo, dep.pp))
    service = (n - 1) * s_full + float(s_of(lo, P - (n - 1) * spare)) * (m + dep.pp - 1) / dep.pp
    ttft = service + rho * service / (2 * (1 - rho)) + s / 2
    tpot = s / E
    return RatePoint(rate, False, lo * dep.dp, ttft, tpot, ttft + (O - 1) * tpot, rho, rate * O)


def rate_records(spec: ModelSpec, hw: HardwareProfile, request, rates, input_len: int, output_len: int,
                 chunked_prefill: int | None = None):
    """(head, points) for ``costsim rate``: the layout of ``request`` (a ``LayoutRequest``,
    resolved at input + output tokens) with the largest sustainable rate and the memory-limited
    batch, and one ``at_rate`` dict per rate, in increasing order (``at_rate_chunked`` with a
    ``chunked_prefill`` token budget per DP rank, and ``max_rate_chunked``). Raises
    CostsimError when the weights do not fit."""
    from costsim.simulator.layout import resolve_deployment
    from costsim.simulator.memory import require_fit

    dep = resolve_deployment(spec, hw, request, 1, input_len + output_len)
    require_fit(spec, hw, dep)
    head = dict(model=spec.name, hardware=hw.name, devices=dep.devices, tp=dep.tp, ep=dep.ep, pp=dep.pp, dp=dep.dp,
                weight_dtype=dep.weights_name, kv_dtype=dep.kv_format.name, input=input_len, output=output_len,
                max_rate=max_rate_chunked(spec, hw, dep, input_len, output_len, chunked_prefill) if chunked_prefill
                else max_rate(spec, hw, dep, input_len, output_len),
                max_batch=_bmax(spec, hw, dep, input_len, output_len), chunked_prefill=chunked_prefill)
    if chunked_prefill:
        pts = [at_rate_chunked(spec, hw, dep, r, input_len, output_len, chunked_prefill) for r in sorted(rates)]
    else:
        pts = [at_rate(spec, hw, dep, r, input_len, output_len) for r in sorted(rates)]
    return head, [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in vars(p).items()} for p in pts]


__all__ = ["MAX_BUDGET", "at_rate_chunked", "max_rate_chunked", "mixed_operators", "mixed_step", "rate_records"]
