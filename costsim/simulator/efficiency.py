"""Per-family time models: how long one occurrence of an operator takes on a profile.

One formula per family (``types.Family``), its parameters in the profile's
``efficiency.families.<family>`` (``specs.KernelFamily``), each falling back to the profile-wide
``efficiency.compute`` / ``memory`` / ``kernel_overhead`` when absent:

- gemm:          max(FLOPs / (peak x c x q x M/(M + m_half)), bytes / (bw x m)) + overhead
                 (M/(M + m_half) is 1 up to gemv_rows rows, default 1: a matrix-vector product)
                 q = tile and wave quantisation: M N / (ceil(M/tm) tm ceil(N/tn) tn) x
                 tiles / (ceil(tiles/units) units), tiles = ceil(M/tm) ceil(N/tn); 1 if not given
- gemm_fp8_block: as gemm_fp8, weights with 128 x 128 block scales; each absent field gemm_fp8's
- gemm_fp8:      as gemm, for GEMMs on the fp8 tensor cores; each parameter it lacks is gemm's
                 (the overhead then also carries the activation-quantisation kernels that fp8
                 GEMMs launch before the matmul)
- gemm overlap:  with overlap_p, max(c, m) becomes (c^p + m^p)^(1/p): compute and memory
                 overlap only partly (p = 1: not at all; large p: the max); fitted per GEMM family
- gemm K loop:   + per_k x min(K, k_split): the latency of a block's serial loop over the
                 reduction (about 1.4 ns per element on H100/H200, which a GEMM of few
                 output tiles cannot hide), held at k_split by cuBLAS' split-K
- gemm epilogue: + per_output x M x N: scaling, converting and storing each output element,
                 which a short K loop does not hide (grouped GEMMs too, M = the rank's pairs)
- grouped_gemm:  as gemm with M = rows per busy expert, + per_group_overhead x busy experts
                 + per_slot_overhead x expert slots on the rank (busy or not)
- grouped_gemm_fp8, grouped_gemm_fp8_block: as grouped_gemm, expert GEMMs on the fp8 tensor
                 cores (per-tensor / block scales); each absent field grouped_gemm_fp8's, then
                 grouped_gemm's (fp8 MoE kernels reach their own fraction of the fp8 peak and
                 carry the activations' quantisation, as the fp8 GEMMs do)
- grouped_gemm_mxfp4: as grouped_gemm, MXFP4 expert weights dequantised to BF16 in the
                 kernel (W4A16); each absent field grouped_gemm's
- attention_*:   max(FLOPs / (peak x c), bytes / (bw x m)) + per_element x scores
                 + per_row x rows + overhead, decode (one query per sequence) and prefill (more)
                 with their own parameters; scores = heads x (query, key) pairs, the
                 scale/mask/softmax work (an operator that gives no ``scores`` shape gets none);
                 rows = sequences x queries x heads (RoPE, KV append, softmax state per row);
                 a GQA decode kernel works per KV head (XQA, FlashDecoding: one block per
                 sequence and KV head), so its rows are sequences x KV heads (``decode_rows``),
                 each at per_row_group when the kernel is grouped (group > 1; MHA rows and
                 groups beyond group_limit at per_row); an 8-bit KV cache under a grouped
                 kernel uses attention_decode_fp8 (absent fields attention_decode's), a prefill
                 over it attention_prefill_fp8 / attention_mla_prefill_fp8 (``types.attention_families``);
                 a prefill kernel runs one block per (sequence, query head, q_tile queries):
                 + per_tile x sequences x heads x ceil(q_len / q_tile);
                 one that walks the query heads re-reads group_reread of the KV cache per
                 further head of a group: bytes + kv_read x group_reread x (group - 1);
                 a decode row split into chunks of split_tokens adds one chunk streamed by
                 one block: min(kv_len, split_tokens) x row_bytes / (bw x split_memory), a
                 sliding window's chunk cut from the whole cache (ctx_len, not kv_len);
                 a grouped decode row + per_row_query x group x head_dim (its queries);
                 a decode row + per_row_tile x ceil(kv_len / kv_tile) (its loop over the cache);
                 with overlap_p, a decode's row terms R and its roofline T overlap partly:
                 (T^p + R^p)^(1/p) instead of T + R;
                 an ungrouped decode over an 8-bit cache streams at kv8_memory, not memory
                 MLA cores use attention_mla_decode / _prefill, each absent field the GQA one's
- elementwise:   bytes / (bw x m) + overhead
- comm:          ``parallel.comm_seconds`` (link bandwidth x efficiency, latency terms)

Roofline: Williams, Waterman & Patterson, CACM 52(4), 2009. Wave quantisation: NVIDIA "Matrix
Multiplication Background User's Guide" (tile and wave quantization).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costsim.simulator.types import Family, Operator, OpKind, attention_families, decoding
from costsim.specs import HardwareProfile, KernelFamily


@dataclass(frozen=True)
class FamilyRates:
    """The parameters one family's formula uses, resolved against the profile (SI units)."""

    compute: float  # fraction of peak
    memory: float  # fraction of bandwidth
    overhead_s: float
    per_group_overhead_s: float = 0.0
    per_slot_overhead_s: float = 0.0  # grouped GEMMs: per expert slot on the rank, busy or not
    per_element_s: float = 0.0
    per_row_s: float = 0.0
    per_row_group_s: float = 0.0  # GQA decode: per KV row of a grouped kernel (0: per_row_s)
    per_tile_s: float = 0.0  # prefill: per (sequence, query head, tile of q_tile queries)
    per_k_s: float = 0.0  # GEMM: latency per reduction element of a block's K loop
    per_output_s: float = 0.0  # GEMM: epilogue time per output element (not overlapped)
    per_row_tile_s: float = 0.0  # decode: per (row, tile of kv_tile cached tokens)
    kv_tile: float = 256.0  # decode: cached tokens per tile of a row's loop
    overlap_p: float = 0.0  # GEMM: (c^p + m^p)^(1/p) instead of max(c, m) (0: the max)
    k_split: float = 0.0  # GEMM: K beyond which split-K holds the loop (0: no limit)
    q_tile: float = 64.0  # prefill: queries per tile of the attention kernel
    m_half: float = 0.0
    tile_m: float = 0.0
    tile_n: float = 0.0
    units: float = 0.0
    group_limit: float = 0.0  # decode attention: query heads per KV head beyond which ...
    group_compute: float = 0.0  # ... compute runs at this fraction of peak (0: no fallback)
    n_half: float = 0.0  # grouped GEMM columns at half efficiency (0: no column term)
    gemv_rows: float = 1.0  # GEMMs of at most this many rows stream their weights (no m_half term)
    group_reread: float = 0.0  # GQA decode: share of the KV cache each further query head re-reads
    split_tokens: float = 0.0  # decode: tokens per chunk of a split row (0: the whole row is one chunk)
    split_memory: float = 0.0  # decode: fraction of the bandwidth one chunk streams at (0: no chunk term)
    per_row_query_s: float = 0.0  # grouped decode: per query element (query head x head dim) of a KV row
    kv8_memory: float = 0.0  # ungrouped decode over an 8-bit cache: fraction of the bandwidth (0: memory)


