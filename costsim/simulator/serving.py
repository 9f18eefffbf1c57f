"""Serving metrics: TTFT, TPOT, end-to-end latency, tokens/s, and the throughput-maximising
batch under memory and an optional TPOT SLO.

Assumptions (stated, not hidden):
- Prefill of a request batch runs as one step with all prompts; TTFT is that step's time, and
  the prefill produces each request's first output token. When that step's activations do not
  fit beside the weights and the prompts' KV cache, the prefill is chunked as a server does
  (vLLM / SGLang chunked prefill): every sequence advances by the largest chunk of c tokens
  whose activations fit, each chunk attending to the KV of the chunks before it; TTFT is the
  sum of the chunk steps (``chunked_prefill``). Decode runs
  ``batch`` sequences in lock-step; TPOT at context L is one decode step's time. A request of
  ``output_len`` = n tokens takes n - 1 decode steps, at contexts input_len .. input_len + n - 2
  (end-to-end latency = TTFT + those steps; TPOT = their mean, the convention of vLLM's and
  genai-perf's benchmarks: (e2e - TTFT) / (n - 1)). Disaggregated: prefill and decode on
  separate replicas of the same layout; combined: the same replica does both.
- Pipeline parallelism: the batch is split into m = min(batch, pp) micro-batches of whole
  sequences (``microbatches``). Decode: a token's latency is ``pp`` stage times of one
  micro-batch, throughput one micro-batch per stage time. Prefill starts with an empty
  pipeline: TTFT is (m + pp - 1) stage times, i.e. pp stage times (with the sends) for a
  single sequence and (2 pp - 1) for a batch of at least pp.
- Times are roofline estimates (``costsim.simulator.roofline``) with the profile's
  efficiency factors; they are models, not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costsim.errors import CostsimError, FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.memory import (kv_bytes_per_device, memory_report, require_fit, resident_bytes,
                                     weight_bytes_per_device, workspace_bytes)
from costsim.simulator.operators import mtp_operators
from costsim.simulator.roofline import StepTiming, time_step
from costsim.simulator.types import StepShape
from costsim.specs import HardwareProfile, MLAAttention, ModelSpec


@dataclass(frozen=True)
class PhaseResult:
    """One phase (prefill step or decode step): seconds, tokens/s, utilisation."""

    time_s: object  # latency of the step for the batch (TTFT or TPOT)
    tokens: object  # tokens produced/processed by the step, per replica
    tokens_per_s: object  # per replica
    tokens_per_s_per_device: object
    mfu: object  # model FLOPs utilisation vs the weight dtype's dense peak
    mbu: object  # memory bandwidth utilisation vs peak bandwidth
    timing: StepTiming


def microbatches(batch, pp: int):
    """Pipeline micro-batches of a batch: min(batch, pp), at least 1 (whole sequences; a batch
    of at least ``pp`` is split into ``pp`` equal micro-batches). ``batch`` may be an array."""
    return np.clip(np.asarray(batch, dtype=float), 1.0, float(pp))


def mfu_peak(hw: HardwareProfile, timing: StepTiming) -> float:
    """The peak (FLOP/s) MFU divides by: that of the fastest number format any of the step's
    FLOP-carrying operators computes in (FP8 GEMMs -> the fp8 peak; a BF16 attention core
    beside FP32 GEMMs -> the bf16 peak). Each operator takes at least FLOPs / its own
    format's peak, so MFU <= 1 by construction."""
    dtypes = {t.op.dtype for t in timing.timings if t.op.dtype and np.any(np.asarray(t.op.flops) > 0)}
    return max(hw.peak(d) for d in dtypes) if dtypes else hw.peak("bf16")


def _phase(spec, hw, dep, batch, new_tokens, context, fill: bool = False) -> PhaseResult:
    """``fill``: the phase starts with an empty pipeline (prefill), so its last micro-batch
    finishes after (m + pp - 1) stage times (m = ``microbatches``); decode runs in steady
    state (pp stage times)."""
    m = microbatches(batch, dep.pp)
    mb = np.asarray(batch, dtype=float) / m
    t = time_step(spec, hw, dep, StepShape(mb, new_tokens, context, 1))
    time = np.asarray(t.time_s) * ((m + dep.pp - 1) if fill else dep.pp)
    tokens = np.asarray(batch, dtype=float) * np.asarray(new_tokens, dtype=float)
    tps = tokens / time
    stage_t = np.asarray(t.time_s)
    mfu = np.asarray(t.flops) / (stage_t * mfu_peak(hw, t))
    mbu = np.asarray(t.bytes_moved) / (stage_t * hw.memory_bandwidth.value)
    return PhaseResult(time, tokens, tps, tps / dep.devices, mfu, mbu, t)


