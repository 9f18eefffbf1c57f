"""``costsim calibrate --comm`` (issue 7, item 6): collectives timed on torch.distributed (gloo,
2 processes here), fitted as steps(n) x latency + fraction(n) x S / bandwidth, written into a
profile that the engine's ``collective_seconds`` then uses."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from costsim.calibration import comm as C
from costsim.cli.app import app
from costsim.registry import load_hardware
from costsim.simulator.parallel import COLLECTIVES, collective_seconds


def _synthetic(lat, bw, n=2):
    pts = []
    for name in C.NAMES:
        frac, steps = COLLECTIVES[name]
        for k, S in enumerate(C.SIZES):
            t = steps(float(n)) * lat[name] + frac(float(n)) * S / bw[name]
            pts.append(C.CommPoint(name, n, S, t, 1.5 * t, "gloo", "train" if k % 2 == 0 else "held_out"))
    return pts


def test_fit_recovers_a_known_latency_and_bandwidth_and_the_engine_uses_them():
    lat = dict(all_reduce=20e-6, all_gather=30e-6, reduce_scatter=40e-6, all_to_all=50e-6)
    bw = dict(all_reduce=2e9, all_gather=1e9, reduce_scatter=0.5e9, all_to_all=4e9)
    pts = _synthetic(lat, bw)
    fitted = C.fit(pts)
    for name in C.NAMES:
        assert fitted[name][0] == pytest.approx(lat[name], rel=1e-9)
        assert fitted[name][1] == pytest.approx(bw[name], rel=1e-9)
    hw = C.apply(load_hardware("cpu"), fitted, 2, "test")
    # the cpu profile has no intra-node link: it gets the fastest fitted bandwidth (all-to-all's)
    assert hw.intra_node_bandwidth.value == pytest.approx(4e9)
    assert hw.devices_per_node == 2
    assert hw.efficiency.collectives.all_gather.efficiency.value == pytest.approx(0.25)
    assert hw.efficiency.collectives.all_reduce.latency.provenance == "calibrated"
    # all-reduce of 1 MiB over 2 ranks: 2 x 20 us + 1 x 2^20 / 2e9 = 40 us + 524.288 us
    assert collective_seconds(hw, "all_reduce", 2 ** 20, 2) == pytest.approx(40e-6 + 2 ** 20 / 2e9, rel=1e-9)
    assert max(C.held_out_errors(hw, pts).values()) < 1e-9


def test_fit_refuses_a_collective_that_does_not_grow_with_size():
    pts = [C.CommPoint("all_reduce", 2, S, 1e-3 - 1e-12 * S, 1e-3, "gloo", "train") for S in C.SIZES]
    with pytest.raises(Exception, match="does not grow with size"):
        C.fit(pts)


def test_calibrate_comm_on_gloo_writes_a_profile_and_its_measurements(tmp_path):
    pytest.importorskip("torch")
    out, meas = tmp_path / "cpu-comm.yaml", tmp_path / "comm.csv"
    r = CliRunner().invoke(app, ["calibrate", "--comm", "--quick", "-o", str(out), "--measurements", str(meas)])
    assert r.exit_code == 0, r.output
    hw = load_hardware(str(out))
    assert hw.name == "cpu-comm" and hw.devices_per_node >= 2
    for name in C.NAMES:
        m = getattr(hw.efficiency.collectives, name)
        assert m.latency is not None and m.latency.provenance == "calibrated"
        assert 0 < m.efficiency.value <= 1
    rows = list(csv.DictReader(open(meas)))
    assert {r["collective"] for r in rows} == set(C.NAMES)
    assert len(rows) == 4 * len(C.QUICK_SIZES)
    assert all(float(r["min_s"]) <= float(r["median_s"]) for r in rows)
    # the profile times a TP-2 all-reduce with the fitted model
    a = hw.efficiency.collectives.all_reduce
    assert collective_seconds(hw, "all_reduce", 2 ** 20, 2) == pytest.approx(
        2 * a.latency.value + 2 ** 20 / (hw.intra_node_bandwidth.value * a.efficiency.value), rel=1e-9)


def test_calibrate_comm_refuses_one_rank_in_one_line(tmp_path):
    pytest.importorskip("torch")
    r = CliRunner().invoke(app, ["calibrate", "--comm", "--ranks", "1", "-o", str(tmp_path / "x.yaml")])
    assert r.exit_code == 2
    assert "--ranks 1: a collective needs at least 2 ranks" in r.output
    assert not (tmp_path / "x.yaml").exists()
