"""CI guard of the calibrated GPU profiles: a committed extract of NVIDIA's measured silicon
tables (benchmarks/data/silicon_extract.csv: at most 60 rows per system and family, sampled
by benchmarks/silicon_calibrate.py from aiconfigurator-core 0.12.0's TensorRT-LLM tables) is
re-predicted against the shipped ``*-calibrated`` profiles. A family fails when its MAPE
exceeds the figure recorded in benchmarks/data/silicon_guard.yaml by more than the recorded
margin (2 percentage points). Needs neither the package nor a GPU. Also the CLI of
``validate --silicon`` and ``calibrate --silicon`` on that extract (the table reader replaced
by the extract)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from costsim.calibration import silicon as S

from costsim.calibration import silicon_fit as F
from costsim.cli import app
from costsim.registry import load_hardware

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
GUARD = yaml.safe_load((DATA / "silicon_guard.yaml").read_text())
EXTRACT = pd.read_csv(DATA / "silicon_extract.csv", keep_default_na=True)


def _rows(system: str) -> pd.DataFrame:
    return EXTRACT[EXTRACT["system"] == system].reset_index(drop=True)


def test_extract_is_small_and_sourced():
    assert len(EXTRACT) <= 5000
    assert GUARD["package"] == "aiconfigurator-core 0.12.0" and GUARD["margin"] == 0.02
    assert set(GUARD["systems"]) == set(EXTRACT["system"])


@pytest.mark.parametrize("system", sorted(GUARD["systems"]))
def test_calibrated_profile_keeps_its_accuracy(system):
    rec = GUARD["systems"][system]
    hw = load_hardware(rec["profile"])
    assert hw.efficiency.families.gemm.compute.provenance == "calibrated"
    df = _rows(system)
    pred = S.predict_frame(df, hw)
    got = {r["label"]: r["mape"] for r in F.summary(df, pred)}
    assert set(got) == set(rec["families"])
    worse = {k: (round(got[k], 4), v) for k, v in rec["families"].items() if got[k] > v + GUARD["margin"]}
    assert not worse, f"{system}: MAPE (now, recorded) beyond the {GUARD['margin']:.0%} margin: {worse}"


def test_calibrated_beats_datasheet_profile_on_the_extract():
    # the point of calibrating: every system's calibrated profile is closer than its datasheet one
    for system, rec in GUARD["systems"].items():
        df = _rows(system)
        cal = F.stats(S.predict_frame(df, load_hardware(rec["profile"])), df["measured_s"])
        raw = F.stats(S.predict_frame(df, load_hardware(S.SYSTEMS[system])), df["measured_s"])
        assert cal["mape"] < 0.6 * raw["mape"], system


@pytest.fixture
def extract_tables(monkeypatch):
    def fake_load(system, backend="trtllm", tables=None):
        sysname = S.system_name(system)
        return S.Tables(sysname, backend, _rows(sysname).drop(columns=["system"]),
                        {"gemm": "gemm/trtllm/1.3.0rc20/gemm_perf.parquet", "nccl": "comm/nccl/2.29.2/nccl_perf.parquet"})

    monkeypatch.setattr(S, "load", fake_load)


def test_validate_silicon_cli(extract_tables, tmp_path):
    out = tmp_path / "rows.csv"
    r = CliRunner().invoke(app, ["validate", "--silicon", "h200", "--format", "json", "--csv", str(out)])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert j["profile"] == "h200-calibrated" and j["reference"] == "h200" and j["system"] == "h200_sxm"
    labels = {f["label"]: f for f in j["families"]}
    assert {"gemm bf16", "gemm fp8", "gemm fp8_block", "nccl all_reduce", "moe power_law"} <= set(labels)
    f = labels["gemm bf16"]
    assert 0 <= f["mape"] < f["mape_reference"] and 0 < f["within_25pct"] <= 1 and f["worst"]
    rows = pd.read_csv(out)
    assert len(rows) == len(_rows("h200_sxm")) and np.all(rows["predicted_s"] > 0)


def test_calibrate_silicon_cli_writes_a_calibrated_profile(extract_tables, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_NFEV", 3)  # the plumbing, not the optimum
    out = tmp_path / "h200-fit.yaml"
    r = CliRunner().invoke(app, ["calibrate", "--silicon", "h200_sxm", "-o", str(out)])
    assert r.exit_code == 0, r.output
    hw = load_hardware(str(out))
    assert hw.name == "h200-fit"
    assert "aiconfigurator-core 0.12.0" in hw.source and "trtllm 1.3.0rc20" in hw.source
    assert "held-out MAPE" in hw.source and "h200_sxm" in hw.source
    assert hw.efficiency.families.gemm_fp8.overhead.provenance == "calibrated"
    assert hw.peak_flops.bf16.value == load_hardware("h200").peak_flops.bf16.value  # datasheet peaks kept
    again = CliRunner().invoke(app, ["calibrate", "--silicon", "h200", "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
