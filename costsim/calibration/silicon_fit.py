"""Scoring and fitting costsim profiles on the silicon tables read by
``costsim.calibration.silicon``: seeded train/held-out halves (random rows or whole shape
groups), per-family MAPE / median |error| / geometric-mean ratio / share within 25%, the
robust least-squares fit of each family's parameters on the train half, the held-out residual
bands, and the calibrated profile with its provenance.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from costsim.calibration import silicon  # silicon.load is looked up at call time (tests replace it)
from costsim.calibration.silicon import FAMILIES, SYSTEMS, plan, predict_frame, system_name


def split(df: pd.DataFrame, seed: int = 0, by_group: bool = False) -> np.ndarray:
    """A seeded half of the rows (True = train): random rows, or whole shape groups
    (``group``), per family and label so every family and reported label (each collective of
    ``comm``) has both halves."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(df), dtype=bool)
    if not by_group:
        return rng.random(len(df)) < 0.5
    for _, g in df.groupby(["family", "label"] if "label" in df else ["family"], sort=True):
        groups = np.array(sorted(g["group"].unique()))
        pick = set(groups[rng.permutation(len(groups))[: max(1, len(groups) // 2)]])
        train[g.index[g["group"].isin(pick)]] = True
    return train


def stats(pred, meas) -> dict:
    """MAPE, median |error|, geometric-mean ratio predicted/measured, share within 25%."""
    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    err = np.abs(pred / meas - 1)
    return dict(points=int(len(meas)), mape=float(err.mean()), median_abs_error=float(np.median(err)),
                geomean_ratio=float(np.exp(np.mean(np.log(pred / meas)))), within_25pct=float(np.mean(err <= 0.25)))


def summary(df: pd.DataFrame, pred) -> list[dict]:
    """Per reporting label: the ``stats`` and the worst shape groups (by MAPE)."""
    out = []
    d = df.assign(pred=pred, err=np.abs(np.asarray(pred) / df["measured_s"] - 1))
    for label, g in d.groupby("label", sort=True):
        worst = g.groupby("group")["err"].mean().sort_values(ascending=False).head(3)
        out.append(dict(label=label, family=g["family"].iloc[0], **stats(g["pred"], g["measured_s"]),
                        worst=[dict(group=k, mape=float(v)) for k, v in worst.items()]))
    return out


# --------------------------------------------------------------------------------------
# Fitting a profile to the tables
# --------------------------------------------------------------------------------------

# family -> fitted parameters (field, lower, upper; SI units). ``comm`` is fitted once per
# collective (``efficiency.collectives.<collective>``, ``specs.CollectiveModel``): the simple
# protocol's link efficiency and per-step latency, the per-collective overhead, and the
# low-latency protocol's latency (``parallel.collective_seconds`` takes the
# faster one per size, as NCCL's tuner does).
# per_k / k_split: a block's serial K loop, held by split-K beyond k_split (the tables at M = 8,
# N = 32: 2.5 us at K = 32 rising 1.4 ns per K element to 5.3 us at 2,048, then flat to 16,384;
# held-out GEMM bf16 H200 11.7 -> 7.8%, H100 10.7 -> 7.7, B200 13.9 -> 9.5, A100 13.5 -> 10.3;
# /tmp experiment, 2026-12-04); per_k's bound 5e-8 starts the fit at 5e-10 (from 1e-10 it stayed)
# overlap_p: compute and memory terms as (c^p + m^p)^(1/p), not their max: large M with K <= 512
# ran at 0.5-0.7 of the max's prediction, output-bound tiles with few K blocks (held-out GEMM
# bf16 H200 7.9 -> 7.5%, A100 10.3 -> 9.6, fp8_block H200 12.5 -> 11.1; /tmp experiment)
# per_output: the epilogue per output element, not hidden by a short K loop (fp8_block at K = 128,
# M = 16,384, N = 65,536: 1,372 us, 3.1x its BF16 output's 447 us at 4.8 TB/s): held-out GEMM
# bf16 H200 7.5 -> 6.4%, fp8 5.5 -> 4.5, fp8_block 11.1 -> 8.8, H100 fp8_block 10.6 -> 9.1
# (the whole refit, 2026-12-04); in the expert GEMMs too: MoE power-law H200 15.2 -> 12.6%
_GEMM = [("compute", 0.05, 1.0), ("memory", 0.05, 1.0), ("overhead", 0.0, 1e-4), ("m_half", 0.0, 2048.0),
         ("n_half", 0.0, 4096.0), ("per_k", 0.0, 5e-8), ("k_split", 64.0, 65536.0), ("overlap_p", 1.0, 16.0),
         ("per_output", 0.0, 1e-11)]
_ATTENTION = [("compute", 0.005, 1.0), ("memory", 0.05, 1.0), ("per_row", 0.0, 1e-7), ("overhead", 0.0, 1e-4)]
# decode kernels split over the context; split_tokens is fitted on a log scale up to 2^20 tokens
# (a kernel that never splits: A100's MLA decode streams a whole 131k-token row with one block,
# 15.5 ms at batch 1; the old bound of 8,192 left it at 0.08 of its time)
_SPLIT = [("split_memory", 0.001, 0.2), ("split_tokens", 16.0, 2.0**20)]
LOG_SCALED = {"split_tokens", "k_split"}  # parameters fitted on a log scale (they span decades)
# structural choices made per fitting unit on its train half: each value is fitted in turn and
# the one with the lower train error kept. All-to-all is point-to-point sends, and NCCL takes LL
# up to a size per peer (NCCL_P2P_LL_THRESHOLD, 16 KiB by default), not the faster protocol: the
# Hopper/Blackwell tables (NCCL 2.29) sit on a 14-15 us plateau from 32 KiB per peer to 2 MiB
# (held-out all-to-all H100 17.3 -> 8.3%, H200 15.7 -> 9.8, B200 14.9 -> 8.9), while A100's (NCCL
# 2.27) shows none (the rule would take it from 8.2 to 14.4%): /tmp experiment, 2026-12-04
CHOICES = {"comm:all_to_all": ("ll_threshold", (None, 16384.0))}
_GROUPED = [("compute", 0.005, 1.0), ("memory", 0.02, 1.0), ("per_group_overhead", 0.0, 1e-4),
            ("per_slot_overhead", 0.0, 1e-6), ("overhead", 0.0, 2e-4), ("m_half", 0.0, 2048.0), ("n_half", 0.0, 4096.0),
            ("per_output", 0.0, 1e-11)]
FREE = {
    "gemm": _GEMM,
    "gemm_fp8": _GEMM,
    "gemm_fp8_block": _GEMM,
    # per_element is not fitted: the engine's attention operators give no ``scores`` shape
    # a GQA decode kernel's KV row (group > 1) costs 2.5-4x an MHA row in BF16 (H200 trtllm tables,
    # context <= 31, batch >= 512: 36-60 ns per sequence x KV head at groups 2-32 against 11-18 ns
    # at group 1), and an 8-bit KV cache runs its own kernels (a 5.4 us floor against 8.4 us in
    # BF16; fp8 GQA rows 8-20 ns): per_row_group, and attention_decode_fp8 fitted apart
    # (held-out decode attention H200 22.6 -> 17.1%, H100 21.6 -> 16.4, A100 22.6 -> 17.2; 2026-12-04)
    # per_row_query: a grouped row's block loads and reduces group x head_dim query elements;
    # kv8_memory: an ungrouped (MHA) kernel over an 8-bit cache dequantises at its own rate; and a
    # sliding-window row's split chunk is cut from the whole cache (window-128 rows at batch 1
    # take 0.95 of the full-context rows' time): held-out decode attention H200 16.9 -> 15.2%,
    # H100 16.0 -> 15.0, B200 10.6 -> 9.8, A100 17.5 -> 17.1 (/tmp experiment, 2026-12-04)
    # overlap_p: a decode's row terms overlap its stream partly, (T^p + R^p)^(1/p) (fitted p
    # 1.2-2.3; at batch 256, 511 tokens, 32/8 heads the H200 row costs 63 us and the stream 125
    # us, measured 146 us); per_row_tile: a row's loop pays per tile of kv_tile cached tokens
    # (at batch 64 the rows cost 48 ns each up to 127 tokens, 100 at 255, 132 at 511): held-out
    # decode attention H200 15.5 -> 14.9%, H100 15.4 -> 14.9, B200 9.8 -> 8.2, A100 17.0 -> 14.1
    # (the whole refit, benchmarks/silicon_calibrate.py, 2026-12-04)
    "attention_decode": [*_ATTENTION, ("per_row_group", 0.0, 2e-7), ("group_compute", 0.0005, 1.0), *_SPLIT,
                         ("per_row_query", 0.0, 1e-10), ("kv8_memory", 0.05, 1.0), ("overlap_p", 1.0, 16.0),
                         ("per_row_tile", 0.0, 1e-7)],
    "attention_decode_fp8": [*_ATTENTION, ("per_row_group", 0.0, 2e-7), ("group_compute", 0.0005, 1.0), *_SPLIT,
                             ("per_row_query", 0.0, 1e-10), ("overlap_p", 1.0, 16.0), ("per_row_tile", 0.0, 1e-7)],
    # a context kernel's block per (sequence, query head, 64 queries): the tables' prefill of one
    # token per sequence costs 0.7 us per sequence at 32 heads (H200, batch 256: 181 us), 6x
    # the per-row term (held-out prefill attention H200 17.5% -> 13.2%; 128 or 256 queries per
    # tile: 13.9 / 14.7%; /tmp experiment, 2026-12-04)
    "attention_prefill": [*_ATTENTION, ("per_tile", 0.0, 1e-6)],
    # an 8-bit KV cache's context attention (TensorRT-LLM's FP8 context FMHA) fitted apart:
    # held-out prefill H200 13.2 -> 11.6%, prefill MLA 14.9 -> 10.4, H100 16.5 -> 10.6, B200
    # 17.5 -> 12.5 (one fit per KV format; /tmp experiment, 2026-12-04)
    "attention_prefill_fp8": [*_ATTENTION, ("per_tile", 0.0, 1e-6)],
    "attention_mla_decode": [*_ATTENTION, *_SPLIT],
    "attention_mla_prefill": [*_ATTENTION, ("per_tile", 0.0, 1e-6)],
    "attention_mla_prefill_fp8": [*_ATTENTION, ("per_tile", 0.0, 1e-6)],
    "grouped_gemm": _GROUPED,
    # fp8 MoE kernels (per-tensor / block scales) fitted apart from BF16 ones: one shared set left
    # BF16 1.4-1.8x slow and fp8-block 1.5x fast at 16k tokens (H200 held-out MoE 25.8% shared,
    # 18.9% per format; /tmp experiment, 2026-12-04)
    "grouped_gemm_fp8": _GROUPED,
    "grouped_gemm_fp8_block": _GROUPED,
    # MXFP4 experts (W4A16, gpt-oss): predicted / measured 0.5 on the BF16 fit (H200)
    "grouped_gemm_mxfp4": _GROUPED,
    # the low-latency protocol's efficiency is not fitted: half the simple one (NCCL LL's
    # 4-byte flag per 4 data bytes); fitting it too overfits the rank counts (groups held out:
    # H200 20.6% instead of 13.9%, H100 17.6% instead of 15.8%, /tmp experiment, 2026-12-02)
    "comm": [("efficiency", 0.05, 1.0), ("latency", 0.0, 2e-5), ("overhead", 0.0, 5e-5), ("ll_latency", 0.0, 2e-5)],
}
# TensorRT-LLM's decode attention in the tables: groups of up to 32 query heads per KV head run at
# one rate; 48, 64, 96 and 128 run 4-16x slower per FLOP (H200 trtllm tables, e.g. 128 heads over
# 1 KV head at 4k context: 40 us per sequence against 0.65 us for 32 over 1; 2026-12-03)
GROUP_LIMIT = 32
GROUP_LIMIT_WHY = "decode kernels handle up to 32 query heads per KV head; larger groups fall back (tables: 48-128)"
Q_TILE = 64
Q_TILE_WHY = "context-attention blocks of 64 queries fit the tables best (64 / 128 / 256: H200 13.2 / 13.9 / 14.7%)"
KV_TILE = 256
KV_TILE_WHY = ("a decode row's loop in tiles of 256 cached tokens fits the tables best "
               "(64 / 128 / 256 / 512 / 1,024: H200 15.3 / 15.0 / 14.8 / 14.9 / 14.8%)")
FIT_ROWS = 1500  # rows per family the least-squares fit sees (a seeded sample of the train half)
MAX_NFEV = 100  # function evaluations per least-squares pass


COLLECTIVE_KERNELS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def _put(data: dict, fam: str, name: str, value: float, source: str) -> None:
    """Write one fitted value into a profile dict; ``fam`` is a family or ``comm:<collective>``."""
    q = dict(value=float(value), source=source, provenance="calibrated")
    if fam.startswith("comm:"):
        data["efficiency"].setdefault("collectives", {}).setdefault(fam[5:], {})[name] = q
    else:
        data["efficiency"]["families"].setdefault(fam, {})[name] = q


def _current(hw, fam: str) -> dict:
    from costsim.simulator.efficiency import rates
    from costsim.simulator.parallel import collective_protocols
    from costsim.simulator.types import Family

    if fam.startswith("comm:"):
        protos = collective_protocols(hw, fam[5:])
        e, lat, ov = protos[0]
        return dict(efficiency=e, latency=lat, overhead=ov, ll_latency=protos[1][1] if len(protos) > 1 else lat / 4)
    r = rates(hw, Family(fam))
    return dict(compute=r.compute, memory=r.memory, overhead=r.overhead_s, per_group_overhead=r.per_group_overhead_s,
                per_slot_overhead=r.per_slot_overhead_s,
                per_element=r.per_element_s, per_row=r.per_row_s, per_row_group=r.per_row_group_s or r.per_row_s,
                per_tile=r.per_tile_s, per_k=r.per_k_s, per_output=r.per_output_s, k_split=r.k_split or 4096.0,
                overlap_p=r.overlap_p or 8.0,
                m_half=r.m_half, group_compute=r.group_compute, n_half=r.n_half, split_memory=r.split_memory,
                split_tokens=r.split_tokens, per_row_query=r.per_row_query_s, per_row_tile=r.per_row_tile_s,
                kv8_memory=r.kv8_memory or r.memory)


def fit(base, df: pd.DataFrame, train: np.ndarray, source: str, name: str, seed: int = 0,
        families=FAMILIES) -> tuple[object, dict]:
    """Fit ``base``'s family parameters (``FREE``) to the ``train`` rows of ``df``; returns
    (profile, per-family fitted values and train MAPE). Peaks and bandwidths stay the
    datasheet's. Robust least squares on log time (``scipy.optimize.least_squares``: a
    linear pass, then soft-L1) over at most ``FIT_ROWS`` seeded rows per family; for a unit in
    ``CHOICES`` once per structural option, keeping the lower train error."""
    from costsim.specs import HardwareProfile

    data = base.model_dump(mode="json", exclude_none=True)
    data["name"] = name
    data["efficiency"].setdefault("families", {})
    rng = np.random.default_rng(seed)
    report = {}
    # fitting units: each family, and each collective of ``comm`` on its own
    units = [(f"comm:{k}", "comm", df["kernel"].to_numpy() == k) if fam == "comm" else (fam, fam, True)
             for fam in families for k in (COLLECTIVE_KERNELS if fam == "comm" else (None,))]
    # rows the reader marks as not fitted (``silicon``: EP-inconsistent MoE rows)
    usable = train & (df["fitted"].fillna(True).to_numpy(bool) if "fitted" in df else True)
    for fam, free_key, sel in units:
        rows = np.flatnonzero(usable & (df["family"].to_numpy() == free_key) & sel)
        if not len(rows) or free_key not in FREE:
            continue
        if len(rows) > FIT_ROWS:
            rows = np.sort(rng.choice(rows, FIT_ROWS, replace=False))
        sub = df.iloc[rows].reset_index(drop=True)
        if fam == "attention_decode":  # the group size beyond which the decode kernel falls back, and
            # the cached tokens per tile of a decode row's loop
            _put(data, fam, "group_limit", GROUP_LIMIT, f"{source}: {GROUP_LIMIT_WHY}")
            _put(data, fam, "kv_tile", KV_TILE, f"{source}: {KV_TILE_WHY}")
        if fam == "attention_prefill":  # the queries per block of the context kernel
            _put(data, fam, "q_tile", Q_TILE, f"{source}: {Q_TILE_WHY}")
        p = plan(sub, base)
        start, best = data, None
        choice, options = CHOICES.get(fam, (None, (None,)))
        for option in options:
            data = copy.deepcopy(start)
            if option is not None:
                _put(data, fam, choice, option, f"{source}: {choice} {option:g} fits the train half better than none")
            got = _fit_unit(data, fam, free_key, sub, p, source, f"fitted on {len(rows)} of "
                            f"{int((usable & (df['family'].to_numpy() == free_key) & sel).sum())} {fam} rows (train half)")
            if best is None or got[1]["train_mape"] < best[1]["train_mape"]:
                best = (data, got[1] if option is None else {**got[1], "values": {**got[1]["values"], choice: option}})
        data, report[fam] = best
    return HardwareProfile.model_validate(data), report


def _fit_unit(data: dict, fam: str, free_key: str, sub: pd.DataFrame, p, source: str, how: str):
    """Fit one unit's ``FREE`` parameters into ``data`` (in place) on the rows ``sub`` (``plan``
    ``p``); returns (data, report entry with rows, values and train MAPE)."""
    from scipy.optimize import least_squares

    from costsim.specs import HardwareProfile

    meas = np.log(sub["measured_s"].to_numpy())
    free = FREE[free_key]
    names = [n for n, _, _ in free]
    lo = np.array([b for _, b, _ in free])
    hi = np.array([b for _, _, b in free])
    cur = _current(HardwareProfile.model_validate(data), fam)
    x0 = np.clip([cur[n] for n in names], lo, hi)
    x0 = np.where(x0 > lo, x0, lo + 1e-2 * (hi - lo))
    logs = np.array([n in LOG_SCALED for n in names])

    llo, lhi = np.log(np.where(logs, lo, 1.0)), np.log(np.where(logs, hi, 1.0))

    def value(u):  # the unit cube -> parameter values (log-scaled ones geometrically)
        return np.where(logs, np.exp(llo + u * (lhi - llo)), lo + u * (hi - lo))

    def trial(x):
        eff = data["efficiency"]
        d = {**data, "efficiency": {**eff, "families": {k: dict(v) for k, v in eff["families"].items()},
                                    "collectives": {k: dict(v) for k, v in eff.get("collectives", {}).items()}}}
        for n, v in zip(names, x):
            _put(d, fam, n, v, source)
        return HardwareProfile.model_validate(d)

    def residuals(u):
        return np.log(p.predict(trial(value(u)))) - meas

    u = np.where(logs, (np.log(np.where(logs, x0, 1.0)) - llo) / np.where(logs, lhi - llo, 1.0),
                 (x0 - lo) / (hi - lo))
    for loss in ("linear", "soft_l1"):
        u = least_squares(residuals, u, bounds=(0.0, 1.0), loss=loss, f_scale=0.1, diff_step=1e-3,
                          max_nfev=MAX_NFEV).x
    x = value(u)
    for n, v in zip(names, x):
        _put(data, fam, n, v, f"{source}: {how}")
    pred = np.exp(residuals(u) + meas)
    return data, dict(rows=len(sub), values=dict(zip(names, map(float, x))),
                      train_mape=float(np.mean(np.abs(pred / np.exp(meas) - 1))))


def calibrate(system: str, backend: str = "trtllm", base=None, seed: int = 0, name: str | None = None) -> dict:
    """Fit on a seeded random half, score the other half; refit with whole shape groups held
    out and score those. Returns the fitted profile and both reports (``stats`` per label)."""
    from costsim.registry import load_hardware

    t = silicon.load(system, backend)
    base = base or load_hardware(SYSTEMS[t.system])
    df = t.frame
    src = t.source_text()
    name = name or f"{base.name}-calibrated"
    out = dict(tables=t)
    for how in ("random", "group"):
        train = split(df, seed, by_group=how == "group")
        hw, rep = fit(base, df, train, src, name, seed)
        p = predict_frame(df, hw)
        held = summary(df[~train], p[~train])
        tr = summary(df[train], p[train])
        out[how] = dict(profile=hw, report=rep, held_out=held, train=tr, train_mask=train, predicted=p)
    return out


def default_profile(system: str) -> str:
    """The profile ``validate --silicon`` scores by default: the shipped calibrated one of the
    system when there is one, else its datasheet profile."""
    from costsim.registry import hardware_names

    base = SYSTEMS[system_name(system)]
    return f"{base}-calibrated" if f"{base}-calibrated" in hardware_names() else base


def validate(system: str, hw, backend: str = "trtllm", reference=None) -> dict:
    """Predicted vs measured over every mapped row of ``system``'s tables on ``hw`` (and on
    ``reference``, e.g. the datasheet profile, beside it). Returns the frame with predictions,
    the ``summary`` per label and the overall ``stats``."""
    t = silicon.load(system, backend)
    df = t.frame
    p = plan(df, hw)
    pred = p.predict(hw)
    out = dict(tables=t, frame=df.assign(predicted_s=pred), labels=summary(df, pred),
               overall=stats(pred, df["measured_s"]))
    if reference is not None:
        ref = p.predict(reference)
        out["frame"]["predicted_reference_s"] = ref
        by = {r["label"]: r for r in summary(df, ref)}
        for r in out["labels"]:
            r["mape_reference"] = by[r["label"]]["mape"]
            r["geomean_ratio_reference"] = by[r["label"]]["geomean_ratio"]
    return out


def scatter_rows(frame: pd.DataFrame, per_label: int = 2000) -> list[dict]:
    """Rows for a predicted-vs-measured scatter (``min_s``, ``predicted_s``, ``family`` = the
    table label): at most ``per_label`` rows of each label, sampled with a fixed seed."""
    out = []
    for label, g in frame.groupby("label", sort=False):
        g = g.sample(min(len(g), per_label), random_state=0)
        out += [dict(min_s=m, predicted_s=p, family=label) for m, p in zip(g["measured_s"], g["predicted_s"])]
    return out


def profile_yaml(hw, header: str) -> str:
    """The YAML text of a fitted profile (safe_dump), with a comment header."""
    import yaml

    return "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(
        hw.model_dump(mode="json", exclude_none=True), sort_keys=False)


def residual_bands(df: pd.DataFrame, pred, held: np.ndarray, source: str) -> dict:
    """Per fitting family: the 10th / 90th percentiles of measured / predicted over the
    ``held`` rows (the profile's ``residuals``)."""
    out = {}
    ratio = df["measured_s"].to_numpy() / np.asarray(pred)
    for fam in FAMILIES:
        m = held & (df["family"].to_numpy() == fam)
        if m.sum() >= 10:
            p10, p90 = np.percentile(ratio[m], [10, 90])
            out[fam] = dict(p10=float(p10), p90=float(p90), rows=int(m.sum()),
                            source=f"{source}: measured/predicted over the held-out half")
    return out


def with_provenance(hw, result: dict, system: str, backend: str, seed: int):
    """``hw`` with a top-level source naming the package, backend and version, system and the
    held-out errors of ``result`` (a ``calibrate`` result), and the held-out residual bands."""
    from costsim.specs import HardwareProfile

    t = result["tables"]
    held = {r["label"]: r["mape"] for r in result["random"]["held_out"]}
    grp = {r["label"]: r["mape"] for r in result["group"]["held_out"]}
    errs = "; ".join(f"{k} {v:.1%} (groups held out {grp.get(k, float('nan')):.1%})" for k, v in held.items())
    data = hw.model_dump(mode="json", exclude_none=True)
    data["source"] = (f"costsim calibrate --silicon {system} --backend {backend} (seed {seed}): "
                      f"{t.source_text()}; fitted on a seeded random half of the rows, held-out MAPE: {errs}; "
                      f"peaks and bandwidths: {hw.source}")
    r = result["random"]
    data["residuals"] = residual_bands(t.frame, r["predicted"], ~r["train_mask"], t.source_text())
    return HardwareProfile.model_validate(data)
