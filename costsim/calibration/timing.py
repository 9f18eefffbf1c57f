"""Timing building blocks for calibration: measure a torch kernel, return seconds + shape.

``time_fn`` wraps ``torch.utils.benchmark.Timer(...).blocked_autorange`` (warm-up, block
size chosen so timer overhead is < 0.1%, replicates for a median and IQR). The timer
synchronises CUDA before each reading when CUDA is in use, so asynchronous launches are
timed to completion.

``benchmark_operator_gemm`` and ``benchmark_attention_decode`` build the torch kernel that
corresponds to an engine operator (``costsim.simulator.operators``: a ``gemm`` of
[M, K] x [K, N]; the attention block of one layer in decode) and time it. Each result
carries the shape and the FLOPs (2*M*N*K for the GEMM; ``FlopCounterMode`` for the
attention) so a caller can turn it into an achieved FLOP/s or bandwidth fraction.

torch is imported inside the functions: importing this module does not import torch.
"""

from __future__ import annotations

import timeit
from typing import Any, Callable

_DTYPES = {"fp32": "float32", "float32": "float32", "tf32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
           "fp16": "float16", "float16": "float16", "half": "float16", "fp8": "float8_e4m3fn"}


def _torch_dtype(dtype: Any):
    """A torch dtype from a torch dtype or a name ("bf16", "fp32", "float16", ...)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).lower())
    if name is None or not hasattr(torch, name):
        raise ValueError(f"unknown dtype {dtype!r}: expected a torch.dtype or one of {', '.join(_DTYPES)}")
    return getattr(torch, name)


def _timer() -> float:
    """timeit's clock, after waiting for queued CUDA work (if CUDA has been used)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return timeit.default_timer()


def time_fn(fn: Callable[[], Any], *, min_run_time: float = 0.2, num_threads: int | None = None) -> dict:
    """Time ``fn()`` with ``torch.utils.benchmark.Timer.blocked_autorange``.

    ``num_threads``: CPU threads for the measurement (default: torch's current setting;
    the Timer's own default would be 1). Returns dict(median_s, iqr_s, mean_s, runs,
    number_per_run): seconds per call; ``runs`` replicates of ``number_per_run`` calls each.
    """
    import torch
    from torch.utils import benchmark

    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=_timer,
                        num_threads=num_threads or torch.get_num_threads())
    m = t.blocked_autorange(min_run_time=min_run_time)
    return dict(median_s=float(m.median), iqr_s=float(m.iqr), mean_s=float(m.mean), runs=len(m.times),
                number_per_run=int(m.number_per_run))


def benchmark_operator_gemm(M: int, N: int, K: int, dtype: Any = "bf16", device: str = "cpu", *,
                            min_run_time: float = 0.2) -> dict:
    """Time one GEMM [M, K] x [K, N] -> [M, N] (an engine ``gemm`` operator: M tokens,
    weight N x K). FP8 is not timed here (it needs ``torch._scaled_mm`` and scales).

    Returns ``time_fn``'s dict plus shape=dict(M, N, K), dtype, device, flops (2*M*N*K),
    bytes (A + B + C in ``dtype``) and flops_per_s (flops / median_s).
    """
    import torch

    dt = _torch_dtype(dtype)
    if dt.itemsize < 2:
        raise ValueError(f"benchmark_operator_gemm: {dt} GEMMs are not supported (use bf16/fp16/fp32)")
    a = torch.randn(M, K, device=device).to(dt)  # [M, K] activations
    b = torch.randn(K, N, device=device).to(dt)  # [K, N] weights (transposed)
    out = torch.empty(M, N, device=device, dtype=dt)
    res = time_fn(lambda: torch.matmul(a, b, out=out), min_run_time=min_run_time)
    flops = 2.0 * M * N * K
    res.update(shape=dict(M=M, N=N, K=K), dtype=str(dt).replace("torch.", ""), device=str(device), flops=flops,
               bytes=float((M * K + K * N + M * N) * dt.itemsize), flops_per_s=flops / res["median_s"])
    return res


def benchmark_attention_decode(spec, batch: int, context: int, form: str = "absorbed", device: str = "cpu", *,
                               dtype: Any = "bf16", min_run_time: float = 0.2, seed: int = 0) -> dict:
    """Time one decode step (1 new token per sequence after ``context`` cached tokens) of ONE
    attention block of ``spec``: projections + core attention, no RoPE, no norm before it
    (``costsim.calibration.kernels.MLAAttention`` / ``GQAAttention``). ``form`` matters for
    MLA only ("naive" | "absorbed").

    Returns ``time_fn``'s dict plus shape=dict(batch, new_tokens=1, context, kv_len,
    heads, kv_heads, form), dtype, device, flops (counted once with FlopCounterMode) and
    cache_bytes (the KV cache tensor read by the step, before appending the new token).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from costsim.calibration.kernels import MLAAttention, make_attention
    from costsim.specs import MLAAttention as MLASpec

    dt = _torch_dtype(dtype)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.device(device):
        attn = make_attention(spec, form=form).to(dt).eval()
    x = torch.randn(batch, 1, spec.hidden_size, generator=gen).to(device=device, dtype=dt)  # [B, 1, h]
    cache = attn.empty_cache(batch, context, dtype=dt, device=device)  # latent or K/V cache
    cache.copy_(torch.randn(cache.shape, generator=gen).to(dt))

    def step():
        with torch.inference_mode():
            return attn(x, cache)

    with FlopCounterMode(display=False) as counter:
        step()
    res = time_fn(step, min_run_time=min_run_time)
    a = spec.attention
    res.update(
        shape=dict(batch=batch, new_tokens=1, context=context, kv_len=context + 1, heads=a.num_attention_heads,
                   kv_heads=1 if isinstance(a, MLASpec) else a.num_key_value_heads,
                   form=form if isinstance(attn, MLAAttention) else a.kind),
        dtype=str(dt).replace("torch.", ""), device=str(device), flops=float(counter.get_total_flops()),
        cache_bytes=float(cache.nbytes),
    )
    return res
