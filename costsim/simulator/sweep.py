"""Vectorised serving: batch, prompt and output lengths broadcast through the whole serving
result of ``costsim.simulator.serving.serve`` (TTFT, mean TPOT, e2e, tokens/s, memory, fit),
and the partitions of a sweep over models x hardware x layouts x formats.

The mean TPOT of ``serve`` is the mean of the n - 1 decode steps at contexts
input_len .. input_len + n - 2. It is summed here without a per-step loop, exactly:

- A decode step's time is, per operator, max(compute_s, memory_s) + extra_s
  (``costsim.simulator.efficiency``). For one query per sequence every term is affine in the
  context L (attention FLOPs and KV bytes grow with L; GEMM rows, MoE routing and
  communication do not depend on it), except at structural points: L = 0 (a one-row
  decompression GEMM is a gemv), a sliding window W (the window is full from L = W - 1), and
  DSA's top-k k (DeepSeek-V3.2: each query attends to min(L + 1, k) keys, a window of k).
- So the step time t(L) is piecewise affine; its kinks are where an operator's compute and
  memory terms cross, where compute and communication cross (``overlap_comm``), and where the
  two MLA forms cross (``mla_form="auto"``). Each kink is the root of an affine difference on a
  segment where both sides are affine, found in closed form (``_refine``).
- Between kinks the integer contexts lie on one affine piece, so the sum over a segment is
  the trapezoid count x (t(first) + t(last)) / 2, with t at the segment ends from the engine
  itself (``serving.decode``). Prefix sums F(X) = sum_{L < X} t(L) give each point's decode
  total as F(input + n - 1) - F(input): rounding only, relative error ~ 1e-16 x context / steps
  (< 1e-10 at 128k tokens, tested against ``serve`` at 1e-9).
- One term is not piecewise affine with few pieces: tile / wave quantisation (``tile_m`` in a
  GEMM family) of MLA's naive decompression GEMM, whose rows grow with L. Then the prefix sums
  are exact cumulative sums over every context up to the largest (``_prefix_dense``): still
  exact and vectorised, only O(max context) instead of O(kinks) per batch.
- A chunked prefill (activations that do not fit in one step, ``serving.chunked_prefill``) is
  summed the same way in the chunk index j (context = cached + j x chunk): its full chunks'
  terms are affine in j between the same kinds of kinks, and the at most two chunks that
  straddle a window W are a segment of their own (``chunk_prefix``); only the last chunk
  (shorter, with logits) is timed apart.

Shapes: every array argument broadcasts; results have the broadcast shape. Keep the batch,
prompt and output axes separate (e.g. (B,1,1), (1,I,1), (1,1,O)): per-batch and per-prompt
parts are then computed on their own small shapes and only the final arithmetic is per point.
Units: seconds, bytes, tokens, tokens/s (per replica = all ``dep.devices`` devices).
The DataFrame of a sweep is assembled by ``costsim.sweeps`` (pandas stays out of the engine);
a partition's rows here are plain numpy columns, so a Dask worker returns them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from costsim.errors import CostsimError
from costsim.simulator.deployment import Deployment
from costsim.simulator.efficiency import rates
from costsim.simulator.memory import kv_bytes_per_device, memory_report, resident_bytes, weight_bytes_per_device
from costsim.simulator.roofline import StepTiming, time_step
from costsim.simulator.serving import (chunked_prefill, decode, speculator_prefill_s, mfu_peak, microbatches, prefill,
                                      prefill_chunk_tokens, prefill_workspace)
from costsim.simulator.types import Family, OpKind, StepShape
from costsim.specs import HardwareProfile, MLAAttention, ModelSpec


# ---- the sum of decode step times over a range of contexts ------------------------------------


def _segments(cuts, lmax: int):
    """Integer segments [start, end] from sorted segment starts ``cuts`` (..., K); the last
    ends at ``lmax``. Empty segments (duplicate cuts) have end < start."""
    nxt = np.concatenate([cuts[..., 1:], np.full(cuts.shape[:-1] + (1,), lmax + 1.0)], axis=-1)
    return cuts, nxt - 1


def _compact(cuts, lmax: int):
    """Sort, drop duplicates and cuts beyond ``lmax`` (per element), trim the common tail."""
    c = np.sort(np.minimum(cuts, lmax + 1.0), axis=-1)
    dup = np.concatenate([np.zeros(c.shape[:-1] + (1,), bool), c[..., 1:] == c[..., :-1]], axis=-1)
    c = np.sort(np.where(dup, lmax + 1.0, c), axis=-1)
    keep = max(int(np.max(np.sum(c <= lmax, axis=-1))), 1)
    return c[..., :keep]


def _refine(cuts, lmax: int, diffs):
    """Add, per segment, the integer after the root of each difference in ``diffs`` (callables
    of a context array -> values, affine on every current segment): the contexts on either
    side of a root then lie on one affine piece of max/min of the two sides."""
    s, e = _segments(cuts, lmax)
    k = s.shape[-1]
    new = [cuts]
    both = np.concatenate([s, e], axis=-1)  # one array for every g: ``decode_prefix`` caches by it
    for g in diffs:
        v = g(both)
        gs, ge = v[..., :k], v[..., k:]
        cross = (gs * ge < 0) & (e > s)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = s + gs / (gs - ge) * (e - s)
        new.append(np.where(cross, np.floor(r) + 1, s))
    return _compact(np.concatenate(new, axis=-1), lmax)


def _needs_dense(spec: ModelSpec, hw: HardwareProfile, dep: Deployment) -> bool:
    """MLA's naive decompression GEMM has rows proportional to the context; with tile/wave
    quantisation its time is a staircase in L, not piecewise affine with few pieces. MTP
    speculative decoding (a verify pass of D + 1 tokens plus D draft passes) is summed densely
    too: its kinks are not among the ones ``decode_prefix`` finds."""
    return dep.mtp_depth > 0 or (
        isinstance(spec.attention, MLAAttention) and dep.mla_form in ("naive", "auto")
        and any(rates(hw, f).tile_m for f in (Family.GEMM, Family.GEMM_FP8, Family.GEMM_FP8_BLOCK)))


def _stage(dep: Deployment, batch):
    m = microbatches(batch, dep.pp)
    return np.asarray(batch, dtype=float) / m


def _piecewise_sums(mb, jmax: int, cuts, timing, forms, overlap: bool, evaluate):
    """The core of ``decode_prefix`` and ``chunk_prefix``: a step's quantities summed over the
    integer step indices 0 <= j < X, exactly, for steps whose operator terms are affine in j
    between the structural starts ``cuts`` (shape (..., K)). ``timing(form, j)`` is the stage
    ``StepTiming`` at index array j under one MLA form of ``forms``; ``evaluate(j)`` the
    quantities to sum (a list of arrays). Kinks: each compute operator's compute = memory,
    compute = comm (``overlap``) and the two forms' crossing, as in the module docstring.
    Returns F(X) -> list of sums (X broadcasts with the leading shape)."""
    cuts = _compact(cuts, jmax)
    diffs = []
    for f in forms:
        ops = timing(f, np.zeros(1)).timings
        diffs += [_op_diff(timing, mb, f, i) for i, t in enumerate(ops) if t.op.kind is not OpKind.COMM]
    cuts = _refine(cuts, jmax, diffs)
    if overlap:
        def over(form):
            def g(j):
                t = timing(form, j)
                return np.broadcast_to(np.asarray(t.compute_part_s) - np.asarray(t.comm_part_s),
                                       np.broadcast_shapes(j.shape, mb.shape))
            return g
        cuts = _refine(cuts, jmax, [over(f) for f in forms])
    if len(forms) == 2:
        cuts = _refine(cuts, jmax, [lambda j: (np.asarray(timing("absorbed", j).time_s)
                                               - np.asarray(timing("naive", j).time_s))])
    s, e = _segments(cuts, jmax)
    k = s.shape[-1]
    n = np.maximum(e - s + 1, 0.0)
    parts = []
    for v in evaluate(np.concatenate([s, e], axis=-1)):
        v = np.broadcast_to(np.asarray(v, dtype=float), s.shape[:-1] + (2 * k,))
        vs, ve = v[..., :k], v[..., k:]
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append((vs, np.where(e > s, (ve - vs) / (e - s), 0.0)))

    def F(X):
        X = np.asarray(X, dtype=float)[..., None]
        m = np.clip(X - s, 0.0, n)
        return [np.sum(m * vs + slope * (m * (m - 1) / 2), axis=-1) for vs, slope in parts]

    return F


def _op_diff(timing, mb, form, i):
    def g(j):
        t = timing(form, j).timings[i]
        return np.broadcast_to(np.asarray(t.compute_s, dtype=float) - np.asarray(t.memory_s, dtype=float),
                               np.broadcast_shapes(j.shape, mb.shape))
    return g


def _forms(spec: ModelSpec, dep: Deployment) -> list:
    return (["absorbed", "naive"] if dep.mla_form == "auto" and isinstance(spec.attention, MLAAttention)
            else [dep.mla_form if dep.mla_form != "auto" else "absorbed"])


def _timing_cache(spec, hw, dep, shape_of):
    """``timing(form, j)``: the differences of one refinement all ask for the same index
    array, so each form's step is timed once per array (``shape_of(j)`` -> StepShape)."""
    cache: dict = {}

    def timing(form, j) -> StepTiming:
        hit = cache.get(form)
        if hit is not None and hit[0] is j:
            return hit[1]
        t = time_step(spec, hw, dep.with_(mla_form=form), shape_of(j))
        cache[form] = (j, t)
        return t

    return timing


