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

With a token budget per step (Sarathi-Serve chunked prefill) see ``scheduling.at_rate_chunked``
and ``scheduling.mixed_step``: prefill chunks ride in the decode steps instead of stalling them.

Units: requests/s, seconds, tokens/s (per replica = all ``dep.devices``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.memory import memory_report
from costsim.simulator.serving import decode, prefill
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