def prefill(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, prompt) -> PhaseResult:
    """Prefill ``batch`` prompts of ``prompt`` tokens: TTFT = ``time_s``. With prefix caching
    (``dep.prefix_hit``) the first ``dep.cached_prefix(prompt)`` tokens are cached already:
    only the rest is computed, attending to them (``tokens`` counts the computed tokens)."""
    c = dep.cached_prefix(prompt)
    r = _phase(spec, hw, dep, batch, np.asarray(prompt, dtype=float) - c, c, fill=True)
    if not dep.mtp_depth:
        return r
    time = np.asarray(r.time_s) + speculator_prefill_s(spec, hw, dep, batch, prompt)
    tps = np.asarray(r.tokens) / time
    return PhaseResult(time, r.tokens, tps, tps / dep.devices, r.mfu, r.mbu, r.timing)


def speculator_prefill_s(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, prompt):
    """Seconds of the speculator's prefill of the prompts' computed tokens (its KV cache, so that
    the first decode step has a draft; one step on the same devices, after the target's): the
    draft model's (``dep.draft_model``), or one pass of the MTP module (DeepSeek-V3 §2.2: its
    transformer block attends over the prompt; SGLang's EAGLE/MTP runs the draft's extend on
    every prefill); 0 without speculation."""
    if not dep.mtp_depth:
        return 0.0
    c = dep.cached_prefix(prompt)
    shape = StepShape(batch, np.asarray(prompt, dtype=float) - c, c, 1)
    if dep.draft_model is None:
        return np.asarray(time_step(spec, hw, dep, shape, operators=mtp_operators).time_s)
    return np.asarray(time_step(dep.draft_model, hw, dep.draft_deployment(), shape).time_s)


def prefill_workspace(spec: ModelSpec, dep: Deployment, batch, chunk, input_len):
    """Activation bytes per device of the prefill step of ``chunk`` new tokens per sequence
    that ends the prompt (context ``input_len - chunk``): the largest of its chunks."""
    b = np.asarray(batch, dtype=float)
    c = np.asarray(chunk, dtype=float)
    return workspace_bytes(spec, dep, StepShape(b / microbatches(b, dep.pp), c, np.asarray(input_len) - c, 1))
    # (a prefix-cache hit only shortens the computed part: the last chunk is the same)


def prefill_chunk_tokens(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch: int,
                         input_len: int) -> int | None:
    """The largest chunk c (1 <= c <= input_len tokens per sequence) whose prefill activations
    fit in usable memory beside the weights, the DeepEP buffers and the whole prompts' KV cache (bytes per device);
    None when not even one token per sequence fits. Bisection: the workspace grows with c."""
    room = (hw.memory_capacity.value * dep.gpu_memory_utilization - resident_bytes(spec, dep)
            - float(kv_bytes_per_device(spec, dep, batch, input_len)))

    def fits(c: int) -> bool:
        return float(prefill_workspace(spec, dep, batch, c, input_len)) <= room

    if not fits(1):
        return None
    lo, hi = 1, int(input_len - float(dep.cached_prefix(input_len)))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def chunked_prefill(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch: int, input_len: int,
                    chunk: int) -> PhaseResult:
    """Prefill ``batch`` prompts of ``input_len`` tokens in chunks of ``chunk`` tokens per
    sequence (the last one shorter): chunk k computes tokens k c .. min((k + 1) c, I) - 1 over
    a context of k c cached tokens; only the last chunk computes logits. Each of the m
    micro-batches passes every chunk through the ``pp`` stages, and a sequence's next chunk
    starts only when its last one has left the last stage (it attends to that chunk's KV on
    every stage; vLLM schedules no request twice in flight): time = max(m, pp) x sum_k t_k +
    (min(m, pp) - 1) x t_last (t_k: the stage time of chunk k; m >= pp: the pipeline stays full,
    m sum + (pp - 1) t_last; one chunk: (m + pp - 1) t, as ``prefill``). So a prompt is no
    faster chunked than whole (a fresh-user finding: the chunks of one sequence were pipelined
    over the stages, and 120k tokens on PP4 prefilled in 22 s against 53 s for 100k unchunked).
    MFU and MBU are over the whole prefill; ``timing`` is the first chunk's."""
    m = float(microbatches(batch, dep.pp))
    mb = batch / m
    starts = np.arange(int(dep.cached_prefix(input_len)), int(input_len), int(chunk), dtype=float)
    sizes = np.minimum(float(chunk), float(input_len) - starts)
    logits = (starts == starts[-1]).astype(float)  # only the chunk that ends the prompt samples a token
    t = time_step(spec, hw, dep, StepShape(mb, sizes, starts, logits))
    stage = np.broadcast_to(np.asarray(t.time_s, dtype=float), starts.shape)
    time = (max(m, dep.pp) * float(stage.sum()) + (min(m, dep.pp) - 1) * float(stage[-1])
            + float(speculator_prefill_s(spec, hw, dep, batch, input_len)))
    tokens = float(batch) * float(input_len - starts[0])  # computed tokens (a cached prefix is skipped)
    flops = float(np.broadcast_to(np.asarray(t.flops, dtype=float), starts.shape).sum())
    moved = float(np.broadcast_to(np.asarray(t.bytes_moved, dtype=float), starts.shape).sum())
    first = time_step(spec, hw, dep, StepShape(mb, float(sizes[0]), float(starts[0]), float(logits[0])))
    mfu = flops / (float(stage.sum()) * mfu_peak(hw, first))
    mbu = moved / (float(stage.sum()) * hw.memory_bandwidth.value)
    return PhaseResult(time, tokens, tokens / time, tokens / time / dep.devices, mfu, mbu, first)