def _windows(spec: ModelSpec) -> list:
    """Context lengths where attention's key count stops growing: each sliding window W and
    DSA's top-k k (a query attends to min(L + 1, k) keys: the same kink as a window of k)."""
    wins = {spec.sliding_window.window} if spec.sliding_window else set()
    if isinstance(spec.attention, MLAAttention) and spec.attention.sparse:
        wins |= {spec.attention.index_topk} | {min(w, spec.attention.index_topk) for w in wins}
    return sorted(wins)


def decode_prefix(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, lmax: int):
    """A function F(X) = sum of ``serving.decode(spec, hw, dep, batch, L).time_s`` over the
    integer contexts 0 <= L < X (X <= lmax + 1; X broadcasts with ``batch``)."""
    b = np.asarray(batch, dtype=float)
    lmax = int(lmax)
    if _needs_dense(spec, hw, dep):
        return _prefix_dense(spec, hw, dep, b, lmax)
    mb = _stage(dep, b)[..., None]
    timing = _timing_cache(spec, hw, dep, lambda ctx: StepShape(mb, 1, ctx, 1))
    # structural starts: L = 1 (after the gemv point) and each window's full point
    wins = _windows(spec)
    cuts = np.broadcast_to(np.array([0.0, 1.0] + [float(w) for w in wins]), b.shape + (2 + len(wins),))
    F = _piecewise_sums(mb, lmax, cuts, timing, _forms(spec, dep), dep.overlap_comm or dep.two_batch_overlap,
                        lambda ctx: [decode(spec, hw, dep, b[..., None], ctx).time_s])
    return lambda X: F(X)[0]


