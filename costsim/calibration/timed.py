"""Production-style torch kernels for TIMING, one per engine operator family.

The readable reference modules (``costsim.calibration.kernels``) are written for counting:
they ``torch.cat`` the whole cache every step and multiply strided views, which is where
most of their decode time goes. The kernels here compute the same thing the way a serving
stack does, so their timings can calibrate the engine's operator model:

- weights stored once, as ``W`` [K, N] for ``y = x @ W`` held K-contiguous (the transposed view
  of nn.Linear's [N, K] storage: the layout BLAS/oneDNN/cuBLAS are fastest with; a row-major
  [K, N] bf16 operand is ~25x slower on this CPU); projections the engine lists as one GEMM are
  one GEMM here (the fused ``qkv_proj`` and ``gate_up_proj``);
- a preallocated KV cache written in place (``LatentKVCache`` for MLA, ``HeadKVCache`` for
  MHA/GQA/MQA); attention reads a view of its first ``n`` tokens, never a copy;
- attention cores as batched matmuls on BLAS-compatible operands (``torch.bmm``) or
  ``F.scaled_dot_product_attention`` (flash kernel on CPU and GPU);
- DeepSeekMoE as router -> top-k -> sort tokens by expert -> one GEMM pair per busy expert
  over a contiguous slice -> weighted unpermute (``index_add_``) -> + shared experts.

Every kernel is built from a ``ModelSpec`` and a step shape (batch, context, new_tokens), owns
random weights and a random input (``seed``), and can copy the weights of the matching
reference module (``load_reference``) so outputs can be compared. ``kernel()`` runs one step
on its own input and is what gets timed; ``kernel.forward(x)`` runs any input. Attention
steps write the new tokens' cache entries at positions ``context .. context+new_tokens-1``
without advancing the cache (so repeated timing calls do identical work);
``forward(x, advance=True)`` also advances it (a real decode loop).

FLOPs under ``torch.utils.flop_counter.FlopCounterMode`` (``count_flops`` below also counts
the CPU flash-attention op, which torch's table misses) equal the engine's operators
(``costsim.simulator.operators.step_operators``) for decode and for every GEMM. For causal
steps with more than one new token the attention cores compute the dense masked score
matrix (bmm) or, for SDPA, are counted dense by FlopCounterMode (it ignores causality): the
count exceeds the engine's (unmasked pairs only) by exactly the masked pairs. See
``tests/test_timed_kernels.py``.

RoPE rotation is omitted, as in the reference modules (elementwise, shape-preserving).
torch is imported at module level: import this module only where torch is wanted.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from costsim import specs as S

__all__ = [
    "TimedKernel", "Gemm", "fp8_supported", "LatentKVCache", "HeadKVCache",
    "MLAAttentionKernel", "GQAAttentionKernel", "MoEKernel", "DenseFFNKernel",
    "RMSNormKernel", "SiluMulKernel", "make_attention_kernel", "count_flops", "flop_counter",
]

_NAMES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16, "fp8": getattr(torch, "float8_e4m3fn", None)}


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    dt = _NAMES.get(str(dtype).lower())
    if dt is None:
        raise ValueError(f"unknown dtype {dtype!r}: expected a torch.dtype or one of {', '.join(_NAMES)}")
    return dt




# ======================================================================================
# FLOP counting (FlopCounterMode + the CPU flash-attention op)
# ======================================================================================


def flop_counter() -> "torch.utils.flop_counter.FlopCounterMode":
    """A FlopCounterMode that also counts ``aten._scaled_dot_product_flash_attention_for_cpu``
    (torch's table has the CUDA SDPA ops only, so SDPA on CPU would count 0). The formula is
    torch's own ``sdpa_flop`` (dense: causal masking is not subtracted)."""
    from torch.utils import flop_counter as fc

    def cpu_sdpa(query, key, value, *args, out_val=None, **kwargs) -> int:
        return fc.sdpa_flop_count(tuple(query.shape), tuple(key.shape), tuple(value.shape))

    cpu_sdpa._get_raw = True  # takes tensors, as FlopCounterMode's raw formulas do
    custom = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        custom[op] = cpu_sdpa
    return fc.FlopCounterMode(display=False, custom_mapping=custom)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (no grad), counted by ``flop_counter()``."""
    with flop_counter() as c, torch.no_grad():
        fn()
    return int(c.get_total_flops())


# ======================================================================================
# Base
# ======================================================================================


class TimedKernel:
    """Common interface: ``kernel()`` = one step on the kernel's own preallocated input."""

    name: str = "kernel"
    x: torch.Tensor

    def __init__(self, dtype, device, seed: int):
        self.dtype, self.device = _dtype(dtype), torch.device(device)
        self._gen = torch.Generator(device="cpu").manual_seed(seed)

    def _randn(self, *shape, std: float = 1.0) -> torch.Tensor:
        t = torch.randn(*shape, generator=self._gen) * std
        return t.to(device=self.device, dtype=self.dtype)

    def _w(self, k: int, n: int) -> torch.Tensor:
        """A random weight W [k, n] (std 1/sqrt(k)) for y = x @ W, stored K-contiguous: the
        transposed view of an nn.Linear-layout [n, k] tensor (see ``_load_t``)."""
        return self._randn(n, k, std=k ** -0.5).t()

    def _load(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device=self.device, dtype=self.dtype).contiguous()

    def _load_t(self, weight: torch.Tensor) -> torch.Tensor:
        """nn.Linear weight [N, K] -> W [K, N] for y = x @ W, as a transposed view of the
        contiguous [N, K] copy. K-contiguous weights matter: on CPU, oneDNN's bf16 GEMM
        with a row-major [K, N] operand is ~25x slower than with this layout."""
        return self._load(weight).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.inference_mode()
    def __call__(self) -> torch.Tensor:
        return self.forward(self.x)

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ======================================================================================
# GEMM
# ======================================================================================


def fp8_supported(device) -> bool:
    """True where ``torch._scaled_mm`` runs FP8 (e4m3) GEMMs: CUDA with compute capability
    >= 8.9 (Ada, Hopper, Blackwell). CPU is reported unsupported (not timed there)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "float8_e4m3fn"):
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


class Gemm(TimedKernel):
    """y = x @ W, x [M, K], W [K, N] -> y [M, N] (an engine ``gemm`` operator), into a
    preallocated output. ``dtype`` fp32 / bf16 / fp16, or fp8: e4m3 operands with per-tensor
    fp32 scales through ``torch._scaled_mm`` (W column-major, bf16 output), CUDA only
    (``fp8_supported``)."""

    name = "gemm"

    def __init__(self, M: int, N: int, K: int, *, dtype="bf16", device="cpu", seed: int = 0):
        dt = _dtype(dtype)
        self.M, self.N, self.K = M, N, K
        self.fp8 = dt.itemsize == 1
        if self.fp8 and not fp8_supported(device):
            raise NotImplementedError(f"fp8 GEMM needs torch._scaled_mm on a CUDA device with sm >= 89, not {device}")
        super().__init__(torch.bfloat16 if self.fp8 else dt, device, seed)
        self.x = self._randn(M, K)
        self.w = self._w(K, N)  # [K, N], K-contiguous (column-major; nn.Linear's [N, K] storage)
        if self.fp8:
            self.x = self.x.to(dt)  # [M, K] row-major
            self.w = self.w.t().to(dt).t()  # [K, N] column-major, as _scaled_mm wants
            self.scale_a = torch.ones((), device=self.device, dtype=torch.float32)
            self.scale_b = torch.ones((), device=self.device, dtype=torch.float32)
        self.out = torch.empty(M, N, device=self.device, dtype=self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8:
            return torch._scaled_mm(x, self.w, scale_a=self.scale_a, scale_b=self.scale_b, out_dtype=torch.bfloat16)
        if tuple(x.shape) == (self.M, self.K):
            return torch.mm(x, self.w, out=self.out)
        return x @ self.w

    @property
    def flops(self) -> int:
        return 2 * self.M * self.N * self.K


# ======================================================================================
# KV caches: preallocated, appended in place
# ======================================================================================


class _Cache:
    """A preallocated cache of ``capacity`` token slots per sequence; ``length`` slots used."""

    capacity: int
    length: int

    def _check(self, pos: int, s: int) -> None:
        if pos < 0 or pos + s > self.capacity:
            raise ValueError(f"cache write at {pos}..{pos + s} exceeds its capacity {self.capacity}")

    def append(self, *new: torch.Tensor) -> None:
        """Write the new tokens' entries at ``length`` in place and advance ``length``."""
        s = self.write(self.length, *new)
        self.length += s

    def write(self, pos: int, *new: torch.Tensor) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class LatentKVCache(_Cache):
    """MLA cache: per token one latent c^KV (d_c) and the shared RoPE key k^R (d_h^R), stored
    together as ``buf`` [batch, capacity, d_c + d_h^R] (one 'head', DeepSeek-V2 §2.1.2)."""

    def __init__(self, batch: int, capacity: int, kv_lora_rank: int, rope_dim: int, *, dtype, device):
        self.batch, self.capacity, self.kv_lora_rank, self.rope_dim = batch, capacity, kv_lora_rank, rope_dim
        self.buf = torch.zeros(batch, capacity, kv_lora_rank + rope_dim, dtype=_dtype(dtype), device=device)
        self.length = 0

    def write(self, pos: int, kv: torch.Tensor) -> int:
        """kv: [batch, s, d_c + d_h^R] -> slots pos..pos+s-1 (slice assignment, in place)."""
        s = kv.shape[1]
        self._check(pos, s)
        self.buf[:, pos:pos + s].copy_(kv)
        return s

    def view(self, n: int | None = None) -> torch.Tensor:
        """The first ``n`` (default ``length``) slots: a view [batch, n, d_c + d_h^R]."""
        return self.buf[:, : self.length if n is None else n]

    def load(self, cache: torch.Tensor) -> None:
        """Copy a reference cache [batch, L, d_c + d_h^R] into slots 0..L-1; length = L."""
        self.length = 0
        self.append(cache.to(self.buf.dtype))


class HeadKVCache(_Cache):
    """MHA/GQA/MQA cache: K and V per KV head, ``k`` and ``v`` [batch, n_kv, capacity,
    head_dim] each (head-major, the layout SDPA / FlashAttention read without a copy)."""

    def __init__(self, batch: int, capacity: int, n_kv: int, head_dim: int, *, dtype, device):
        self.batch, self.capacity, self.n_kv, self.head_dim = batch, capacity, n_kv, head_dim
        shape = (batch, n_kv, capacity, head_dim)
        self.k = torch.zeros(shape, dtype=_dtype(dtype), device=device)
        self.v = torch.zeros(shape, dtype=_dtype(dtype), device=device)
        self.length = 0

    def write(self, pos: int, k: torch.Tensor, v: torch.Tensor) -> int:
        """k, v: [batch, n_kv, s, head_dim] -> slots pos..pos+s-1 (in place)."""
        s = k.shape[2]
        self._check(pos, s)
        self.k[:, :, pos:pos + s].copy_(k)
        self.v[:, :, pos:pos + s].copy_(v)
        return s

    def view(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.length if n is None else n
        return self.k[:, :, :n], self.v[:, :, :n]

    def load(self, cache: torch.Tensor) -> None:
        """Copy a reference cache [batch, L, 2, n_kv, head_dim] into slots 0..L-1; length = L."""
        c = cache.to(self.k.dtype)
        self.length = 0
        self.append(c[:, :, 0].transpose(1, 2), c[:, :, 1].transpose(1, 2))


def _allowed(s: int, L: int, device) -> torch.Tensor | None:
    """Causal mask [s, L+s] (True = may attend) for s new tokens after L cached; None for decode."""
    if s == 1:
        return None
    q_pos = torch.arange(L, L + s, device=device)[:, None]
    return torch.arange(L + s, device=device)[None, :] <= q_pos


# ======================================================================================
# MLA
# ======================================================================================


class MLAAttentionKernel(TimedKernel):
    """One MLA block (DeepSeek-V2, arXiv 2405.04434, §2.1.2-2.1.3), projections included.

    ``form="absorbed"``: q_nope absorbed with W^UK per head (bmm [n_h, T, d_h] x [n_h, d_h,
    d_c]); all heads attend over the latent cache as one MQA head with qk dim d_c + d_h^R
    and v dim d_c (scores: one bmm of [B, s n_h, d_c+d_h^R] against the cache view, values:
    one bmm against its latent columns); output through W^UV per head, then o_proj.
    ``form="naive"``: decompress K_nope and V for all ``n`` cached tokens every step (one
    GEMM [B n, d_c] x [d_c, n_h(d_h + d_h^v)]), build per-head contiguous K [B, n_h, n,
    d_h + d_h^R] and V, then MHA. ``core``: "bmm" (scores + PV as batched matmuls, dense
    causal mask when s > 1; FLOPs = the engine's) or "sdpa" (F.scaled_dot_product_attention,
    shaped so the flash kernel runs: naive with V zero-padded to the qk dim; absorbed
    FlashMLA-style, the s n_h query rows against one KV head whose V is the whole cache row
    d_c + d_h^R, output cut to d_c. Counted FLOPs then include the padding / the d_h^R
    value columns; on this CPU the bf16 flash path is ~10x faster than bf16 bmm).
    Default: "bmm", except "sdpa" for naive with s > 1 (prefill).
    """

    def __init__(self, spec: S.ModelSpec, batch: int, context: int = 0, new_tokens: int = 1, *,
                 form: Literal["absorbed", "naive"] = "absorbed", core: Literal["bmm", "sdpa"] | None = None,
                 dtype="fp32", device="cpu", capacity: int | None = None, seed: int = 0):
        super().__init__(dtype, device, seed)
        a = spec.attention
        if not isinstance(a, S.MLAAttention):
            raise TypeError(f"{spec.name} does not use MLA")
        if form not in ("absorbed", "naive"):
            raise ValueError(f"form must be 'absorbed' or 'naive', got {form!r}")
        core = core or ("sdpa" if form == "naive" and new_tokens > 1 else "bmm")
        if core not in ("bmm", "sdpa"):
            raise ValueError(f"core must be 'bmm' or 'sdpa', got {core!r}")
        self.form, self.core = form, core
        self.name = f"mla.{form}.{'decode' if new_tokens == 1 else 'prefill'}"
        self.spec, self.batch, self.context, self.new_tokens = spec, batch, context, new_tokens
        h = spec.hidden_size
        self.nh, self.dc, self.dr = a.num_attention_heads, a.kv_lora_rank, a.qk_rope_head_dim
        self.dn, self.dv, self.dq = a.qk_nope_head_dim, a.v_head_dim, a.q_lora_rank
        self.scale = 1.0 / math.sqrt(self.dn + self.dr)
        nh, dc, dr, dn, dv = self.nh, self.dc, self.dr, self.dn, self.dv
        # weights, [K, N] contiguous
        if self.dq:
            self.w_qa, self.w_qb = self._w(h, self.dq), self._w(self.dq, nh * (dn + dr))
            self.qa_norm = torch.ones(self.dq, device=self.device, dtype=self.dtype)
        else:
            self.w_q = self._w(h, nh * (dn + dr))
        self.w_kva = self._w(h, dc + dr)
        self.kva_norm = torch.ones(dc, device=self.device, dtype=self.dtype)
        self._set_kv_b(self._randn(nh * (dn + dv), dc, std=dc ** -0.5))
        self.w_o = self._w(nh * dv, h)
        # cache with `context` random tokens, and the step's input
        self.cache = LatentKVCache(batch, capacity or context + new_tokens, dc, dr, dtype=self.dtype, device=self.device)
        self.cache.load(self._randn(batch, context, dc + dr))
        self.x = self._randn(batch, new_tokens, h)
        self._mask = _allowed(new_tokens, context, self.device)

    def _set_kv_b(self, kv_b: torch.Tensor) -> None:
        """kv_b_proj weight in nn.Linear layout [n_h (d_h + d_h^v), d_c] -> the naive weight
        W^UKV [d_c, n_h (d_h + d_h^v)] and the absorbed per-head W^UK [n_h, d_h, d_c]
        (q_nope @ W^UK) and W^UV [n_h, d_c, d_h^v] (o_lat @ W^UV), all K-contiguous views."""
        nh, dc, dn, dv = self.nh, self.dc, self.dn, self.dv
        kv_b = kv_b.contiguous()
        w = kv_b.view(nh, dn + dv, dc)
        absorbed = self.form == "absorbed"
        self.w_kvb = None if absorbed else kv_b.t()
        self.w_uk = w[:, :dn].transpose(1, 2).contiguous().transpose(1, 2) if absorbed else None
        self.w_uv = w[:, dn:].contiguous().transpose(1, 2) if absorbed else None

    def load_reference(self, ref, cache: torch.Tensor | None = None) -> "MLAAttentionKernel":
        """Copy the weights of a ``kernels.MLAAttention`` (and a reference latent cache
        [batch, context, d_c + d_h^R], if given)."""
        if self.dq:
            self.w_qa, self.w_qb = self._load_t(ref.q_a_proj.weight), self._load_t(ref.q_b_proj.weight)
            self.qa_norm = self._load(ref.q_a_layernorm.weight)
        else:
            self.w_q = self._load_t(ref.q_proj.weight)
        self.w_kva = self._load_t(ref.kv_a_proj.weight)
        self.kva_norm = self._load(ref.kv_a_layernorm.weight)
        self._set_kv_b(self._load(ref.kv_b_proj.weight))
        self.w_o = self._load_t(ref.o_proj.weight)
        if cache is not None:
            self.cache.load(cache)
            self.context = cache.shape[1]
            self._mask = _allowed(self.new_tokens, self.context, self.device)
        return self

    def forward(self, x: torch.Tensor, *, advance: bool = False) -> torch.Tensor:
        B, s, h = x.shape
        nh, dc, dr, dn, dv = self.nh, self.dc, self.dr, self.dn, self.dv
        T, L = B * s, self.cache.length
        n = L + s
        mask = self._mask if L == self.context and s == self.new_tokens else _allowed(s, L, x.device)
        x2 = x.reshape(T, h)
        if self.dq:
            q = F.rms_norm(x2 @ self.w_qa, (self.dq,), self.qa_norm, 1e-6) @ self.w_qb
        else:
            q = x2 @ self.w_q
        q = q.view(T, nh, dn + dr)  # RoPE on q[..., dn:] omitted
        kv_new = x2 @ self.w_kva  # [T, dc + dr]
        kv_new[:, :dc] = F.rms_norm(kv_new[:, :dc], (dc,), self.kva_norm, 1e-6)
        self.cache.write(L, kv_new.view(B, s, dc + dr))  # in place, no concat
        kv = self.cache.view(n)  # [B, n, dc + dr], a view
        if self.form == "absorbed":
            # q_cat [B, s, nh, dc + dr] = [q_nope W^UK | q_pe], pre-scaled
            q_cat = torch.empty(B, s, nh, dc + dr, device=x.device, dtype=x.dtype)
            q_lat = torch.bmm(q[..., :dn].transpose(0, 1), self.w_uk)  # [nh, T, dc]
            q_cat[..., :dc] = q_lat.view(nh, B, s, dc).permute(1, 2, 0, 3)
            q_cat[..., dc:] = q[..., dn:].view(B, s, nh, dr)
            if self.core == "sdpa":  # one KV head; query rows = (token, head); V = the cache row
                rows_mask = None if mask is None else mask.repeat_interleave(nh, dim=0)  # [s nh, n]
                o_lat = F.scaled_dot_product_attention(q_cat.view(B, 1, s * nh, dc + dr), kv[:, None], kv[:, None],
                                                       attn_mask=rows_mask, scale=self.scale)[:, 0, :, :dc]
            else:
                q_cat.mul_(self.scale)
                scores = torch.bmm(q_cat.view(B, s * nh, dc + dr), kv.transpose(1, 2))  # [B, s nh, n]
                if mask is not None:
                    scores.view(B, s, nh, n).masked_fill_(~mask[:, None, :], float("-inf"))
                p = torch.softmax(scores, dim=-1)
                o_lat = torch.bmm(p, kv[..., :dc])  # [B, s nh, dc]
            o = torch.bmm(o_lat.reshape(T, nh, dc).transpose(0, 1), self.w_uv)  # [nh, T, dv]
            o = o.transpose(0, 1).reshape(T, nh * dv)
        else:
            kv_full = torch.matmul(kv[..., :dc], self.w_kvb).view(B, n, nh, dn + dv)  # decompress all n tokens
            k = torch.empty(B, nh, n, dn + dr, device=x.device, dtype=x.dtype)
            k[..., :dn] = kv_full[..., :dn].transpose(1, 2)
            k[..., dn:] = kv[:, None, :, dc:]  # the shared RoPE key, for every head
            vd = dv if self.core == "bmm" else dn + dr  # sdpa: V zero-padded to the qk dim
            v = (torch.empty if vd == dv else torch.zeros)(B, nh, n, vd, device=x.device, dtype=x.dtype)
            v[..., :dv] = kv_full[..., dn:].transpose(1, 2)
            qh = q.view(B, s, nh, dn + dr).transpose(1, 2)  # [B, nh, s, dn + dr]
            if self.core == "bmm":
                scores = torch.matmul(qh * self.scale, k.transpose(-1, -2))  # [B, nh, s, n]
                if mask is not None:
                    scores.masked_fill_(~mask, float("-inf"))
                o = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B, nh, s, dv]
            else:
                causal = dict(is_causal=True) if (mask is not None and L == 0) else dict(attn_mask=mask)
                o = F.scaled_dot_product_attention(qh, k, v, scale=self.scale, **causal)[..., :dv]
            o = o.transpose(1, 2).reshape(T, nh * dv)
        if advance:
            self.cache.length = n
        return (o @ self.w_o).view(B, s, h)


# ======================================================================================
# MHA / GQA / MQA
# ======================================================================================


class GQAAttentionKernel(TimedKernel):
    """One MHA/GQA/MQA block: fused qkv_proj GEMM, K/V written into a ``HeadKVCache`` in
    place, ``F.scaled_dot_product_attention`` over the cache view (``enable_gqa`` when
    n_kv < n_h: KV heads are shared, not expanded; ``is_causal`` for a prefill from empty,
    a bottom-right causal mask for a chunk after a cache), o_proj GEMM. Supports q/k/v/o
    biases and per-head q/k RMSNorm (Qwen3); attention sinks and sliding windows are not
    implemented (NotImplementedError)."""

    def __init__(self, spec: S.ModelSpec, batch: int, context: int = 0, new_tokens: int = 1, *,
                 dtype="fp32", device="cpu", capacity: int | None = None, seed: int = 0):
        super().__init__(dtype, device, seed)
        a = spec.attention
        if not isinstance(a, S.GQAAttention):
            raise TypeError(f"{spec.name} does not use MHA/GQA/MQA")
        if a.sinks:
            raise NotImplementedError("attention sinks are not implemented in the timed kernels")
        if a.qk_norm and a.qk_norm_scope != "head":
            raise NotImplementedError("q/k norms over the whole projection are not implemented in the timed kernels")
        self.name = f"{a.kind}.{'decode' if new_tokens == 1 else 'prefill'}"
        self.spec, self.batch, self.context, self.new_tokens = spec, batch, context, new_tokens
        h = spec.hidden_size
        self.nh, self.nkv, self.d = a.num_attention_heads, a.num_key_value_heads, a.head_dim
        nh, nkv, d = self.nh, self.nkv, self.d
        self.w_qkv = self._w(h, (nh + 2 * nkv) * d)
        self.b_qkv = self._randn((nh + 2 * nkv) * d) if a.qkv_bias else None
        self.w_o = self._w(nh * d, h)
        self.b_o = self._randn(h) if a.o_bias else None
        self.q_norm = torch.ones(d, device=self.device, dtype=self.dtype) if a.qk_norm else None
        self.k_norm = torch.ones(d, device=self.device, dtype=self.dtype) if a.qk_norm else None
        self.cache = HeadKVCache(batch, capacity or context + new_tokens, nkv, d, dtype=self.dtype, device=self.device)
        self.cache.load(self._randn(batch, context, 2, nkv, d))
        self.x = self._randn(batch, new_tokens, h)
        self._mask = _allowed(new_tokens, context, self.device)

    def load_reference(self, ref, cache: torch.Tensor | None = None) -> "GQAAttentionKernel":
        """Copy the weights of a ``kernels.GQAAttention`` (and a reference cache [batch, L, 2,
        n_kv, head_dim], if given)."""
        if ref.window is not None:
            raise NotImplementedError("sliding windows are not implemented in the timed kernels")
        self.w_qkv = self._load_t(ref.qkv_proj.weight)
        self.b_qkv = None if ref.qkv_proj.bias is None else self._load(ref.qkv_proj.bias)
        self.w_o = self._load_t(ref.o_proj.weight)
        self.b_o = None if ref.o_proj.bias is None else self._load(ref.o_proj.bias)
        if ref.q_norm is not None:
            self.q_norm, self.k_norm = self._load(ref.q_norm.weight), self._load(ref.k_norm.weight)
        if cache is not None:
            self.cache.load(cache)
            self.context = cache.shape[1]
            self._mask = _allowed(self.new_tokens, self.context, self.device)
        return self

    def forward(self, x: torch.Tensor, *, advance: bool = False) -> torch.Tensor:
        B, s, h = x.shape
        nh, nkv, d = self.nh, self.nkv, self.d
        T, L = B * s, self.cache.length
        n = L + s
        x2 = x.reshape(T, h)
        qkv = (x2 @ self.w_qkv if self.b_qkv is None else torch.addmm(self.b_qkv, x2, self.w_qkv))
        qkv = qkv.view(B, s, nh + 2 * nkv, d)
        q, k_new, v_new = qkv[:, :, :nh], qkv[:, :, nh:nh + nkv], qkv[:, :, nh + nkv:]  # RoPE omitted
        if self.q_norm is not None:
            q = F.rms_norm(q, (d,), self.q_norm, 1e-6)
            k_new = F.rms_norm(k_new, (d,), self.k_norm, 1e-6)
        self.cache.write(L, k_new.transpose(1, 2), v_new.transpose(1, 2))
        k, v = self.cache.view(n)  # [B, nkv, n, d] views
        mask = self._mask if L == self.context and s == self.new_tokens else _allowed(s, L, x.device)
        causal = dict(is_causal=True) if (mask is not None and L == 0) else dict(attn_mask=mask)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, enable_gqa=nkv < nh, **causal)  # [B, nh, s, d]
        o = o.transpose(1, 2).reshape(T, nh * d)
        if advance:
            self.cache.length = n
        y = o @ self.w_o if self.b_o is None else torch.addmm(self.b_o, o, self.w_o)
        return y.view(B, s, h)


