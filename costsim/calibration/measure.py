"""Timing a kernel the way kernel authors do: warm-up, many repeats, minimum AND median.

``measure(fn, ...)`` runs ``fn()`` ``warmup`` times, then times it with
``torch.utils.benchmark.Timer``: either ``repeats`` runs of ``number`` calls each (``number``
chosen so one run lasts about ``block_s``), or ``blocked_autorange(min_run_time)``. On a shared,
noisy machine the minimum is the best estimate of the kernel's own cost and the median of
what a caller sees; both are returned. ``torch.set_num_threads`` is pinned to ``num_threads``
for the whole measurement (warm-up included) and restored after. When the kernel runs on
CUDA (``device="cuda"``, or CUDA is initialised), the clock waits for queued work
(``torch.cuda.synchronize``) before every reading, so asynchronous launches are timed to
completion.

On CPU the process's allocator first keeps freed memory (``keep_freed_memory``), as every
serving framework's caching allocator does: otherwise glibc returns each freed block above its
mmap threshold (at most 32 MiB) to the OS, and every call of a kernel with a large output
page-faults it in again (F.rms_norm over 8192 x 4096 fp32 here: 244 ms with fresh pages, 99 ms
with reused memory).

torch is imported inside the function: importing this module does not import torch.
"""

from __future__ import annotations

import statistics
import timeit
from typing import Any, Callable


def _clock(cuda: bool) -> Callable[[], float]:
    if not cuda:
        return timeit.default_timer
    import torch

    def clock() -> float:
        torch.cuda.synchronize()
        return timeit.default_timer()

    return clock


_KEPT = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory in the process (no mmap'd blocks, no trimming),
    once per process; what PyTorch's CUDA caching allocator does on a GPU. Returns whether it
    took effect (False off glibc: the kernels then pay the OS's page faults, as before)."""
    global _KEPT
    if _KEPT:
        return True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h
        _KEPT = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        _KEPT = False
    return _KEPT


def measure(fn: Callable[[], Any], *, warmup: int = 3, repeats: int | None = None, min_run_time: float = 0.2,
            num_threads: int | None = None, device: Any = None, block_s: float = 2e-3) -> dict:
    """Time ``fn()``; seconds per call.

    ``repeats``: number of timed runs (each ``number`` calls, ``number`` sized to ``block_s``
    seconds from the warm-up); None: ``Timer.blocked_autorange(min_run_time)``.
    ``num_threads``: CPU threads during the measurement (default: torch's current setting).
    ``device``: where the kernel runs ("cpu", "cuda", a torch.device); CUDA is synchronised.

    Returns dict(min_s, median_s, mean_s, iqr_s, max_s, runs, number_per_run, num_threads,
    device, times_s) where ``times_s`` are the per-call times of each run.
    """
    import torch
    from torch.utils import benchmark

    if warmup < 0 or (repeats is not None and repeats < 1):
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    dev = torch.device(device) if device is not None else None
    cuda = (dev is not None and dev.type == "cuda") or (
        dev is None and torch.cuda.is_available() and torch.cuda.is_initialized())
    clock = _clock(cuda)
    if not cuda:
        keep_freed_memory()
    before = torch.get_num_threads()
    n = int(num_threads or before)
    torch.set_num_threads(n)
    try:
        t0 = clock()
        for _ in range(warmup):
            fn()
        t_warm = (clock() - t0) / warmup if warmup else None
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, timer=clock, num_threads=n)
        if repeats is None:
            m = timer.blocked_autorange(min_run_time=min_run_time)
            times, number = [float(t) for t in m.times], int(m.number_per_run)
        else:
            if t_warm is None:
                t1 = clock()
                fn()
                t_warm = clock() - t1
            number = max(1, int(block_s / max(t_warm, 1e-9)))
            times = [float(timer.timeit(number).median) for _ in range(repeats)]
    finally:
        torch.set_num_threads(before)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return dict(min_s=min(times), median_s=float(statistics.median(times)), mean_s=float(statistics.fmean(times)),
                iqr_s=float(q[2] - q[0]), max_s=max(times), runs=len(times), number_per_run=number,
                num_threads=n, device="cuda" if cuda else str(dev or "cpu"), times_s=times)
