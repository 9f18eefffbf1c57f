"""Measuring a suite, fitting a profile's time-model parameters to it, and scoring a profile.

- ``measure_points``: time every point's torch kernel (``measure.measure``: warm-up, repeats,
  minimum and median, threads pinned, CUDA synchronised). Records are dicts; a silicon table
  row converted to the same shape fits and validates the same way.
- ``fit_profile``: start from a base profile, then fit each family's parameters in turn
  (elementwise -> gemm -> attention decode -> attention prefill -> grouped GEMM, since the
  later kernels contain the earlier families' operators) by robust least squares on log time
  (``scipy.optimize.least_squares``, soft-L1 loss) against the measured **minimum** on the
  train split only. On CPU the peaks are set first from the same train split (best GEMM
  FLOP/s per dtype, best streaming bytes/s), so every fitted efficiency is a fraction <= 1 of
  what this machine reaches.
- ``score``: MAPE, median |error|, geometric-mean ratio predicted/measured and the share within
  25%, overall and per family.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from typing import Callable, Iterable

import numpy as np

from costsim.calibration.suite import Point, predict
from costsim.specs import HardwareProfile

# family -> fitted parameters with (lower, upper) bounds in SI units
FREE: dict[str, list[tuple[str, float, float]]] = {
    "elementwise": [("memory", 0.02, 1.0), ("overhead", 0.0, 1e-3)],
    "gemm": [("compute", 0.02, 1.0), ("memory", 0.02, 1.0), ("overhead", 0.0, 1e-3), ("m_half", 0.0, 2048.0)],
    # (no per_element: no engine operator gives a ``scores`` shape, so it would be fitted blind)
    "attention_decode": [("compute", 0.005, 1.0), ("memory", 0.005, 1.0), ("overhead", 0.0, 2e-3),
                         ("group_reread", 0.0, 1.0)],
    "attention_prefill": [("compute", 0.005, 1.0), ("memory", 0.005, 1.0), ("overhead", 0.0, 2e-3)],
    "grouped_gemm": [("compute", 0.005, 1.0), ("memory", 0.005, 1.0), ("per_group_overhead", 0.0, 1e-3),
                     ("overhead", 0.0, 2e-3)],
}
SHARED_WITH_GROUPED = ("gemv_rows",)  # fitted on the GEMMs, used by the grouped GEMMs (m_half too: held-out worse)
ORDER = ("elementwise", "gemm", "attention_decode", "attention_prefill", "grouped_gemm")


def check_threads(threads: int | None) -> int | None:
    """``threads`` if it is a usable CPU thread count (1 .. the cores this machine has)."""
    import os

    from costsim.errors import CostsimError

    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise CostsimError(f"--threads {threads}: expected 1 to {cores} (the CPU cores of this machine)")
    return threads


def check_device(device: str) -> str:
    """``device`` if torch can time kernels on it; CostsimError naming --device otherwise."""
    from costsim.errors import CostsimError

    if device != "cpu" and not device.startswith("cuda"):
        raise CostsimError(f"--device {device}: expected cpu or cuda")
    try:
        import torch
    except ImportError:
        raise CostsimError("calibration needs torch: pip install -e '.[kernels]'") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CostsimError(f"--device {device}: no CUDA device is available to torch")
    return device


def device_name(device: str) -> str:
    """A readable name of the device measured (CPU model or CUDA device name)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_points(points: Iterable[Point], device: str = "cpu", threads: int | None = None,
                   min_run_time: float = 0.15, progress: Callable[[Point], None] | None = None,
                   passes: int = 2) -> list[dict]:
    """Time each point's kernel on ``device``; one record per point (seconds per call).

    The suite is timed ``passes`` times over, each pass through every point in turn: on a
    shared machine a neighbour's burst of work can last the whole of one point's timing (it
    doubled some GEMM minima here), rarely the same point in two passes tens of seconds
    apart. ``min_s`` is the minimum over all runs of all passes, ``median_s`` their median.
    ``progress`` is called once per point and pass."""
    import statistics

    import torch

    from costsim.calibration.measure import measure
    from costsim.calibration.suite import build

    points = list(points)
    threads = threads or torch.get_num_threads()
    date = _dt.date.today().isoformat()
    name = device_name(device)
    times: list[list[float]] = [[] for _ in points]
    for _ in range(max(1, passes)):
        for i, p in enumerate(points):
            k = build(p, device)
            m = measure(k, warmup=2, min_run_time=min_run_time, num_threads=threads, device=device)
            times[i] += m["times_s"]
            del k
            if progress:
                progress(p)
    return [dict(p.to_dict(), min_s=min(t), median_s=float(statistics.median(t)), runs=len(t), device=device,
                 device_name=name, threads=threads, torch=torch.__version__, date=date)
            for p, t in zip(points, times)]


