"""Error bands from calibration residuals (``costsim.simulator.bands``), by hand."""

import pytest

from costsim.api import LayoutRequest, Scenario, load_hardware, load_model, perf, resolve_deployment
from costsim.simulator.bands import family_band, step_band
from costsim.simulator.roofline import time_step
from costsim.simulator.types import Family, OpKind, StepShape


def test_step_band_scales_each_operator_by_its_family():
    spec, hw = load_model("llama-3.1-8b"), load_hardware("h200-calibrated")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=2))
    t = time_step(spec, hw, dep, StepShape(16, 1, 4096, 1))
    lo = hi = 0.0
    for ot in t.timings:
        fam = ot.op.family
        r = hw.residuals.get(fam.value)
        p10, p90 = (r.p10, r.p90) if r else (1.0, 1.0)  # elementwise: no residuals, kept
        lo += p10 * float(ot.total_s)
        hi += p90 * float(ot.total_s)
    band = step_band(t, hw)
    assert band == pytest.approx((lo / float(t.time_s), hi / float(t.time_s)), rel=1e-12)
    assert band[0] < 1 < band[1]
    assert any(ot.op.kind is OpKind.COMM for ot in t.timings)  # TP 2: comm is in the band too


def test_fallback_family_and_no_residuals():
    hw = load_hardware("a100-80g-calibrated")  # no fp8 tables: gemm_fp8 borrows gemm's band
    if "gemm_fp8" not in hw.residuals:
        assert family_band(hw, Family.GEMM_FP8) == (hw.residuals["gemm"].p10, hw.residuals["gemm"].p90)
    assert family_band(hw, Family.ELEMENTWISE) == (1.0, 1.0)
    spec, plain = load_model("llama-3.1-8b"), load_hardware("h200")
    assert not plain.residuals
    r = perf(Scenario(spec, plain, LayoutRequest(devices=1), 1, 1024, 16))
    assert r.ttft_band_s is None and r.tpot_band_s is None


def test_perf_carries_the_bands():
    spec, hw = load_model("deepseek-v3"), load_hardware("h200-calibrated")
    r = perf(Scenario(spec, hw, LayoutRequest(devices=8), 64, 4096, 64))
    lo, hi = r.ttft_band_s
    assert lo < r.ttft_s < hi
    lo, hi = r.tpot_band_s
    assert lo < r.tpot_s < hi
    # every time has its band: TPOT at the last token with the first step's factors, end-to-end
    # as TTFT's band plus the decode steps' (63 of them after the prefill's first token)
    f_pre, f_dec = (r.ttft_band_s[0] / r.ttft_s, r.ttft_band_s[1] / r.ttft_s), (lo / r.tpot_s, hi / r.tpot_s)
    assert r.tpot_last_band_s == pytest.approx((r.tpot_last_s * f_dec[0], r.tpot_last_s * f_dec[1]), rel=1e-12)
    dec = r.e2e_s - r.ttft_s
    assert dec == pytest.approx(63 * r.tpot_s, rel=1e-12)
    assert r.e2e_band_s == pytest.approx((r.ttft_s * f_pre[0] + dec * f_dec[0], r.ttft_s * f_pre[1] + dec * f_dec[1]),
                                         rel=1e-12)


def test_max_throughput_carries_the_tpot_band():
    from costsim.api import max_throughput_record
    from costsim.simulator.serving import decode

    spec, hw = load_model("deepseek-v3"), load_hardware("h200-calibrated")
    m = max_throughput_record(spec, hw, LayoutRequest(devices=8), 4096, 0.05)
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=m.tp, ep=m.ep), m.batch, 4096)
    f = step_band(decode(spec, hw, dep, m.batch, 4096).timing, hw)
    assert m.tpot_band_s == pytest.approx((m.tpot_s * f[0], m.tpot_s * f[1]), rel=1e-12)
    assert "tpot_band_s" not in max_throughput_record(spec, load_hardware("h200"), LayoutRequest(devices=8)).to_dict()


def test_compare_carries_the_tpot_band():
    from costsim.api import compare

    hw = load_hardware("h200-calibrated")
    (c,) = compare([load_model("deepseek-v2")], hw, LayoutRequest(), context=4096, batch=32)
    lo, hi = c.tpot_band_s
    assert lo < c.tpot_s < hi
    (p,) = compare([load_model("deepseek-v2")], load_hardware("h200"), LayoutRequest(), context=4096, batch=32)
    assert "tpot_band_s" not in p.to_dict()


def test_a_profile_without_residuals_says_uncalibrated():
    # the calibration issue: "a profile without residuals says `uncalibrated` instead of a band"
    from typer.testing import CliRunner

    from costsim.api import max_throughput_record
    from costsim.cli import app

    spec = load_model("llama-3.1-70b")
    r = perf(Scenario(spec, load_hardware("h200"), LayoutRequest(devices=8), 1, 1024, 16))
    assert r.band == "uncalibrated" and r.ttft_band_s is None
    assert perf(Scenario(spec, load_hardware("h200-calibrated"), LayoutRequest(devices=8), 1, 1024, 16)).band == "p10-p90"
    assert max_throughput_record(spec, load_hardware("h200"), LayoutRequest(devices=8)).to_dict()["band"] == "uncalibrated"
    run = CliRunner()
    for cmd in (["perf", "llama-3.1-70b", "-H", "h200", "--devices", "8"],
                ["max-throughput", "llama-3.1-70b", "-H", "h200", "--devices", "8"],
                ["compare", "llama-3.1-70b", "-H", "h200", "--devices", "8"]):
        out = run.invoke(app, cmd)
        assert out.exit_code == 0 and "uncalibrated" in out.stdout, cmd
    out = run.invoke(app, ["perf", "llama-3.1-70b", "-H", "h200-calibrated", "--devices", "8"])
    assert out.exit_code == 0 and "uncalibrated" not in out.stdout
    # a calibrated profile fitted without a held-out half (cpu-dev, `calibrate --device cpu`) has
    # no residuals either: it says so, not "uncalibrated"
    cpu = perf(Scenario(load_model("llama-3.1-8b"), load_hardware("cpu-dev"),
                        LayoutRequest(devices=1, weight_dtype="fp32", kv_dtype="fp32"), 1, 64, 4))
    assert cpu.band == "no residuals" and cpu.ttft_band_s is None


def test_csv_gives_a_band_as_two_columns_of_raw_numbers():
    # second fresh-user run: the CSV had "[0.0024, 0.0031]" list strings
    import csv
    import io

    from typer.testing import CliRunner

    from costsim.cli import app

    out = CliRunner().invoke(app, ["perf", "llama-3.1-70b", "-H", "h200-calibrated", "--devices", "8", "--format", "csv"])
    (row,) = list(csv.DictReader(io.StringIO(out.stdout)))
    assert "tpot_band_s" not in row
    lo, hi, tpot = float(row["tpot_band_s_lo"]), float(row["tpot_band_s_hi"]), float(row["tpot_s"])
    assert lo < tpot < hi and row["band"] == "p10-p90"