# family -> the family whose parameters fill its absent fields
FALLBACK = {Family.GEMM_FP8: Family.GEMM, Family.GEMM_FP8_BLOCK: Family.GEMM_FP8,
            Family.GROUPED_GEMM_FP8: Family.GROUPED_GEMM, Family.GROUPED_GEMM_FP8_BLOCK: Family.GROUPED_GEMM_FP8,
            Family.GROUPED_GEMM_MXFP4: Family.GROUPED_GEMM,
            Family.ATTENTION_MLA_DECODE: Family.ATTENTION_DECODE,
            Family.ATTENTION_DECODE_FP8: Family.ATTENTION_DECODE,
            Family.ATTENTION_PREFILL_FP8: Family.ATTENTION_PREFILL,
            Family.ATTENTION_MLA_PREFILL_FP8: Family.ATTENTION_MLA_PREFILL,
            Family.ATTENTION_MLA_PREFILL: Family.ATTENTION_PREFILL}
_TILES = ("tile_m", "tile_n", "units")


def resolved_family(hw: HardwareProfile, family: Family) -> KernelFamily:
    """``family``'s parameters on ``hw``, each absent one taken from its ``FALLBACK`` family
    (recursively; the tile triple is taken whole from the nearest family that gives it)."""
    f: KernelFamily = getattr(hw.efficiency.families, family.value)
    parent = FALLBACK.get(family)
    if parent is None:
        return f
    g = resolved_family(hw, parent)
    tiles = {k: getattr(f if f.tile_m is not None else g, k) for k in _TILES}
    return KernelFamily(**{k: getattr(f, k) if getattr(f, k) is not None else getattr(g, k)
                           for k in KernelFamily.model_fields if k not in _TILES}, **tiles)


