"""Calibration and validation logic, on measurements made up from a known profile (so the
fit has a right answer), plus the CLI paths that need no timing."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from costsim.calibration.fit import fit_profile, point_of, predictions, score
from costsim.calibration.suite import Point, small_spec, suite
from costsim.cli import app
from costsim.registry import load_hardware
from costsim.specs import HardwareProfile

runner = CliRunner()


def _true_profile() -> HardwareProfile:
    """A made-up CPU with distinct per-family parameters, the 'truth' the fit must recover."""
    data = load_hardware("cpu").model_dump(mode="json", exclude_none=True)
    data["peak_flops"]["fp32"] = {"value": 2e11}
    data["memory_bandwidth"] = {"value": 2e10}
    data["efficiency"]["families"] = {
        "elementwise": {"memory": 0.6, "overhead": 4e-6},
        "gemm": {"compute": 0.8, "memory": 0.7, "overhead": 2e-6, "m_half": 32, "gemv_rows": 3},
        "attention_decode": {"compute": 0.3, "memory": 0.5, "overhead": 30e-6,
                             "group_reread": 0.3},
        "attention_prefill": {"compute": 0.4, "memory": 0.5, "overhead": 50e-6},
        "grouped_gemm": {"compute": 0.5, "memory": 0.6, "per_group_overhead": 8e-6, "overhead": 20e-6},
    }
    return HardwareProfile.model_validate(data)


def _records(hw: HardwareProfile, split: str | None = None, noise: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(0)
    pts = [p for p in suite("cpu") if split is None or p.split == split]
    recs = [dict(p.to_dict(), device="cpu", device_name="made-up", threads=2, torch="n/a", date="2026-12-02")
            for p in pts]
    for r, t in zip(recs, predictions(recs, hw)):
        r["min_s"] = r["median_s"] = float(t * np.exp(noise * rng.standard_normal()))
    return recs


def test_suites_are_disjoint_and_large_enough():
    pts = suite("cpu")
    train = {(p.kernel, p.label) for p in pts if p.split == "train"}
    held = {(p.kernel, p.label) for p in pts if p.split == "held-out"}
    assert not train & held
    assert len(held) >= 40
    assert {p.family for p in pts if p.split == "held-out"} == {"gemm", "elementwise", "attention_decode",
                                                                 "attention_prefill", "grouped_gemm", "dense_ffn"}
    assert all(p.dtype == "bf16" for p in suite("cuda"))


def test_small_specs_are_valid_layers():
    s = small_spec("mla-moe")
    assert (s.attention.kv_lora_rank, s.attention.qk_rope_head_dim, s.num_hidden_layers) == (512, 64, 1)
    assert small_spec("gqa-dense").ffn.intermediate_size == 4224  # = 4 x 704 routed + 2 x 704 shared


def test_fit_recovers_a_known_profile_and_generalises():
    truth = _true_profile()
    recs = _records(truth, noise=0.02)
    hw, report = fit_profile(load_hardware("cpu"), recs, set_peaks=True, name="fitted")
    assert set(report) == {"elementwise", "gemm", "attention_decode", "attention_prefill", "grouped_gemm"}
    held = [r for r in recs if r["split"] == "held-out"]
    s = score(held, hw)
    assert s["mape"] < 0.08  # 2% noise on made-up times: the held-out split is predicted closely
    # what was fitted says so
    assert hw.efficiency.families.gemm.compute.provenance == "calibrated"
    assert "fitted on" in hw.efficiency.families.gemm.compute.source
    assert hw.peak_flops.fp32.provenance == "calibrated"
    # the whole-number gemv_rows is found among the train row counts (1, 3, 4, ...), and shared
    assert hw.efficiency.families.gemm.gemv_rows.value == 3
    assert hw.efficiency.families.grouped_gemm.gemv_rows.value == 3
    assert report["gemm"]["values"]["gemv_rows"] == 3
    assert report["attention_decode"]["values"]["group_reread"] == pytest.approx(0.3, abs=0.1)


def test_fit_uses_only_the_train_split():
    truth = _true_profile()
    recs = _records(truth)
    for r in recs:  # poison the held-out measurements: a fit that reads them gets worse
        if r["split"] == "held-out":
            r["min_s"] *= 10
    hw, _ = fit_profile(load_hardware("cpu"), recs, set_peaks=True)
    train = [r for r in recs if r["split"] == "train"]
    assert score(train, hw)["mape"] < 0.05


def test_score_by_hand():
    hw = _true_profile()
    recs = _records(hw, "held-out")[:3]
    pred = predictions(recs, hw)
    recs[0]["min_s"], recs[1]["min_s"], recs[2]["min_s"] = pred[0] / 2, pred[1], pred[2] * 1.25
    s = score(recs, hw)
    # errors |p/m - 1|: 1.0, 0, 0.2 -> MAPE 0.4, median 0.2; ratios 2, 1, 0.8 -> geomean 1.6^(1/3)
    assert s["mape"] == pytest.approx(0.4)
    assert s["median_abs_error"] == pytest.approx(0.2)
    assert s["geomean_ratio"] == pytest.approx(1.6 ** (1 / 3))
    assert s["within_25pct"] == pytest.approx(2 / 3)


def test_point_round_trips_through_a_record():
    p = Point("attention_decode", "attention", "held-out", "fp32", model="mla-moe", batch=8, context=2048,
              new_tokens=1, form="absorbed")
    assert point_of(dict(p.to_dict(), min_s=1.0)) == p


def test_validate_from_csv_reports_both_profiles(tmp_path):
    import pandas as pd

    truth = _true_profile()
    f = tmp_path / "m.csv"
    pd.DataFrame(_records(truth, "held-out")).to_csv(f, index=False)
    prof = tmp_path / "truth.yaml"
    prof.write_text(yaml.safe_dump(truth.model_dump(mode="json", exclude_none=True) | {"name": "truth"}))
    out = tmp_path / "rows.csv"
    r = runner.invoke(app, ["validate", "-H", str(prof), "--from-csv", str(f), "--csv", str(out), "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["mape"] == pytest.approx(0.0, abs=1e-9) and d["mape_shipped"] > 0.1
    assert {x["family"] for x in d["families"]} >= {"gemm", "attention_decode"}
    assert len(pd.read_csv(out)) == 41
    assert [o["agree"] for o in d["orderings"]] == [True] * 4  # the truth predicts its own orderings


def test_validate_bad_csv_is_one_line(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("family,kernel\ngemm,gemm\n")
    r = runner.invoke(app, ["validate", "-H", "cpu", "--from-csv", str(f)])
    assert r.exit_code == 2 and "missing column(s)" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_calibrate_refuses_to_replace_a_file(tmp_path):
    out = tmp_path / "p.yaml"
    out.write_text("keep me")
    r = runner.invoke(app, ["calibrate", "--device", "cpu", "-o", str(out)])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert out.read_text() == "keep me"


def test_measure_points_pools_two_passes():
    from costsim.calibration.fit import measure_points
    from costsim.calibration.measure import keep_freed_memory

    p = Point("elementwise", "silu_mul", "train", "fp32", tokens=4, dim=64)
    seen = []
    one = measure_points([p], "cpu", 1, min_run_time=0.01, progress=seen.append, passes=1)[0]
    two = measure_points([p], "cpu", 1, min_run_time=0.01, progress=seen.append, passes=2)[0]
    assert len(seen) == 3  # once per point and pass
    assert one["runs"] >= 1 and two["runs"] >= 2 and two["min_s"] <= two["median_s"]  # runs of both passes pooled
    assert keep_freed_memory() is True  # glibc (Linux): freed memory stays in the process


def test_calibrate_warns_when_the_fit_is_far_off(tmp_path):
    # every other elementwise time x20 (what a busy machine does to some points): no memory rate
    # fits both halves, the train-split MAPE exceeds 50% and calibrate says so; the clean set does not warn
    import pandas as pd

    from pathlib import Path
    src = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "cpu-dev-train-2026-12-03.csv"
    df = pd.read_csv(src, keep_default_na=False)
    r = runner.invoke(app, ["calibrate", "--from-csv", str(src), "-o", str(tmp_path / "clean.yaml")])
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    rows = df.index[df["family"] == "elementwise"][::2]
    df.loc[rows, "min_s"] *= 20
    bad = tmp_path / "busy.csv"
    df.to_csv(bad, index=False)
    r = runner.invoke(app, ["calibrate", "--from-csv", str(bad), "-o", str(tmp_path / "busy.yaml")])
    assert r.exit_code == 0 and "warning: train-split MAPE above 50% for elementwise" in r.output, r.output
