"""CI guards accuracy: the committed held-out measurements (benchmarks/data, measured on this
project's 2-core development machine) re-predicted with the committed calibrated profile
(cpu-dev) must not get worse than the recorded MAPE by more than the recorded margin. And a
short ``calibrate --quick`` on this machine must write a profile that loads and predicts."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from costsim.calibration.fit import score
from costsim.cli import app
from costsim.registry import load_hardware

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
RECORD = yaml.safe_load((DATA / "accuracy.yaml").read_text())


def test_committed_measurements_stay_predicted():
    recs = pd.read_csv(DATA / RECORD["measurements"], keep_default_na=False).to_dict("records")
    assert len(recs) >= 40 and {r["split"] for r in recs} == {"held-out"}
    ours = score(recs, load_hardware(RECORD["profile"]))
    assert ours["mape"] <= RECORD["mape"] + RECORD["margin"], ours["mape"]
    shipped = score(recs, load_hardware("cpu"))
    assert shipped["mape"] == pytest.approx(RECORD["mape_shipped"], abs=RECORD["margin"])


def test_calibrate_quick_writes_a_profile_that_loads_and_predicts(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "quick.yaml"
    r = CliRunner().invoke(app, ["calibrate", "--device", "cpu", "--quick", "-o", str(out), "--name", "quick"])
    assert r.exit_code == 0, r.output
    hw = load_hardware(str(out))
    assert hw.name == "quick" and hw.peak_flops.fp32.provenance == "calibrated"
    r = CliRunner().invoke(app, ["kernel", "gemm", "-H", str(out), "--m", "64", "--n", "2048", "--k", "2048",
                                 "--dtype", "fp32", "-f", "json"])
    assert r.exit_code == 0 and 0 < yaml.safe_load(r.stdout)[0]["time_s"] < 1
