"""The deployment planner (costsim.simulator.planner, ``costsim plan``): its picks checked by
brute force with the scalar engine (``serving.serve`` at every batch of every candidate), the
replica and dollar arithmetic by hand, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

import tiny
from costsim.cli import app
from costsim.errors import CostsimError, FieldError
from costsim.simulator.layout import LayoutRequest, resolve_deployment
from costsim.simulator.memory import memory_report
from costsim.simulator.planner import candidates, plan
from costsim.simulator.serving import serve

PRICE = 1.5  # USD per device-hour of the tiny profile
IN, OUT = 64, 8
runner = CliRunner()


def _hw(**kw):
    # 2e5 bytes: the tiny model's weights (5.6 kB) plus about 60 sequences of 72 tokens per device
    d = dict(memory_capacity=2e5, price_per_device_hour=dict(value=PRICE, source="test price", provenance="assumed"))
    d.update(kw)
    return tiny.hw(**d)


def _moe():
    return tiny.gqa(name="tiny-moe", ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2,
                                             moe_intermediate_size=8, n_shared_experts=1))


def _brute(spec, hw, dep, ttft_slo, tpot_slo):
    """The largest batch meeting memory and both SLOs, by ``serve`` at every batch up to one past
    the memory limit (no monotonicity assumed), and serve's result there."""
    max_b = int(memory_report(spec, hw, dep, dep.dp, IN + OUT).max_batch)
    best = None
    for b in range(1, max_b + 2):
        r = serve(spec, hw, dep, b, IN, OUT)
        if r.memory.fits and r.ttft_s <= ttft_slo and r.tpot_s <= tpot_slo:
            best = r
    return best


def _key(r):
    return (r.hardware, r.devices, r.tp, r.ep, r.pp, r.weight_dtype, r.kv_dtype)


@pytest.mark.parametrize("spec, max_devices", [(tiny.gqa(), 4), (_moe(), 2)])
def test_planner_picks_match_a_brute_force_over_the_same_candidates(spec, max_devices):
    hw = _hw()
    ttft_slo, tpot_slo = 0.02, 1.0e-3  # both bind on this grid
    # the candidates, enumerated here from the layout rules: powers of two, pp 1/2, TP within a
    # node (dp = 1 for the dense model), EP the largest dividing devices and experts, bf16 and fp8 weights
    mine = set()
    for n in (1, 2, 4):
        if n > max_devices:
            continue
        for p in (1, 2):
            if n % p:
                continue
            for t in (1, 2):
                if (n // p) % t or (spec.ffn.kind == "dense" and t != n // p):
                    continue
                for w in ("bf16", "fp8"):
                    ep = 1 if spec.ffn.kind == "dense" else max(e for e in (1, 2, 4) if (n // p) % e == 0)
                    mine.add((n, t, ep, p, w, "bf16"))
    deps, reasons = candidates(spec, hw, max_devices, kv_dtypes=("bf16",), pp=(1, 2), context=IN + OUT)
    assert {(d.devices, d.tp, d.ep, d.pp, d.weights_name, d.kv_format.name) for d in deps} == mine
    assert not reasons
    # brute force: every candidate, every batch, the scalar engine
    expected = []
    for d in deps:
        r = _brute(spec, hw, d, ttft_slo, tpot_slo)
        if r is None:
            continue
        tps = r.batch * OUT / r.e2e_s
        usd_m = d.devices * PRICE / 3600 / tps * 1e6
        expected.append(((usd_m, d.devices), (hw.name, d.devices, d.tp, d.ep, d.pp, d.weights_name, "bf16"), r, usd_m))
    expected.sort(key=lambda e: e[0])
    assert len(expected) >= 3  # the grid has a real choice to make
    full = plan(spec, [hw], IN, OUT, tpot_slo_s=tpot_slo, ttft_slo_s=ttft_slo, max_devices=max_devices,
                kv_dtypes=("bf16",), pp=(1, 2), top=None)
    assert full.complete
    assert [_key(r) for r in full.rows] == [e[1] for e in expected]  # the whole ordering
    for row, (_, _, r, usd_m) in zip(full.rows, expected):
        assert row.batch == r.batch
        assert row.ttft_s == pytest.approx(r.ttft_s, rel=1e-9)
        assert row.tpot_s == pytest.approx(r.tpot_s, rel=1e-9)
        assert row.tokens_per_s == pytest.approx(r.batch * OUT / r.e2e_s, rel=1e-9)
        assert row.usd_per_million_output_tokens == pytest.approx(usd_m, rel=1e-9)
        assert row.replicas == 1 and row.usd_per_hour == pytest.approx(row.devices * PRICE)
        assert row.limit in ("memory", "TTFT SLO", "TPOT SLO", "TTFT and TPOT SLO")
    # the bounded search (top 2) finds the same two cheapest
    best = plan(spec, [hw], IN, OUT, tpot_slo_s=tpot_slo, ttft_slo_s=ttft_slo, max_devices=max_devices,
                kv_dtypes=("bf16",), pp=(1, 2), top=2)
    assert [_key(r) for r in best.rows] == [e[1] for e in expected[:2]]


def test_the_limit_is_what_fails_one_batch_more():
    spec, hw = tiny.gqa(), _hw()
    p = plan(spec, [hw], IN, OUT, ttft_slo_s=0.003, max_devices=1, kv_dtypes=("bf16",), pp=(1,), weight_dtypes=["bf16"])
    (row,) = p.rows
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=1, weight_dtype="bf16"), 1, IN + OUT)
    assert serve(spec, hw, dep, row.batch, IN, OUT).ttft_s <= 0.003 < serve(spec, hw, dep, row.batch + 1, IN, OUT).ttft_s
    assert row.limit == "TTFT SLO"
    free = plan(spec, [hw], IN, OUT, max_devices=1, kv_dtypes=("bf16",), pp=(1,), weight_dtypes=["bf16"]).rows[0]
    assert free.limit == "memory" and free.batch == row.max_batch_memory  # no SLO: as many as fit


def test_replicas_and_fleet_cost_for_a_target_rate_and_for_users():
    spec, hw = tiny.gqa(), _hw()
    kw = dict(ttft_slo_s=0.02, max_devices=2, kv_dtypes=("bf16",), pp=(1,))
    one = plan(spec, [hw], IN, OUT, **kw).rows[0]
    target = 10 * one.tokens_per_s + 1  # just over 10 replicas' worth
    row = next(r for r in plan(spec, [hw], IN, OUT, target_tokens_per_s=target, top=None, **kw).rows
               if _key(r) == _key(one))
    assert row.replicas == 11 and row.total_devices == 11 * one.devices
    assert row.usd_per_hour == pytest.approx(11 * one.devices * PRICE)
    assert row.usd_per_million_output_tokens == pytest.approx(11 * one.devices * PRICE / 3600 / target * 1e6)
    users = 3 * one.batch + 1
    row = next(r for r in plan(spec, [hw], IN, OUT, users=users, top=None, **kw).rows if _key(r) == _key(one))
    # 4 replicas share the 3 B + 1 users: each runs ceil(users / 4) of them, at that batch's e2e
    share = -(-users // 4)
    assert row.replicas == 4 and row.batch == share < one.batch and row.limit == "users"
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=one.devices, tp=one.tp, pp=one.pp,
                                                     weight_dtype=one.weight_dtype, kv_dtype=one.kv_dtype), 1, IN + OUT)
    e2e = serve(spec, hw, dep, share, IN, OUT).e2e_s
    assert row.e2e_s == pytest.approx(e2e, rel=1e-9) and e2e < one.e2e_s
    assert row.usd_per_million_output_tokens == pytest.approx(
        4 * one.devices * PRICE / 3600 / (users * OUT / e2e) * 1e6)