def rates(hw: HardwareProfile, family: Family) -> FamilyRates:
    """``family``'s parameters on ``hw``, profile-wide factors filling the gaps."""
    e = hw.efficiency
    f = resolved_family(hw, family)

    def v(q, default=0.0):
        return default if q is None else q.value

    return FamilyRates(compute=v(f.compute, e.compute.value), memory=v(f.memory, e.memory.value),
                       overhead_s=v(f.overhead, e.kernel_overhead.value), per_group_overhead_s=v(f.per_group_overhead),
                       per_slot_overhead_s=v(f.per_slot_overhead),
                       per_element_s=v(f.per_element), per_row_s=v(f.per_row), per_row_group_s=v(f.per_row_group),
                       per_tile_s=v(f.per_tile), q_tile=v(f.q_tile, 64.0), per_k_s=v(f.per_k), per_output_s=v(f.per_output), per_row_tile_s=v(f.per_row_tile), kv_tile=v(f.kv_tile, 256.0),
                       k_split=v(f.k_split),
                       overlap_p=v(f.overlap_p),
                       m_half=v(f.m_half), tile_m=v(f.tile_m), tile_n=v(f.tile_n),
                       units=v(f.units), group_limit=v(f.group_limit), group_compute=v(f.group_compute),
                       n_half=v(f.n_half), gemv_rows=v(f.gemv_rows, 1.0),
                       group_reread=v(f.group_reread), split_tokens=v(f.split_tokens), split_memory=v(f.split_memory),
                       per_row_query_s=v(f.per_row_query), kv8_memory=v(f.kv8_memory))


def gemm_shape_efficiency(r: FamilyRates, M, N):
    """The fraction of the family's compute efficiency a GEMM of M rows x N columns reaches:
    M / (M + m_half) x N / (N + n_half) x tile/wave quantisation (1 where the profile gives
    none of them)."""
    M = np.asarray(M, dtype=float)
    # up to gemv_rows rows (default one) a GEMM is a matrix-vector product (BLAS gemv, cuBLAS
    # gemv/split-K): memory-bound, no small-M compute penalty
    gemv = M <= max(r.gemv_rows, 1.0)
    eff = np.where(gemv, 1.0, M / (M + r.m_half)) if r.m_half else np.ones_like(M)
    if r.n_half:
        N_ = np.asarray(N, dtype=float)
        eff = eff * np.where(gemv, 1.0, N_ / (N_ + r.n_half))
    if r.tile_m:
        tm, tn = np.ceil(M / r.tile_m), np.ceil(np.asarray(N, dtype=float) / r.tile_n)
        tiles = tm * tn
        # an empty GEMM (M or N zero: a part with no rows) has no tiles; its efficiency is moot
        # (no FLOPs) and 1 keeps 0/0 out of the arrays
        with np.errstate(divide="ignore", invalid="ignore"):
            padded = (M * N) / (tm * r.tile_m * tn * r.tile_n)
            waves = tiles / (np.ceil(tiles / r.units) * r.units)
        eff = eff * np.where(tiles > 0, padded * waves, 1.0)
    return eff