def point_of(rec: dict) -> Point:
    """The ``Point`` a measurement record describes."""
    from dataclasses import fields

    return Point(**{f.name: rec[f.name] for f in fields(Point)})


def predictions(records: list[dict], hw: HardwareProfile) -> np.ndarray:
    """Predicted seconds for every record on ``hw``."""
    return np.array([float(np.asarray(predict(point_of(r), hw).time_s)) for r in records])


def _set(data: dict, family: str, name: str, value: float, source: str) -> None:
    data["efficiency"]["families"][family][name] = dict(value=float(value), source=source, provenance="calibrated")


def _profile(data: dict) -> HardwareProfile:
    return HardwareProfile.model_validate(data)


def _peaks(data: dict, train: list[dict], source: str) -> None:
    """CPU: peaks = the best rates this machine reached on the train split."""
    from costsim.units import parse_format

    measured = {parse_format(r["dtype"]).compute for r in train if r["kernel"] == "gemm"}
    # a peak this machine was not measured at would be a guess: leave it out
    data["peak_flops"] = {k: v for k, v in data["peak_flops"].items() if k in measured}
    for dtype in sorted({r["dtype"] for r in train if r["kernel"] == "gemm"}):
        best = max(2.0 * r["m"] * r["n"] * r["k"] / r["min_s"] for r in train if r["kernel"] == "gemm"
                   and r["dtype"] == dtype)
        data["peak_flops"][parse_format(dtype).compute] = dict(value=best, source=f"best GEMM rate, {source}",
                                                               provenance="calibrated")
    hw = _profile(data)  # bytes moved do not depend on the rates: one profile serves every record
    moved = [float(predict(point_of(r), hw).bytes) / r["min_s"] for r in train
             if r["kernel"] in ("rmsnorm", "silu_mul", "gemm")]
    if moved:  # the best rate any kernel moved bytes at (a one-row GEMM streams its weights)
        data["memory_bandwidth"] = dict(value=max(moved), source=f"best streaming rate of any kernel, {source}",
                                        provenance="calibrated")


def _copy_family(data: dict, fam: str) -> dict:
    """``data`` with its ``fam`` parameters copied (a trial that leaves ``data`` as it is)."""
    fams = data["efficiency"]["families"]
    return {**data, "efficiency": {**data["efficiency"], "families": {**fams, fam: dict(fams.get(fam, {}))}}}


def _fit_family(data: dict, fam: str, recs: list[dict], source: str) -> tuple[np.ndarray, float]:
    """Fit ``fam``'s FREE parameters in ``data`` (set in place) to ``recs``; returns the values
    and the train-split MAPE."""
    from scipy.optimize import least_squares

    from costsim.simulator.efficiency import rates
    from costsim.simulator.types import Family

    names = [n for n, _, _ in FREE[fam]]
    lo = np.array([b for _, b, _ in FREE[fam]])
    hi = np.array([b for _, _, b in FREE[fam]])
    cur = rates(_profile(data), Family(fam))
    start = {"compute": cur.compute, "memory": cur.memory, "overhead": cur.overhead_s,
             "per_group_overhead": cur.per_group_overhead_s, "per_element": cur.per_element_s,
             "m_half": cur.m_half, "group_reread": cur.group_reread}
    x0 = np.clip([start[n] for n in names], lo, hi)
    x0 = np.where(x0 > lo, x0, lo + 1e-3 * (hi - lo))
    meas = np.log([r["min_s"] for r in recs])
    scale = hi - lo

    def residuals(x):
        trial = _copy_family(data, fam)
        for n, v in zip(names, x):
            _set(trial, fam, n, v, source)
        return np.log(predictions(recs, _profile(trial))) - meas

    # a plain least-squares pass finds the basin, a robust (soft-L1) pass discounts outliers
    u = (x0 - lo) / scale
    for loss in ("linear", "soft_l1"):
        u = least_squares(lambda v: residuals(lo + v * scale), u, bounds=(0.0, 1.0), loss=loss, f_scale=0.2,
                          diff_step=1e-3, max_nfev=300).x
    x = lo + u * scale
    for n, v in zip(names, x):
        _set(data, fam, n, v, f"{source}: fitted on {len(recs)} {fam} points (train split)")
    pred = predictions(recs, _profile(data))
    return x, float(np.mean(np.abs(pred / np.exp(meas) - 1)))