def chunk_prefix(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, chunk, cached, jmax: int):
    """Sums over the full prefill chunks j = 0 .. X - 1 of ``batch`` sequences (1-D arrays
    of equal length, one per point): chunk j computes ``chunk`` tokens per sequence over a
    context of ``cached + j x chunk`` tokens without logits (``serving.chunked_prefill``'s
    non-final chunks). Returns F(X) -> [stage seconds, FLOPs, bytes moved] per point
    (X <= jmax + 1), exactly: a chunk's terms are affine in j between the structural starts
    (j = 0, 1 and, per window W, the chunk that straddles W) and the kinks ``_refine`` finds.
    None where the sum is not piecewise affine with few pieces (``_needs_dense``)."""
    if _needs_dense(spec, hw, dep.with_(mtp_depth=0)):
        return None
    b, c, c0 = (np.asarray(x, dtype=float)[:, None] for x in (batch, chunk, cached))
    mb = _stage(dep, b)
    timing = _timing_cache(spec, hw, dep, lambda j: StepShape(mb, c, c0 + j * c, 0))
    cuts = [np.zeros_like(c), np.ones_like(c)]
    for w in _windows(spec):
        # a chunk's queries all see growing contexts while its end < W and full windows from
        # its start >= W; at most two chunks lie between: a segment of their own (exact)
        cuts += [np.floor((w - 1 - c - c0) / c) + 1, np.ceil((w - c0) / c)]
    cuts = np.maximum(np.concatenate(cuts, axis=-1), 0.0)

    def evaluate(j):
        t = time_step(spec, hw, dep, StepShape(mb, c, c0 + j * c, 0))
        return [t.time_s, t.flops, t.bytes_moved]

    return _piecewise_sums(mb, int(jmax), cuts, timing, _forms(spec, dep), dep.overlap_comm or dep.two_batch_overlap, evaluate)