def test_one_user_is_served_at_batch_one():
    # fresh-user finding: plan --users 1 once costed a replica at its largest batch (207 on one
    # H100 for Llama-3.1-8B, TTFT 5.4 s, 49.48 USD/M tokens) while perf at batch 1 costs 3.93
    spec, hw = tiny.gqa(), _hw()
    row = plan(spec, [hw], IN, OUT, users=1, max_devices=1, kv_dtypes=("bf16",), pp=(1,), weight_dtypes=["bf16"]).rows[0]
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=1, weight_dtype="bf16"), 1, IN + OUT)
    r = serve(spec, hw, dep, 1, IN, OUT)
    assert row.batch == 1 and row.replicas == 1 and row.limit == "users"
    assert (row.ttft_s, row.tpot_s) == (pytest.approx(r.ttft_s, rel=1e-9), pytest.approx(r.tpot_s, rel=1e-9))
    assert row.usd_per_million_output_tokens == pytest.approx(PRICE / 3600 / (OUT / r.e2e_s) * 1e6, rel=1e-9)


def test_cheaper_hardware_wins_and_the_price_is_the_profiles():
    spec = tiny.gqa()
    cheap, dear = _hw(name="cheap", price_per_device_hour=dict(value=1.0)), _hw(name="dear")
    p = plan(spec, [dear, cheap], IN, OUT, ttft_slo_s=0.02, max_devices=2, kv_dtypes=("bf16",), pp=(1,), top=None)
    assert p.rows[0].hardware == "cheap"
    assert {r.price_usd_per_device_hour for r in p.rows} == {1.0, PRICE}
    same = [(a, b) for a in p.rows for b in p.rows if a.hardware == "cheap" and b.hardware == "dear"
            and _key(a)[1:] == _key(b)[1:]]
    assert same and all(b.usd_per_million_output_tokens == pytest.approx(a.usd_per_million_output_tokens * PRICE)
                        for a, b in same)


def test_infeasible_everywhere_is_one_line_naming_each_hardware():
    with pytest.raises(CostsimError) as e:
        plan(tiny.gqa(), [_hw()], IN, OUT, ttft_slo_s=1e-6, max_devices=2)
    msg = str(e.value)
    assert "\n" not in msg and "TTFT <= 0.001 ms" in msg and "tiny-hw:" in msg and "fastest TTFT" in msg
    with pytest.raises(CostsimError, match=r"weights do not fit on up to 1 device \(--max-devices\)"):
        plan(tiny.gqa(), [_hw(memory_capacity=2e3)], IN, OUT, max_devices=1)