@dataclass(frozen=True)
class Terms:
    """One operator occurrence's time and the terms it is made of (seconds)."""

    compute_s: object
    memory_s: object
    extra_s: object  # per-element and per-group work, launch overhead
    time_s: object


def _roof(op: Operator, hw: HardwareProfile, r: FamilyRates, shape_eff=1.0):
    peak = hw.peak(op.dtype) if op.dtype else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        compute = np.asarray(op.flops, dtype=float) / (peak * r.compute * shape_eff) if op.dtype else 0.0
        compute = np.where(np.asarray(op.flops) > 0, compute, 0.0) if op.dtype else 0.0
    memory = np.asarray(op.bytes_moved, dtype=float) / (hw.memory_bandwidth.value * r.memory)
    return compute, memory


def _attention(op: Operator, hw: HardwareProfile) -> Terms:
    """Decode and prefill parameters chosen per element by ``types.decoding`` (arrays allowed)."""
    parts = []
    fams = attention_families(op.shape)
    for fam, rows in zip(fams, (op.shape.get("decode_rows", op.shape.get("rows", 0.0)), op.shape.get("rows", 0.0))):
        r = rates(hw, fam)
        shape_eff, per_row = 1.0, r.per_row_s
        decode_gqa = fam in (Family.ATTENTION_DECODE, Family.ATTENTION_DECODE_FP8) and "group" in op.shape
        if decode_gqa and r.per_row_group_s:  # a grouped (GQA) kernel's KV row costs its own
            per_row = np.where(np.asarray(op.shape["group"], dtype=float) > 1, r.per_row_group_s, r.per_row_s)
        if decode_gqa and r.group_limit and r.group_compute:
            # a query-head group larger than the decode kernel handles: the fallback kernel runs
            # per query head (its rows are the query heads', not the KV heads') at its own rate
            big = np.asarray(op.shape["group"], dtype=float) > r.group_limit
            shape_eff = np.where(big, r.group_compute / r.compute, 1.0)
            rows = np.where(big, np.asarray(op.shape.get("rows", 0.0), dtype=float), rows)
            per_row = np.where(big, r.per_row_s, per_row)
        c, m = _roof(op, hw, r, shape_eff)
        if r.kv8_memory and fam is Family.ATTENTION_DECODE and op.shape.get("kv8") and not op.shape.get("mla"):
            m = m * r.memory / r.kv8_memory  # an ungrouped kernel dequantising an 8-bit cache at its own rate
        if r.group_reread and "group" in op.shape:  # KV re-read by the further heads of a group
            m = m + (np.asarray(op.shape.get("kv_read", 0.0), dtype=float) * r.group_reread
                     * (np.asarray(op.shape["group"], dtype=float) - 1.0) / (hw.memory_bandwidth.value * r.memory))
        rows = np.asarray(rows, dtype=float)
        row_s = per_row * rows
        if decode_gqa and r.per_row_query_s and "head_dim" in op.shape:  # a grouped row's queries
            g = np.asarray(op.shape["group"], dtype=float)
            q = np.where((g > 1) & ((g <= r.group_limit) if r.group_limit else True), g * float(op.shape["head_dim"]), 0.0)
            row_s = row_s + r.per_row_query_s * q * rows
        if r.per_row_tile_s and "kv_len" in op.shape and fam in (Family.ATTENTION_DECODE, Family.ATTENTION_DECODE_FP8):
            # a row's block walks its cache in tiles of kv_tile tokens, each with a fixed cost
            kv = np.maximum(np.asarray(op.shape["kv_len"], dtype=float), 1.0)
            row_s = row_s + r.per_row_tile_s * rows * np.ceil(kv / r.kv_tile)
        if r.overlap_p and fam in (Family.ATTENTION_DECODE, Family.ATTENTION_DECODE_FP8):
            # the rows' work overlaps the stream partly: (roof^p + rows^p)^(1/p) - roof extra
            roof = np.maximum(c, m)
            with np.errstate(divide="ignore", invalid="ignore"):
                big, small = np.maximum(roof, row_s), np.minimum(roof, row_s)
                row_s = np.where(big > 0, big * (1.0 + (small / np.where(big > 0, big, 1.0)) ** r.overlap_p)
                                 ** (1.0 / r.overlap_p), 0.0) - roof
        extra = r.per_element_s * np.asarray(op.shape.get("scores", 0.0), dtype=float) + row_s + r.overhead_s
        if r.per_tile_s and "q_len" in op.shape:  # one block per (sequence, head, q_tile queries)
            q = np.maximum(np.asarray(op.shape["q_len"], dtype=float), 1.0)
            extra = extra + r.per_tile_s * np.asarray(op.shape.get("rows", 0.0), dtype=float) / q * np.ceil(q / r.q_tile)
        if r.split_memory and "row_bytes" in op.shape:  # one chunk of a split decode row, streamed by one block
            # a sliding window's chunk: the kernel still splits the whole cache (ctx_len)
            kv_len = np.asarray(op.shape.get("ctx_len", op.shape["kv_len"]), dtype=float)
            chunk = np.minimum(kv_len, r.split_tokens) if r.split_tokens else kv_len
            extra = extra + chunk * np.asarray(op.shape["row_bytes"], dtype=float) / (hw.memory_bandwidth.value * r.split_memory)
        parts.append((c, m, extra))
    dec = decoding(op.shape)
    c, m, x = (np.where(dec, a, b) for a, b in zip(*parts))
    return Terms(c, m, x, np.maximum(c, m) + x)


