"""``costsim rate`` / ``simulator.rate``: continuous batching under a Poisson request rate
(issue 9: in-flight batching with a per-request TTFT/TPOT). The steady state by hand from the
engine's own prefill and decode times: Little's law for the running batch, decode stretched by
the prefill share, M/D/1 queueing for the prefill (Pollaczek-Khinchine)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
from costsim.cli.app import app
from costsim.errors import FieldError
from costsim.simulator.rate import at_rate, max_rate
from costsim.simulator.serving import decode, prefill


def _setup():
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    return spec, hw, resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8))


def test_steady_state_by_hand():
    spec, hw, dep = _setup()
    rate, I, O = 2.0, 2048, 512
    r = at_rate(spec, hw, dep, rate, I, O)
    p = float(prefill(spec, hw, dep, 1, I).time_s)
    rho = rate * p
    L = I + (O - 1) / 2
    # the smallest batch whose decode keeps up with rate x O tokens/s, by brute force
    B = next(b for b in range(1, 2000) if b * (1 - rho) / float(decode(spec, hw, dep, b, L).time_s) >= rate * O)
    d = float(decode(spec, hw, dep, B, L).time_s)
    assert not r.saturated and r.batch == B
    assert r.prefill_share == pytest.approx(rho, rel=1e-12)
    assert r.tpot_s == pytest.approx(d / (1 - rho), rel=1e-12)
    assert r.ttft_s == pytest.approx(p + rho * p / (2 * (1 - rho)) + d / 2, rel=1e-12)
    assert r.e2e_s == pytest.approx(r.ttft_s + (O - 1) * r.tpot_s, rel=1e-12)
    # Little's law: the running batch is rate x output x TPOT, rounded up to a whole sequence
    assert B - 1 < rate * O * r.tpot_s <= B
    assert r.output_tokens_per_s == rate * O


def test_saturation_at_the_largest_sustainable_rate():
    spec, hw, dep = _setup()
    top = max_rate(spec, hw, dep, 2048, 512)
    assert 1 < top < 100
    assert not at_rate(spec, hw, dep, 0.98 * top, 2048, 512).saturated
    s = at_rate(spec, hw, dep, 1.02 * top, 2048, 512)
    assert s.saturated and s.tpot_s is None and "sequences (memory)" in s.reason
    far = at_rate(spec, hw, dep, 1000.0, 2048, 512)
    assert far.saturated and "prefill needs" in far.reason
    # TTFT and TPOT grow with the rate
    a, b = (at_rate(spec, hw, dep, x, 2048, 512) for x in (0.5, 5.0))
    assert a.ttft_s < b.ttft_s and a.tpot_s < b.tpot_s


def test_bad_rates_are_refused():
    spec, hw, dep = _setup()
    for bad in (0, -1.0, float("inf"), float("nan"), True):
        with pytest.raises(FieldError, match="rate"):
            at_rate(spec, hw, dep, bad, 2048, 512)
    run = CliRunner().invoke
    for bad in ("0", "x", "1,,2", "-3"):
        r = run(app, ["rate", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--rate", bad])
        assert r.exit_code == 2 and "--rate" in r.output and "Traceback" not in r.output, (bad, r.output)


def test_cli_json_has_every_point_and_the_max_rate():
    r = CliRunner().invoke(app, ["rate", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--rate", "5,0.5,100",
                                 "--input", "2048", "--output", "512", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [p["rate"] for p in d["points"]] == [0.5, 5.0, 100.0]
    assert [p["saturated"] for p in d["points"]] == [False, False, True]
    assert d["max_rate"] == pytest.approx(max_rate(*_setup(), 2048, 512), rel=1e-12)