def _prefix_dense(spec, hw, dep, b, lmax):
    """F(X) by cumulative sums over every context 0..lmax (exact, O(lmax) per batch)."""
    L = np.arange(lmax + 1, dtype=float)
    t = np.asarray(decode(spec, hw, dep, b[..., None], L).time_s, dtype=float)
    t = np.broadcast_to(t, b.shape + (lmax + 1,))
    cum = np.concatenate([np.zeros(b.shape + (1,)), np.cumsum(t, axis=-1)], axis=-1)

    def F(X):
        X = np.asarray(X, dtype=float)
        idx = np.broadcast_to(X, np.broadcast_shapes(X.shape, b.shape)).astype(np.int64)
        c = np.broadcast_to(cum, idx.shape + (lmax + 2,)) if idx.ndim >= cum.ndim - 1 else cum
        return np.take_along_axis(c, idx[..., None], axis=-1)[..., 0]

    return F


def chunked_prefill_grid(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, input_len,
                         max_cells: int = 4_000_000):
    """``prefill_chunk_tokens`` + ``chunked_prefill`` (its pipeline formula) for many (batch, input_len) points at once
    (1-D arrays of equal length): a vectorised bisection, then every point's chunks as one
    padded (points x chunks) step array, or exactly by ``chunk_prefix``'s
    piecewise sums where it applies (O(kinks) per point instead of O(chunks)). Returns (chunk, time_s, mfu, mbu, first_timing) as
    arrays (chunk 0 and NaN times where not even one token per sequence fits). Points whose
    chunk count would make the padded array larger than ``max_cells`` are costed one by one."""
    b = np.asarray(batch, dtype=float)
    I = np.asarray(input_len, dtype=float)
    cached = np.asarray(dep.cached_prefix(I), dtype=float)
    room = (hw.memory_capacity.value * dep.gpu_memory_utilization - resident_bytes(spec, dep)
            - np.asarray(kv_bytes_per_device(spec, dep, b, I), dtype=float))

    def fits(c):
        return np.asarray(prefill_workspace(spec, dep, b, c, I), dtype=float) <= room

    ok = fits(np.ones_like(I))
    lo, hi = np.ones_like(I), np.where(ok, I - cached, 1.0)
    while np.any(lo < hi):
        mid = np.floor((lo + hi + 1) / 2)
        f = fits(mid)
        lo, hi = np.where(f & (lo < hi), mid, lo), np.where(~f & (lo < hi), mid - 1, hi)
    chunk = np.where(ok, lo, 0.0)
    n = np.where(ok, np.ceil((I - cached) / np.maximum(chunk, 1.0)), 0.0)
    time = np.full(I.shape, np.nan)
    mfu, mbu = np.full(I.shape, np.nan), np.full(I.shape, np.nan)
    m = microbatches(b, dep.pp)
    mb = b / m
    if np.any(ok):
        # every chunk but the last is full and has no logits: summed piecewise (``chunk_prefix``)
        cs, ns = np.where(ok, chunk, 1.0), np.where(ok, n, 1.0)
        F = chunk_prefix(spec, hw, dep, b, cs, cached, max(int(ns.max()) - 2, 0))
        if F is not None:
            full_t, full_f, full_b = F(ns - 1)
            start = cached + (ns - 1) * cs
            last = time_step(spec, hw, dep, StepShape(mb, I - start, start, 1.0))
            t_last = np.asarray(last.time_s, dtype=float)
            total = full_t + t_last
            first = time_step(spec, hw, dep, StepShape(mb, np.minimum(cs, I - cached), cached,
                                                       (ns == 1).astype(float)))
            with np.errstate(divide="ignore", invalid="ignore"):
                time = np.where(ok, np.maximum(m, dep.pp) * total + (np.minimum(m, dep.pp) - 1) * t_last
                                + speculator_prefill_s(spec, hw, dep, b, I), np.nan)
                mfu = np.where(ok, (full_f + np.asarray(last.flops)) / (total * mfu_peak(hw, first)), np.nan)
                mbu = np.where(ok, (full_b + np.asarray(last.bytes_moved)) / (total * hw.memory_bandwidth.value),
                               np.nan)
            return chunk, time, mfu, mbu, first
    width = int(n.max()) if n.size and n.max() > 0 else 0
    if width and ok.sum() * width <= max_cells:
        j = np.arange(width, dtype=float)[None, :]
        starts = cached[:, None] + j * chunk[:, None]
        valid = j < n[:, None]
        sizes = np.where(valid, np.minimum(chunk[:, None], I[:, None] - starts), 1.0)
        starts = np.where(valid, starts, 0.0)
        logits = (j == n[:, None] - 1).astype(float)
        t = time_step(spec, hw, dep, StepShape(mb[:, None], sizes, starts, logits))
        shape = starts.shape
        st = np.where(valid, np.broadcast_to(np.asarray(t.time_s, dtype=float), shape), 0.0)
        fl = np.where(valid, np.broadcast_to(np.asarray(t.flops, dtype=float), shape), 0.0)
        mv = np.where(valid, np.broadcast_to(np.asarray(t.bytes_moved, dtype=float), shape), 0.0)
        total = st.sum(axis=1)
        last = np.take_along_axis(st, np.maximum(n - 1, 0).astype(np.int64)[:, None], axis=1)[:, 0]
        first = time_step(spec, hw, dep, StepShape(mb, np.where(ok, sizes[:, 0], 1.0), starts[:, 0], logits[:, 0]))
        with np.errstate(divide="ignore", invalid="ignore"):
            time = np.where(ok, np.maximum(m, dep.pp) * total + (np.minimum(m, dep.pp) - 1) * last
                            + speculator_prefill_s(spec, hw, dep, b, I), np.nan)
            mfu = np.where(ok, fl.sum(axis=1) / (total * mfu_peak(hw, first)), np.nan)
            mbu = np.where(ok, mv.sum(axis=1) / (total * hw.memory_bandwidth.value), np.nan)
        return chunk, time, mfu, mbu, first
    for k in np.nonzero(ok)[0]:  # very many chunks: one by one
        r = chunked_prefill(spec, hw, dep, int(b[k]), int(I[k]), int(chunk[k]))
        time[k], mfu[k], mbu[k] = float(r.time_s), r.mfu, r.mbu
    return chunk, time, mfu, mbu, None