def make_attention_kernel(spec: S.ModelSpec, batch: int, context: int = 0, new_tokens: int = 1, *,
                          form: str = "absorbed", **kw) -> TimedKernel:
    """The attention kernel of ``spec`` (``form`` only matters for MLA)."""
    if isinstance(spec.attention, S.MLAAttention):
        return MLAAttentionKernel(spec, batch, context, new_tokens, form=form, **kw)
    return GQAAttentionKernel(spec, batch, context, new_tokens, **kw)


# ======================================================================================
# FFN: dense SwiGLU and DeepSeekMoE
# ======================================================================================


def _act(hh: torch.Tensor, inter: int, gated: bool) -> torch.Tensor:
    """SwiGLU silu(gate) * up on [n, 2 inter] (in place, returns a [n, inter] view), or gelu."""
    if not gated:
        return F.gelu(hh)
    g = F.silu(hh[:, :inter], inplace=True)
    return g.mul_(hh[:, inter:])


def _mm(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    if b is None:
        return torch.mm(a, w, out=out) if out is not None else a @ w
    return torch.addmm(b, a, w, out=out) if out is not None else torch.addmm(b, a, w)


class DenseFFNKernel(TimedKernel):
    """Dense FFN [T, h] -> [T, h]: one gate_up GEMM [h, 2I], silu(gate)*up in place, down
    GEMM [I, h] (not gated: up, gelu, down). For an MoE spec: the FFN of its dense layers."""

    name = "ffn.dense"

    def __init__(self, spec: S.ModelSpec, batch: int, context: int = 0, new_tokens: int = 1, *,
                 dtype="fp32", device="cpu", seed: int = 0):
        super().__init__(dtype, device, seed)
        f, h = spec.ffn, spec.hidden_size
        self.inter = f.dense_intermediate_size if isinstance(f, S.MoEFFN) else f.intermediate_size
        self.gated = f.gated
        bias = isinstance(f, S.DenseFFN) and f.bias
        up = 2 * self.inter if self.gated else self.inter
        self.w_gu, self.w_down = self._w(h, up), self._w(self.inter, h)
        self.b_gu, self.b_down = (self._randn(up), self._randn(h)) if bias else (None, None)
        self.batch, self.new_tokens = batch, new_tokens
        self.x = self._randn(batch, new_tokens, h)

    def load_reference(self, ref) -> "DenseFFNKernel":
        """Copy the weights of a ``kernels.DenseFFN`` / ``kernels.MLP``."""
        self.w_gu, self.b_gu = _mlp_up(ref, self._load)
        self.w_down = self._load_t(ref.down_proj.weight)
        self.b_down = None if ref.down_proj.bias is None else self._load(ref.down_proj.bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        a = _act(_mm(x2, self.w_gu, self.b_gu), self.inter, self.gated)
        return _mm(a, self.w_down, self.b_down).view(shape)


def _mlp_up(mlp, load) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A reference MLP's [gate | up] as one [h, 2I] weight (K-contiguous view) and bias."""
    if mlp.gate_proj is None:
        return load(mlp.up_proj.weight).t(), (None if mlp.up_proj.bias is None else load(mlp.up_proj.bias))
    w = load(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0)).t()
    b = None if mlp.up_proj.bias is None else load(torch.cat([mlp.gate_proj.bias, mlp.up_proj.bias]))
    return w, b


class MoEKernel(TimedKernel):
    """DeepSeekMoE layer (arXiv 2401.06066 §3; DeepSeek-V2 §2.2) on [T, h] tokens:

    1. router GEMM [h, E]; scores softmax (``scoring="softmax"``, the reference Router) or
       sigmoid with the top-k weights renormalised (``"sigmoid"``, DeepSeek-V3); top-k;
    2. permute: the T*k (token, expert) pairs sorted by expert (stable argsort), tokens
       per expert by bincount (one host sync), tokens gathered into a contiguous [T k, h];
    3. per busy expert, its contiguous slice through gate_up GEMM -> silu*mul -> down GEMM
       written in place into the sorted output (one launch pair per busy expert: what a
       per-expert launch cost models);
    4. unpermute: scale by the routing weights, ``index_add_`` back to token order;
    5. shared experts (one MLP of width n_shared * shared_size) added.
    """

    name = "moe"

    def __init__(self, spec: S.ModelSpec, batch: int, context: int = 0, new_tokens: int = 1, *,
                 scoring: Literal["softmax", "sigmoid"] = "softmax", dtype="fp32", device="cpu", seed: int = 0):
        super().__init__(dtype, device, seed)
        f, h = spec.ffn, spec.hidden_size
        if not isinstance(f, S.MoEFFN):
            raise TypeError(f"{spec.name} has no experts")
        if scoring not in ("softmax", "sigmoid"):
            raise ValueError(f"scoring must be 'softmax' or 'sigmoid', got {scoring!r}")
        self.scoring, self.gated = scoring, f.gated
        self.E, self.k, self.inter = f.n_routed_experts, f.num_experts_per_tok, f.moe_intermediate_size
        up = 2 * self.inter if self.gated else self.inter
        E = self.E
        self.w_router = self._w(h, E)
        self.b_router = self._randn(E) if f.router_bias else None
        self.w_gu = self._randn(E, up, h, std=h ** -0.5).transpose(1, 2)  # [E, h, 2I], K-contiguous
        self.w_down = self._randn(E, h, self.inter, std=self.inter ** -0.5).transpose(1, 2)  # [E, I, h]
        self.b_gu, self.b_down = (self._randn(E, up), self._randn(E, h)) if f.expert_bias else (None, None)
        self.shared = None
        if f.n_shared_experts:
            i_sh = f.n_shared_experts * f.shared_size
            self.shared = dict(w_gu=self._w(h, 2 * i_sh if self.gated else i_sh), w_down=self._w(i_sh, h),
                               b_gu=None, b_down=None)
            if f.expert_bias:
                self.shared.update(b_gu=self._randn(2 * i_sh if self.gated else i_sh), b_down=self._randn(h))
        self.batch, self.new_tokens = batch, new_tokens
        self.x = self._randn(batch, new_tokens, h)
        self.last_counts: list[int] = []  # tokens per expert of the last call

    def load_reference(self, ref) -> "MoEKernel":
        """Copy the weights of a ``kernels.MoEFFN``."""
        self.w_router = self._load_t(ref.router.weight)
        self.b_router = None if ref.router.bias is None else self._load(ref.router.bias)
        ups = [_mlp_up(e, self._load) for e in ref.experts]
        self.w_gu = torch.stack([w.t() for w, _ in ups]).transpose(1, 2)  # [E, h, 2I], K-contiguous
        self.b_gu = None if ups[0][1] is None else torch.stack([b for _, b in ups])
        self.w_down = torch.stack([self._load(e.down_proj.weight) for e in ref.experts]).transpose(1, 2)
        self.b_down = None if ref.experts[0].down_proj.bias is None else torch.stack(
            [self._load(e.down_proj.bias) for e in ref.experts])
        if ref.shared_experts is not None:
            w, b = _mlp_up(ref.shared_experts, self._load)
            d = ref.shared_experts.down_proj
            self.shared = dict(w_gu=w, b_gu=b, w_down=self._load_t(d.weight),
                               b_down=None if d.bias is None else self._load(d.bias))
        return self

    def route(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x2 [T, h] -> (weights [T, k] in x's dtype, expert indices [T, k])."""
        logits = _mm(x2, self.w_router, self.b_router).float()  # [T, E]
        scores = logits.softmax(dim=-1) if self.scoring == "softmax" else logits.sigmoid()
        weights, idx = torch.topk(scores, self.k, dim=-1)
        if self.scoring == "sigmoid":
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x2.dtype), idx

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, s, h] -> [B, s, h]; ``indices`` [T, k] forces the routing (the router still runs)."""
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # [T, h]
        weights, idx = self.route(x2)
        if indices is not None:
            idx = indices.to(idx.device)
        flat = idx.reshape(-1)  # [T k]
        order = torch.argsort(flat, stable=True)  # pairs sorted by expert
        tok = order // self.k  # source token of each sorted pair
        counts = torch.bincount(flat, minlength=self.E).tolist()  # host sync: the loop bounds
        self.last_counts = counts
        xs = x2.index_select(0, tok)  # [T k, h], contiguous per expert
        ys = torch.empty_like(xs)
        start = 0
        for e, c in enumerate(counts):
            if c == 0:
                continue
            end = start + c
            b_gu = None if self.b_gu is None else self.b_gu[e]
            b_dn = None if self.b_down is None else self.b_down[e]
            a = _act(_mm(xs[start:end], self.w_gu[e], b_gu), self.inter, self.gated)
            _mm(a, self.w_down[e], b_dn, out=ys[start:end])
            start = end
        ys.mul_(weights.reshape(-1)[order, None])
        y = torch.zeros_like(x2).index_add_(0, tok, ys)
        if self.shared is not None:
            sh = self.shared
            a = _act(_mm(x2, sh["w_gu"], sh["b_gu"]), sh["w_down"].shape[0], self.gated)
            y.add_(_mm(a, sh["w_down"], sh["b_down"]))
        return y.view(shape)


# ======================================================================================
# Norms and elementwise
# ======================================================================================


class RMSNormKernel(TimedKernel):
    """RMSNorm over the last dim of [tokens, dim], as a fused kernel would run it: one pass
    for the row norms, one that scales x into a preallocated output, the weight applied in
    place (``F.rms_norm`` on CPU is composite: four full-size temporaries; same result to the
    dtype's tolerance). 0 counted FLOPs."""

    name = "rmsnorm"

    def __init__(self, tokens: int, dim: int, *, eps: float = 1e-6, dtype="fp32", device="cpu", seed: int = 0):
        super().__init__(dtype, device, seed)
        self.dim, self.eps = dim, eps
        self.weight = torch.ones(dim, device=self.device, dtype=self.dtype)
        self.x = self._randn(tokens, dim)
        self.out = torch.empty_like(self.x)
        self.rstd = torch.empty(tokens, 1, device=self.device, dtype=torch.float32)

    @classmethod
    def from_spec(cls, spec: S.ModelSpec, batch: int, context: int = 0, new_tokens: int = 1, **kw) -> "RMSNormKernel":
        return cls(batch * new_tokens, spec.hidden_size, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.out.shape:
            return F.rms_norm(x, (self.dim,), self.weight, self.eps)
        # rstd = 1 / sqrt(mean(x^2) + eps), accumulated in fp32 as F.rms_norm does
        r = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32, out=self.rstd)
        r.pow_(2).div_(self.dim).add_(self.eps).rsqrt_()
        torch.mul(x, r, out=self.out)
        return self.out.mul_(self.weight)

    @property
    def bytes(self) -> int:
        return 2 * self.x.numel() * self.x.element_size()


class SiluMulKernel(TimedKernel):
    """SwiGLU's elementwise part: [tokens, 2I] (gate | up) -> silu(gate) * up [tokens, I],
    into a preallocated output (0 counted FLOPs)."""

    name = "silu_mul"

    def __init__(self, tokens: int, inter: int, *, dtype="fp32", device="cpu", seed: int = 0):
        super().__init__(dtype, device, seed)
        self.inter = inter
        self.x = self._randn(tokens, 2 * inter)
        self.out = torch.empty(tokens, inter, device=self.device, dtype=self.dtype)

    @classmethod
    def from_spec(cls, spec: S.ModelSpec, batch: int, context: int = 0, new_tokens: int = 1, **kw) -> "SiluMulKernel":
        f = spec.ffn
        inter = f.moe_intermediate_size if isinstance(f, S.MoEFFN) else f.intermediate_size
        return cls(batch * new_tokens, inter, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.out if x.shape[0] == self.out.shape[0] else None
        return torch.mul(F.silu(x[:, : self.inter]), x[:, self.inter:], out=out)

    @property
    def bytes(self) -> int:
        return (self.x.numel() + self.out.numel()) * self.x.element_size()