def fit_profile(base: HardwareProfile, records: list[dict], *, set_peaks: bool, name: str | None = None,
                note: str = "") -> tuple[HardwareProfile, dict]:
    """Fit ``base``'s family parameters to the train records; returns (profile, report).

    ``report``: per family, the fitted values and the train-split residual spread (MAPE).
    GEMM's ``gemv_rows`` is chosen among the train split's row counts up to 16 (a whole number:
    each candidate fitted, the lowest train MAPE kept) and shared with grouped GEMMs."""
    train = [r for r in records if r["split"] == "train"]
    if not train:
        raise ValueError("no train records to fit")
    dev = train[0]
    source = (f"costsim calibrate on {dev['device_name']} ({dev['device']}, {dev['threads']} threads, "
              f"torch {dev['torch']}), {dev['date']}")
    data = base.model_dump(mode="json", exclude_none=True)
    data["name"] = name or f"{base.name}-calibrated"
    data["full_name"] = f"{dev['device_name']} ({dev['device']}, {dev['threads']} threads), as measured"
    data["source"] = source + (f"; {note}" if note else "") + f"; base profile {base.name}"
    data["efficiency"].setdefault("families", {})
    for fam in ORDER:
        data["efficiency"]["families"].setdefault(fam, {})
    if set_peaks:
        _peaks(data, train, source)
    report = {}
    for fam in ORDER:
        recs = [r for r in train if r["family"] == fam]
        if not recs:
            continue
        if fam == "gemm":  # a whole number of rows: each candidate the train split can tell apart
            cands = sorted({int(r["m"]) for r in recs if 1 <= int(r["m"]) <= 16}) or [1]
        else:
            cands = [None]
        best = None
        for g in cands:
            trial = _copy_family(data, fam)
            if g is not None:
                _set(trial, fam, "gemv_rows", float(g), f"{source}: the most rows timed at the one-row "
                     f"(matrix-vector) cost, chosen on {len(recs)} {fam} points (train split)")
            x, mape = _fit_family(trial, fam, recs, source)
            if best is None or mape < best[2] - 1e-9:
                best = (trial, x, mape)
        data, x, mape = best
        if fam == "gemm" and "grouped_gemm" in FREE:
            # grouped GEMMs run the same BLAS GEMM per expert: its matrix-vector regime (gemv_rows)
            for k in SHARED_WITH_GROUPED:
                if k in data["efficiency"]["families"]["gemm"]:
                    g = dict(data["efficiency"]["families"]["gemm"][k])
                    g["source"] = f"{g['source']}; the GEMM family's, shared (one BLAS GEMM per expert)"
                    data["efficiency"]["families"].setdefault("grouped_gemm", {})[k] = g
        names = [n for n, _, _ in FREE[fam]]
        values = dict(zip(names, map(float, x)))
        if fam == "gemm" and "gemv_rows" in data["efficiency"]["families"]["gemm"]:
            values["gemv_rows"] = float(data["efficiency"]["families"]["gemm"]["gemv_rows"]["value"])
        report[fam] = dict(points=len(recs), values=values, train_mape=mape)
    return _profile(data), report


def score(records: list[dict], hw: HardwareProfile) -> dict:
    """Predicted vs measured (minimum) over ``records``: overall and per family."""
    pred = predictions(records, hw)
    meas = np.array([r["min_s"] for r in records])

    def stats(mask) -> dict:
        p, m = pred[mask], meas[mask]
        err = np.abs(p / m - 1)
        return dict(points=int(mask.sum()), mape=float(err.mean()), median_abs_error=float(np.median(err)),
                    geomean_ratio=float(math.exp(np.mean(np.log(p / m)))), within_25pct=float(np.mean(err <= 0.25)))

    fams = [r["family"] for r in records]
    out = stats(np.ones(len(records), dtype=bool))
    out["families"] = [dict(family=f, **stats(np.array([x == f for x in fams]))) for f in dict.fromkeys(fams)]
    out["predicted_s"] = pred.tolist()
    return out


def ordering_checks(records: list[dict], pred: list[float], pairs) -> list[dict]:
    """For each (name, A, B) pair measured in ``records``: which was faster, measured and
    predicted, and whether they agree."""
    idx = {point_of(r): i for i, r in enumerate(records)}
    out = []
    for name, a, b in pairs:
        if a in idx and b in idx:
            i, j = idx[a], idx[b]
            ma, mb = records[i]["min_s"], records[j]["min_s"]
            out.append(dict(pair=name, measured_ratio=ma / mb, predicted_ratio=pred[i] / pred[j],
                            agree=(ma < mb) == (pred[i] < pred[j])))
    return out
