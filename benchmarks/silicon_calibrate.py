"""Calibrate the shipped GPU profiles against NVIDIA's measured silicon tables and record how
accurate they are (needs ``pip install -e '.[silicon]'``; not run in CI).

    python benchmarks/silicon_calibrate.py [--systems h200_sxm,h100_sxm,...] [--seed 0]

For each system (TensorRT-LLM tables of aiconfigurator-core 0.12.0), the same work as
``costsim calibrate --silicon SYSTEM -o costsim/hardware_profiles/<profile>-calibrated.yaml
--force``: fit on a seeded random half, score the other half, refit with whole shape groups
held out and score those; the profile written is the random-half fit. Then:

- ``benchmarks/data/silicon_accuracy.yaml``: per system and family, train / held-out /
  groups-held-out MAPE (and geometric-mean ratio, share within 25%), and the error of the
  TensorRT-LLM-fitted profile on the SGLang and vLLM GEMM tables of the same system.
- ``benchmarks/data/silicon_extract.csv``: a seeded sample of at most ``PER_LABEL`` rows per
  system and family (the CI guard's data), and ``benchmarks/data/silicon_guard.yaml``: the MAPE
  of each shipped calibrated profile on it, with the margin the CI test allows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costsim.calibration import silicon as S  # noqa: E402

from costsim.calibration import silicon_fit as F  # noqa: E402
from costsim.registry import load_hardware  # noqa: E402

PER_LABEL = 60  # extract rows per system and family
MARGIN = 0.02  # CI: a family's MAPE may exceed its recorded figure by at most 2 points
DATA = ROOT / "benchmarks" / "data"
PROFILES = ROOT / "costsim" / "hardware_profiles"


def _r(x: float) -> float:
    return round(float(x), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--systems", default=",".join(S.SYSTEMS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    accuracy, extract, guard = {}, [], {}
    for system in args.systems.split(","):
        t0 = time.time()
        base = load_hardware(S.SYSTEMS[system])
        name = f"{base.name}-calibrated"
        res = F.calibrate(system, "trtllm", base, args.seed, name)
        hw = F.with_provenance(res["random"]["profile"], res, system, "trtllm", args.seed)
        (PROFILES / f"{name}.yaml").write_text(F.profile_yaml(
            hw, f"written by benchmarks/silicon_calibrate.py (= costsim calibrate --silicon {system} --backend "
                f"trtllm --seed {args.seed}), {dt.date.today().isoformat()}"))
        tr = {r["label"]: r for r in res["random"]["train"]}
        grp = {r["label"]: r for r in res["group"]["held_out"]}
        fams = {}
        for r in res["random"]["held_out"]:
            g = grp.get(r["label"])
            fams[r["label"]] = dict(family=r["family"], held_out_rows=r["points"], train_mape=_r(tr[r["label"]]["mape"]),
                                    held_out_mape=_r(r["mape"]), held_out_median_abs_error=_r(r["median_abs_error"]),
                                    held_out_geomean_ratio=_r(r["geomean_ratio"]),
                                    held_out_within_25pct=_r(r["within_25pct"]),
                                    groups_held_out_mape=_r(g["mape"]) if g else None)
        cross = {}
        for backend in ("sglang", "vllm"):
            try:
                v = F.validate(system, hw, backend)
            except Exception as e:  # a backend without tables for this system
                cross[backend] = f"not available: {e}"
                continue
            cross[backend] = {r["label"]: dict(rows=r["points"], mape=_r(r["mape"]),
                                               geomean_ratio=_r(r["geomean_ratio"]))
                              for r in v["labels"] if r["label"].startswith("gemm")}
            cross[backend]["tables"] = v["tables"].source_text()
        accuracy[system] = dict(profile=name, source=res["tables"].source_text(), families=fams,
                                trtllm_profile_on_other_backends_gemm=cross, seconds=round(time.time() - t0, 1))
        df = res["tables"].frame
        rng = np.random.default_rng(args.seed)
        take = []
        for _, g in df.groupby("label", sort=True):
            take.extend(rng.choice(g.index.to_numpy(), min(PER_LABEL, len(g)), replace=False).tolist())
        sub = df.loc[sorted(take)].assign(system=system)
        extract.append(sub)
        pred = S.predict_frame(sub.reset_index(drop=True), hw)
        guard[system] = dict(profile=name, families={r["label"]: _r(r["mape"]) for r in
                                                     F.summary(sub.reset_index(drop=True), pred)})
        print(f"{system}: {time.time() - t0:.0f} s", file=sys.stderr)
        for k, v in fams.items():
            print(f"  {k:22s} train {v['train_mape']:.1%} held-out {v['held_out_mape']:.1%} "
                  f"groups {v['groups_held_out_mape'] or float('nan'):.1%}", file=sys.stderr)
    DATA.mkdir(parents=True, exist_ok=True)
    meta = dict(package=f"{S.PACKAGE} {S.PACKAGE_VERSION}", backend="trtllm", seed=args.seed,
                date=dt.date.today().isoformat(), command="python benchmarks/silicon_calibrate.py")
    (DATA / "silicon_accuracy.yaml").write_text(yaml.safe_dump(dict(meta, systems=accuracy), sort_keys=False))
    pd.concat(extract, ignore_index=True).to_csv(DATA / "silicon_extract.csv", index=False)
    (DATA / "silicon_guard.yaml").write_text(yaml.safe_dump(dict(
        meta, extract="benchmarks/data/silicon_extract.csv", rows_per_family=PER_LABEL, margin=MARGIN,
        note="MAPE of each shipped calibrated profile on the extract; tests/test_silicon_guard.py fails when a "
             "family's MAPE exceeds its figure here by more than the margin", systems=guard), sort_keys=False))


if __name__ == "__main__":
    main()