# ---- the whole serving result on a grid --------------------------------------------------------


BOUNDS = ("compute", "memory", "comm")


def step_bound(timing: StepTiming):
    """What bounds a step, as an index into ``BOUNDS``: "compute", "memory" or "comm",
    whichever carries the most of the step's time (compute- and memory-bound operators by
    their own roofline, comm by the communication part). Shape: that of the step's inputs
    (int8)."""
    comp = sum((np.where(np.asarray(t.compute_s) >= np.asarray(t.memory_s), t.total_s, 0.0)
                for t in timing.timings if t.op.kind is not OpKind.COMM), 0.0)
    mem = sum((np.where(np.asarray(t.compute_s) < np.asarray(t.memory_s), t.total_s, 0.0)
               for t in timing.timings if t.op.kind is not OpKind.COMM), 0.0)
    comm = np.asarray(timing.comm_part_s)
    comp, mem, comm = np.broadcast_arrays(np.asarray(comp, float), np.asarray(mem, float), comm)
    return np.argmax(np.stack([comp, mem, comm]), axis=0).astype(np.int8)


@dataclass(frozen=True)
class ServingGrid:
    """``serve`` on a grid: every field has the broadcast shape of (batch, input_len,
    output_len) (memory fields and utilisations may keep a smaller broadcastable shape).
    Units as in ``serving.ServeResult``; tokens/s per replica (all ``devices``)."""

    batch: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray  # mean over the n - 1 decode steps (the step at the prompt when n <= 1)
    e2e_s: np.ndarray
    prefill_tokens_per_s: np.ndarray
    decode_tokens_per_s: np.ndarray  # batch / TPOT (0 when output_len = 0)
    combined_tokens_per_s: np.ndarray  # batch x output / e2e (0 when output_len = 0)
    weight_bytes: float
    kv_bytes: np.ndarray  # at input + output tokens
    workspace_bytes: np.ndarray
    usable_bytes: float
    fits: np.ndarray  # weights + DeepEP buffers + KV + workspace <= usable (``MemoryReport.fits``)
    max_batch: np.ndarray  # sequences per replica at input + output tokens
    prefill_fits: np.ndarray
    prefill_mfu: np.ndarray
    prefill_mbu: np.ndarray
    prefill_bound: np.ndarray  # index into BOUNDS (-1: not classified, ``bounds=False``)
    decode_mfu: np.ndarray  # first decode step (context input_len), as ``ServeResult.decode_first``
    decode_mbu: np.ndarray
    decode_bound: np.ndarray
    devices: int
    comm_buffer_bytes: float = 0.0  # DeepEP buffers per device (``memory.deepep_buffers``)

    @property
    def memory_bytes(self):
        """Weights + DeepEP buffers + KV + workspace per device (bytes)."""
        return self.weight_bytes + self.comm_buffer_bytes + self.kv_bytes + self.workspace_bytes