def mtp_tokens_per_step(depth: int, acceptance: float) -> float:
    """Expected tokens a sequence gains per speculative step: the verified token plus each
    draft accepted in turn, 1 + a + a^2 + ... + a^depth (a draft counts only if every draft
    before it was accepted; DeepSeek-V3 §5.4.3: depth 1, a = 0.85-0.90)."""
    return float(sum(acceptance ** k for k in range(depth + 1)))


def decode(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, context) -> PhaseResult:
    """One decode step of ``batch`` sequences at ``context`` cached tokens: TPOT = ``time_s``.

    With MTP speculative decoding (``dep.mtp_depth`` = D >= 1, acceptance a): a step verifies
    D + 1 tokens per sequence in one pass of the model (logits for each) and drafts the next D
    with D sequential MTP-module passes of one token (``operators.mtp_operators``; with
    ``dep.draft_model``, D passes of the draft model instead); it gains
    E = ``mtp_tokens_per_step(D, a)`` tokens per sequence, so TPOT = step time / E and
    tokens/s = batch x E / step time. The MTP module is costed on top of the pp stage times.
    MFU and MBU are those of the whole step; ``timing`` is the verify pass's."""
    if not dep.mtp_depth:
        return _phase(spec, hw, dep, batch, 1, context)
    D = dep.mtp_depth
    mb = np.asarray(batch, dtype=float) / microbatches(batch, dep.pp)
    verify = time_step(spec, hw, dep, StepShape(mb, D + 1, context, D + 1))
    if dep.draft_model is not None:  # a draft model's forward of one token per sequence
        draft = time_step(dep.draft_model, hw, dep.draft_deployment(), StepShape(mb, 1, context, 1))
    else:
        draft = time_step(spec, hw, dep, StepShape(mb, 1, context, 1), operators=mtp_operators)
    step = np.asarray(verify.time_s) * dep.pp + D * np.asarray(draft.time_s)
    E = mtp_tokens_per_step(D, dep.mtp_acceptance)
    time = step / E
    tokens = np.asarray(batch, dtype=float)
    tps = tokens / time
    busy = np.asarray(verify.time_s) + D * np.asarray(draft.time_s)  # one stage's work per step
    flops = np.asarray(verify.flops) + D * np.asarray(draft.flops)
    mfu = flops / (busy * max(mfu_peak(hw, verify), mfu_peak(hw, draft)))
    mbu = (np.asarray(verify.bytes_moved) + D * np.asarray(draft.bytes_moved)) / (busy * hw.memory_bandwidth.value)
    return PhaseResult(time, tokens, tps, tps / dep.devices, mfu, mbu, verify)


@dataclass(frozen=True)
class ServeResult:
    batch: int
    input_len: int
    output_len: int
    ttft_s: float
    tpot_s: float  # mean over the n - 1 decode steps (one decode step at the prompt when n <= 1)
    tpot_last_s: float  # the last decode step (context input_len + n - 2)
    e2e_s: float
    prefill_tokens_per_s: float  # per replica
    decode_tokens_per_s: float  # per replica (disaggregated decode): batch / TPOT
    combined_tokens_per_s: float  # output tokens / e2e, per replica (prefill + decode on one replica)
    devices: int
    devices_per_node: int
    prefill: PhaseResult
    decode_first: PhaseResult
    memory: object
    prefill_workspace_bytes: float = 0.0  # activations of the (largest) prefill step, per device
    prefill_fits: bool = True  # weights + prompt KV + prefill activations within usable memory
    prefill_chunk_tokens: int | None = None  # tokens per sequence per chunk when chunked; None: one step

    @property
    def decode_tokens_per_s_per_device(self):
        return self.decode_tokens_per_s / self.devices

    @property
    def prefill_tokens_per_s_per_device(self):
        return self.prefill_tokens_per_s / self.devices