def operator_terms(op: Operator, hw: HardwareProfile) -> Terms:
    """Time of one occurrence of a compute operator (not comm) by its family's formula."""
    fam = op.family
    if op.kind is OpKind.ATTENTION:
        return _attention(op, hw)
    r = rates(hw, fam)
    if op.kind is OpKind.GEMM:
        c, m = _roof(op, hw, r, gemm_shape_efficiency(r, op.shape["M"], op.shape["N"]))
        x = r.overhead_s
        if r.per_k_s:  # a block's serial K loop, held at k_split by split-K
            K = np.asarray(op.shape["K"], dtype=float)
            x = x + r.per_k_s * (np.minimum(K, r.k_split) if r.k_split else K)
        if r.per_output_s:  # the epilogue: each output element scaled, converted and stored
            x = x + r.per_output_s * np.asarray(op.shape["M"], dtype=float) * np.asarray(op.shape["N"], dtype=float)
    elif op.kind is OpKind.GROUPED_GEMM:
        groups = np.asarray(op.shape["groups"], dtype=float)
        # the narrower weight dimension (an expert split over moe_tp: N of gate/up, K of down)
        narrow = np.minimum(np.asarray(op.shape["N"], dtype=float), np.asarray(op.shape.get("K", op.shape["N"]), dtype=float))
        c, m = _roof(op, hw, r, gemm_shape_efficiency(r, op.shape["tokens_per_expert"], narrow))
        x = r.overhead_s + r.per_group_overhead_s * groups + r.per_slot_overhead_s * float(op.shape.get("slots", 0.0))
        if r.per_output_s:  # the epilogue of every expert's output rows
            x = x + r.per_output_s * np.asarray(op.shape["M"], dtype=float) * np.asarray(op.shape["N"], dtype=float)
    else:
        c, m = _roof(op, hw, r)
        x = r.overhead_s
    roof = np.maximum(c, m)
    if op.kind is OpKind.GEMM and r.overlap_p:  # compute and memory overlap only partly
        lo = np.minimum(c, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            roof = np.where(roof > 0, roof * (1.0 + (lo / np.where(roof > 0, roof, 1.0)) ** r.overlap_p)
                            ** (1.0 / r.overlap_p), 0.0)
    return Terms(c, m, x, roof + x)
