"""Error bands on step times from a profile's calibration residuals.

A calibrated profile (``costsim calibrate``; the shipped ``*-calibrated`` GPU profiles) stores,
per kernel family, the 10th and 90th percentiles of measured / predicted time over held-out
measurements (``HardwareProfile.residuals``). A step's band scales each operator's time by its
family's p10 and p90 and sums them again: the errors of a step's kernels are taken as fully
correlated, which gives the widest band those percentiles allow (a step of many independent
kernels would spread less). Operators of a family without residuals (elementwise kernels) keep
their time. With overlapped communication the band is max(compute, comm) of the scaled parts.

Units: factors on the predicted time (dimensionless); None when the profile has no residuals
(``band_kind`` then says why: ``uncalibrated``, or ``no residuals`` for a calibrated profile
fitted without a held-out half).
"""

from __future__ import annotations

import numpy as np

from costsim.simulator.efficiency import FALLBACK
from costsim.simulator.roofline import StepTiming
from costsim.simulator.types import Family, OpKind
from costsim.specs import HardwareProfile

def family_band(hw: HardwareProfile, family: Family) -> tuple[float, float]:
    """(p10, p90) of measured / predicted for ``family`` (or, as its rates do, its fallback:
    ``efficiency.FALLBACK``); (1, 1) if none."""
    f = family
    while f is not None:
        r = hw.residuals.get(f.value)
        if r is not None:
            return r.p10, r.p90
        f = FALLBACK.get(f)
    return 1.0, 1.0


def step_band(timing: StepTiming, hw: HardwareProfile, overlap_comm: bool = False) -> tuple[float, float] | None:
    """(low, high) factors on ``timing.time_s`` (a scalar step): the step re-added with every
    operator at its family's p10, then p90. None without residuals in ``hw``."""
    if not hw.residuals:
        return None
    parts = {False: [0.0, 0.0], True: [0.0, 0.0]}  # comm? -> [low, high] seconds
    for t in timing.timings:
        lo, hi = family_band(hw, t.op.family)
        s = float(np.asarray(t.total_s, dtype=float)) * timing.micro_batches
        p = parts[t.op.kind is OpKind.COMM]
        p[0] += lo * s
        p[1] += hi * s
    (c_lo, c_hi), (m_lo, m_hi) = parts[False], parts[True]
    total = float(np.asarray(timing.time_s, dtype=float))
    if total <= 0:
        return None
    if overlap_comm or timing.micro_batches > 1:
        return max(c_lo, m_lo) / total, max(c_hi, m_hi) / total
    return (c_lo + m_lo) / total, (c_hi + m_hi) / total


def band_kind(hw: HardwareProfile) -> str:
    """What a record's time bands are: ``"p10-p90"`` (the profile's calibration residuals,
    ``costsim.simulator.bands``); without residuals no band: ``"no residuals"`` for a profile
    with calibrated values (``costsim calibrate --device`` fits on its train split only and
    writes none), else ``"uncalibrated"``."""
    if hw.residuals:
        return "p10-p90"

    def calibrated(x) -> bool:
        if isinstance(x, dict):
            return x.get("provenance") == "calibrated" or any(calibrated(v) for v in x.values())
        return isinstance(x, list) and any(calibrated(v) for v in x)

    return "no residuals" if calibrated(hw.model_dump(mode="json")) else "uncalibrated"