def serve(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch: int, input_len: int,
          output_len: int) -> ServeResult:
    """TTFT, TPOT and throughput for ``batch`` requests of ``input_len`` -> ``output_len``.

    Raises CostsimError when the layout is infeasible or the weights do not fit; the
    memory report tells whether the batch's KV cache fits (``memory.fits``).
    """
    dep.check(spec)
    require_fit(spec, hw, dep)
    pre = prefill(spec, hw, dep, batch, input_len)
    steps = max(output_len - 1, 0)  # the prefill produces the first output token
    ctx = input_len + np.arange(max(steps, 1), dtype=float)
    dec = decode(spec, hw, dep, batch, ctx)
    times = np.asarray(dec.time_s)
    decode_total = float(times[:steps].sum())
    ttft = float(pre.time_s)
    e2e = ttft + decode_total
    tpot = decode_total / steps if steps else float(times[0])
    mem = memory_report(spec, hw, dep, batch, input_len + output_len)
    # a one-step prefill's activations sit beside the weights and the prompt's KV; if they do
    # not fit, the prefill is chunked (the largest chunk that fits), if any chunk does
    pre_ws = float(prefill_workspace(spec, dep, batch, input_len - float(dep.cached_prefix(input_len)), input_len))
    pre_need = mem.weight_bytes + mem.comm_buffer_bytes + float(kv_bytes_per_device(spec, dep, batch, input_len)) + pre_ws
    chunk = None
    if pre_need > mem.usable_bytes:
        chunk = prefill_chunk_tokens(spec, hw, dep, batch, input_len)
        if chunk is not None:
            pre = chunked_prefill(spec, hw, dep, batch, input_len, chunk)
            ttft = float(pre.time_s)
            e2e = ttft + decode_total
            pre_ws = float(prefill_workspace(spec, dep, batch, chunk, input_len))
            pre_need = mem.weight_bytes + mem.comm_buffer_bytes + float(kv_bytes_per_device(spec, dep, batch, input_len)) + pre_ws
    first = decode(spec, hw, dep, batch, input_len)
    return ServeResult(
        batch=batch, input_len=input_len, output_len=output_len, ttft_s=ttft,
        tpot_s=tpot, tpot_last_s=float(times[steps - 1]) if steps else tpot,
        e2e_s=e2e, prefill_tokens_per_s=batch * input_len / ttft,
        decode_tokens_per_s=batch / tpot if output_len else 0.0,
        combined_tokens_per_s=batch * output_len / e2e if output_len else 0.0,
        devices=dep.devices, devices_per_node=hw.devices_per_node, prefill=pre, decode_first=first, memory=mem,
        prefill_workspace_bytes=pre_ws, prefill_fits=pre_need <= mem.usable_bytes, prefill_chunk_tokens=chunk)


class SLOError(FieldError):
    """No batch meets the TPOT SLO (field ``tpot_slo_s``); ``fastest_s`` is the batch-1 TPOT
    of that layout."""

    def __init__(self, fastest_s: float, slo_s: float, reason: str):
        super().__init__("tpot_slo_s", slo_s, reason)
        self.fastest_s = fastest_s


@dataclass(frozen=True)
class MaxThroughput:
    batch: int
    tpot_s: float
    tokens_per_s: float  # decode tokens/s per replica
    tokens_per_s_per_device: float
    max_batch_memory: int
    limit: str  # "memory" | "TPOT SLO" | "throughput peak"
    curve_batch: np.ndarray
    curve_tpot_s: np.ndarray
    curve_tokens_per_s: np.ndarray