def serve_grid(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, batch, input_len, output_len,
               bounds: bool = True) -> ServingGrid:
    """``serving.serve`` for every broadcast combination of ``batch`` (sequences, >= 1),
    ``input_len`` (>= 1) and ``output_len`` (>= 0) tokens, without a loop over points or
    decode steps. Equal to ``serve`` point by point (tests/test_sweep.py). ``bounds``: also
    classify each phase's bound (object arrays, slower).

    Raises FieldError for an infeasible layout and CostsimError when the weights do not fit
    (as ``serve``) or an input is out of range."""
    dep.check(spec)
    wb = weight_bytes_per_device(spec, dep)
    usable = hw.memory_capacity.value * dep.gpu_memory_utilization
    if wb > usable:
        raise CostsimError(f"{spec.name} does not fit on {hw.name}: {wb / 1e9:.1f} GB of weights per device")
    b, i, o = (np.asarray(x, dtype=float) for x in (batch, input_len, output_len))
    for name, x, lo in (("batch", b, 1), ("input_len", i, 1), ("output_len", o, 0)):
        if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x < lo) or np.any(x != np.round(x)):
            raise CostsimError(f"{name}: expected integers >= {lo}")
    steps = np.maximum(o - 1, 0.0)
    pre = prefill(spec, hw, dep, b, i)
    first = decode(spec, hw, dep, b, i)
    if np.any(steps > 0):
        lmax = int(np.max(i + steps))
        F = decode_prefix(spec, hw, dep, b, lmax)
        total = F(i + steps) - F(i)
    else:  # no decode step after the first token (output 0 or 1): nothing to sum
        total = np.zeros(np.broadcast_shapes(b.shape, i.shape, o.shape))
    ttft = np.asarray(pre.time_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(steps > 0, total / steps, np.asarray(first.time_s))
        e2e = ttft + total
        dec_tps = np.where(o > 0, b / tpot, 0.0)
        comb_tps = np.where(o > 0, b * o / e2e, 0.0)
    mem = memory_report(spec, hw, dep, b, i + o)
    pre_ws = prefill_workspace(spec, dep, b, i - dep.cached_prefix(i), i)
    pre_fits = wb + mem.comm_buffer_bytes + kv_bytes_per_device(spec, dep, b, i) + pre_ws <= usable
    none = np.array(-1, dtype=np.int8)
    pre_mfu, pre_mbu = np.asarray(pre.mfu), np.asarray(pre.mbu)
    pre_bound = step_bound(pre.timing) if bounds else none
    if not np.all(pre_fits):
        # a prefill whose activations do not fit is chunked (``serving.chunked_prefill``): the
        # distinct such (batch, prompt) pairs are costed together, over the (batch, prompt) shape
        # only (prefill does not depend on the output length)
        shape = np.broadcast_shapes(b.shape, i.shape)
        full = [np.array(np.broadcast_to(x, shape)) for x in (ttft, pre_mfu, pre_mbu, pre_fits, pre_bound)]
        ttft, pre_mfu, pre_mbu, pre_fits, pre_bound = full
        B, I = np.broadcast_to(b, shape), np.broadcast_to(i, shape)
        bad = np.nonzero(~pre_fits)
        pairs, inverse = np.unique(np.stack([B[bad], I[bad]]), axis=1, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        chunk, t, mfu_c, mbu_c, first_chunk = chunked_prefill_grid(spec, hw, dep, pairs[0], pairs[1])
        got = chunk[inverse] > 0
        sel = tuple(ax[got] for ax in bad)
        ttft[sel], pre_mfu[sel], pre_mbu[sel], pre_fits[sel] = t[inverse][got], mfu_c[inverse][got], \
            mbu_c[inverse][got], True
        if bounds and np.any(got):
            if first_chunk is not None:
                pre_bound[sel] = np.broadcast_to(step_bound(first_chunk), chunk.shape)[inverse][got]
            else:
                for idx in zip(*sel):
                    r = chunked_prefill(spec, hw, dep, int(B[idx]), int(I[idx]),
                                        prefill_chunk_tokens(spec, hw, dep, int(B[idx]), int(I[idx])))
                    pre_bound[idx] = step_bound(r.timing)
        with np.errstate(divide="ignore", invalid="ignore"):
            e2e = ttft + total
            comb_tps = np.where(o > 0, b * o / e2e, 0.0)
    return ServingGrid(
        batch=b, input_len=i, output_len=o, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e,
        prefill_tokens_per_s=b * i / ttft, decode_tokens_per_s=dec_tps, combined_tokens_per_s=comb_tps,
        weight_bytes=wb, kv_bytes=np.asarray(mem.kv_bytes), workspace_bytes=np.asarray(mem.workspace_bytes),
        usable_bytes=usable, fits=np.asarray(mem.fits), max_batch=np.asarray(mem.max_batch), prefill_fits=pre_fits,
        prefill_mfu=pre_mfu, prefill_mbu=pre_mbu,
        prefill_bound=pre_bound,
        decode_mfu=np.asarray(first.mfu), decode_mbu=np.asarray(first.mbu),
        decode_bound=step_bound(first.timing) if bounds else none, devices=dep.devices,
        comm_buffer_bytes=mem.comm_buffer_bytes)


# ---- the sweep: models x hardware x layouts x formats x grid -> DataFrame ------------------------

LAYOUT_COLUMNS = ["model", "hardware", "devices", "tp", "ep", "pp", "dp", "weight_dtype", "kv_dtype"]
GRID_COLUMNS = ["batch", "input_tokens", "output_tokens"]
METRIC_COLUMNS = [  # float; NaN where the point is infeasible (memory columns kept where known)
    "ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "tokens_per_s_per_device", "combined_tokens_per_s",
    "combined_tokens_per_s_per_device", "prefill_tokens_per_s", "prefill_mfu", "prefill_mbu", "decode_mfu",
    "decode_mbu"]
MEMORY_COLUMNS = ["memory_per_device_bytes", "weight_bytes_per_device", "kv_bytes_per_device",
                  "memory_usable_bytes", "max_batch"]
COLUMNS = (LAYOUT_COLUMNS + GRID_COLUMNS + ["feasible", "reason"] + METRIC_COLUMNS + MEMORY_COLUMNS
           + ["prefill_fits", "prefill_bound", "decode_bound"])
REASONS = ("", "layout_invalid", "format_unsupported", "weights_do_not_fit", "kv_does_not_fit")  # "" = feasible


@dataclass(frozen=True)
class Partition:
    """One unit of a sweep (what a worker runs): one model, hardware, layout request and
    formats over the whole batch x input x output grid."""

    model: ModelSpec
    hardware: HardwareProfile
    request: object  # layout.LayoutRequest
    batch: tuple
    input_len: tuple
    output_len: tuple


def partitions(models, hardware, requests, batch, input_len, output_len) -> list[Partition]:
    """The sweep's independent units: models x hardware x layout requests (formats included)."""
    g = tuple(int(x) for x in batch), tuple(int(x) for x in input_len), tuple(int(x) for x in output_len)
    return [Partition(m, h, r, *g) for m, h, r in product(models, hardware, requests)]


def run_partition(p: Partition) -> dict:
    """The rows of one partition as columns (``COLUMNS`` + ``detail``): the layout columns and
    ``detail`` (why its infeasible points are infeasible) as one value each (None where an
    invalid layout's request left a degree unset), the others numpy arrays of equal length,
    batch-major then input then output; ``reason`` as an index into ``REASONS``, the bounds
    into ``BOUNDS`` (-1 for an infeasible point). Infeasible points are kept with NaN metrics
    (memory columns kept where they are known)."""
    from costsim.errors import FieldError
    from costsim.simulator.layout import resolve_deployment

    B, I, O = (np.asarray(x, dtype=float) for x in (p.batch, p.input_len, p.output_len))
    shape = (len(B), len(I), len(O))
    r = p.request
    try:
        dep = resolve_deployment(p.model, p.hardware, r, int(B.min()), int(I.min() + O.min()))
    except FieldError as e:  # a format the hardware cannot compute (fp8 on an A100) or a layout it cannot run
        reason = "format_unsupported" if e.field in ("weight_dtype", "kv_dtype") else "layout_invalid"
        dep, detail = None, f"{e.field} {e.value}: {e.reason}"
    else:
        reason = detail = ""
    lay = dict(model=p.model.name, hardware=p.hardware.name,
               devices=dep.devices if dep else (r.devices or p.hardware.devices_per_node),
               tp=dep.tp if dep else r.tp, ep=dep.ep if dep else r.ep, pp=dep.pp if dep else r.pp,
               dp=dep.dp if dep else None, weight_dtype=dep.weights_name if dep else str(r.weight_dtype or "checkpoint"),
               kv_dtype=dep.kv_format.name if dep else str(r.kv_dtype))
    bb, ii, oo = np.meshgrid(B, I, O, indexing="ij")
    n = bb.size
    cols: dict = dict(lay)  # one value for the whole partition
    cols.update(batch=bb.reshape(-1).astype(np.int64), input_tokens=ii.reshape(-1).astype(np.int64),
                output_tokens=oo.reshape(-1).astype(np.int64))
    metrics = {k: np.full(n, np.nan) for k in METRIC_COLUMNS + MEMORY_COLUMNS}
    prefill_fits = np.zeros(n, bool)
    bounds = (np.full(n, -1, dtype=np.int8),) * 2
    reasons = np.full(n, REASONS.index(reason), dtype=np.int8)
    if dep is not None:
        wb = weight_bytes_per_device(p.model, dep)
        usable = p.hardware.memory_capacity.value * dep.gpu_memory_utilization
        metrics["weight_bytes_per_device"][:] = wb
        metrics["memory_usable_bytes"][:] = usable
        if wb > usable:
            reasons[:] = REASONS.index("weights_do_not_fit")
            detail = f"{wb / 1e9:.1f} GB of weights per device > {usable / 1e9:.1f} GB usable"
        else:
            g = serve_grid(p.model, p.hardware, dep, B[:, None, None], I[None, :, None], O[None, None, :])

            def flat(x):
                return np.broadcast_to(x, shape).reshape(-1)

            ok = flat(g.fits)
            reasons[~ok] = REASONS.index("kv_does_not_fit")
            detail = "weights + KV cache + workspace per device exceed the usable memory"
            per_dev = 1.0 / dep.devices
            vals = dict(ttft_s=g.ttft_s, tpot_s=g.tpot_s, e2e_s=g.e2e_s, tokens_per_s=g.decode_tokens_per_s,
                        tokens_per_s_per_device=g.decode_tokens_per_s * per_dev,
                        combined_tokens_per_s=g.combined_tokens_per_s,
                        combined_tokens_per_s_per_device=g.combined_tokens_per_s * per_dev,
                        prefill_tokens_per_s=g.prefill_tokens_per_s, prefill_mfu=g.prefill_mfu,
                        prefill_mbu=g.prefill_mbu, decode_mfu=g.decode_mfu, decode_mbu=g.decode_mbu)
            for k, v in vals.items():
                metrics[k] = np.where(ok, flat(v), np.nan)
            # no output token: no decode step, so no TPOT (as perf's '-')
            decodes = flat(np.asarray(O, dtype=float)[None, None, :]) > 0
            for k in ("tpot_s", "decode_mfu", "decode_mbu"):
                metrics[k] = np.where(decodes, metrics[k], np.nan)
            metrics.update(memory_per_device_bytes=flat(g.memory_bytes).astype(float),
                           kv_bytes_per_device=flat(g.kv_bytes).astype(float), max_batch=flat(g.max_batch).astype(float))
            prefill_fits = flat(g.prefill_fits).copy()
            bounds = tuple(np.where(ok, flat(x), -1).astype(np.int8) for x in (g.prefill_bound, g.decode_bound))
    cols.update(feasible=reasons == 0, reason=reasons, **metrics, prefill_fits=prefill_fits,
                prefill_bound=bounds[0], decode_bound=bounds[1], detail=detail)
    return {k: cols[k] for k in COLUMNS + ["detail"]}