def test_bad_arguments_name_their_field():
    spec, hw = tiny.gqa(), _hw()
    for kw, field in ((dict(tpot_slo_s=-1.0), "tpot_slo_s"), (dict(max_devices=0), "max_devices"),
                      (dict(users=2, target_tokens_per_s=5.0), "users"), (dict(top=0), "top")):
        with pytest.raises(FieldError) as e:
            plan(spec, [hw], IN, OUT, **kw)
        assert e.value.field == field
    with pytest.raises(FieldError) as e:
        plan(spec, [tiny.hw()], IN, OUT)  # no price
    assert e.value.field == "price"


# ---- the command ------------------------------------------------------------------------------


def _hw_file(tmp_path, **kw):
    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump(_hw(**kw).model_dump(mode="json", exclude_none=True)))
    return str(f)


def _spec_file(tmp_path):
    f = tmp_path / "tiny-gqa.yaml"
    f.write_text(yaml.safe_dump(tiny.gqa().model_dump(mode="json", exclude_none=True)))
    return str(f)


def test_cli_json_is_the_plan_and_o_writes_the_file(tmp_path):
    args = ["plan", _spec_file(tmp_path), "-H", _hw_file(tmp_path), "--context", "64", "--output", "8",
            "--ttft-slo", "20ms", "--max-devices", "2", "--kv-dtype", "bf16", "--pp", "1"]
    r = runner.invoke(app, args + ["-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    best = plan(tiny.gqa(), [_hw()], IN, OUT, ttft_slo_s=0.02, max_devices=2, kv_dtypes=("bf16",), pp=(1,)).rows[0]
    assert d["rows"][0]["usd_per_million_output_tokens"] == pytest.approx(best.usd_per_million_output_tokens)
    assert d["rows"][0]["batch"] == best.batch and d["ttft_slo_s"] == 0.02
    out = tmp_path / "plan.txt"
    r = runner.invoke(app, args + ["-o", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert text.startswith("plan: tiny-gqa, 64 in -> 8 out, TTFT <= 20 ms") and "USD/M tok" in text
    # --price NAME=... replaces the profile's price: USD scale with it
    r = runner.invoke(app, args + ["-f", "json", "--price", "tiny-hw=3USD/h"])
    assert json.loads(r.stdout)["rows"][0]["usd_per_million_output_tokens"] == pytest.approx(
        2 * best.usd_per_million_output_tokens)


@pytest.mark.parametrize("extra, needle", [
    (["--tpot-slo", "50"], "--tpot-slo: give a unit"),
    (["--ttft-slo", "-1s"], "--ttft-slo must be > 0"),
    (["--price", "2"], "--price 2: give the unit"),
    (["--price", "h999=2USD/h"], "--price h999=2USD/h: no hardware 'h999'"),
    (["--target-tokens-per-s", "1M", "--users", "10"], "not both"),
    (["--max-devices", "0"], "--max-devices 0"),
    (["--kv-dtype", "fp7x"], "--kv-dtype fp7x"),
    (["--context", "0"], "--context"),
    (["--ttft-slo", "1us"], "no deployment of tiny-gqa meets TTFT <= 0.001 ms"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, extra, needle):
    r = runner.invoke(app, ["plan", _spec_file(tmp_path), "-H", _hw_file(tmp_path), "--context", "64", "--output", "8",
                            "--max-devices", "2"] + extra)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_cli_without_a_price_says_how_to_give_one(tmp_path):
    f = tmp_path / "noprice.yaml"
    f.write_text(yaml.safe_dump(tiny.hw().model_dump(mode="json", exclude_none=True)))
    r = runner.invoke(app, ["plan", _spec_file(tmp_path), "-H", str(f), "--context", "64", "--output", "8"])
    assert r.exit_code == 2 and "--price tiny-hw" in r.stderr and "no price_per_device_hour" in r.stderr


def test_shipped_hardware_plan_runs_and_ranks_by_cost():
    r = runner.invoke(app, ["plan", "llama-3.1-8b", "-H", "h100,h800", "--context", "2k", "--output", "256",
                            "--tpot-slo", "30ms", "--ttft-slo", "2s", "--max-devices", "2", "--pp", "1", "-f", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    costs = [x["usd_per_million_output_tokens"] for x in rows]
    assert costs == sorted(costs) and all(x["ttft_s"] <= 2 and x["tpot_s"] <= 0.03 for x in rows)
    for x in rows:  # the dollar figure from the row's own rate and the profile's price
        price = {"h100": 3.99, "h800": 2.0}[x["hardware"]]
        assert x["usd_per_million_output_tokens"] == pytest.approx(x["devices"] * price / 3600 / x["tokens_per_s"] * 1e6)
    assert math.isclose(rows[0]["price_usd_per_device_hour"], {"h100": 3.99, "h800": 2.0}[rows[0]["hardware"]])