def max_throughput(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, context: int,
                   tpot_slo_s: float | None = None) -> MaxThroughput:
    """The decode batch (sequences per replica, all at ``context`` tokens) that maximises
    decode tokens/s subject to memory and, if given, TPOT <= ``tpot_slo_s``.

    Raises CostsimError if the layout is infeasible, the weights do not fit, or no batch
    meets the SLO.
    """
    dep.check(spec)
    require_fit(spec, hw, dep)
    mem = memory_report(spec, hw, dep, dep.dp, context)
    max_b = int(mem.max_batch)
    if max_b < 1:
        raise CostsimError(f"{spec.name} on {hw.name}: not even one sequence of {context} tokens per DP rank fits in memory")
    # any batch from 1 up to the memory limit (below dp x pp some ranks simply idle)
    cand = np.unique(np.concatenate([np.round(np.geomspace(1, max_b, 400)), [max_b]])).astype(int)
    dec = decode(spec, hw, dep, cand.astype(float), context)
    tpot, tps = np.asarray(dec.time_s), np.asarray(dec.tokens_per_s)
    ok = np.ones_like(tps, dtype=bool) if tpot_slo_s is None else tpot <= tpot_slo_s
    if not ok.any():
        raise SLOError(float(tpot[0]), tpot_slo_s, f"{spec.name} on {hw.name}: no batch meets TPOT <= {tpot_slo_s * 1e3:.3g} ms "
                           f"(batch {cand[0]} takes {tpot[0] * 1e3:.3g} ms)")
    i = int(np.argmax(np.where(ok, tps, -np.inf)))
    if cand[i] == cand[-1]:
        limit = "memory"
    elif tpot_slo_s is not None and i + 1 < len(cand) and not ok[i + 1]:
        limit = "TPOT SLO"
    else:
        limit = "throughput peak"
    return MaxThroughput(int(cand[i]), float(tpot[i]), float(tps[i]), float(tps[i]) / dep.devices, max_b, limit,
                         cand, tpot, tps)


def best_max_throughput(spec: ModelSpec, hw: HardwareProfile, candidates: list[Deployment], context: int,
                        tpot_slo_s: float | None = None) -> tuple[Deployment, MaxThroughput]:
    """``max_throughput`` over several layouts; the one with the most decode tokens/s wins.

    Layouts that are infeasible or do not fit are skipped; if none works, the first one's
    error is raised.
    """
    best, errors = None, []
    for dep in candidates:
        try:
            r = max_throughput(spec, hw, dep, context, tpot_slo_s)
        except (CostsimError, SLOError) as e:
            errors.append(e)
            continue
        if best is None or r.tokens_per_s > best[1].tokens_per_s:
            best = (dep, r)
    if best is None:  # the SLO is the more telling reason when some layout did fit
        slo = [e for e in errors if isinstance(e, SLOError)]
        if slo:
            fastest = min(e.fastest_s for e in slo)
            raise SLOError(fastest, tpot_slo_s, f"{spec.name} on {hw.name}: no batch and layout meets TPOT <= "
                                    f"{tpot_slo_s * 1e3:.3g} ms (fastest: batch 1 at {fastest * 1e3:.3g} ms)")
        raise errors[0]
    return best


@dataclass(frozen=True)
class MLACrossover:
    """Where MLA's naive form (decompress K/V) overtakes the absorbed form, by roofline time.

    ``chunk_tokens``: smallest number of new tokens per sequence (a prefill chunk on top of
    ``context`` cached tokens) at which naive is at least as fast; None if never up to
    ``max_tokens``. ``decode_absorbed_s`` / ``decode_naive_s``: one decode step each way.
    """

    context: int
    batch: int
    chunk_tokens: int | None
    decode_absorbed_s: float
    decode_naive_s: float


def mla_crossover(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch: int, context: int,
                  max_tokens: int = 65536) -> MLACrossover:
    """Compare the two MLA forms for ``batch`` sequences at ``context`` cached tokens.

    Naive costs a decompression of every cached token per step (amortised over the new
    tokens) but a cheaper attention core (d_h + d_h^R + d_h^v per pair instead of
    2 d_c + d_h^R); absorbed has no decompression. So naive wins for long query chunks
    (prefill) and absorbed for decode. Raises CostsimError for non-MLA models.
    """
    if not isinstance(spec.attention, MLAAttention):
        raise CostsimError(f"{spec.name} uses {spec.attention.kind} attention, not MLA")
    s = np.unique(np.round(np.geomspace(1, max_tokens, 200))).astype(float)
    t = {}
    for form in ("absorbed", "naive"):
        d = dep.with_(mla_form=form)
        t[form] = np.asarray(time_step(spec, hw, d, StepShape(batch, s, context, 1)).time_s)
    win = np.nonzero(t["naive"] <= t["absorbed"])[0]
    chunk = int(s[win[0]]) if len(win) else None
    return MLACrossover(context, batch, chunk, float(t["absorbed"][0]), float(t["naive"][0]))
